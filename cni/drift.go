package cni

import (
	"fmt"
	"strings"

	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// maxDrift bounds the lines Drift returns, so a CNI error stays readable.
const maxDrift = 12

// Drift names what differs between the namespace and the plan, from the
// transaction an apply would run (Executor.Decide): per restore step, the
// chains and rules of ours the namespace has and the plan has not
// ("unexpected"), and those the plan has and the namespace has not
// ("missing"), in iptables-save form; the other steps by what they change.
func Drift(tx iptables.Transaction) []string {
	var out []string
	for _, s := range tx.Steps {
		switch s.Kind {
		case iptables.StepRestore:
			out = append(out, ruleDrift(s)...)
		case iptables.StepNative:
			out = append(out, "the native nftables table inet "+iptables.NftTableName+" differs from the plan")
		case iptables.StepDeleteTables:
			var refs []string
			for _, r := range s.Delete {
				refs = append(refs, r.String())
			}
			out = append(out, "nftables tables of ours that the plan does not have: "+strings.Join(refs, ", "))
		case iptables.StepRouting:
			out = append(out, "policy routing or lo addresses differ from the plan")
		}
	}
	if len(out) > maxDrift {
		out = append(out[:maxDrift], fmt.Sprintf("and %d more", len(out)-maxDrift))
	}
	return out
}

// ruleDrift compares, as multisets, the owned rule set in the step's
// saved state with the one it writes.
func ruleDrift(s iptables.Step) []string {
	have := plan.OwnedRuleSet(s.Family, s.Before)
	fam := string(s.Family)
	var out []string
	chains := func(rs plan.RuleSet) map[string]int {
		m := map[string]int{}
		for _, c := range rs.Chains {
			m[c.String()]++
		}
		return m
	}
	wantC, haveC := chains(s.Want), chains(have)
	for _, c := range s.Want.Chains {
		if haveC[c.String()] == 0 {
			out = append(out, fmt.Sprintf("%s: missing chain %s", fam, c))
		}
	}
	for _, c := range have.Chains {
		if wantC[c.String()] == 0 {
			out = append(out, fmt.Sprintf("%s: unexpected chain %s", fam, c))
		}
	}
	key := func(r plan.Rule) string {
		args, err := plan.Canonical(s.Family, r.Args)
		if err != nil {
			args = strings.Join(r.Args, " ")
		}
		return fmt.Sprintf("-t %s -A %s %s", r.Table, r.Chain, args)
	}
	count := func(rs plan.RuleSet) map[string]int {
		m := map[string]int{}
		for _, r := range rs.Rules {
			m[key(r)]++
		}
		return m
	}
	wantR, haveR := count(s.Want), count(have)
	for _, r := range s.Want.Rules {
		if k := key(r); haveR[k] < wantR[k] {
			out = append(out, fmt.Sprintf("%s: missing %s", fam, k))
			haveR[k]++
		}
	}
	for _, r := range have.Rules {
		if k := key(r); wantR[k] < haveR[k] {
			out = append(out, fmt.Sprintf("%s: unexpected %s", fam, k))
			wantR[k]++
		}
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("%s: the rules of ours in %s are the plan's, in another order or on another backend", fam, s.Flavour))
	}
	return out
}
