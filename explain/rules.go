package explain

import (
	"strings"

	"github.com/mesh-init/istio-iptables/plan"
)

// Rules is one family's tables, in the order the kernel holds the rules.
type Rules struct {
	Family plan.Family
	// Hidden names nf_tables tables that see the family's packets but
	// that *-save does not show (native nftables: "inet NAME"). Explain
	// cannot evaluate them: with any, every verdict is unknown.
	Hidden []string
	tables map[plan.Table]*table
}

type table struct {
	chains map[plan.Chain][]rule
	// policy of the builtin chains; absent means ACCEPT.
	policy map[plan.Chain]string
	// declared holds every chain that exists, rules or not.
	declared map[plan.Chain]bool
}

// rule is one rule as written and as parsed; err is why ParseSpec refused it.
type rule struct {
	text string
	spec plan.Spec
	err  error
}

func newRules(f plan.Family) *Rules {
	return &Rules{Family: f, tables: map[plan.Table]*table{}}
}

func (r *Rules) table(t plan.Table) *table {
	tb, ok := r.tables[t]
	if !ok {
		tb = &table{chains: map[plan.Chain][]rule{}, policy: map[plan.Chain]string{}, declared: map[plan.Chain]bool{}}
		r.tables[t] = tb
	}
	return tb
}

func (r *Rules) add(t plan.Table, c plan.Chain, args []string) {
	tb := r.table(t)
	tb.declared[c] = true
	s, err := plan.ParseSpec(r.Family, args)
	tb.chains[c] = append(tb.chains[c], rule{text: argsText(args), spec: s, err: err})
}

// argsText renders a rule's arguments as iptables prints them.
func argsText(args []string) string {
	return strings.TrimPrefix(plan.Rule{Chain: "X", Args: args}.String(), "-A X ")
}

// FromRuleSet returns the rules a plan writes into an empty namespace:
// every builtin chain with policy ACCEPT, inserted rules on top.
func FromRuleSet(rs plan.RuleSet) *Rules {
	r := newRules(rs.Family)
	for _, tc := range rs.Chains {
		r.table(tc.Table).declared[tc.Chain] = true
	}
	for _, tc := range rs.UsedChains() {
		for _, ru := range rs.ChainRules(tc.Table, tc.Chain) {
			r.add(ru.Table, ru.Chain, ru.Args)
		}
	}
	return r
}

// FromSaved returns the rules of `iptables-save` (or `ip6tables-save`)
// output parsed with plan.ParseSave, policies included.
func FromSaved(f plan.Family, s plan.Saved) *Rules {
	r := newRules(f)
	for _, st := range s.Tables {
		tb := r.table(st.Name)
		for _, c := range st.Chains {
			tb.declared[c.Name] = true
			if c.Policy != "-" {
				tb.policy[c.Name] = c.Policy
			}
		}
		for _, ru := range st.Rules {
			r.add(st.Name, ru.Chain, ru.Args)
		}
	}
	return r
}
