package explain_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/explain"
	"github.com/mesh-init/istio-iptables/plan"
)

// The pod of the tables below owns these addresses.
var podIPs = []netip.Addr{netip.MustParseAddr("10.1.1.5"), netip.MustParseAddr("fd00:1::5")}

// specConfig is the call of docs/contract.md §3.2 with IPv6 on:
// -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=true
func specConfig(fn func(c *capture.Config)) capture.Config {
	c := capture.DefaultConfig()
	c.ProxyPort = "15001"
	c.InboundCapturePort = "15006"
	c.ProxyUID = "1337"
	c.InboundInterceptionMode = "REDIRECT"
	c.OutboundIPRangesInclude = "*"
	c.InboundPortsInclude = "*"
	c.InboundPortsExclude = "15090,15021,15020"
	c.IPv6 = "true"
	if fn != nil {
		fn(&c)
	}
	return c
}

// The configurations of the table, after the golden cases of capture/.
var configs = map[string]capture.Config{
	"redirect": specConfig(nil),
	"tproxy":   specConfig(func(c *capture.Config) { c.InboundInterceptionMode = "TPROXY" }),
	// the classic istio-init call: -p 15001 -u 1337 -m REDIRECT -i '*' -x "" -b 80, -d "" --ipv6=false
	"classic": specConfig(func(c *capture.Config) {
		c.InboundCapturePort, c.InboundPortsInclude, c.InboundPortsExclude, c.IPv6 = "", "80,", "", "false"
	}),
	"cidrs": specConfig(func(c *capture.Config) {
		c.OutboundIPRangesInclude = "10.0.0.0/8,fd00::/8"
		c.OutboundIPRangesExclude = "10.96.0.0/12,fd00:96::/32"
	}),
	"-o 9090":       specConfig(func(c *capture.Config) { c.OutboundPortsExclude = "9090" }),
	"-i '' -q 8443": specConfig(func(c *capture.Config) { c.OutboundIPRangesInclude, c.OutboundPortsInclude = "", "8443" }),
	"-k eth1":       specConfig(func(c *capture.Config) { c.KubeVirtInterfaces = "eth1" }),
	"-k eth1 -i 10.0.0.0/8": specConfig(func(c *capture.Config) {
		c.KubeVirtInterfaces, c.OutboundIPRangesInclude = "eth1", "10.0.0.0/8"
	}),
	"-c eth2":        specConfig(func(c *capture.Config) { c.ExcludeInterfaces = "eth2" }),
	"tproxy -c eth2": specConfig(func(c *capture.Config) { c.ExcludeInterfaces, c.InboundInterceptionMode = "eth2", "TPROXY" }),
	"-u 1337,1338 -g 2000": specConfig(func(c *capture.Config) {
		c.ProxyUID, c.ProxyGID = "1337,1338", "2000"
	}),
	"-b 80,8080 tproxy": specConfig(func(c *capture.Config) {
		c.InboundPortsInclude, c.InboundInterceptionMode = "80,8080", "TPROXY"
	}),
	"-e 15009": specConfig(func(c *capture.Config) { c.InboundTunnelPort = "15009" }),
	// 16 -d ports: packed into -m multiport rules.
	"-d multiport": specConfig(func(c *capture.Config) {
		var ports []string
		for p := 15090; p < 15106; p++ {
			ports = append(ports, fmt.Sprint(p))
		}
		c.InboundPortsExclude = strings.Join(ports, ",")
	}),
	"tproxy -t 100": specConfig(func(c *capture.Config) { c.InboundInterceptionMode, c.InboundTProxyMark = "TPROXY", "100" }),
}

func id(n uint32) *uint32 { return &n }

// out is an outbound connection of a process with uid and gid.
func out(dst string, uid, gid uint32) explain.Packet {
	return explain.Packet{Direction: explain.Outbound, Proto: "tcp", Dst: netip.MustParseAddrPort(dst), UID: id(uid), GID: id(gid), Local: podIPs}
}

// in is an inbound connection arriving on eth0.
func in(dst string) explain.Packet {
	return explain.Packet{Direction: explain.Inbound, Proto: "tcp", Dst: netip.MustParseAddrPort(dst), Local: podIPs}
}

func udp(p explain.Packet) explain.Packet { p.Proto = "udp"; return p }

func from(src string, p explain.Packet) explain.Packet { p.Src = netip.MustParseAddr(src); return p }

func via(iface string, p explain.Packet) explain.Packet { p.Iface = iface; return p }

// run explains p against the plan of cfg, as the command does: the plan's
// rule set of the packet's family (none: no rules) and its addresses.
func run(t *testing.T, cfg capture.Config, p explain.Packet) explain.Result {
	t.Helper()
	built, err := capture.Build(cfg)
	require.NoError(t, err)
	for _, a := range built.Addrs {
		p.Local = append(p.Local, a.Prefix.Addr())
	}
	var rules *explain.Rules
	if rs, ok := built.RuleSet(p.Family()); ok {
		rules = explain.FromRuleSet(rs)
	}
	return explain.Explain(rules, p)
}

const (
	app, proxy, root = 1000, 1337, 0
)

// specCase is one packet of the table and its verdict.
type specCase struct {
	name, config string
	packet       explain.Packet
	want         explain.Result
}

// specCases is the table of packets and verdicts, each written from the
// contract text quoted in its comment, not from the code's output.
func specCases() []specCase {
	redirect := func(port int) explain.Result { return explain.Result{Verdict: explain.Redirect, Port: port} }
	tproxy := func(port int) explain.Result { return explain.Result{Verdict: explain.TProxy, Port: port} }
	direct := explain.Result{Verdict: explain.Direct}
	unknown := explain.Result{Verdict: explain.Unknown}
	return []specCase{
		// §3.2 "the rest goes to the outbound listener"
		{"app to a service", "redirect", out("10.0.0.5:8080", app, app), redirect(15001)},
		{"app to a service v6", "redirect", out("[fd00:2::5]:8080", app, app), redirect(15001)},
		// §3.2 "everything else the proxy sends is exempt (no loops)"
		{"proxy to a service", "redirect", out("10.0.0.5:8080", proxy, proxy), direct},
		{"proxy to a service v6", "redirect", out("[fd00:2::5]:8080", proxy, proxy), direct},
		// §1 -u, -g: "whose traffic is never captured", each alone
		{"proxy GID alone", "redirect", out("10.0.0.5:8080", app, proxy), direct},
		{"proxy UID alone", "redirect", out("10.0.0.5:8080", proxy, app), direct},
		// §6 "root is never exempted implicitly"
		{"root is captured", "redirect", out("10.0.0.5:8080", root, root), redirect(15001)},
		// §3.2 "an app talking to itself over lo is not captured"
		{"app to localhost", "redirect", out("127.0.0.1:8080", app, app), direct},
		{"app to localhost v6", "redirect", out("[::1]:8080", app, app), direct},
		{"app to its own pod IP", "redirect", out("10.1.1.5:80", app, app), direct},
		// §3.2 "the proxy calling its own pod IP over lo goes to the inbound listener"
		{"proxy to its pod IP", "redirect", out("10.1.1.5:80", proxy, proxy), redirect(15006)},
		{"proxy to its pod IP v6", "redirect", out("[fd00:1::5]:80", proxy, proxy), redirect(15006)},
		// §1 -e: "not re-captured on lo"
		{"proxy to its pod IP tunnel port", "redirect", out("10.1.1.5:15008", proxy, proxy), direct},
		// §3.2 "localhost is not captured"
		{"proxy to localhost", "redirect", out("127.0.0.1:80", proxy, proxy), direct},
		// §3.2 "the proxy's passthrough source 127.0.0.6 is never re-captured"
		{"passthrough from 127.0.0.6", "redirect", from("127.0.0.6", out("10.1.1.5:80", proxy, proxy)), direct},
		{"passthrough from ::6", "redirect", from("::6", out("[fd00:1::5]:80", proxy, proxy)), direct},
		// §3.2 ISTIO_REDIRECT is -p tcp: other protocols are not captured
		{"app udp", "redirect", udp(out("10.0.0.5:5353", app, app)), direct},
		// §3.2 "inbound TCP enters ISTIO_INBOUND ... the rest goes to the inbound listener"
		{"inbound 80", "redirect", in("10.1.1.5:80"), redirect(15006)},
		{"inbound 8080 v6", "redirect", in("[fd00:1::5]:8080"), redirect(15006)},
		// §3.2 "the tunnel port and -d ports go straight to their listeners"
		{"inbound tunnel port", "redirect", in("10.1.1.5:15008"), direct},
		{"inbound tunnel port v6", "redirect", in("[fd00:1::5]:15008"), direct},
		{"inbound -d 15090", "redirect", in("10.1.1.5:15090"), direct},
		{"inbound -d 15021 v6", "redirect", in("[fd00:1::5]:15021"), direct},
		{"inbound udp", "redirect", udp(in("10.1.1.5:53")), direct},
		// §3.3 TPROXY: mangle ISTIO_INBOUND ... -j ISTIO_TPROXY, on-port 15006
		{"tproxy inbound 80", "tproxy", in("10.1.1.5:80"), tproxy(15006)},
		{"tproxy inbound 80 v6", "tproxy", in("[fd00:1::5]:80"), tproxy(15006)},
		{"tproxy inbound -d 15020", "tproxy", in("10.1.1.5:15020"), direct},
		// §3.3: mangle ISTIO_INBOUND has no tunnel-port RETURN
		{"tproxy inbound tunnel port", "tproxy", in("10.1.1.5:15008"), tproxy(15006)},
		// §3.3 "nat keeps ISTIO_REDIRECT ... ISTIO_OUTPUT"
		{"tproxy app outbound", "tproxy", out("10.0.0.5:8080", app, app), redirect(15001)},
		{"tproxy proxy to its pod IP", "tproxy", out("10.1.1.5:80", proxy, proxy), redirect(15006)},
		// §3.3 OUTPUT ... --uid-owner 1337 -j MARK --set-mark 1338, then
		// ISTIO_INBOUND -i lo ! --mark 1338 RETURN lets it through to TPROXY
		{"tproxy proxy to its pod IP tunnel port", "tproxy", out("10.1.1.5:15008", proxy, proxy), tproxy(15006)},
		{"tproxy proxy to its pod IP tunnel port v6", "tproxy", out("[fd00:1::5]:15008", proxy, proxy), tproxy(15006)},
		{"tproxy proxy GID to its pod IP", "tproxy", out("10.1.1.5:80", app, proxy), tproxy(15006)},
		// §3.3 "-i lo -m mark ! --mark 1338 -j RETURN": the app over lo is not captured
		{"tproxy app to its pod IP", "tproxy", out("10.1.1.5:80", app, app), direct},
		{"tproxy app to localhost v6", "tproxy", out("[::1]:80", app, app), direct},
		// §3.3 "-s 127.0.0.6/32 -i lo -j RETURN"
		{"tproxy passthrough", "tproxy", from("127.0.0.6", out("10.1.1.5:80", proxy, proxy)), direct},
		{"tproxy -t 100 proxy to pod IP tunnel port", "tproxy -t 100", out("10.1.1.5:15008", proxy, proxy), tproxy(15006)},
		// §3.1 "-p 15001 ... -b 80 sends port 80 to 15001"
		{"classic inbound 80", "classic", in("10.1.1.5:80"), redirect(15001)},
		{"classic inbound 8080", "classic", in("10.1.1.5:8080"), direct},
		{"classic app outbound", "classic", out("10.0.0.5:8080", app, app), redirect(15001)},
		// --ipv6=false: no ip6tables rules at all
		{"classic v6 not captured", "classic", out("[fd00:2::5]:8080", app, app), direct},
		// §3.2 -i CIDRs captured, -x CIDRs never, per family
		{"-i inside", "cidrs", out("10.0.0.5:8080", app, app), redirect(15001)},
		{"-i outside", "cidrs", out("192.168.1.1:443", app, app), direct},
		{"-x inside", "cidrs", out("10.96.0.10:443", app, app), direct},
		{"-i inside v6", "cidrs", out("[fd00:2::5]:8080", app, app), redirect(15001)},
		{"-i outside v6", "cidrs", out("[2001:db8::1]:443", app, app), direct},
		{"-x inside v6", "cidrs", out("[fd00:96::1]:443", app, app), direct},
		// §3.2 "-o P: -p tcp --dport P -j RETURN then -p udp"
		{"-o tcp", "-o 9090", out("10.0.0.5:9090", app, app), direct},
		{"-o udp", "-o 9090", udp(out("10.0.0.5:9090", app, app)), direct},
		{"-o other port", "-o 9090", out("10.0.0.5:8080", app, app), redirect(15001)},
		// the -o RETURN comes before the owner rules: no owner needed
		{"-o without owner", "-o 9090", explain.Packet{Direction: explain.Outbound, Proto: "tcp", Dst: netip.MustParseAddrPort("10.0.0.5:9090")}, direct},
		// ... but the owner rules cannot be passed without one
		{"owner unknown", "redirect", explain.Packet{Direction: explain.Outbound, Proto: "tcp", Dst: netip.MustParseAddrPort("10.0.0.5:8080")}, unknown},
		// §3.2 "-q captures (-p tcp --dport P -j ISTIO_REDIRECT)"
		{"-q port", "-i '' -q 8443", out("10.0.0.5:8443", app, app), redirect(15001)},
		{"-q other port", "-i '' -q 8443", out("10.0.0.5:8080", app, app), direct},
		// §3.2 -k: "-i IF -j ISTIO_REDIRECT" above "-i IF -j RETURN"
		{"-k inbound is outbound", "-k eth1", via("eth1", in("10.0.0.5:8080")), redirect(15001)},
		{"-k other iface inbound", "-k eth1", in("10.1.1.5:80"), redirect(15006)},
		{"-k -i inside", "-k eth1 -i 10.0.0.0/8", via("eth1", in("10.0.0.5:8080")), redirect(15001)},
		{"-k -i outside", "-k eth1 -i 10.0.0.0/8", via("eth1", in("192.168.0.1:8080")), direct},
		// §3.2 "-c IF: -A PREROUTING -i IF -j RETURN and -A OUTPUT -o IF -j RETURN"
		{"-c inbound", "-c eth2", via("eth2", in("10.1.1.5:80")), direct},
		{"-c outbound", "-c eth2", via("eth2", out("10.0.0.5:8080", app, app)), direct},
		{"-c other iface outbound", "-c eth2", out("10.0.0.5:8080", app, app), redirect(15001)},
		{"-c inbound tproxy", "tproxy -c eth2", via("eth2", in("10.1.1.5:80")), direct},
		{"-c inbound tproxy other iface", "tproxy -c eth2", in("10.1.1.5:80"), tproxy(15006)},
		// §3.2 "-u 1,2 / -g 3,4: the three owner rules repeat per UID, then per GID"
		{"second UID exempt", "-u 1337,1338 -g 2000", out("10.0.0.5:8080", 1338, app), direct},
		{"-g GID exempt", "-u 1337,1338 -g 2000", out("10.0.0.5:8080", app, 2000), direct},
		{"-u without -g: the UID is no GID", "-u 1337,1338 -g 2000", out("10.0.0.5:8080", app, 1337), redirect(15001)},
		{"other UID captured", "-u 1337,1338 -g 2000", out("10.0.0.5:8080", app, app), redirect(15001)},
		// docs/rules.md: "with several UIDs the second rule of the first UID returns the lo traffic of the others"
		{"second UID to its pod IP", "-u 1337,1338 -g 2000", out("10.1.1.5:80", 1338, app), direct},
		// §3.3 "-b as a list: per port ... -j ISTIO_TPROXY"
		{"tproxy -b 8080", "-b 80,8080 tproxy", in("10.1.1.5:8080"), tproxy(15006)},
		{"tproxy -b other port", "-b 80,8080 tproxy", in("10.1.1.5:9000"), direct},
		{"tproxy -b other port v6", "-b 80,8080 tproxy", in("[fd00:1::5]:9000"), direct},
		// §1 -e: the tunnel port is the -e port
		{"-e tunnel inbound", "-e 15009", in("10.1.1.5:15009"), direct},
		{"-e old tunnel port captured", "-e 15009", in("10.1.1.5:15008"), redirect(15006)},
		{"-e proxy to pod IP tunnel", "-e 15009", out("10.1.1.5:15009", proxy, proxy), direct},
		// docs/rules.md "Long port lists": packed -d ports keep their meaning
		{"multiport -d inside", "-d multiport", in("10.1.1.5:15100"), direct},
		{"multiport -d outside", "-d multiport", in("10.1.1.5:15106"), redirect(15006)},
	}
}

// TestExplainSpec explains every packet of the table against the plan of
// its configuration.
func TestExplainSpec(t *testing.T) {
	cases := specCases()
	require.GreaterOrEqual(t, len(cases), 40)
	for _, tc := range cases {
		t.Run(tc.config+"/"+tc.name, func(t *testing.T) {
			cfg, ok := configs[tc.config]
			require.True(t, ok, "no config %q", tc.config)
			got := run(t, cfg, tc.packet)
			assert.Equal(t, tc.want.Verdict, got.Verdict, "reason: %s\n%s", got.Reason, got.Text(tc.packet))
			assert.Equal(t, tc.want.Port, got.Port)
			if got.Verdict == explain.Unknown {
				assert.NotEmpty(t, got.Reason)
			}
		})
	}
}

// TestExplainKernelSave explains the packets of the table for the contract
// §3.2 configuration in both modes against what the kernel holds after a
// real apply: testdata/<mode>_<family>.save is iptables-nft-save (and
// ip6tables-nft-save) output from a namespace programmed with
// `istio-iptables --netns ... -p 15001 -z 15006 -u 1337 -m <MODE> -i '*'
// -x "" -b '*' -d 15090,15021,15020 --ipv6=true`. The verdicts must be
// the table's: the save's normal form (0x539 marks, explicit -m tcp,
// CONNMARK masks, TPROXY --on-ip) reads the same as the plan.
func TestExplainKernelSave(t *testing.T) {
	n := 0
	for _, tc := range specCases() {
		if tc.config != "redirect" && tc.config != "tproxy" {
			continue
		}
		n++
		t.Run(tc.config+"/"+tc.name, func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join("testdata", tc.config+"_"+string(tc.packet.Family())+".save"))
			require.NoError(t, err)
			saved, err := plan.ParseSave(string(text))
			require.NoError(t, err)
			p := tc.packet
			p.Local = append(p.Local, netip.MustParseAddr("::6"))
			got := explain.Explain(explain.FromSaved(tc.packet.Family(), saved), p)
			assert.Equal(t, tc.want.Verdict, got.Verdict, "reason: %s\n%s", got.Reason, got.Text(p))
			assert.Equal(t, tc.want.Port, got.Port)
		})
	}
	assert.GreaterOrEqual(t, n, 30)
}

// TestExplainText checks the example line by line.
func TestExplainText(t *testing.T) {
	p := explain.Packet{Direction: explain.Outbound, Proto: "tcp", Dst: netip.MustParseAddrPort("10.0.0.5:8080"), UID: id(app), GID: id(app)}
	got := run(t, specConfig(nil), p)
	want := "outbound tcp 10.0.0.5:8080 uid=1000: captured, REDIRECT to 15001 (original destination kept)\n" +
		"  nat OUTPUT         1  -j ISTIO_OUTPUT\n" +
		"  nat ISTIO_OUTPUT   9  -j ISTIO_REDIRECT\n" +
		"  nat ISTIO_REDIRECT 1  -p tcp -j REDIRECT --to-ports 15001\n"
	assert.Equal(t, want, strings.SplitAfterN(got.Text(p), "\n", 5)[0]+strings.Join(strings.SplitAfterN(got.Text(p), "\n", 5)[1:4], ""))
	b, err := json.Marshal(got)
	require.NoError(t, err)
	assert.JSONEq(t, `{"verdict":"redirect","port":15001,"reason":"nat ISTIO_REDIRECT rule 1 \"-p tcp -j REDIRECT --to-ports 15001\": REDIRECT to 15001","trace":[
		{"table":"nat","chain":"OUTPUT","rule":1,"text":"-j ISTIO_OUTPUT"},
		{"table":"nat","chain":"ISTIO_OUTPUT","rule":9,"text":"-j ISTIO_REDIRECT"},
		{"table":"nat","chain":"ISTIO_REDIRECT","rule":1,"text":"-p tcp -j REDIRECT --to-ports 15001"}]}`, string(b))
}

// TestExplainSaved evaluates rules read back from *-save: policies, rules
// ParseSpec refuses (unknown only when reached), jumps and goto.
func TestExplainSaved(t *testing.T) {
	save := `*filter
:INPUT ACCEPT [0:0]
:OUTPUT DROP [0:0]
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -d 10.0.0.7/32 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
:C - [0:0]
-A PREROUTING -p udp -j RETURN
-A PREROUTING -p tcp -m set --match-set blocked dst -j REDIRECT --to-ports 1
-A OUTPUT -p tcp --dport 81 -j C
-A OUTPUT -p tcp --dport 81 -j REDIRECT --to-ports 8
-A OUTPUT -p tcp --dport 82 -j B
-A A -j RETURN
-A B -p tcp -j REDIRECT --to-ports 15001
-A C -g A
-A C -j REDIRECT --to-ports 9
COMMIT
`
	s, err := plan.ParseSave(save)
	require.NoError(t, err)
	rules := explain.FromSaved(plan.IPv4, s)
	cases := []struct {
		name    string
		packet  explain.Packet
		verdict explain.Verdict
		port    int
		reason  string
	}{
		{"RETURN after a goto skips the rest of the chain that jumped", out("10.0.0.9:81", app, app), explain.Redirect, 8, ""},
		{"jump", out("10.0.0.9:82", app, app), explain.Redirect, 15001, ""},
		{"filter ACCEPT", out("10.0.0.7:83", app, app), explain.Direct, 0, ""},
		{"policy DROP of filter OUTPUT", out("10.0.0.9:83", app, app), explain.Drop, 0, "policy DROP of filter OUTPUT"},
		{"unparsable rule reached", in("10.1.1.5:80"), explain.Unknown, 0, `unsupported match "set"`},
		{"unparsable rule not reached", udp(in("10.1.1.5:80")), explain.Direct, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := explain.Explain(rules, tc.packet)
			assert.Equal(t, tc.verdict, got.Verdict, "%s", got.Text(tc.packet))
			assert.Equal(t, tc.port, got.Port)
			assert.Contains(t, got.Reason, tc.reason)
		})
	}
}

// TestExplainHidden: tables explain cannot see make every verdict unknown.
func TestExplainHidden(t *testing.T) {
	rules := explain.FromSaved(plan.IPv4, plan.Saved{})
	rules.Hidden = []string{"inet istio-iptables"}
	got := explain.Explain(rules, out("10.0.0.5:8080", app, app))
	assert.Equal(t, explain.Unknown, got.Verdict)
	assert.Contains(t, got.Reason, "inet istio-iptables")
}
