package plan

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Family is an IP family: one iptables binary family and one restore
// transaction.
type Family string

// The two families.
const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// Table is a netfilter table.
type Table string

// The tables the tool writes into.
const (
	TableNat    Table = "nat"
	TableMangle Table = "mangle"
	TableRaw    Table = "raw"
)

// Chain is a chain name.
type Chain string

// ChainPrefix starts the name of every chain this tool owns.
const ChainPrefix = "ISTIO_"

// Owned reports whether the chain belongs to this tool (ISTIO_*).
func (c Chain) Owned() bool { return strings.HasPrefix(string(c), ChainPrefix) }

// builtinChains lists the builtin chains of each table.
var builtinChains = map[Table][]Chain{
	TableNat:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	TableMangle: {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	TableRaw:    {"PREROUTING", "OUTPUT"},
}

// BuiltinChains lists the builtin chains of table, in kernel order.
func BuiltinChains(table Table) []Chain { return slices.Clone(builtinChains[table]) }

// Builtin reports whether chain is a builtin chain of table.
func Builtin(table Table, chain Chain) bool {
	for _, c := range builtinChains[table] {
		if c == chain {
			return true
		}
	}
	return false
}

// TableChain names a chain in a table.
type TableChain struct {
	Table Table
	Chain Chain
}

func (tc TableChain) String() string { return string(tc.Table) + "/" + string(tc.Chain) }

// Rule is one iptables rule. Args are the arguments after "-A CHAIN" (or
// after "-I CHAIN 1" when Insert is set), exactly as iptables-restore reads
// them.
type Rule struct {
	Table Table
	Chain Chain
	// Insert puts the rule at position 1 of its chain instead of appending
	// it, as Istio does for -k: the rules inserted later end up on top.
	Insert bool
	Args   []string
}

// Target returns the rule's -j (or -g) target, or "" when it has none.
func (r Rule) Target() string {
	for i := 0; i+1 < len(r.Args); i++ {
		if r.Args[i] == "-j" || r.Args[i] == "-g" {
			return r.Args[i+1]
		}
	}
	return ""
}

// String renders the rule as an iptables-restore line.
func (r Rule) String() string {
	var b strings.Builder
	if r.Insert {
		fmt.Fprintf(&b, "-I %s 1", r.Chain)
	} else {
		fmt.Fprintf(&b, "-A %s", r.Chain)
	}
	for _, a := range r.Args {
		b.WriteByte(' ')
		b.WriteString(quote(a))
	}
	return b.String()
}

// RuleSet is everything written for one family: the owned chains to create,
// in order, and the rules in the order they are written.
type RuleSet struct {
	Family Family
	Chains []TableChain
	Rules  []Rule
}

// Tables returns the tables the rule set writes into, in a fixed order
// (nat, mangle, raw), so the rendered text is stable.
func (rs RuleSet) Tables() []Table {
	var out []Table
	for _, t := range []Table{TableNat, TableMangle, TableRaw} {
		used := false
		for _, c := range rs.Chains {
			used = used || c.Table == t
		}
		for _, r := range rs.Rules {
			used = used || r.Table == t
		}
		if used {
			out = append(out, t)
		}
	}
	return out
}

// ChainRules returns the rules of one chain in the order the kernel holds
// them after the rule set is written into an empty chain: inserted rules on
// top, the last inserted first, then the appended ones in order.
func (rs RuleSet) ChainRules(table Table, chain Chain) []Rule {
	var inserted, appended []Rule
	for _, r := range rs.Rules {
		if r.Table != table || r.Chain != chain {
			continue
		}
		if r.Insert {
			inserted = append([]Rule{r}, inserted...)
		} else {
			appended = append(appended, r)
		}
	}
	return append(inserted, appended...)
}

// UsedChains returns every chain that holds rules, in order of first use.
func (rs RuleSet) UsedChains() []TableChain {
	var out []TableChain
	seen := map[TableChain]bool{}
	for _, r := range rs.Rules {
		tc := TableChain{r.Table, r.Chain}
		if !seen[tc] {
			seen[tc] = true
			out = append(out, tc)
		}
	}
	return out
}

// Validate checks that the rule set can be rendered safely: known tables,
// owned chains declared once, rules only in builtin or declared chains,
// every jump to a builtin target or a chain declared in the same table, and
// no argument that could break the restore format.
func (rs RuleSet) Validate() error {
	var errs []error
	if rs.Family != IPv4 && rs.Family != IPv6 {
		errs = append(errs, fmt.Errorf("unknown family %q", rs.Family))
	}
	declared := map[TableChain]bool{}
	for _, tc := range rs.Chains {
		if _, ok := builtinChains[tc.Table]; !ok {
			errs = append(errs, fmt.Errorf("chain %s: unknown table", tc))
		}
		if !tc.Chain.Owned() {
			errs = append(errs, fmt.Errorf("chain %s: declared chains must start with %s", tc, ChainPrefix))
		}
		if !plainChainName(tc.Chain) {
			errs = append(errs, fmt.Errorf("chain %q: a chain name is at most 28 letters, digits, '_' or '-'", tc.Chain))
		}
		if declared[tc] {
			errs = append(errs, fmt.Errorf("chain %s declared twice", tc))
		}
		declared[tc] = true
	}
	for _, r := range rs.Rules {
		tc := TableChain{r.Table, r.Chain}
		if !Builtin(r.Table, r.Chain) && !declared[tc] {
			errs = append(errs, fmt.Errorf("rule %q: chain %s is neither builtin nor declared", r, tc))
		}
		if t := r.Target(); t == "" {
			errs = append(errs, fmt.Errorf("rule %q: no target", r))
		} else if Chain(t).Owned() && !declared[TableChain{r.Table, Chain(t)}] {
			errs = append(errs, fmt.Errorf("rule %q: jump to %s, not declared in table %s", r, t, r.Table))
		}
		for _, a := range r.Args {
			if err := checkArg(a); err != nil {
				errs = append(errs, fmt.Errorf("rule %q: %w", r, err))
			}
		}
	}
	return errors.Join(errs...)
}

// plainChainName reports whether a chain name can be written bare in
// restore input: 1-28 letters, digits, '_' or '-' (iptables' own limit is
// 28 bytes). A blank or a newline in a name would split a line into more.
func plainChainName(c Chain) bool {
	if len(c) == 0 || len(c) > 28 {
		return false
	}
	for _, r := range c {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// checkArg refuses arguments that could end a line, open a quote or start a
// new command in iptables-restore input.
func checkArg(a string) error {
	if a == "" {
		return errors.New("empty argument")
	}
	for _, c := range a {
		if c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c == '\'' {
			return fmt.Errorf("argument %q holds a character the restore format cannot carry", a)
		}
	}
	return nil
}

// quote renders one argument for iptables-restore: bare when it has no
// blank, quote or backslash; otherwise double-quoted, with quotes and
// backslashes escaped by a backslash, which is how the restore parser (and
// SplitArgs) reads them back.
func quote(a string) string {
	if !strings.ContainsAny(a, " \t\"\\") && a != "" {
		return a
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
}

// Route is the policy routing TPROXY needs in one family:
// `ip rule add fwmark Mark lookup Table` and
// `ip route add local default dev lo table Table`.
type Route struct {
	Family Family
	Mark   uint32
	Table  int
}

// Addr is an address the plan puts on an interface (`::6/128` on lo, the
// source the proxy uses for inbound passthrough over IPv6).
type Addr struct {
	Dev    string
	Prefix netip.Prefix
}

// Plan is everything one run writes: a rule set per family, policy routing
// and addresses. It is plain data; dry run, apply and explain all read it.
type Plan struct {
	RuleSets []RuleSet
	Routes   []Route
	Addrs    []Addr
}

// RuleSet returns the rule set of a family and whether the plan has one.
func (p Plan) RuleSet(f Family) (RuleSet, bool) {
	for _, rs := range p.RuleSets {
		if rs.Family == f {
			return rs, true
		}
	}
	return RuleSet{}, false
}

// Validate validates every rule set.
func (p Plan) Validate() error {
	var errs []error
	seen := map[Family]bool{}
	for _, rs := range p.RuleSets {
		if seen[rs.Family] {
			errs = append(errs, fmt.Errorf("two rule sets for %s", rs.Family))
		}
		seen[rs.Family] = true
		if err := rs.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", rs.Family, err))
		}
	}
	return errors.Join(errs...)
}

// familyFlag is the `ip` family option of f: "" for IPv4, "-6 " for IPv6.
func familyFlag(f Family) string {
	if f == IPv6 {
		return "-6 "
	}
	return ""
}

// Commands returns the `ip` commands equivalent to the route.
func (r Route) Commands() []string {
	return []string{
		fmt.Sprintf("ip %srule add fwmark %d lookup %d", familyFlag(r.Family), r.Mark, r.Table),
		fmt.Sprintf("ip %sroute add local default dev lo table %d", familyFlag(r.Family), r.Table),
	}
}

// Family returns the address's family.
func (a Addr) Family() Family {
	if a.Prefix.Addr().Is4() {
		return IPv4
	}
	return IPv6
}

// Command returns the `ip` command equivalent to adding the address.
func (a Addr) Command() string {
	return fmt.Sprintf("ip %saddr add %s dev %s", familyFlag(a.Family()), a.Prefix, a.Dev)
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
