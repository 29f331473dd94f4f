package plan

import (
	"slices"
	"strings"
)

// Removal is what an earlier run left in one family that a transaction
// takes out: the owned chains there now, and the owned rules in builtin
// chains (as `*-save` printed them).
type Removal struct {
	Chains []TableChain
	Rules  []SavedRule
}

// Empty reports whether there is nothing to remove.
func (r Removal) Empty() bool { return len(r.Chains) == 0 && len(r.Rules) == 0 }

// Render returns the iptables-restore --noflush input that turns a
// namespace holding old into one holding rs, as one transaction: per table,
// the owned chains are declared (which creates them, or empties them when
// they exist), the old owned rules in builtin chains are deleted, the old
// chains the new rule set does not use are deleted, and the new rules are
// written. Rules are grouped by chain (builtin chains first); the order
// within a chain is the plan's. With an empty Removal it is the text for a clean namespace,
// which is what the dry run prints. Tables appear in the order nat, mangle,
// raw.
func Render(rs RuleSet, old Removal) string { return RenderTables(rs, old, old.Tables(rs)) }

// RenderTables is Render with the table blocks in the given order. Each
// block is its own kernel commit, so the order is what the namespace goes
// through: the executor puts the tables that gain capture first.
func RenderTables(rs RuleSet, old Removal, tables []Table) string {
	var b strings.Builder
	for _, t := range tables {
		b.WriteString("*" + string(t) + "\n")
		var declared []Chain
		for _, tc := range rs.Chains {
			if tc.Table == t {
				declared = append(declared, tc.Chain)
			}
		}
		var stale []Chain
		for _, tc := range old.Chains {
			if tc.Table == t && !slices.Contains(declared, tc.Chain) {
				stale = append(stale, tc.Chain)
			}
		}
		for _, c := range append(slices.Clone(declared), stale...) {
			b.WriteString(":" + string(c) + " - [0:0]\n")
		}
		for _, r := range old.Rules {
			if r.Table == t {
				b.WriteString(r.deleteLine() + "\n")
			}
		}
		for _, c := range stale {
			b.WriteString("-X " + string(c) + "\n")
		}
		// Rules grouped by chain, builtin chains first, as *-save prints
		// them; within a chain the plan's order is kept, so the kernel ends
		// up with the same rules as if they were written in plan order.
		for _, c := range append(slices.Clone(builtinChains[t]), declared...) {
			for _, r := range rs.Rules {
				if r.Table == t && r.Chain == c {
					b.WriteString(r.String() + "\n")
				}
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// Tables lists, in the order Render writes them, the tables a restore of
// rs over old touches.
func (old Removal) Tables(rs RuleSet) []Table {
	var out []Table
	for _, t := range []Table{TableNat, TableMangle, TableRaw} {
		used := slices.Contains(rs.Tables(), t)
		for _, c := range old.Chains {
			used = used || c.Table == t
		}
		for _, r := range old.Rules {
			used = used || r.Table == t
		}
		if used {
			out = append(out, t)
		}
	}
	return out
}
