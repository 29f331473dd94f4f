//go:build linux

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// nativeWorstCase is the native table's figure for the scale table: the
// most rules a packet can meet, with the set lookups on that path.
func nativeWorstCase(p plan.Plan) (string, error) {
	rs, err := iptables.NftTranslate(p)
	if err != nil {
		return "", fmt.Errorf("translate the plan to nftables: %w", err)
	}
	_, worst, lookups := nftWorstCase(rs)
	return fmt.Sprintf("%d (%d)", worst, lookups), nil
}

// nativeApply applies p with the native executor from this process into
// n (never "": the bench touches no other namespace).
func nativeApply(n ns, p plan.Plan) (sample, error) {
	if n.path == "" {
		return sample{}, fmt.Errorf("native apply: no namespace")
	}
	handle, err := iptables.OpenNamespace(n.path)
	if err != nil {
		return sample{}, fmt.Errorf("native apply: %w", err)
	}
	defer handle.Close()
	ex, err := iptables.NewExecutor(iptables.Options{Namespace: handle, Mode: iptables.BackendNative})
	if err != nil {
		return sample{}, fmt.Errorf("native apply in %s: %w", n.path, err)
	}
	// The bench does nothing else meanwhile, so the process's CPU time
	// over the call is the apply's.
	var r0, r1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &r0)
	start := time.Now()
	err = ex.Apply(context.Background(), p)
	d := time.Since(start)
	unix.Getrusage(unix.RUSAGE_SELF, &r1)
	if err != nil {
		return sample{}, fmt.Errorf("native apply in %s: %w", n.path, err)
	}
	return sample{wall: d, cpu: cpuTime(r1) - cpuTime(r0)}, nil
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
