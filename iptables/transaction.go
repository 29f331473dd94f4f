package iptables

import (
	"fmt"
	"strings"

	"github.com/mesh-init/istio-iptables/plan"
)

// StepKind is what one step of a Transaction does to the kernel.
type StepKind string

// The step kinds. Each step is one kernel commit, or, for a restore, one
// commit per table block of its input, in the order of Step.Tables.
const (
	StepRestore      StepKind = "restore"       // one *-restore --noflush process
	StepNative       StepKind = "native"        // one netlink batch writing the native table
	StepDeleteTables StepKind = "delete-tables" // one netlink batch deleting nftables tables
	StepRouting      StepKind = "routing"       // netlink changes to policy routing and lo
)

// The phases of a transaction, in commit order: make before break. What
// adds capture (routing for TPROXY, the new rules) is in place before what
// takes the old capture away.
const (
	phaseRouteAdd = iota // routes, rules and addresses the new rules need
	phaseWrite           // the new rules (the chosen backend)
	phaseRemove          // the other backends' rules of an earlier run
	phaseTidy            // stale routing, empty tables
)

// Step is one change to the kernel.
type Step struct {
	Kind  StepKind
	Phase int
	// Restore: the flavour, family and input; the tables its input
	// commits, in order; the owned rule set it leaves (Want) and the saved
	// state before it (Before), which a rollback puts back.
	Flavour Flavour
	Family  plan.Family
	Input   string
	Tables  []plan.Table
	Want    plan.RuleSet
	Before  plan.Saved
	// Native: the table to write.
	Native *NativeWrite
	// DeleteTables: the tables to delete.
	Delete []NftTableRef
	// Routing: the change.
	Routing *RoutingChange
}

// NativeWrite is the native table as one netlink batch: created when it
// does not exist, or, when it does (ours), its chains flushed and written
// anew, chains the plan no longer has deleted. No table is deleted.
type NativeWrite struct {
	Ruleset NftRuleset
	Hash    string
	Replace bool
	// Existing are the chains there now (flushed), Stale those of them the
	// plan no longer has (deleted).
	Existing []string
	Stale    []string
	// Record, when set, is the record table the batch adds, and Unrecord
	// the records it removes (MarkerInBatch).
	Record   string
	Unrecord []string
}

// NftTableRef names an nftables table; IfEmpty deletes it only when it
// holds no rule and no chain but base chains with an accept policy.
type NftTableRef struct {
	Family  string // ip, ip6 or inet
	Name    string
	IfEmpty bool
}

func (r NftTableRef) String() string { return r.Family + " " + r.Name }

// RoutingChange adds and removes this tool's policy routing and lo
// addresses. Added rules and routes carry RouteProtocol; only those are
// ever removed.
type RoutingChange struct {
	AddRoutes []plan.Route
	AddAddrs  []plan.Addr
	DelRoutes []plan.Route
	DelTables []RouteTable
	DelAddrs  []plan.Addr
}

func (c RoutingChange) empty() bool {
	return len(c.AddRoutes)+len(c.AddAddrs)+len(c.DelRoutes)+len(c.DelTables)+len(c.DelAddrs) == 0
}

// MarkerAction is what a transaction does with the record of the apply.
type MarkerAction string

// The marker actions.
const (
	MarkerKeep   MarkerAction = ""       // leave it
	MarkerRecord MarkerAction = "record" // after a verified apply, record Hash at the generation
	MarkerRemove MarkerAction = "remove" // remove every record of ours
	// MarkerInBatch: the native batch itself carries the record, at the
	// generation its commit moves to: written in the same kernel
	// transaction as the table it vouches for, so one exists only with the
	// other.
	MarkerInBatch MarkerAction = "in-batch"
)

// Transaction is everything one run changes, decided before anything is
// written: the steps in commit order, and what to record once the result
// is read back and verified.
type Transaction struct {
	// Backend is what writes the rules: "nft", "legacy", "native"; ""
	// for a cleanup.
	Backend string
	Steps   []Step
	// Marker and Hash: the record of the apply.
	Marker MarkerAction
	Hash   string
	// Shortcut: the record vouched for the rules, nothing was read with
	// *-save.
	Shortcut bool
}

// Empty reports whether the transaction changes nothing.
func (t Transaction) Empty() bool { return len(t.Steps) == 0 }

// String renders the transaction the way --dry-run against a live
// namespace prints it: each step with the exact text it feeds to the
// kernel, or a line saying there is nothing to do.
func (t Transaction) String() string {
	var b strings.Builder
	if t.Empty() {
		fmt.Fprintf(&b, "# nothing to do: the namespace already holds the plan")
		if t.Shortcut {
			b.WriteString(" (as recorded at this nf_tables generation)")
		}
		b.WriteString("\n")
		return b.String()
	}
	for i, s := range t.Steps {
		fmt.Fprintf(&b, "# step %d of %d: %s\n", i+1, len(t.Steps), s.summary())
		switch s.Kind {
		case StepRestore:
			b.WriteString(s.Input)
		case StepNative:
			b.WriteString(s.Native.Text())
		case StepDeleteTables:
			for _, d := range s.Delete {
				fmt.Fprintf(&b, "delete table %s\n", d)
			}
		case StepRouting:
			b.WriteString(s.Routing.commands())
		}
	}
	return b.String()
}

func (s Step) summary() string {
	switch s.Kind {
	case StepRestore:
		var tables []string
		for _, t := range s.Tables {
			tables = append(tables, string(t))
		}
		return fmt.Sprintf("%s | %s --noflush (tables %s, committed in this order)", s.Family, s.Flavour.binary(s.Family, "restore"), strings.Join(tables, ", "))
	case StepNative:
		if s.Native.Replace {
			return "native nftables: replace the rules of table inet " + NftTableName + " (one netlink batch)"
		}
		return "native nftables: create table inet " + NftTableName + " (one netlink batch)"
	case StepDeleteTables:
		return "nftables: delete tables (one netlink batch)"
	case StepRouting:
		return "policy routing and lo addresses (netlink)"
	}
	return string(s.Kind)
}

// Text is the native write as `nft -f` input.
func (w NativeWrite) Text() string {
	var b strings.Builder
	if w.Replace {
		for _, c := range w.Existing {
			fmt.Fprintf(&b, "flush chain inet %s %s\n", NftTableName, c)
		}
		for _, c := range w.Stale {
			fmt.Fprintf(&b, "delete chain inet %s %s\n", NftTableName, c)
		}
	}
	b.WriteString(w.Ruleset.Body(w.Hash))
	return b.String()
}

func (c RoutingChange) commands() string {
	var b strings.Builder
	for _, r := range c.AddRoutes {
		for _, cmd := range r.Commands() {
			fmt.Fprintf(&b, "%s proto %d\n", cmd, RouteProtocol)
		}
	}
	for _, a := range c.AddAddrs {
		fmt.Fprintln(&b, a.Command())
	}
	for _, r := range c.DelRoutes {
		fmt.Fprintf(&b, "ip %srule del fwmark %d lookup %d proto %d\n", familyFlag(r.Family), r.Mark, r.Table, RouteProtocol)
	}
	for _, t := range c.DelTables {
		fmt.Fprintf(&b, "ip %sroute del local default dev lo table %d proto %d\n", familyFlag(t.Family), t.Table, RouteProtocol)
	}
	for _, a := range c.DelAddrs {
		fmt.Fprintf(&b, "ip -6 addr del %s dev %s\n", a.Prefix, a.Dev)
	}
	return b.String()
}

func familyFlag(f plan.Family) string {
	if f == plan.IPv6 {
		return "-6 "
	}
	return ""
}
