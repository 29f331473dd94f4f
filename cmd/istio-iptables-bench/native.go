//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/nftables/expr"

	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// runNative measures the native nftables backend (--native-nftables):
// the whole process and the in-process apply (NewNftExecutor().Apply,
// the namespace switch included) against the iptables backend and the
// floor, the processes started, and how the rules a packet meets grow
// with the port and CIDR lists.
func (b *bench) runNative(redirect, tproxy, classic []string) {
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Println()
	fmt.Fprintln(w, "native nftables\tapply\tin-process\tiptables apply\tfloor\tapply/floor\tprocesses\t")
	for _, c := range []struct {
		name string
		args []string
	}{{"REDIRECT default", redirect}, {"TPROXY default", tproxy}, {"classic call", classic}} {
		for _, dual := range []bool{false, true} {
			fixed := append(slices.Clone(c.args), "--ipv6="+fmt.Sprint(dual))
			args := append(slices.Clone(c.args), "--ipv6=auto")
			native := append(slices.Clone(args), "--native-nftables")
			label := c.name + ", IPv4"
			if dual {
				label = c.name + ", dual-stack"
			}
			texts, err := restoreTexts(fixed)
			if err != nil {
				fail(err)
			}
			p := planOf(fixed)
			apply := b.measure(dual, nil, func(n ns) (time.Duration, error) { return b.tool(n, native...) })
			inProc := b.measure(dual, nil, func(n ns) (time.Duration, error) { return nativeApply(n, p) })
			ipt := b.measure(dual, nil, func(n ns) (time.Duration, error) { return b.tool(n, args...) })
			floor := b.measure(dual, nil, func(n ns) (time.Duration, error) { return b.floor(n, texts) })
			n := b.newNS(dual)
			count, names := processes(b, n, native)
			n.delete()
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.2f\t%d %s\t\n", label, ms(apply), ms(inProc), ms(ipt), ms(floor),
				float64(apply)/float64(floor), count, strings.Join(names, ","))
		}
	}
	w.Flush()

	v4 := append(slices.Clone(redirect), "--ipv6=false", "--native-nftables")
	applyOnce := func(n ns) {
		if _, err := b.tool(n, v4...); err != nil {
			fail(err)
		}
	}
	noop := b.measure(false, applyOnce, func(n ns) (time.Duration, error) { return b.tool(n, v4...) })
	cleanup := b.measure(false, applyOnce, func(n ns) (time.Duration, error) {
		return b.tool(n, "--cleanup-only", "--native-nftables")
	})
	n := b.newNS(false)
	applyOnce(n)
	noopCount, _ := processes(b, n, v4)
	cleanCount, _ := processes(b, n, []string{"--cleanup-only", "--native-nftables"})
	n.delete()
	fmt.Println()
	fmt.Fprintln(w, "native step (REDIRECT default, IPv4)\ttime\tprocesses\t")
	fmt.Fprintf(w, "no-op re-run\t%s\t%d\t\n", ms(noop), noopCount)
	fmt.Fprintf(w, "cleanup\t%s\t%d\t\n", ms(cleanup), cleanCount)
	w.Flush()

	fmt.Println()
	fmt.Fprintln(w, "native scale (IPv4)\tapply\tin-process\trules\tworst-case rules per packet\tset lookups on that path\tiptables rules per packet\t")
	for _, sc := range []struct {
		flag string
		n    int
	}{{"-b", 10}, {"-b", 100}, {"-b", 1000}, {"-x", 10}, {"-x", 100}, {"-x", 1000}, {"-d", 10}, {"-d", 1000}} {
		var items []string
		for i := range sc.n {
			if sc.flag == "-x" {
				items = append(items, fmt.Sprintf("10.%d.%d.0/24", 100+i/250, i%250))
			} else {
				items = append(items, fmt.Sprint(20000+i))
			}
		}
		args := []string{"-i", "*", "--ipv6=false"}
		switch sc.flag {
		case "-b":
			args = append(args, "-b", strings.Join(items, ","))
		default:
			args = append(args, "-b", "*", sc.flag, strings.Join(items, ","))
		}
		p := planOf(args)
		rs, err := iptables.NftTranslate(p)
		if err != nil {
			fail(err)
		}
		apply := b.measure(false, nil, func(n ns) (time.Duration, error) { return b.tool(n, append(args, "--native-nftables")...) })
		inProc := b.measure(false, nil, func(n ns) (time.Duration, error) { return nativeApply(n, p) })
		rules, worst, lookups := nftWorstCase(rs)
		fmt.Fprintf(w, "%s with %d\t%s\t%s\t%d\t%d\t%d\t%d\t\n", sc.flag, sc.n, ms(apply), ms(inProc), rules, worst, lookups, worstCase(p))
	}
	w.Flush()
}

// nativeApply applies p with the native executor from this process into
// n (never "": the bench touches no other namespace).
func nativeApply(n ns, p plan.Plan) (time.Duration, error) {
	if n.path == "" {
		return 0, fmt.Errorf("no namespace")
	}
	handle, err := iptables.OpenNamespace(n.path)
	if err != nil {
		return 0, err
	}
	defer handle.Close()
	ex, err := iptables.NewExecutor(iptables.Options{Namespace: handle, Mode: iptables.BackendNative})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	err = ex.Apply(context.Background(), p)
	return time.Since(start), err
}

// nftWorstCase is the most rules a packet can meet in the native table
// (the longest path from a base chain through the jumps, every rule of a
// chain counted, the other family's too), and the set lookups on it.
func nftWorstCase(rs iptables.NftRuleset) (rules, worst, lookups int) {
	chains := map[string]iptables.NftChain{}
	for _, c := range rs.Chains {
		chains[c.Name] = c
		rules += len(c.Rules)
	}
	var walk func(name string, depth int) (int, int)
	walk = func(name string, depth int) (int, int) {
		c := chains[name]
		best, bestSets := len(c.Rules), 0
		for _, r := range c.Rules {
			if r.Set != nil {
				bestSets++
			}
		}
		if depth > 8 {
			return best, bestSets
		}
		sets := 0
		for i, r := range c.Rules {
			if r.Set != nil {
				sets++
			}
			for _, e := range r.Exprs {
				if v, ok := e.(*expr.Verdict); ok && v.Chain != "" {
					n, s := walk(v.Chain, depth+1)
					if i+1+n > best {
						best, bestSets = i+1+n, sets+s
					}
				}
			}
		}
		return best, bestSets
	}
	for _, c := range rs.Chains {
		if c.Hook != nil {
			if n, s := walk(c.Name, 0); n > worst {
				worst, lookups = n, s
			}
		}
	}
	return rules, worst, lookups
}
