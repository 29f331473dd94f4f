// Command istio-iptables-bench measures istio-iptables against the floor:
// one bare iptables-nft-restore --noflush of the same rules. Every figure
// is the median of -runs runs, each in a fresh network namespace that the
// bench creates and deletes; every process is started the way kubelet
// starts an initContainer, already inside the pod's namespace (forked from
// an OS thread locked in it), so no `ip netns exec` cost is counted. It
// needs root and the iptables binaries; it never touches the namespace it
// runs in (except the dry run, which writes nothing).
//
// Usage: istio-iptables-bench -bin bin/istio-iptables [-runs 15]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netns"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/plan"
)

var (
	bin  = flag.String("bin", "bin/istio-iptables", "istio-iptables binary to measure")
	runs = flag.Int("runs", 15, "runs per figure (the median is printed)")
)

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "istio-iptables-bench needs root: it creates network namespaces")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fail(err)
	}
	*bin = abs
	lock := filepath.Join(os.TempDir(), fmt.Sprintf("ii-bench-%d.lock", os.Getpid()))
	os.Setenv("XTABLES_LOCKFILE", lock)
	defer os.Remove(lock)
	b := &bench{}
	b.run()
}

func fail(err error) {
	for _, n := range slices.Clone(live) {
		n.delete()
	}
	fmt.Fprintln(os.Stderr, "istio-iptables-bench:", err)
	os.Exit(1)
}

type bench struct {
	seq int
}

// ns is a fresh namespace with lo up and, for dual-stack, a dummy
// veth carrying a global IPv6 address (so --ipv6=auto turns IPv6 on).
type ns struct {
	name string
	path string
}

func (b *bench) newNS(dual bool) ns {
	b.seq++
	n := ns{name: fmt.Sprintf("ii-bench-%d-%d", os.Getpid(), b.seq)}
	n.path = "/var/run/netns/" + n.name
	cmds := [][]string{{"netns", "add", n.name}, {"-n", n.name, "link", "set", "lo", "up"}}
	if dual {
		cmds = append(cmds, []string{"-n", n.name, "link", "add", "d0", "type", "veth", "peer", "name", "d1"},
			[]string{"-n", n.name, "link", "set", "d0", "up"},
			[]string{"-n", n.name, "addr", "add", "fd00:66::1/64", "dev", "d0", "nodad"},
			[]string{"-n", n.name, "addr", "add", "10.66.0.1/24", "dev", "d0"})
	}
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			n.delete()
			fail(fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, out))
		}
	}
	live = append(live, n)
	return n
}

// live are the namespaces not deleted yet, so fail can remove them.
var live []ns

func (n ns) delete() {
	exec.Command("ip", "netns", "del", n.name).Run()
	live = slices.DeleteFunc(live, func(m ns) bool { return m == n })
}

// startIn runs argv with stdin inside the namespace, forked from a locked
// thread there, and returns its wall time from start to exit.
func startIn(n ns, argv []string, stdin []byte, env []string) (time.Duration, error) {
	type result struct {
		d   time.Duration
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(n.name)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			ch <- result{err: err}
			return
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		cmd.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err = cmd.Run()
		d := time.Since(start)
		if err != nil {
			err = fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, stderr.String())
		}
		if serr := netns.Set(orig); serr != nil {
			ch <- result{err: serr}
			return // the locked thread is discarded
		}
		runtime.UnlockOSThread()
		ch <- result{d, err}
	}()
	r := <-ch
	return r.d, r.err
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

// measure repeats one timed step, each time in a fresh namespace prepared
// by setup (untimed).
func (b *bench) measure(dual bool, setup func(ns), step func(ns) (time.Duration, error)) time.Duration {
	var ds []time.Duration
	for range *runs {
		n := b.newNS(dual)
		if setup != nil {
			setup(n)
		}
		d, err := step(n)
		n.delete()
		if err != nil {
			fail(err)
		}
		ds = append(ds, d)
	}
	return median(ds)
}

func (b *bench) tool(n ns, args ...string) (time.Duration, error) {
	return startIn(n, append([]string{*bin}, args...), nil, nil)
}

// restoreTexts is the dry-run text of args split per family.
func restoreTexts(args []string) (map[string]string, error) {
	out, err := exec.Command(*bin, append([]string{"-n"}, args...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("dry run %v: %w", args, err)
	}
	texts := map[string]string{}
	fam := ""
	for _, line := range strings.SplitAfter(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "# ipv"):
			fam = strings.TrimSpace(strings.TrimPrefix(line, "# "))
		case strings.HasPrefix(line, "ip "):
			fam = ""
		case fam != "":
			texts[fam] += line
		}
	}
	return texts, nil
}

// floor runs the bare restores of the same text, as the tool would.
func (b *bench) floor(n ns, texts map[string]string) (time.Duration, error) {
	var total time.Duration
	for _, f := range []string{"ipv4", "ipv6"} {
		t, ok := texts[f]
		if !ok {
			continue
		}
		name := "/usr/sbin/iptables-nft-restore"
		if f == "ipv6" {
			name = "/usr/sbin/ip6tables-nft-restore"
		}
		d, err := startIn(n, []string{name, "--noflush"}, []byte(t), nil)
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// processes counts the iptables (and nft, ip) processes one apply starts, through a PATH
// of shims that log their name and exec the real binary.
func processes(b *bench, n ns, args []string) (int, []string) {
	dir, err := os.MkdirTemp("", "ii-bench-shim")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	logf := filepath.Join(dir, "log")
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, fl := range []string{"nft", "legacy"} {
			for _, tool := range []string{"save", "restore"} {
				name := fmt.Sprintf("%s-%s-%s", fam, fl, tool)
				shim := fmt.Sprintf("#!/bin/sh\necho %s >> %s\nexec /usr/sbin/%s \"$@\"\n", name, logf, name)
				if err := os.WriteFile(filepath.Join(dir, name), []byte(shim), 0o755); err != nil {
					fail(err)
				}
			}
		}
	}
	for _, name := range []string{"nft", "ip"} {
		shim := fmt.Sprintf("#!/bin/sh\necho %s >> %s\nexec /usr/sbin/%s \"$@\"\n", name, logf, name)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(shim), 0o755); err != nil {
			fail(err)
		}
	}
	if _, err := startIn(n, append([]string{*bin}, args...), nil, []string{"PATH=" + dir}); err != nil {
		fail(err)
	}
	data, _ := os.ReadFile(logf)
	names := strings.Fields(string(data))
	return len(names), names
}

// worstCase is the most rules a packet can traverse in the plan: the
// longest path of rules from a builtin chain through the jumps.
func worstCase(p plan.Plan) int {
	worst := 0
	for _, rs := range p.RuleSets {
		var walk func(t plan.Table, c plan.Chain, depth int) int
		walk = func(t plan.Table, c plan.Chain, depth int) int {
			rules := rs.ChainRules(t, c)
			best := len(rules)
			if depth > 8 {
				return best
			}
			for i, r := range rules {
				if tgt := plan.Chain(r.Target()); tgt.Owned() {
					best = max(best, i+1+walk(t, tgt, depth+1))
				}
			}
			return best
		}
		for _, tc := range rs.UsedChains() {
			if !tc.Chain.Owned() {
				worst = max(worst, walk(tc.Table, tc.Chain, 0))
			}
		}
	}
	return worst
}

func planOf(args []string) plan.Plan {
	c := capture.DefaultConfig()
	fs := map[string]*string{"-p": &c.ProxyPort, "-z": &c.InboundCapturePort, "-u": &c.ProxyUID, "-m": &c.InboundInterceptionMode,
		"-i": &c.OutboundIPRangesInclude, "-x": &c.OutboundIPRangesExclude, "-b": &c.InboundPortsInclude, "-d": &c.InboundPortsExclude,
		"--ipv6": &c.IPv6}
	for i := 0; i < len(args); i++ {
		name, value, inline := strings.Cut(args[i], "=")
		if !inline && i+1 < len(args) {
			i++
			value = args[i]
		}
		if f, ok := fs[name]; ok {
			*f = value
		}
	}
	p, err := capture.Build(c)
	if err != nil {
		fail(err)
	}
	return p
}

func (b *bench) run() {
	redirect := []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"}
	tproxy := slices.Clone(redirect)
	tproxy[7] = "TPROXY"
	classic := []string{"-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "80,", "-d", ""}
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Printf("istio-iptables-bench: median of %d runs, each in a fresh namespace; times in ms\n\n", *runs)
	fmt.Fprintln(w, "case\tapply\tfloor\tapply/floor\tprocesses\t")
	for _, c := range []struct {
		name string
		args []string
	}{{"REDIRECT default", redirect}, {"TPROXY default", tproxy}, {"classic call", classic}} {
		for _, dual := range []bool{false, true} {
			args := append(slices.Clone(c.args), "--ipv6=auto")
			label := c.name + ", IPv4"
			if dual {
				label = c.name + ", dual-stack"
			}
			texts, err := restoreTexts(append(slices.Clone(c.args), "--ipv6="+fmt.Sprint(dual)))
			if err != nil {
				fail(err)
			}
			apply := b.measure(dual, nil, func(n ns) (time.Duration, error) { return b.tool(n, args...) })
			floor := b.measure(dual, nil, func(n ns) (time.Duration, error) { return b.floor(n, texts) })
			n := b.newNS(dual)
			count, _ := processes(b, n, args)
			n.delete()
			fmt.Fprintf(w, "%s\t%s\t%s\t%.2f\t%d\t\n", label, ms(apply), ms(floor), float64(apply)/float64(floor), count)
		}
	}
	w.Flush()

	fmt.Println()
	fmt.Fprintln(w, "step (REDIRECT default, IPv4)\ttime\tprocesses\t")
	applyOnce := func(args []string) func(ns) {
		return func(n ns) {
			if _, err := b.tool(n, args...); err != nil {
				fail(err)
			}
		}
	}
	v4 := append(slices.Clone(redirect), "--ipv6=false")
	noop := b.measure(false, applyOnce(v4), func(n ns) (time.Duration, error) { return b.tool(n, v4...) })
	changed := append(slices.Clone(redirect), "--ipv6=false")
	changed[13] = "80,8080"
	change := b.measure(false, applyOnce(v4), func(n ns) (time.Duration, error) { return b.tool(n, changed...) })
	cleanup := b.measure(false, applyOnce(v4), func(n ns) (time.Duration, error) { return b.tool(n, "--cleanup-only") })
	save := b.measure(false, applyOnce(v4), func(n ns) (time.Duration, error) {
		return startIn(n, []string{"/usr/sbin/iptables-nft-save"}, nil, nil)
	})
	var dry []time.Duration
	for range *runs {
		start := time.Now()
		if err := exec.Command(*bin, append([]string{"-n"}, v4...)...).Run(); err != nil {
			fail(err)
		}
		dry = append(dry, time.Since(start))
	}
	count := func(setupArgs, args []string) int {
		n := b.newNS(false)
		defer n.delete()
		if setupArgs != nil {
			applyOnce(setupArgs)(n)
		}
		c, _ := processes(b, n, args)
		return c
	}
	fmt.Fprintf(w, "no-op re-run\t%s\t%d\t\n", ms(noop), count(v4, v4))
	fmt.Fprintf(w, "re-run, changed flags (-b '*' -> -b 80,8080)\t%s\t%d\t\n", ms(change), count(v4, changed))
	fmt.Fprintf(w, "cleanup\t%s\t%d\t\n", ms(cleanup), count(v4, []string{"--cleanup-only"}))
	fmt.Fprintf(w, "one iptables-nft-save (reference for the no-op)\t%s\t1\t\n", ms(save))
	fmt.Fprintf(w, "dry run (whole process, no namespace)\t%s\t0\t\n", ms(median(dry)))
	w.Flush()

	fmt.Println()
	fmt.Fprintln(w, "scale (IPv4)\tapply\tfloor\tapply/floor\trules\tworst-case rules per packet\t")
	for _, sc := range []struct {
		flag string
		n    int
	}{{"-b", 10}, {"-b", 100}, {"-b", 1000}, {"-x", 10}, {"-x", 100}, {"-x", 1000}} {
		var items []string
		for i := range sc.n {
			if sc.flag == "-b" {
				items = append(items, fmt.Sprint(20000+i))
			} else {
				items = append(items, fmt.Sprintf("10.%d.%d.0/24", 100+i/250, i%250))
			}
		}
		args := []string{"-i", "*", "--ipv6=false"}
		if sc.flag == "-b" {
			args = append(args, "-b", strings.Join(items, ","))
		} else {
			args = append(args, "-b", "*", "-x", strings.Join(items, ","))
		}
		texts, err := restoreTexts(args)
		if err != nil {
			fail(err)
		}
		apply := b.measure(false, nil, func(n ns) (time.Duration, error) { return b.tool(n, args...) })
		floor := b.measure(false, nil, func(n ns) (time.Duration, error) { return b.floor(n, texts) })
		p := planOf(args)
		rules := 0
		for _, rs := range p.RuleSets {
			rules += len(rs.Rules)
		}
		fmt.Fprintf(w, "%s with %d\t%s\t%s\t%.2f\t%d\t%d\t\n", sc.flag, sc.n, ms(apply), ms(floor), float64(apply)/float64(floor), rules, worstCase(p))
	}
	w.Flush()
	b.runNative(redirect, tproxy, classic)
}
