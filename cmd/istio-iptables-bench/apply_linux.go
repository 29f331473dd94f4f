//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/plan"
)

// The calls measured: Istio's injector defaults, REDIRECT and TPROXY.
var (
	redirect = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"}
	tproxy   = replaceArg(redirect, "-m", "TPROXY")
	// changed is redirect with another inbound port list: a re-run that
	// swaps rules.
	changed = replaceArg(redirect, "-b", "80,8080")
	native  = "--native-nftables"
)

func replaceArg(args []string, flag, value string) []string {
	out := slices.Clone(args)
	i := slices.Index(out, flag)
	out[i+1] = value
	return out
}

func with(args []string, more ...string) []string {
	return append(slices.Clone(args), more...)
}

// arm is one side of a paired row: optional untimed setup in the fresh
// namespace, then the timed run.
type arm struct {
	setup func(ns) error
	run   func(ns) (sample, error)
}

// pair runs the arms in turn, each in its own fresh namespace of kind,
// -runs times (A, F, A, F, ...), and returns each arm's samples.
func pair(kind nsKind, arms ...arm) ([][]sample, error) {
	out := make([][]sample, len(arms))
	for range *runs {
		for i, a := range arms {
			n, err := newNS(kind)
			if err != nil {
				return nil, err
			}
			if a.setup != nil {
				if err := a.setup(n); err != nil {
					n.delete()
					return nil, err
				}
			}
			s, err := a.run(n)
			n.delete()
			if err != nil {
				return nil, err
			}
			out[i] = append(out[i], s)
		}
	}
	return out, nil
}

func toolArm(setup, args []string) arm {
	a := arm{run: func(n ns) (sample, error) { return startIn(n, with([]string{*bin}, args...), nil, nil) }}
	if setup != nil {
		a.setup = func(n ns) error {
			_, err := startIn(n, with([]string{*bin}, setup...), nil, nil)
			return err
		}
	}
	return a
}

func floorArm(texts map[string]string) arm {
	return arm{run: func(n ns) (sample, error) { return floor(n, texts) }}
}

// floor runs the bare restores of the same text, one per family, as the
// tool's iptables backend would.
func floor(n ns, texts map[string]string) (sample, error) {
	var total sample
	for _, f := range []string{"ipv4", "ipv6"} {
		t, ok := texts[f]
		if !ok {
			continue
		}
		name := "/usr/sbin/iptables-nft-restore"
		if f == "ipv6" {
			name = "/usr/sbin/ip6tables-nft-restore"
		}
		s, err := startIn(n, []string{name, "--noflush"}, []byte(t), nil)
		if err != nil {
			return sample{}, err
		}
		total.wall += s.wall
		total.cpu += s.cpu
	}
	return total, nil
}

// restoreTexts is the dry-run text of args split per family.
func restoreTexts(args []string) (map[string]string, error) {
	out, err := exec.Command(*bin, with([]string{"-n"}, args...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("dry run %s: %w", shortArgv(args), err)
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
	if len(texts) == 0 {
		return nil, fmt.Errorf("dry run %s: no restore text in its output", shortArgv(args))
	}
	return texts, nil
}

// applyRow is one row of the apply table.
type applyRow struct {
	name, backend string
	kind          nsKind
	setup, args   []string   // the tool's untimed setup run and timed run
	inProcess     *plan.Plan // instead of args: the native executor in this process
	dryRun        bool       // instead of args: the dry run, in no namespace
	floorArgs     []string   // the fresh apply whose restore text is the floor
	target        string
	criteria      func(tool, floor medians) []criterion
}

func atMost(name string, figure, limit float64) criterion {
	return criterion{name: name, figure: figure, limit: limit}
}

// fresh is the targets of a fresh apply: its ratio to the floor, and for
// the native backend wall within 1.3× CPU.
func fresh(limit float64, wallCPU bool) (string, func(tool, floor medians) []criterion) {
	text := fmt.Sprintf("≤ %.1f× floor", limit)
	if wallCPU {
		text += ", wall ≤ 1.3× CPU"
	}
	return text, func(tool, floor medians) []criterion {
		cs := []criterion{atMost("ratio", ratio(tool.wall, floor.wall), limit)}
		if wallCPU {
			cs = append(cs, atMost("wall/CPU", ratio(tool.wall, tool.cpu), 1.3))
		}
		return cs
	}
}

func applyRows() []applyRow {
	v4 := with(redirect, "--ipv6=false")
	v4fixed := v4
	dualFixed := with(redirect, "--ipv6=true")
	auto := with(redirect, "--ipv6=auto")
	iptTarget, iptCriteria := fresh(1.5, false)
	natTarget, natCriteria := fresh(1.0, true)
	noopTarget, noopCriteria := fresh(0.5, false)
	p := planOf(v4)
	rows := []applyRow{
		{name: "REDIRECT default, IPv4", backend: "iptables (nft)", kind: nsIPv4, args: auto, floorArgs: v4fixed, target: iptTarget, criteria: iptCriteria},
		{name: "REDIRECT default, dual-stack", backend: "iptables (nft)", kind: nsDual, args: auto, floorArgs: dualFixed, target: iptTarget, criteria: iptCriteria},
		{name: "REDIRECT default, IPv4", backend: "native", kind: nsIPv4, args: with(auto, native), floorArgs: v4fixed, target: natTarget, criteria: natCriteria},
		{name: "REDIRECT default, dual-stack", backend: "native", kind: nsDual, args: with(auto, native), floorArgs: dualFixed, target: natTarget, criteria: natCriteria},
		{name: "no-op re-run, IPv4", backend: "iptables (nft)", kind: nsIPv4, setup: v4, args: v4, floorArgs: v4fixed, target: noopTarget, criteria: noopCriteria},
		{name: "no-op re-run, IPv4", backend: "native", kind: nsIPv4, setup: with(v4, native), args: with(v4, native), floorArgs: v4fixed, target: noopTarget, criteria: noopCriteria},
		{name: "re-run, changed flags (-b '*' → 80,8080), IPv4", backend: "iptables (nft)", kind: nsIPv4, setup: v4, args: with(changed, "--ipv6=false"), floorArgs: with(changed, "--ipv6=false")},
		{name: "re-run, changed flags (-b '*' → 80,8080), IPv4", backend: "native", kind: nsIPv4, setup: with(v4, native), args: with(changed, "--ipv6=false", native), floorArgs: with(changed, "--ipv6=false")},
		{name: "cleanup, IPv4", backend: "iptables (nft)", kind: nsIPv4, setup: v4, args: []string{"--cleanup-only"}, floorArgs: v4fixed},
		{name: "cleanup, IPv4", backend: "native", kind: nsIPv4, setup: with(v4, native), args: []string{"--cleanup-only", native}, floorArgs: v4fixed},
		{name: "TPROXY default, dual-stack", backend: "iptables (nft)", kind: nsDual, args: with(tproxy, "--ipv6=auto"), floorArgs: with(tproxy, "--ipv6=true")},
		{name: "TPROXY default, dual-stack", backend: "native", kind: nsDual, args: with(tproxy, "--ipv6=auto", native), floorArgs: with(tproxy, "--ipv6=true")},
		{name: "REDIRECT default, IPv4, in-process Apply", backend: "native", kind: nsIPv4, inProcess: &p, floorArgs: v4fixed},
		{name: "dry run (-n), no namespace", backend: "", kind: nsIPv4, dryRun: true, args: v4, floorArgs: v4fixed},
		{name: "iptables-nft-save of the applied rules", backend: "", kind: nsIPv4, setup: v4, floorArgs: v4fixed},
		// The least any run of this binary costs: start, parse, exit.
		{name: "istio-iptables --version (process start only)", backend: "", kind: nsIPv4, args: []string{"--version"}, floorArgs: v4fixed},
	}
	return rows
}

// applySection measures and prints the apply table.
func applySection(t *tally) {
	fmt.Println("### Apply")
	fmt.Println()
	var cells [][]string
	for _, r := range applyRows() {
		progress("apply: %s, %s", r.name, r.backend)
		texts, err := restoreTexts(r.floorArgs)
		if err != nil {
			fail(err)
		}
		var tool arm
		switch {
		case r.inProcess != nil:
			p := *r.inProcess
			tool = arm{run: func(n ns) (sample, error) { return nativeApply(n, p) }}
		case r.dryRun:
			args := r.args
			tool = arm{run: func(ns) (sample, error) { return dryRun(args) }}
		case r.args == nil:
			tool = toolArm(r.setup, nil)
			tool.run = func(n ns) (sample, error) {
				return startIn(n, []string{"/usr/sbin/iptables-nft-save"}, nil, nil)
			}
		default:
			tool = toolArm(r.setup, r.args)
		}
		ss, err := pair(r.kind, tool, floorArm(texts))
		if err != nil {
			fail(err)
		}
		tm, fm := medianOf(ss[0]), medianOf(ss[1])
		procs := "–"
		switch {
		case r.inProcess != nil || r.dryRun:
		case r.args == nil:
			procs = "1"
		default:
			n, err := newNS(r.kind)
			if err != nil {
				fail(err)
			}
			if r.setup != nil {
				if _, err := startIn(n, with([]string{*bin}, r.setup...), nil, nil); err != nil {
					n.delete()
					fail(err)
				}
			}
			c, err := processes(n, with([]string{*bin}, r.args...))
			n.delete()
			if err != nil {
				fail(err)
			}
			procs = fmt.Sprint(c)
		}
		cpu, wallCPU := "–", "–"
		if tm.cpu > 0 {
			cpu, wallCPU = ms(tm.cpu), fmt.Sprintf("%.2f", ratio(tm.wall, tm.cpu))
		}
		var result string
		if r.criteria != nil {
			result = t.judge(r.criteria(tm, fm)...)
		}
		cells = append(cells, []string{r.name, r.backend, ms(tm.wall), ms(fm.wall), fmt.Sprintf("%.2f", ratio(tm.wall, fm.wall)),
			cpu, wallCPU, procs, r.target, result})
	}
	markdown(os.Stdout, "llrrrrrrll", []string{"case", "backend", "wall", "floor", "ratio", "CPU", "wall/CPU", "processes", "target", "result"}, cells)
}

// dryRun times the whole dry-run process in the bench's own namespace: it
// prints the plan and reads and writes nothing there.
func dryRun(args []string) (sample, error) {
	cmd := exec.Command(*bin, with([]string{"-n"}, args...)...)
	start := time.Now()
	err := cmd.Run()
	s := sample{wall: time.Since(start)}
	if cmd.ProcessState != nil {
		s.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return s, fmt.Errorf("dry run %s: %w", shortArgv(args), err)
	}
	return s, nil
}

// scaleSection measures fresh IPv4 applies with long lists on both
// backends against the floor, with the most rules a packet can meet.
func scaleSection() {
	fmt.Println()
	fmt.Println("### Scale (fresh apply, IPv4)")
	fmt.Println()
	var cells [][]string
	for _, sc := range []struct {
		flag string
		n    int
	}{{"-b", 1000}, {"-x", 1000}, {"-d", 1000}} {
		progress("scale: %s with %d", sc.flag, sc.n)
		var items []string
		for i := range sc.n {
			if sc.flag == "-x" {
				items = append(items, fmt.Sprintf("10.%d.%d.0/24", 100+i/250, i%250))
			} else {
				items = append(items, fmt.Sprint(20000+i))
			}
		}
		args := []string{"-i", "*", "--ipv6=false"}
		if sc.flag == "-b" {
			args = append(args, "-b", strings.Join(items, ","))
		} else {
			args = append(args, "-b", "*", sc.flag, strings.Join(items, ","))
		}
		texts, err := restoreTexts(args)
		if err != nil {
			fail(err)
		}
		ss, err := pair(nsIPv4, toolArm(nil, args), toolArm(nil, with(args, native)), floorArm(texts))
		if err != nil {
			fail(err)
		}
		ipt, nat, fl := medianOf(ss[0]), medianOf(ss[1]), medianOf(ss[2])
		p := planOf(args)
		rules := 0
		for _, rs := range p.RuleSets {
			rules += len(rs.Rules)
		}
		nativePath, err := nativeWorstCase(p)
		if err != nil {
			fail(err)
		}
		cells = append(cells, []string{fmt.Sprintf("%s with %d", sc.flag, sc.n), fmt.Sprint(rules), ms(ipt.wall), ms(nat.wall), ms(fl.wall),
			fmt.Sprintf("%.2f", ratio(ipt.wall, fl.wall)), fmt.Sprintf("%.2f", ratio(nat.wall, fl.wall)), fmt.Sprint(worstCase(p)), nativePath})
	}
	markdown(os.Stdout, "l", []string{"list", "rules", "iptables", "native", "floor", "iptables/floor", "native/floor",
		"rules per packet, worst: iptables", "native (set lookups)"}, cells)
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

// planOf builds the plan of a call the way the tool does (the flags the
// bench uses only).
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
		fail(fmt.Errorf("build the plan of %s: %w", shortArgv(args), err))
	}
	return p
}
