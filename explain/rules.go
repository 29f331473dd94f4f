package explain

import (
	"strings"

	"github.com/mesh-init/istio-iptables/iptables"
)

// Rules is one family's tables, in the order the kernel holds the rules.
type Rules struct {
	Family iptables.Family
	// Hidden names nf_tables tables that see the family's packets but
	// that *-save does not show (native nftables: "inet NAME"). Explain
	// cannot evaluate them: with any, every verdict is unknown.
	Hidden []string
	tables map[iptables.Table]*table
}

type table struct {
	chains map[iptables.Chain][]rule
	// policy of the builtin chains; absent means ACCEPT.
	policy map[iptables.Chain]string
	// declared holds every chain that exists, rules or not.
	declared map[iptables.Chain]bool
}

// rule is one rule as written and as parsed; err is why ParseSpec refused it.
type rule struct {
	text string
	spec iptables.Spec
	err  error
}

func newRules(f iptables.Family) *Rules {
	return &Rules{Family: f, tables: map[iptables.Table]*table{}}
}

func (r *Rules) table(t iptables.Table) *table {
	tb, ok := r.tables[t]
	if !ok {
		tb = &table{chains: map[iptables.Chain][]rule{}, policy: map[iptables.Chain]string{}, declared: map[iptables.Chain]bool{}}
		r.tables[t] = tb
	}
	return tb
}

func (r *Rules) add(t iptables.Table, c iptables.Chain, args []string) {
	tb := r.table(t)
	tb.declared[c] = true
	s, err := iptables.ParseSpec(r.Family, args)
	tb.chains[c] = append(tb.chains[c], rule{text: argsText(args), spec: s, err: err})
}

// argsText renders a rule's arguments as iptables prints them.
func argsText(args []string) string {
	return strings.TrimPrefix(iptables.Rule{Chain: "X", Args: args}.String(), "-A X ")
}

// FromRuleSet returns the rules a plan writes into an empty namespace:
// every builtin chain with policy ACCEPT, inserted rules on top.
func FromRuleSet(rs iptables.RuleSet) *Rules {
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
// output parsed with iptables.ParseSave, policies included.
func FromSaved(f iptables.Family, s iptables.Saved) *Rules {
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
