package plan

import (
	"slices"
	"strings"
)

// ownedShapes are the rules this tool writes into builtin chains that do
// not jump into an ISTIO_* chain, with their values blanked ("_"), per
// table and chain. A rule of such a shape counts as ours only when the
// family also holds an ISTIO_* chain, i.e. after a run of this tool. The
// capture tests check that every such rule Build writes has a shape here.
var ownedShapes = map[TableChain][]string{
	{TableNat, "PREROUTING"}: {
		"-i _ -j RETURN", // -k, -c
	},
	{TableNat, "OUTPUT"}: {
		"-o _ -j RETURN", // -c
	},
	{TableMangle, "PREROUTING"}: {
		"-i _ -j RETURN", // -c with TPROXY
		"-p tcp -m mark --mark _ -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
	},
	{TableMangle, "OUTPUT"}: {
		"-o _ -j RETURN", // -c with TPROXY
		"-o lo -p tcp -m mark --mark _ -j RETURN",
		"! -d _ -o lo -p tcp -m owner --uid-owner _ -j MARK --set-xmark _",
		"! -d _ -o lo -p tcp -m owner --gid-owner _ -j MARK --set-xmark _",
		"! -d _ -o lo -p tcp -m mark --mark _ -j MARK --set-xmark _", // --proxy-mark with TPROXY
		"-p tcp -m connmark --mark _ -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
	},
}

// shape blanks the values of a spec that vary with the flags: addresses,
// interface names other than lo, marks, ids, ports, zones.
func shape(s Spec) string {
	blank := func(v string) string {
		if v == "" {
			return ""
		}
		return "_"
	}
	out := s
	if s.Src.Prefix.IsValid() {
		out.Src.Prefix = blankPrefix
	}
	if s.Dst.Prefix.IsValid() {
		out.Dst.Prefix = blankPrefix
	}
	if s.In.Name != "lo" {
		out.In.Name = blank(s.In.Name)
	}
	if s.Out.Name != "lo" {
		out.Out.Name = blank(s.Out.Name)
	}
	out.Matches = nil
	for _, m := range s.Matches {
		nm := Match{Name: m.Name}
		for _, o := range m.Opts {
			if m.Name != "conntrack" {
				o.Value = blank(o.Value)
			}
			nm.Opts = append(nm.Opts, o)
		}
		out.Matches = append(out.Matches, nm)
	}
	out.TargetOpts = nil
	for _, o := range s.TargetOpts {
		if o.Name != "--nfmask" && o.Name != "--ctmask" {
			o.Value = blank(o.Value)
		}
		out.TargetOpts = append(out.TargetOpts, o)
	}
	return strings.ReplaceAll(out.String(), blankPrefix.String(), "_")
}

// blankPrefix stands for any address in a shape.
var blankPrefix = mustPrefix("0.0.0.0/0")

// IsOwnedShape reports whether a rule in a builtin chain has the shape of
// one this tool writes there without jumping into an ISTIO_* chain.
func IsOwnedShape(f Family, t Table, c Chain, args []string) bool {
	shapes := ownedShapes[TableChain{t, c}]
	if len(shapes) == 0 {
		return false
	}
	s, err := ParseSpec(f, args)
	if err != nil {
		return false
	}
	return slices.Contains(shapes, shape(s))
}

// Owned returns what this tool owns in a family's saved state: every
// ISTIO_* chain in nat, mangle and raw, every rule in a builtin chain that
// jumps into one, and, when an ISTIO_* chain exists, the builtin-chain
// rules of an owned shape.
func Owned(f Family, s Saved) Removal {
	var r Removal
	for _, t := range []Table{TableNat, TableMangle, TableRaw} {
		st, _ := s.Table(t)
		for _, c := range st.Chains {
			if c.Name.Owned() {
				r.Chains = append(r.Chains, TableChain{t, c.Name})
			}
		}
	}
	for _, t := range []Table{TableNat, TableMangle, TableRaw} {
		st, _ := s.Table(t)
		for _, rule := range st.Rules {
			if !Builtin(t, rule.Chain) {
				continue
			}
			if Chain(rule.Target()).Owned() || (len(r.Chains) > 0 && IsOwnedShape(f, t, rule.Chain, rule.Args) && ifaceReturnOwned(st, rule)) {
				r.Rules = append(r.Rules, rule)
			}
		}
	}
	return r
}

// ifaceReturnOwned narrows the interface RETURN shapes, the ones most
// likely to be written by others too: `-i IF -j RETURN` in PREROUTING is
// ours with its -c twin `-o IF -j RETURN` in OUTPUT of the same table,
// or, in nat, with a -k jump `-i IF ... -j ISTIO_REDIRECT` or in the block
// of such rules on top of the chain where -k puts them; `-o IF -j RETURN` in
// OUTPUT is ours with its -c twin in PREROUTING. Other shapes pass.
func ifaceReturnOwned(st SavedTable, rule SavedRule) bool {
	if len(rule.Args) != 4 || rule.Args[2] != "-j" || rule.Args[3] != "RETURN" {
		return true
	}
	ifc := rule.Args[1]
	has := func(c Chain, args ...string) bool {
		return slices.ContainsFunc(st.ChainRules(c), func(r SavedRule) bool { return slices.Equal(r.Args, args) })
	}
	switch {
	case rule.Chain == "OUTPUT" && rule.Args[0] == "-o":
		return has("PREROUTING", "-i", ifc, "-j", "RETURN")
	case rule.Chain == "PREROUTING" && rule.Args[0] == "-i":
		if has("OUTPUT", "-o", ifc, "-j", "RETURN") {
			return true
		}
		if st.Name != TableNat {
			return false // -k writes only into nat
		}
		for _, r := range st.ChainRules("PREROUTING") {
			if inIface(r.Args) == ifc && Chain(r.Target()).Owned() {
				return true // a -k interface
			}
		}
		for _, r := range st.ChainRules("PREROUTING") {
			if slices.Equal(r.Args, rule.Args) {
				return true
			}
			if inIface(r.Args) == "" || (r.Target() != "RETURN" && !Chain(r.Target()).Owned()) {
				return false // below the block of -k rules on top
			}
		}
		return false
	}
	return true
}

// InPlace reports whether the saved state already holds exactly rs as far
// as this tool's rules go: the same owned chains with the same rules, the
// same owned rules in each builtin chain in the same order, and the
// inserted ones on top. Foreign rules are ignored.
func InPlace(rs RuleSet, s Saved) bool {
	owned := Owned(rs.Family, s)
	want := slices.Clone(rs.Chains)
	have := slices.Clone(owned.Chains)
	key := func(a, b TableChain) int { return strings.Compare(a.String(), b.String()) }
	slices.SortFunc(want, key)
	slices.SortFunc(have, key)
	if !slices.Equal(want, have) {
		return false
	}
	canon := func(args []string) string {
		c, err := Canonical(rs.Family, args)
		if err != nil {
			return "\x00unparsable " + strings.Join(args, " ")
		}
		return c
	}
	for _, t := range []Table{TableNat, TableMangle, TableRaw} {
		st, _ := s.Table(t)
		chains := slices.Clone(builtinChains[t])
		for _, tc := range rs.Chains {
			if tc.Table == t {
				chains = append(chains, tc.Chain)
			}
		}
		for _, c := range chains {
			var wantRules, haveRules []string
			inserted := 0
			for _, r := range rs.ChainRules(t, c) {
				wantRules = append(wantRules, canon(r.Args))
				if r.Insert {
					inserted++
				}
			}
			all := st.ChainRules(c)
			for i, r := range all {
				if c.Owned() || slices.ContainsFunc(owned.Rules, func(o SavedRule) bool { return o.Table == t && o.Chain == c && slices.Equal(o.Args, r.Args) }) {
					haveRules = append(haveRules, canon(r.Args))
				} else if i < inserted {
					return false // a foreign rule above one that must be on top
				}
			}
			if !slices.Equal(wantRules, haveRules) {
				return false
			}
		}
	}
	return true
}

// inIface returns the interface of a plain `-i IF` match, or "".
func inIface(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-i" && (i == 0 || args[i-1] != "!") {
			return args[i+1]
		}
	}
	return ""
}

// OwnedRuleSet rebuilds, from saved state, the rule set that writes this
// tool's rules back as they are there: the owned chains with their rules,
// and the owned builtin-chain rules, those on top of their chain inserted.
// It is what a rollback writes.
func OwnedRuleSet(f Family, s Saved) RuleSet {
	owned := Owned(f, s)
	rs := RuleSet{Family: f, Chains: owned.Chains}
	for _, t := range []Table{TableNat, TableMangle, TableRaw} {
		st, _ := s.Table(t)
		for _, c := range BuiltinChains(t) {
			top := true
			var inserted []Rule
			for _, r := range st.ChainRules(c) {
				isOwned := slices.ContainsFunc(owned.Rules, func(o SavedRule) bool { return o.Table == t && slices.Equal(o.Args, r.Args) && o.Chain == c })
				switch {
				case isOwned && top:
					inserted = append([]Rule{{Table: t, Chain: c, Insert: true, Args: r.Args}}, inserted...)
				case isOwned:
					rs.Rules = append(rs.Rules, Rule{Table: t, Chain: c, Args: r.Args})
				default:
					top = false
				}
			}
			rs.Rules = append(rs.Rules, inserted...)
		}
		for _, tc := range owned.Chains {
			if tc.Table != t {
				continue
			}
			for _, r := range st.ChainRules(tc.Chain) {
				rs.Rules = append(rs.Rules, Rule{Table: t, Chain: tc.Chain, Args: r.Args})
			}
		}
	}
	return rs
}
