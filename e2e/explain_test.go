package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/explain"
	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// explainConfigs are the configurations of the differential test: every
// configuration of the matrix, and a few flags the matrix does not vary
// (-c, -k), whose expectations come from explain alone.
var explainConfigs = append(slices.Clone(configs),
	config{name: "REDIRECT -c eth1", runs: [][]string{specArgs("REDIRECT", "-i", "*", "-c", "eth1")}},
	config{name: "TPROXY -c eth0", runs: [][]string{specArgs("TPROXY", "-i", "*", "-c", "eth0")}},
	config{name: "REDIRECT -k eth0", runs: [][]string{specArgs("REDIRECT", "-i", "*", "-k", "eth0")}},
)

// explainConns generates the connections of the differential test: the
// client to every port the pod serves or excludes, to a port nobody
// serves and to an address only a capture delivers; every pod user
// (the app, the proxy, the proxy's UID alone and GID alone, root) to the
// remote inside and outside the -i/-x CIDR, to localhost, to the pod's
// own addresses on both interfaces, on captured, excluded and tunnel
// ports. Forwarding connections add a second hop: the proxy's own
// upstream, from 127.0.0.6 (::6) when it calls the pod's address.
func explainConns() []conn {
	var out []conn
	for _, port := range []int{80, 8080, 15008, 15090, 15020, 9090} {
		out = append(out, conn{from: fromClient, to: "pod", port: port})
	}
	out = append(out,
		conn{from: fromClient, to: "vip", port: 80},
		conn{from: fromClient, to: "pod", port: 80, fwd: true},
		conn{from: fromClient, to: "pod", port: 15021, fwd: true},
	)
	type dst struct {
		key  string
		port int
	}
	for _, g := range []struct {
		from source
		to   []dst
	}{
		{fromApp, []dst{{"remote", 8080}, {"remote", 9090}, {"remote2", 8080}, {"lo", 80}, {"pod", 80}, {"podr", 8080}}},
		{fromProxy, []dst{{"remote", 8080}, {"remote2", 8080}, {"lo", 80}, {"lo", 15008}, {"pod", 80}, {"pod", 15008}, {"podr", 8080}}},
		{fromUID, []dst{{"remote", 8080}, {"pod", 80}, {"pod", 15008}}},
		{fromGID, []dst{{"remote", 8080}, {"pod", 80}, {"pod", 15008}}},
		{fromRoot, []dst{{"remote", 8080}, {"lo", 80}}},
	} {
		for _, d := range g.to {
			out = append(out, conn{from: g.from, to: d.key, port: d.port})
		}
	}
	return append(out,
		conn{from: fromApp, to: "remote", port: 8080, fwd: true},
		conn{from: fromApp, to: "remote2", port: 9090, fwd: true},
		conn{from: fromRoot, to: "pod", port: 8080, fwd: true},
	)
}

// hop is one TCP connection as explain is asked about it.
type hop struct {
	dir      explain.Direction
	to       string // address book key
	port     int
	src      string // address book key, "" for the kernel's choice
	as       user
	iface    string
	landedAt string // where it really landed: "proxy:P orig=K:P", "app:P", "remote:P" or "ERR"
}

// TestExplainDifferential makes every generated connection, in both
// families, under every configuration, and checks that what
// `istio-iptables explain` says about each hop, from the same flags as the
// install and from the rules read back from the pod (as --from-netns
// reads them; every tenth connection through the command itself), is
// where the connection really landed.
func TestExplainDifferential(t *testing.T) {
	requireRoot(t)
	conns := explainConns()
	var mu sync.Mutex
	total := 0
	t.Cleanup(func() {
		t.Logf("%d connections (%d configurations × %d × 2 families) compared", total, len(explainConfigs), len(conns))
	})
	for _, cfg := range explainConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			for _, args := range cfg.runs {
				install(t, b, args...)
			}
			// The flags of the last run describe the rules in place, unless
			// it removed them.
			// The rules really in the pod, read once as --from-netns reads them.
			read := readPod(t, b)
			var flags []string
			if n := len(cfg.runs); n > 0 && !slices.Contains(cfg.runs[n-1], "clean") && !slices.Contains(cfg.runs[n-1], "--cleanup-only") {
				flags = cfg.runs[n-1]
			}
			type job struct {
				f family
				c conn
			}
			var jobs []job
			for _, f := range families {
				for _, c := range conns {
					jobs = append(jobs, job{f, c})
				}
			}
			rows := make([]explainRow, len(jobs))
			var wg sync.WaitGroup
			next := make(chan int)
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						// Every tenth connection also asks the command with --from-netns.
						rows[i] = explainOne(b, flags, read, i%10 == 0, jobs[i].c, jobs[i].f)
					}
				}()
			}
			for i := range jobs {
				next <- i
			}
			close(next)
			wg.Wait()
			mu.Lock()
			total += len(rows)
			mu.Unlock()
			assertExplained(t, cfg, rows)
		})
	}
}

type explainRow struct {
	family family
	conn   conn
	landed string
	// per hop: what the real connection did and what each source said
	hops []explainedHop
}

type explainedHop struct {
	hop
	fromFlags, fromNetns string // the landing each explain predicts
	err                  string
}

func (h explainedHop) agrees(withFlags bool) bool {
	if nativeNft() && withFlags {
		// The native backend's inet table is invisible to *-save: the
		// rules read back must make explain say unknown, never a guess;
		// the plan explained from the flags must still match.
		return h.err == "" && h.fromFlags == h.landedAt &&
			strings.HasPrefix(h.fromNetns, "unknown") && strings.Contains(h.fromNetns, "inet istio-iptables")
	}
	return h.err == "" && h.fromNetns == h.landedAt && (!withFlags || h.fromFlags == h.landedAt)
}

// podRules is what --from-netns reads: each family's rules and the
// pod's addresses.
type podRules struct {
	rules map[family]*explain.Rules
	local []netip.Addr
}

// readPod reads the pod's rules and addresses with the functions the
// command's --from-netns uses.
func readPod(t *testing.T, b *bed) podRules {
	t.Helper()
	r := podRules{rules: map[family]*explain.Rules{}}
	for _, f := range families {
		text, hidden, err := iptables.ReadRules(b.podPath(), plan.Family(f))
		require.NoError(t, err)
		saved, err := plan.ParseSave(text)
		require.NoError(t, err)
		r.rules[f] = explain.FromSaved(plan.Family(f), saved)
		r.rules[f].Hidden = hidden
	}
	var err error
	r.local, err = iptables.LocalAddrs(b.podPath())
	require.NoError(t, err)
	return r
}

// explainOne makes connection c and asks explain about each of its hops:
// the command from the capture flags (flags nil: none, the rules are
// gone), the rules read back from the pod in process and, with cli, the
// command with --from-netns, which must say the same.
func explainOne(b *bed, flags []string, read podRules, cli bool, c conn, f family) explainRow {
	r := explainRow{family: f, conn: c, landed: land(b, c, f)}
	hops := strings.Split(r.landed, " > ")
	first := hop{to: c.to, port: c.port, as: c.from.as, landedAt: landing(hops[0])}
	if c.from.name == "client" {
		first.dir, first.src = explain.Inbound, "client"
	} else {
		first.dir = explain.Outbound
	}
	first.iface = ifaceTo(first)
	todo := []hop{first}
	if len(hops) > 1 {
		// The proxy forwarded to the original destination, as itself.
		orig := strings.TrimPrefix(strings.Fields(hops[0])[1], "orig=")
		key, port, _ := strings.Cut(orig, ":")
		p, _ := strconv.Atoi(port)
		second := hop{dir: explain.Outbound, to: key, port: p, as: proxyUser, landedAt: landing(hops[1])}
		if key == "pod" || key == "podr" {
			second.src = "pass"
		}
		second.iface = ifaceTo(second)
		todo = append(todo, second)
	}
	for _, h := range todo {
		eh := explainedHop{hop: h}
		var errs []string
		if flags != nil {
			res, err := runExplainCLI(b, f, h, flags)
			eh.fromFlags = predicted(res, h)
			if err != nil {
				errs = append(errs, err.Error())
			}
		}
		p := h.packet(f)
		p.Local = read.local
		res := explain.Explain(read.rules[f], p)
		eh.fromNetns = predicted(res, h)
		if cli {
			got, err := runExplainCLI(b, f, h, nil)
			switch {
			case err != nil:
				errs = append(errs, err.Error())
			case !reflect.DeepEqual(got, res):
				errs = append(errs, fmt.Sprintf("--from-netns said %+v, the same rules in process %+v", got, res))
			}
		}
		eh.err = strings.Join(errs, "; ")
		r.hops = append(r.hops, eh)
	}
	return r
}

// packet is the hop as the command's flags describe it.
func (h hop) packet(f family) explain.Packet {
	p := explain.Packet{Direction: h.dir, Proto: "tcp", Iface: h.iface,
		Dst: netip.AddrPortFrom(netip.MustParseAddr(addrs[h.to][f]), uint16(h.port))}
	if h.src != "" {
		p.Src = netip.MustParseAddr(addrs[h.src][f])
	}
	if h.dir == explain.Outbound {
		uid, gid := h.as.uid, h.as.gid
		p.UID, p.GID = &uid, &gid
	}
	return p
}

// ifaceTo is the pod's interface a hop crosses: eth1 towards the remote.
func ifaceTo(h hop) string {
	if h.dir == explain.Outbound && strings.HasPrefix(h.to, "remote") {
		return "eth1"
	}
	return "eth0"
}

// runExplainCLI runs `istio-iptables explain` about h: from the capture
// flags (with --netns, as the install ran, and --local for the pod's
// addresses) or, with flags nil, --from-netns.
func runExplainCLI(b *bed, f family, h hop, flags []string) (explain.Result, error) {
	args := []string{"explain"}
	if flags != nil {
		args = append(args, "--netns", b.podPath())
		args = append(args, flags...)
		args = append(args, "--local", strings.Join([]string{addrs["pod"][ipv4], addrs["podr"][ipv4], addrs["pod"][ipv6], addrs["podr"][ipv6]}, ","))
	} else {
		args = append(args, "--from-netns", b.podPath())
	}
	args = append(args, "--direction", string(h.dir),
		"--dst", net.JoinHostPort(addrs[h.to][f], strconv.Itoa(h.port)),
		"--iface", h.iface, "--output", "json")
	if h.src != "" {
		args = append(args, "--src", addrs[h.src][f])
	}
	if h.dir == explain.Outbound {
		args = append(args, "--uid", fmt.Sprint(h.as.uid), "--gid", fmt.Sprint(h.as.gid))
	}
	cmd := exec.Command(toolBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin", "XTABLES_LOCKFILE=" + b.lockFile}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return explain.Result{}, fmt.Errorf("%s: %v: %s", quote(cmd.Args), err, stderr.String())
	}
	var res explain.Result
	if err := json.Unmarshal(out, &res); err != nil {
		return explain.Result{}, fmt.Errorf("%s: %v: %s", quote(cmd.Args), err, out)
	}
	return res, nil
}

// predicted is where a verdict says the hop lands, in landing's terms.
func predicted(r explain.Result, h hop) string {
	switch r.Verdict {
	case explain.Redirect, explain.TProxy:
		return fmt.Sprintf("proxy:%d orig=%s:%d", r.Port, h.to, h.port)
	case explain.Drop:
		return "ERR"
	case explain.Direct:
		serves := map[string]string{"pod": appPorts, "podr": appPorts, "lo": appPorts, "remote": remotePorts, "remote2": remotePorts}
		who := map[string]string{"pod": "app", "podr": "app", "lo": "app", "remote": "remote", "remote2": "remote2"}
		if ports, ok := serves[h.to]; ok && slices.Contains(strings.Split(ports, ","), strconv.Itoa(h.port)) {
			return fmt.Sprintf("%s:%d", who[h.to], h.port)
		}
		return "ERR"
	}
	return fmt.Sprintf("%s: %s", r.Verdict, r.Reason)
}

// landing reduces one rendered hop to what a verdict predicts: the proxy's
// listener and original destination, the server and port, or ERR.
func landing(hop string) string {
	f := strings.Fields(hop)
	switch {
	case len(f) == 0 || f[0] == "ERR" || f[0] == "error":
		return "ERR"
	case strings.HasPrefix(f[0], "proxy:") && len(f) > 1:
		return f[0] + " " + f[1]
	}
	return f[0]
}

func assertExplained(t *testing.T, cfg config, rows []explainRow) {
	t.Helper()
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tfamily\tconnection\thop\tlanded\texplain (flags)\texplain (--from-netns)")
	withFlags := len(cfg.runs) > 0
	if n := len(cfg.runs); n > 0 && (slices.Contains(cfg.runs[n-1], "clean") || slices.Contains(cfg.runs[n-1], "--cleanup-only")) {
		withFlags = false
	}
	failed := 0
	for _, r := range rows {
		for i, h := range r.hops {
			mark := ""
			if !h.agrees(withFlags) {
				mark = "✗"
				failed++
			}
			flags := h.fromFlags
			if !withFlags {
				flags = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d %s→%s:%d\t%s\t%s\t%s %s\n", mark, r.family, r.conn.name(), i+1, h.as.name, h.to, h.port, h.landedAt, flags, h.fromNetns, h.err)
		}
	}
	tw.Flush()
	if failed == 0 && testing.Verbose() {
		t.Logf("explain agrees with every connection:\n%s", sb.String())
	}
	var runs []string
	for _, args := range cfg.runs {
		runs = append(runs, "istio-iptables "+quote(args))
	}
	assert.Zero(t, failed, "%d hops explained wrongly after\n  %s\n%s", failed, strings.Join(runs, "\n  "), sb.String())
	require.NotEmpty(t, rows)
}

// TestExplainNativeNftables: rules written as a native nftables table are
// invisible to *-save, so --from-netns must answer unknown, never direct.
func TestExplainNativeNftables(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	install(t, b, append(slices.Clone(redirect), "--native-nftables")...)
	for _, f := range families {
		h := hop{dir: explain.Outbound, to: "remote", port: 8080, as: appUser, iface: "eth1"}
		res, err := runExplainCLI(b, f, h, nil)
		require.NoError(t, err)
		assert.Equal(t, explain.Unknown, res.Verdict, "%s: %+v", f, res)
		assert.Contains(t, res.Reason, "inet istio-iptables")
		assert.Equal(t, "proxy:15001 orig=remote:8080", landing(land(b, conn{from: fromApp, to: "remote", port: 8080}, f)), "%s: the native table captures it", f)
	}
}
