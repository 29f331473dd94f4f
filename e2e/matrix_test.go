package e2e

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// source is where a connection starts: a namespace and a user.
type source struct {
	name string
	ns   func(*bed) string
	as   user
}

var (
	fromClient = source{"client", func(b *bed) string { return b.client }, rootUser}
	fromApp    = source{"app", func(b *bed) string { return b.pod }, appUser}
	fromGID    = source{"gid1337", func(b *bed) string { return b.pod }, gidUser}
	fromProxy  = source{"proxy", func(b *bed) string { return b.pod }, proxyUser}
	fromUID    = source{"uid1337", func(b *bed) string { return b.pod }, uidUser}
	fromRoot   = source{"root", func(b *bed) string { return b.pod }, rootUser}
)

// conn is one connection of the matrix and where it lands when nothing
// captures it. Landings read "<who>:<port> peer=<source address>", with
// "proxy:<listener> orig=<original destination>" for the proxy and " > " before
// the hop a forwarding proxy made; addresses are address book keys (bed_test.go).
type conn struct {
	from   source
	to     string // address book key
	port   int
	fwd    bool // ask the proxy to forward to the original destination
	src    bool // ask the proxy to forward from the client's address (gaps_test.go)
	direct string
	// direct6 is where it lands in IPv6, when that differs from direct.
	direct6 string
}

func (c conn) name() string {
	n := fmt.Sprintf("%s→%s:%d", c.from.name, c.to, c.port)
	if c.fwd {
		n += " fwd"
	}
	if c.src {
		n += " src"
	}
	return n
}

var conns = []conn{
	// Inbound, from the client namespace.
	{from: fromClient, to: "pod", port: 80, direct: "app:80 peer=client"},
	{from: fromClient, to: "pod", port: 8080, direct: "app:8080 peer=client"},
	{from: fromClient, to: "pod", port: 15008, direct: "app:15008 peer=client"},
	{from: fromClient, to: "pod", port: 15090, direct: "app:15090 peer=client"},
	{from: fromClient, to: "pod", port: 15021, direct: "app:15021 peer=client"},
	{from: fromClient, to: "pod", port: 15020, direct: "app:15020 peer=client"},
	{from: fromClient, to: "pod", port: 80, fwd: true, direct: "app:80 peer=client"},
	// An address the pod does not own but is routed to it (as behind -k
	// interfaces): only a capture delivers it, TPROXY through its policy
	// route. The pod does not forward: IPv4 drops it silently, IPv6 answers
	// with an ICMPv6 unreachable.
	{from: fromClient, to: "vip", port: 80, direct: "ERR timeout", direct6: "ERR unreachable"},
	// Outbound, from the app (UID 1000).
	{from: fromApp, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
	{from: fromApp, to: "remote", port: 9090, direct: "remote:9090 peer=podr"},
	{from: fromApp, to: "remote2", port: 8080, direct: "remote2:8080 peer=podr"},
	{from: fromApp, to: "remote", port: 8080, fwd: true, direct: "remote:8080 peer=podr"},
	{from: fromApp, to: "lo", port: 80, direct: "app:80 peer=lo"},
	{from: fromApp, to: "pod", port: 80, direct: "app:80 peer=pod"},
	// Root is never exempt; the proxy's UID and its GID are, each alone.
	{from: fromRoot, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
	{from: fromUID, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
	{from: fromUID, to: "remote2", port: 8080, direct: "remote2:8080 peer=podr"},
	{from: fromUID, to: "pod", port: 15008, direct: "app:15008 peer=pod"},
	{from: fromGID, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
	{from: fromGID, to: "remote2", port: 8080, direct: "remote2:8080 peer=podr"},
	{from: fromGID, to: "pod", port: 80, direct: "app:80 peer=pod"},
	// The proxy's own connections (UID 1337).
	{from: fromProxy, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
	{from: fromProxy, to: "pod", port: 80, direct: "app:80 peer=pod"},
	{from: fromProxy, to: "pod", port: 15008, direct: "app:15008 peer=pod"},
	{from: fromProxy, to: "lo", port: 80, direct: "app:80 peer=lo"},
}

// Flags of the configurations: the docs/contract.md §3.2 call in either mode, with the
// outbound flags given separately.
var (
	redirect = specArgs("REDIRECT", "-i", "*", "-x", "")
	tproxy   = specArgs("TPROXY", "-i", "*", "-x", "")
	remote2  = remote2Nets[ipv4] + "," + remote2Nets[ipv6]
	classic  = []string{"-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "80,", "-d", ""}
	onlyIPv4 = []family{ipv4}
)

func specArgs(mode string, more ...string) []string {
	return append([]string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", mode, "-b", "*", "-d", "15090,15021,15020"}, more...)
}

// b80Args captures inbound port 80 only.
func b80Args(mode string, more ...string) []string {
	return append([]string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", mode, "-i", "*", "-b", "80"}, more...)
}

// Where connections land under the docs/contract.md §3.2 rules, for `-b '*'`.
var (
	inboundCaptured = map[string]string{
		"client→pod:80":     "proxy:15006 orig=pod:80 peer=client",
		"client→pod:8080":   "proxy:15006 orig=pod:8080 peer=client",
		"client→pod:80 fwd": "proxy:15006 orig=pod:80 peer=client > app:80 peer=pass",
		"client→vip:80":     "proxy:15006 orig=vip:80 peer=client",
		"proxy→pod:80":      "proxy:15006 orig=pod:80 peer=pod",
	}
	outboundCaptured = map[string]string{
		"app→remote:8080":     "proxy:15001 orig=remote:8080 peer=podr",
		"app→remote:9090":     "proxy:15001 orig=remote:9090 peer=podr",
		"app→remote2:8080":    "proxy:15001 orig=remote2:8080 peer=podr",
		"app→remote:8080 fwd": "proxy:15001 orig=remote:8080 peer=podr > remote:8080 peer=podr",
		"root→remote:8080":    "proxy:15001 orig=remote:8080 peer=podr",
	}
	redirectCaptured = merge(inboundCaptured, outboundCaptured)
	// TPROXY (docs/contract.md §3.3) differs where mangle decides alone: its
	// ISTIO_INBOUND has no tunnel-port RETURN (only nat has one), and the
	// MARK 1338 of the proxy's group sends pod-IP calls over lo to TPROXY.
	tproxyCaptured = merge(redirectCaptured, map[string]string{
		"client→pod:15008":  "proxy:15006 orig=pod:15008 peer=client", // no tunnel-port RETURN in mangle
		"proxy→pod:15008":   "proxy:15006 orig=pod:15008 peer=pod",    // MARK 1338, then TPROXY
		"uid1337→pod:15008": "proxy:15006 orig=pod:15008 peer=pod",    // MARK 1338 by --uid-owner, then TPROXY
		"gid1337→pod:80":    "proxy:15006 orig=pod:80 peer=pod",       // MARK 1338 by --gid-owner, then TPROXY
	})
)

// config is one column of the matrix: the istio-iptables runs made on a fresh
// bed, in order, and the connections that then land somewhere other than
// directly (in the families listed; all others land directly).
type config struct {
	name     string
	runs     [][]string
	captured map[string]string
	families []family // where captured applies; nil: both
	// restores says the runs end with a cleanup that must leave the kernel
	// state exactly as before the first run.
	restores bool
}

var configs = []config{
	{name: "no rules", captured: map[string]string{}},
	{name: "REDIRECT", runs: [][]string{redirect}, captured: redirectCaptured},
	{name: "TPROXY", runs: [][]string{tproxy}, captured: tproxyCaptured},
	{
		name: "REDIRECT -b 80", runs: [][]string{b80Args("REDIRECT")},
		captured: merge(outboundCaptured, pick(inboundCaptured, "client→pod:80", "client→pod:80 fwd", "client→vip:80", "proxy→pod:80")),
	},
	{
		name: "TPROXY -b 80 --ipv6=true", runs: [][]string{b80Args("TPROXY", "--ipv6=true")},
		captured: merge(outboundCaptured, pick(tproxyCaptured, "client→pod:80", "client→pod:80 fwd", "client→vip:80", "proxy→pod:80", "gid1337→pod:80")),
	},
	{
		name: "-i remote2 only", runs: [][]string{specArgs("REDIRECT", "-i", remote2)},
		captured: merge(inboundCaptured, pick(outboundCaptured, "app→remote2:8080")),
	},
	{
		name: "-x remote2 -o 9090", runs: [][]string{specArgs("REDIRECT", "-i", "*", "-x", remote2, "-o", "9090")},
		captured: merge(inboundCaptured, omit(outboundCaptured, "app→remote2:8080", "app→remote:9090")),
	},
	{
		name: "-i '' -q 8080", runs: [][]string{specArgs("REDIRECT", "-i", "", "-q", "8080")},
		captured: merge(inboundCaptured, omit(outboundCaptured, "app→remote:9090")),
	},
	{
		// docs/contract.md §3.1: with -b a port list and no -z, inbound goes to the -p port.
		name: "classic istio-init", runs: [][]string{classic},
		captured: merge(outboundCaptured, map[string]string{
			"client→pod:80":     "proxy:15001 orig=pod:80 peer=client",
			"client→pod:80 fwd": "proxy:15001 orig=pod:80 peer=client > app:80 peer=pass",
			"client→vip:80":     "proxy:15001 orig=vip:80 peer=client",
			"proxy→pod:80":      "proxy:15001 orig=pod:80 peer=pod",
		}),
	},
	{name: "REDIRECT --ipv6=false", runs: [][]string{specArgs("REDIRECT", "-i", "*", "--ipv6=false")}, captured: redirectCaptured, families: onlyIPv4},
	{name: "REDIRECT twice", runs: [][]string{redirect, redirect}, captured: redirectCaptured},
	{name: "TPROXY then REDIRECT", runs: [][]string{tproxy, redirect}, captured: redirectCaptured},
	{name: "REDIRECT then TPROXY", runs: [][]string{redirect, tproxy}, captured: tproxyCaptured},
	{name: "REDIRECT then --cleanup-only", runs: [][]string{redirect, {"--cleanup-only"}}, captured: map[string]string{}, restores: true},
	{name: "TPROXY then clean", runs: [][]string{tproxy, {"clean"}}, captured: map[string]string{}, restores: true},
	{name: "classic then --cleanup-only", runs: [][]string{classic, {"--cleanup-only"}}, captured: map[string]string{}, restores: true},
}

// TestMatrix makes every connection of conns, in both families, under every
// configuration, and compares where each lands with the expectation.
func TestMatrix(t *testing.T) {
	requireRoot(t)
	names := map[string]bool{}
	for _, c := range conns {
		require.False(t, names[c.name()], "duplicate connection %s", c.name())
		names[c.name()] = true
	}
	for _, cfg := range configs {
		for n := range cfg.captured {
			require.True(t, names[n], "config %q expects unknown connection %q", cfg.name, n)
		}
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			before := kernelState(t, b)
			for _, args := range cfg.runs {
				install(t, b, args...)
			}
			if cfg.restores {
				assert.Equal(t, before, kernelState(t, b), "kernel state after %s", cfg.name)
			}
			var rows []row
			for _, f := range families {
				for _, c := range conns {
					rows = append(rows, row{family: f, conn: c, want: cfg.want(c, f), got: land(b, c, f)})
				}
			}
			assertTable(t, cfg, rows)
		})
	}
}

// want is where c lands in family f under cfg.
func (cfg config) want(c conn, f family) string {
	if w, ok := cfg.captured[c.name()]; ok && (cfg.families == nil || slices.Contains(cfg.families, f)) {
		return w
	}
	if f == ipv6 && c.direct6 != "" {
		return c.direct6
	}
	return c.direct
}

// land makes connection c in family f and renders where it landed.
func land(b *bed, c conn, f family) string {
	send := "GET"
	if c.fwd {
		send = "FWD"
	}
	if c.src {
		send = "SRC"
	}
	addr := net.JoinHostPort(addrs[c.to][f], strconv.Itoa(c.port))
	reply, err := connect(c.from.ns(b), c.from.as, addr, send)
	if err != nil {
		return "ERR " + err.Error()
	}
	return render(reply)
}

type row struct {
	family    family
	conn      conn
	want, got string
}

// assertTable fails t with the whole table when any connection landed
// somewhere other than expected (and logs it anyway with -v).
func assertTable(t *testing.T, cfg config, rows []row) {
	t.Helper()
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tfamily\tconnection\twant\tgot")
	failed := 0
	for _, r := range rows {
		mark := ""
		if r.want != r.got {
			mark = "✗"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, r.family, r.conn.name(), r.want, r.got)
	}
	tw.Flush()
	var runs []string
	for _, args := range cfg.runs {
		runs = append(runs, "istio-iptables "+quote(args))
	}
	if failed == 0 && testing.Verbose() {
		t.Logf("all %d connections landed as expected:\n%s", len(rows), sb.String())
	}
	assert.Zero(t, failed, "%d of %d connections landed elsewhere after\n  %s\n%s",
		failed, len(rows), strings.Join(runs, "\n  "), sb.String())
}

// render turns a raw reply into a landing: every hop's "key=value" fields,
// with addresses replaced by their address book keys.
func render(reply string) string {
	var hops []string
	for _, hop := range strings.Split(strings.TrimSpace(reply), " > ") {
		fields := strings.Fields(hop)
		if len(fields) == 0 || fields[0] == "error" {
			hops = append(hops, hop)
			continue
		}
		kv := map[string]string{}
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(f, "=")
			kv[k] = v
		}
		who, port := fields[0], kv["port"]
		switch who {
		case "proxy":
			hops = append(hops, fmt.Sprintf("proxy:%s orig=%s peer=%s", port, hostPort(kv["orig"]), host(kv["peer"])))
		case "app":
			hops = append(hops, fmt.Sprintf("app:%s peer=%s", port, host(kv["peer"])))
		default: // the remote, named by the address it was reached at
			hops = append(hops, fmt.Sprintf("%s:%s peer=%s", host(kv["local"]), port, host(kv["peer"])))
		}
	}
	return strings.Join(hops, " > ")
}

func host(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return name(h)
}

func hostPort(addr string) string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return name(h) + ":" + p
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func pick(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		v, ok := m[k]
		if !ok {
			panic("pick: no " + k)
		}
		out[k] = v
	}
	return out
}

func omit(m map[string]string, keys ...string) map[string]string {
	out := merge(m)
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			panic("omit: no " + k)
		}
		delete(out, k)
	}
	return out
}
