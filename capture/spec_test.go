package capture_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/plan"
)

// The listings of docs/contract.md §3.2 (nat, REDIRECT) and §3.3 (mangle, TPROXY),
// copied line for line, "(and 15021, 15020)" expanded.
var (
	specRedirectNat = `
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
`
	specTProxyMangle = `
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark
-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark
-A ISTIO_DIVERT -j MARK --set-mark 1337
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_INBOUND -p tcp -m mark --mark 1337 -j RETURN
-A ISTIO_INBOUND -p tcp -s 127.0.0.6/32 -i lo -j RETURN
-A ISTIO_INBOUND -p tcp -i lo -m mark ! --mark 1338 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
`
	// docs/contract.md §3.3: with TPROXY nat keeps ISTIO_REDIRECT, ISTIO_IN_REDIRECT,
	// ISTIO_OUTPUT and the tunnel-port rule, without the PREROUTING jump;
	// ISTIO_OUTPUT starts with the RETURN for the TPROXY mark (**ours**).
	specTProxyNat = `
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -m mark --mark 1337 -j RETURN
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
`
)

// byChain groups "-A CHAIN ..." listing lines per chain, keeping their order.
func byChain(t *testing.T, listing string) map[plan.Chain][]string {
	t.Helper()
	out := map[plan.Chain][]string{}
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		require.GreaterOrEqual(t, len(f), 2, "listing line %q", line)
		out[plan.Chain(f[1])] = append(out[plan.Chain(f[1])], line)
	}
	return out
}

// planChains returns, per chain of one table, the rules in the order the
// kernel holds them, rendered as restore lines.
func planChains(rs plan.RuleSet, table plan.Table) map[plan.Chain][]string {
	out := map[plan.Chain][]string{}
	for _, tc := range rs.UsedChains() {
		if tc.Table != table {
			continue
		}
		for _, r := range rs.ChainRules(table, tc.Chain) {
			out[tc.Chain] = append(out[tc.Chain], r.String())
		}
	}
	return out
}

func ruleSet(t *testing.T, c capture.Config, f plan.Family) plan.RuleSet {
	t.Helper()
	built, err := capture.Build(c)
	require.NoError(t, err)
	rs, ok := built.RuleSet(f)
	require.True(t, ok, "no %s rule set", f)
	return rs
}

func TestSpecListings(t *testing.T) {
	tproxy := redirectDefault()
	tproxy.InboundInterceptionMode = "TPROXY"
	for _, tc := range []struct {
		name    string
		cfg     capture.Config
		table   plan.Table
		listing string
	}{
		{"redirect nat §3.2", redirectDefault(), plan.TableNat, specRedirectNat},
		{"tproxy mangle §3.3", tproxy, plan.TableMangle, specTProxyMangle},
		{"tproxy nat §3.3", tproxy, plan.TableNat, specTProxyNat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := ruleSet(t, tc.cfg, plan.IPv4)
			want := byChain(t, tc.listing)
			got := planChains(rs, tc.table)
			for chain, lines := range want {
				assert.Equal(t, lines, got[chain], "chain %s", chain)
			}
			for chain, lines := range got {
				assert.Contains(t, want, chain, "chain %s is not in the contract's listing: %q", chain, lines)
			}
		})
	}
}

// TestSpecRedirectHasNoMangle: REDIRECT writes nothing in mangle, no
// policy routing, and (IPv6 off) no address.
func TestSpecRedirectHasNoMangle(t *testing.T) {
	built, err := capture.Build(redirectDefault())
	require.NoError(t, err)
	require.Len(t, built.RuleSets, 1)
	assert.Equal(t, []plan.Table{plan.TableNat}, built.RuleSets[0].Tables())
	assert.Empty(t, built.Routes)
	assert.Empty(t, built.Addrs)
}

// TestSpecTProxyRoutes: docs/contract.md §3.3 policy routing, one per family.
func TestSpecTProxyRoutes(t *testing.T) {
	c := redirectDefault()
	c.InboundInterceptionMode = "TPROXY"
	built, err := capture.Build(c)
	require.NoError(t, err)
	assert.Equal(t, []plan.Route{{Family: plan.IPv4, Mark: 1337, Table: 133}}, built.Routes)
	assert.Equal(t, []string{"ip rule add fwmark 1337 lookup 133", "ip route add local default dev lo table 133"},
		built.Routes[0].Commands())

	c.IPv6 = "true"
	built, err = capture.Build(c)
	require.NoError(t, err)
	assert.Equal(t, []plan.Route{
		{Family: plan.IPv4, Mark: 1337, Table: 133},
		{Family: plan.IPv6, Mark: 1337, Table: 133},
	}, built.Routes)
	assert.Equal(t, []plan.Addr{{Dev: "lo", Prefix: capture.PassthroughIPv6}}, built.Addrs)
}

// inRedirectTarget returns the --to-ports of ISTIO_IN_REDIRECT.
func inRedirectTarget(t *testing.T, c capture.Config) string {
	t.Helper()
	rules := ruleSet(t, c, plan.IPv4).ChainRules(plan.TableNat, "ISTIO_IN_REDIRECT")
	require.Len(t, rules, 1)
	args := rules[0].Args
	require.GreaterOrEqual(t, len(args), 2)
	require.Equal(t, "--to-ports", args[len(args)-2], "rule %s", rules[0])
	return args[len(args)-1]
}

// TestSpecInboundCapturePort checks docs/contract.md §3.1: -z when given; else 15006
// with -b '*' and the -p port with a -b list (the classic istio-init call).
func TestSpecInboundCapturePort(t *testing.T) {
	classic := func(fn func(c *capture.Config)) capture.Config {
		// -p 15001 -u 1337 -m REDIRECT -i '*' -x "" -b 80, -d ""
		c := capture.DefaultConfig()
		c.ProxyPort = "15001"
		c.ProxyUID = "1337"
		c.InboundInterceptionMode = "REDIRECT"
		c.OutboundIPRangesInclude = "*"
		c.InboundPortsInclude = "80,"
		c.IPv6 = "false"
		fn(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  capture.Config
		want string
	}{
		{"-b 80, without -z: the -p port", classic(func(*capture.Config) {}), "15001"},
		{"-b 80, -p 16001 without -z: the -p port", classic(func(c *capture.Config) { c.ProxyPort = "16001" }), "16001"},
		{"-b '*' without -z: 15006", classic(func(c *capture.Config) { c.InboundPortsInclude = "*" }), "15006"},
		{"-b '*' -p 16001 without -z: 15006", classic(func(c *capture.Config) {
			c.InboundPortsInclude = "*"
			c.ProxyPort = "16001"
		}), "15006"},
		{"-b 80, -z 15100", classic(func(c *capture.Config) { c.InboundCapturePort = "15100" }), "15100"},
		{"-b '*' -z 15100", classic(func(c *capture.Config) {
			c.InboundPortsInclude = "*"
			c.InboundCapturePort = "15100"
		}), "15100"},
		{"-b '*' -z 15001", classic(func(c *capture.Config) {
			c.InboundPortsInclude = "*"
			c.InboundCapturePort = "15001"
		}), "15001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, inRedirectTarget(t, tc.cfg))
		})
	}

	t.Run("classic call sends port 80 to the proxy port", func(t *testing.T) {
		rs := ruleSet(t, classic(func(*capture.Config) {}), plan.IPv4)
		var lines []string
		for _, r := range rs.ChainRules(plan.TableNat, "ISTIO_INBOUND") {
			lines = append(lines, r.String())
		}
		assert.Equal(t, []string{
			"-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
			"-A ISTIO_INBOUND -p tcp --dport 80 -j ISTIO_IN_REDIRECT",
		}, lines)
	})

	t.Run("TPROXY on-port follows the same rule", func(t *testing.T) {
		c := classic(func(c *capture.Config) { c.InboundInterceptionMode = "TPROXY" })
		rules := ruleSet(t, c, plan.IPv4).ChainRules(plan.TableMangle, "ISTIO_TPROXY")
		require.Len(t, rules, 1)
		assert.Equal(t, "-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15001", rules[0].String())
	})
}

// chainLines renders one chain of a rule set in kernel order.
func chainLines(rs plan.RuleSet, table plan.Table, chain plan.Chain) []string {
	var out []string
	for _, r := range rs.ChainRules(table, chain) {
		s := r.String()
		// Compare the kernel order, not how the rule got there.
		s = strings.Replace(s, "-I "+string(chain)+" 1 ", "-A "+string(chain)+" ", 1)
		out = append(out, s)
	}
	return out
}

// TestSpecVariants checks the variants listed in docs/contract.md §3.2 and §3.3 chain
// by chain.
func TestSpecVariants(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   capture.Config
		fam   plan.Family
		table plan.Table
		chain plan.Chain
		want  []string
	}{
		{
			name: "-b 80,8080: one ISTIO_IN_REDIRECT per port, in order",
			cfg:  with(func(c *capture.Config) { c.InboundPortsInclude = "80,8080" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "ISTIO_INBOUND",
			want: []string{
				"-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
				"-A ISTIO_INBOUND -p tcp --dport 80 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
			},
		},
		{
			name: `-b "": no PREROUTING jump`,
			cfg:  with(func(c *capture.Config) { c.InboundPortsInclude = "" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "PREROUTING",
			want: nil,
		},
		{
			name: `-b "": ISTIO_INBOUND keeps its tunnel-port rule`,
			cfg:  with(func(c *capture.Config) { c.InboundPortsInclude = "" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "ISTIO_INBOUND",
			want: []string{"-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN"},
		},
		{
			name: "-u 1,2 -g 3,4: owner rules per UID then per GID",
			cfg:  with(func(c *capture.Config) { c.ProxyUID = "1,2"; c.ProxyGID = "3,4" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "ISTIO_OUTPUT",
			want: []string{
				"-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --uid-owner 1 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 2 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 2 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --uid-owner 2 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 3 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 3 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --gid-owner 3 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 4 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 4 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --gid-owner 4 -j RETURN",
				"-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
				"-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
			},
		},
		{
			name: "ISTIO_OUTPUT order: -o, 127.0.0.6, owners, localhost, -x, -q, -i",
			cfg: with(func(c *capture.Config) {
				c.OutboundPortsExclude = "25"
				c.OutboundIPRangesExclude = "10.96.0.0/12"
				c.OutboundPortsInclude = "3306"
				c.OutboundIPRangesInclude = "10.0.0.0/8,192.168.0.0/16"
				c.ProxyUID = "7"
				c.ProxyGID = "8"
			}),
			fam: plan.IPv4, table: plan.TableNat, chain: "ISTIO_OUTPUT",
			want: []string{
				"-A ISTIO_OUTPUT -p tcp --dport 25 -j RETURN",
				"-A ISTIO_OUTPUT -p udp --dport 25 -j RETURN",
				"-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 7 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 7 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --uid-owner 7 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 8 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 8 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --gid-owner 8 -j RETURN",
				"-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
				"-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN",
				"-A ISTIO_OUTPUT -p tcp --dport 3306 -j ISTIO_REDIRECT",
				"-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT",
				"-A ISTIO_OUTPUT -d 192.168.0.0/16 -j ISTIO_REDIRECT",
			},
		},
		{
			name: `-i "": no capture rule at the end of ISTIO_OUTPUT`,
			cfg:  with(func(c *capture.Config) { c.OutboundIPRangesInclude = "" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "ISTIO_OUTPUT",
			want: []string{
				"-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
			},
		},
		{
			name: "-c: nat PREROUTING RETURN before the jump",
			cfg:  with(func(c *capture.Config) { c.ExcludeInterfaces = "eth1,eth2" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "PREROUTING",
			want: []string{
				"-A PREROUTING -i eth1 -j RETURN",
				"-A PREROUTING -i eth2 -j RETURN",
				"-A PREROUTING -p tcp -j ISTIO_INBOUND",
			},
		},
		{
			name: "-c: nat OUTPUT RETURN before the jump",
			cfg:  with(func(c *capture.Config) { c.ExcludeInterfaces = "eth1,eth2" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "OUTPUT",
			want: []string{
				"-A OUTPUT -o eth1 -j RETURN",
				"-A OUTPUT -o eth2 -j RETURN",
				"-A OUTPUT -j ISTIO_OUTPUT",
			},
		},
		{
			name: "-c with TPROXY: mangle PREROUTING too",
			cfg:  with(func(c *capture.Config) { c.ExcludeInterfaces = "eth1"; c.InboundInterceptionMode = "TPROXY" }),
			fam:  plan.IPv4, table: plan.TableMangle, chain: "PREROUTING",
			want: []string{
				"-A PREROUTING -i eth1 -j RETURN",
				"-A PREROUTING -p tcp -j ISTIO_INBOUND",
				"-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark",
			},
		},
		{
			name: "-c with TPROXY: mangle OUTPUT too",
			cfg:  with(func(c *capture.Config) { c.ExcludeInterfaces = "eth1"; c.InboundInterceptionMode = "TPROXY" }),
			fam:  plan.IPv4, table: plan.TableMangle, chain: "OUTPUT",
			want: []string{
				"-A OUTPUT -o eth1 -j RETURN",
				"-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN",
				"-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338",
				"-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338",
				"-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark",
			},
		},
		{
			name: "-k eth1,eth2 -i '*': the example of docs/contract.md §3.2",
			cfg:  with(func(c *capture.Config) { c.KubeVirtInterfaces = "eth1,eth2" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "PREROUTING",
			want: []string{
				"-A PREROUTING -i eth2 -j ISTIO_REDIRECT",
				"-A PREROUTING -i eth1 -j ISTIO_REDIRECT",
				"-A PREROUTING -i eth2 -j RETURN",
				"-A PREROUTING -i eth1 -j RETURN",
				"-A PREROUTING -p tcp -j ISTIO_INBOUND",
			},
		},
		{
			name: "-k eth1,eth2 with -i CIDRs: per CIDR, inserted on top",
			cfg: with(func(c *capture.Config) {
				c.KubeVirtInterfaces = "eth1,eth2"
				c.OutboundIPRangesInclude = "10.0.0.0/8,192.168.0.0/16"
			}),
			fam: plan.IPv4, table: plan.TableNat, chain: "PREROUTING",
			want: []string{
				"-A PREROUTING -i eth2 -d 192.168.0.0/16 -j ISTIO_REDIRECT",
				"-A PREROUTING -i eth1 -d 192.168.0.0/16 -j ISTIO_REDIRECT",
				"-A PREROUTING -i eth2 -d 10.0.0.0/8 -j ISTIO_REDIRECT",
				"-A PREROUTING -i eth1 -d 10.0.0.0/8 -j ISTIO_REDIRECT",
				"-A PREROUTING -i eth2 -j RETURN",
				"-A PREROUTING -i eth1 -j RETURN",
				"-A PREROUTING -p tcp -j ISTIO_INBOUND",
			},
		},
		{
			name: `-k with -i "": only the RETURNs`,
			cfg:  with(func(c *capture.Config) { c.KubeVirtInterfaces = "eth1"; c.OutboundIPRangesInclude = "" }),
			fam:  plan.IPv4, table: plan.TableNat, chain: "PREROUTING",
			want: []string{
				"-A PREROUTING -i eth1 -j RETURN",
				"-A PREROUTING -p tcp -j ISTIO_INBOUND",
			},
		},
		{
			name: "TPROXY -b 80,8080: divert then tproxy per port",
			cfg: with(func(c *capture.Config) {
				c.InboundInterceptionMode = "TPROXY"
				c.InboundPortsInclude = "80,8080"
			}),
			fam: plan.IPv4, table: plan.TableMangle, chain: "ISTIO_INBOUND",
			want: []string{
				"-A ISTIO_INBOUND -p tcp -m mark --mark 1337 -j RETURN",
				"-A ISTIO_INBOUND -p tcp -s 127.0.0.6/32 -i lo -j RETURN",
				"-A ISTIO_INBOUND -p tcp -i lo -m mark ! --mark 1338 -j RETURN",
				"-A ISTIO_INBOUND -p tcp --dport 80 -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
				"-A ISTIO_INBOUND -p tcp --dport 80 -j ISTIO_TPROXY",
				"-A ISTIO_INBOUND -p tcp --dport 8080 -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
				"-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_TPROXY",
			},
		},
		{
			name: "TPROXY -t 1400: marks follow -t, the proxy-to-app mark is -t+1",
			cfg: with(func(c *capture.Config) {
				c.InboundInterceptionMode = "TPROXY"
				c.InboundTProxyMark = "1400"
			}),
			fam: plan.IPv4, table: plan.TableMangle, chain: "OUTPUT",
			want: []string{
				"-A OUTPUT -p tcp -o lo -m mark --mark 1400 -j RETURN",
				"-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1401",
				"-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1401",
				"-A OUTPUT -p tcp -m connmark --mark 1400 -j CONNMARK --restore-mark",
			},
		},
		{
			name: "IPv6: ::6/128 and ::1/128 replace the IPv4 loopbacks",
			cfg:  with(func(c *capture.Config) { c.IPv6 = "true"; c.OutboundIPRangesInclude = "" }),
			fam:  plan.IPv6, table: plan.TableNat, chain: "ISTIO_OUTPUT",
			want: []string{
				"-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
				"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
				"-A ISTIO_OUTPUT -d ::1/128 -j RETURN",
			},
		},
		{
			name: "IPv6 with only IPv4 CIDRs in -i and -x: no CIDR rule in ip6tables",
			cfg: with(func(c *capture.Config) {
				c.IPv6 = "true"
				c.OutboundIPRangesInclude = "10.0.0.0/8"
				c.OutboundIPRangesExclude = "10.96.0.0/12"
				c.KubeVirtInterfaces = "eth1"
			}),
			fam: plan.IPv6, table: plan.TableNat, chain: "PREROUTING",
			want: []string{
				"-A PREROUTING -i eth1 -j RETURN",
				"-A PREROUTING -p tcp -j ISTIO_INBOUND",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := ruleSet(t, tc.cfg, tc.fam)
			assert.Equal(t, tc.want, chainLines(rs, tc.table, tc.chain))
		})
	}
}

// TestSpecIPv6NoIPv4 checks docs/contract.md §3.4 over every golden configuration:
// no IPv4 address ever appears in an IPv6 rule, and no IPv6 address in an
// IPv4 rule.
func TestSpecIPv6NoIPv4(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			built, err := capture.Build(tc.cfg)
			require.NoError(t, err)
			for _, rs := range built.RuleSets {
				for _, r := range rs.Rules {
					_, err := plan.ParseSpec(rs.Family, r.Args)
					assert.NoError(t, err, "%s rule %s", rs.Family, r)
				}
			}
		})
	}
}

// TestSpecOnlyOwnedChains checks docs/contract.md §3: every rule is in a builtin chain
// chain of nat or mangle or one of the chains the contract names for its table,
// plus those issue 8 adds (DNS capture in nat and raw, --drop-invalid in
// mangle).
func TestSpecOnlyOwnedChains(t *testing.T) {
	allowed := map[plan.TableChain]bool{
		{Table: plan.TableNat, Chain: "ISTIO_OUTPUT_DNS"}:  true,
		{Table: plan.TableMangle, Chain: "ISTIO_DROP"}:     true,
		{Table: plan.TableRaw, Chain: "ISTIO_OUTPUT_DNS"}:  true,
		{Table: plan.TableRaw, Chain: "ISTIO_INBOUND"}:     true,
		{Table: plan.TableRaw, Chain: "PREROUTING"}:        true,
		{Table: plan.TableRaw, Chain: "OUTPUT"}:            true,
		{Table: plan.TableNat, Chain: "ISTIO_INBOUND"}:     true,
		{Table: plan.TableNat, Chain: "ISTIO_REDIRECT"}:    true,
		{Table: plan.TableNat, Chain: "ISTIO_IN_REDIRECT"}: true,
		{Table: plan.TableNat, Chain: "ISTIO_OUTPUT"}:      true,
		{Table: plan.TableMangle, Chain: "ISTIO_INBOUND"}:  true,
		{Table: plan.TableMangle, Chain: "ISTIO_DIVERT"}:   true,
		{Table: plan.TableMangle, Chain: "ISTIO_TPROXY"}:   true,
		{Table: plan.TableNat, Chain: "PREROUTING"}:        true,
		{Table: plan.TableNat, Chain: "OUTPUT"}:            true,
		{Table: plan.TableMangle, Chain: "PREROUTING"}:     true,
		{Table: plan.TableMangle, Chain: "OUTPUT"}:         true,
	}
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			built, err := capture.Build(tc.cfg)
			require.NoError(t, err)
			require.NoError(t, built.Validate())
			for _, rs := range built.RuleSets {
				for _, c := range rs.Chains {
					assert.True(t, allowed[c], "%s declares %s", rs.Family, c)
				}
				for _, r := range rs.Rules {
					assert.True(t, allowed[plan.TableChain{Table: r.Table, Chain: r.Chain}], "%s rule in %s/%s: %s", rs.Family, r.Table, r.Chain, r)
				}
			}
		})
	}
}
