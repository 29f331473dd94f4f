package iptables

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mesh-init/istio-iptables/plan"
)

// decideOptions are the choices of a run that decide reads.
type decideOptions struct {
	Mode BackendMode
	// Cleanup removes everything this tool owns; the plan is ignored.
	Cleanup bool
	// full reads the state in full even when a record vouches for it.
	full bool
}

// ErrLoopback is a REDIRECT plan in a namespace whose lo cannot carry it.
var ErrLoopback = errors.New("loopback cannot carry REDIRECT")

// ErrForeign is state of someone else's that the transaction would have to
// destroy or that stands where ours must go.
var ErrForeign = errors.New("foreign state in the way")

// ErrUnreadable is state of ours that no installed binary can read or
// change.
var ErrUnreadable = errors.New("state that no installed binary can read")

// markerHash is what the record of an apply of p with this backend names.
func markerHash(p plan.Plan, native bool) (string, error) {
	if native {
		rs, err := NftTranslate(p)
		if err != nil {
			return "", err
		}
		return NftHash(rs, p), nil
	}
	return plan.Hash(p), nil
}

// decideShortcut answers a re-run from the probe alone: when the record of
// the last apply names this plan at the current nf_tables generation, the
// kernel has changed nothing in nf_tables since that apply was written and
// read back, so the rules are in place; only routing, which the
// generation does not cover, is compared. Legacy tables, which the
// generation does not cover either, rule the shortcut out.
func decideShortcut(p plan.Plan, st State, o decideOptions) (Transaction, bool) {
	if o.Cleanup || o.Mode == BackendLegacy || len(st.Markers) == 0 {
		return Transaction{}, false
	}
	for _, fam := range families {
		if len(st.flavourState(FlavourLegacy, fam).Tables) > 0 {
			return Transaction{}, false
		}
	}
	native := o.Mode == BackendNative
	hash, err := markerHash(p, native)
	if err != nil || !slices.Contains(st.Markers, MarkerName(hash, st.Generation)) {
		return Transaction{}, false
	}
	tx := Transaction{Backend: string(FlavourNft), Hash: hash, Shortcut: true}
	if native {
		tx.Backend = string(BackendNative)
	}
	tx.Steps = routingSteps(p, st)
	return tx, true
}

// decide turns a plan and the state of the namespace into the transaction
// that makes the namespace hold exactly the plan (or nothing of ours, on
// cleanup). It is pure. The steps are ordered make before break: routing
// the new rules need, then the new rules (within a restore, the tables
// that gain capture first), then the removal of other backends' rules,
// then stale routing and emptied tables.
func decide(p plan.Plan, st State, o decideOptions) (Transaction, error) {
	if o.Cleanup {
		p = plan.Plan{}
	}
	var fams []plan.Family
	for _, rs := range p.RuleSets {
		fams = append(fams, rs.Family)
	}
	tx := Transaction{}
	native := !o.Cleanup && o.Mode == BackendNative
	var chosen Flavour
	switch {
	case o.Cleanup:
	case native:
		tx.Backend = string(BackendNative)
	default:
		var err error
		if chosen, err = chooseFlavour(st, o.Mode, fams); err != nil {
			return Transaction{}, err
		}
		tx.Backend = string(chosen)
	}
	if !o.Cleanup {
		if err := checkLoopback(p, st.Loopback); err != nil {
			return Transaction{}, err
		}
	}

	tx.Steps = append(tx.Steps, routingSteps(p, st)...)

	var errs []error
	for _, fl := range flavours {
		for _, fam := range families {
			target := plan.RuleSet{Family: fam}
			if !o.Cleanup && !native && fl == chosen {
				if rs, ok := p.RuleSet(fam); ok {
					target = rs
				}
			}
			step, ok, err := restoreStep(st, fl, fam, target)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !ok {
				continue
			}
			if fl == chosen && !native && !o.Cleanup {
				step.Phase = phaseWrite
			} else {
				step.Phase = phaseRemove
			}
			tx.Steps = append(tx.Steps, step)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Transaction{}, err
	}

	switch {
	case native:
		if st.Native.Present && !st.Native.Ours {
			return Transaction{}, fmt.Errorf("table inet %s exists and does not carry this tool's owner tag; it is not touched: remove or rename it: %w", NftTableName, ErrForeign)
		}
		rs, err := NftTranslate(p)
		if err != nil {
			return Transaction{}, err
		}
		hash := NftHash(rs, p)
		w := &NativeWrite{Ruleset: rs, Hash: hash, Replace: st.Native.Ours, Existing: st.Native.Chains}
		for _, c := range st.Native.Chains {
			if !slices.ContainsFunc(rs.Chains, func(nc NftChain) bool { return nc.Name == c }) {
				w.Stale = append(w.Stale, c)
			}
		}
		tx.Steps = append(tx.Steps, Step{Kind: StepNative, Phase: phaseWrite, Native: w})
		tx.Marker, tx.Hash = MarkerRecord, hash
	case st.Native.Ours:
		tx.Steps = append(tx.Steps, Step{Kind: StepDeleteTables, Phase: phaseRemove, Delete: []NftTableRef{{Family: "inet", Name: NftTableName}}})
	}
	if !native && !o.Cleanup {
		if chosen == FlavourNft {
			tx.Marker, tx.Hash = MarkerRecord, plan.Hash(p)
		} else if len(st.Markers) > 0 {
			tx.Marker = MarkerRemove
		}
	}
	if o.Cleanup && len(st.Markers) > 0 {
		tx.Marker = MarkerRemove
	}
	if d := emptiedTables(st, tx.Steps); len(d) > 0 {
		tx.Steps = append(tx.Steps, Step{Kind: StepDeleteTables, Phase: phaseTidy, Delete: d})
	}
	slices.SortStableFunc(tx.Steps, func(a, b Step) int { return a.Phase - b.Phase })
	// A native write that is the only change to nf_tables carries its own
	// record: the batch's commit moves the generation by one, and nothing
	// else of this run moves it after.
	if i := slices.IndexFunc(tx.Steps, func(s Step) bool { return s.Kind == StepNative }); i >= 0 &&
		!slices.ContainsFunc(tx.Steps, func(s Step) bool {
			return (s.Kind == StepRestore && s.Flavour == FlavourNft) || s.Kind == StepDeleteTables
		}) {
		w := *tx.Steps[i].Native
		w.Record, w.Unrecord = MarkerName(tx.Hash, st.Generation+1), st.Markers
		tx.Steps[i].Native = &w
		tx.Marker = MarkerInBatch
	}
	if tx.Empty() && tx.Marker == MarkerRecord && slices.Contains(st.Markers, MarkerName(tx.Hash, st.Generation)) {
		tx.Marker = MarkerKeep
	}
	return tx, nil
}

// chooseFlavour picks the iptables flavour (contract §4.1): legacy only
// when legacy holds rules and nft holds none; otherwise nft; a flavour that
// is not installed is not used.
func chooseFlavour(st State, mode BackendMode, fams []plan.Family) (Flavour, error) {
	hasRules := func(f Flavour) bool {
		for _, fam := range families {
			if st.flavourState(f, fam).HasRules() {
				return true
			}
		}
		return false
	}
	var chosen Flavour
	switch mode {
	case BackendNft:
		chosen = FlavourNft
	case BackendLegacy:
		chosen = FlavourLegacy
	default:
		chosen = FlavourNft
		if hasRules(FlavourLegacy) && !hasRules(FlavourNft) {
			chosen = FlavourLegacy
		}
		if !st.installed(chosen, fams) && st.installed(chosen.other(), fams) {
			chosen = chosen.other()
		}
	}
	if !st.installed(chosen, fams) {
		var missing []string
		for _, fam := range fams {
			if b := chosen.binary(fam, "restore"); !st.has(b) {
				missing = append(missing, b)
			}
		}
		return "", fmt.Errorf("iptables %s backend: %s: %w", chosen, strings.Join(missing, ", "), ErrNoBinary)
	}
	return chosen, nil
}

// checkLoopback refuses a plan whose REDIRECT has nowhere to go: REDIRECT
// of a locally generated connection sends it to 127.0.0.1 (::1) on lo.
func checkLoopback(p plan.Plan, lo Loopback) error {
	for _, rs := range p.RuleSets {
		redirects := slices.ContainsFunc(rs.Rules, func(r plan.Rule) bool { return r.Target() == "REDIRECT" })
		if !redirects {
			continue
		}
		addr, has := "127.0.0.1", lo.IPv4
		if rs.Family == plan.IPv6 {
			addr, has = "::1", lo.IPv6
		}
		switch {
		case !lo.Up:
			return fmt.Errorf("lo is down, so REDIRECT would black-hole every captured connection; bring it up first (ip link set lo up): %w", ErrLoopback)
		case !has:
			return fmt.Errorf("lo has no %s, so REDIRECT of %s connections would black-hole them; add it first (ip addr add %s dev lo): %w", addr, rs.Family, addr, ErrLoopback)
		}
	}
	return nil
}

// restoreStep is the restore that makes one flavour and family hold
// target (empty: nothing of ours), or ok=false when it already does.
func restoreStep(st State, fl Flavour, fam plan.Family, target plan.RuleSet) (Step, bool, error) {
	fs := st.flavourState(fl, fam)
	if fs.mayHoldOwned(fl) && !fs.Read {
		what := "tables " + strings.Join(fs.Tables, ", ")
		if len(fs.OwnedChains) > 0 {
			what = "chains " + joinTableChains(fs.OwnedChains)
		}
		return Step{}, false, fmt.Errorf("%s %s holds %s, and %s is not installed to read them: %w",
			fl, fam, what, fl.binary(fam, "save"), ErrUnreadable)
	}
	old := plan.Owned(fam, fs.Saved)
	if len(target.Rules) == 0 && len(target.Chains) == 0 && old.Empty() {
		return Step{}, false, nil
	}
	if plan.InPlace(target, fs.Saved) {
		return Step{}, false, nil
	}
	if bin := fl.binary(fam, "restore"); !st.has(bin) {
		return Step{}, false, fmt.Errorf("%s %s holds %d rules and %d chains of an earlier run, and %s is not installed to remove them: %w",
			fl, fam, len(old.Rules), len(old.Chains), bin, ErrUnreadable)
	}
	if err := foreignReferences(fs.Saved, old, target); err != nil {
		return Step{}, false, fmt.Errorf("%s %s: %w", fl, fam, err)
	}
	tables := tableOrder(target, plan.OwnedRuleSet(fam, fs.Saved), differing(target, fs.Saved, old.Tables(target)))
	return Step{
		Kind: StepRestore, Flavour: fl, Family: fam,
		Input:  plan.RenderTables(target, old, tables),
		Tables: tables, Want: target, Before: fs.Saved,
	}, true, nil
}

func joinTableChains(tcs []plan.TableChain) string {
	var s []string
	for _, tc := range tcs {
		s = append(s, tc.String())
	}
	return strings.Join(s, ", ")
}

// foreignReferences refuses to delete an owned chain that a rule of
// someone else's jumps to: the kernel would refuse the whole table.
func foreignReferences(s plan.Saved, old plan.Removal, target plan.RuleSet) error {
	var errs []error
	for _, tc := range old.Chains {
		if slices.Contains(target.Chains, tc) {
			continue // kept: declaring it only empties it
		}
		st, _ := s.Table(tc.Table)
		for _, r := range st.Rules {
			if r.Chain.Owned() || plan.Chain(r.Target()) != tc.Chain {
				continue
			}
			if slices.ContainsFunc(old.Rules, func(o plan.SavedRule) bool {
				return o.Table == r.Table && o.Chain == r.Chain && slices.Equal(o.Args, r.Args)
			}) {
				continue
			}
			errs = append(errs, fmt.Errorf("%s: the rule %q of chain %s, not this tool's, jumps to %s, which must go; remove that rule first: %w",
				tc.Table, r.String(), r.Chain, tc.Chain, ErrForeign))
		}
	}
	return errors.Join(errs...)
}

// captureTargets lists the capturing targets of a table's rules.
func captureTargets(rs plan.RuleSet, t plan.Table) []string {
	var out []string
	for _, r := range rs.Rules {
		if r.Table != t {
			continue
		}
		if tg := r.Target(); tg == "REDIRECT" || tg == "TPROXY" {
			i := slices.Index(r.Args, "-j")
			out = append(out, strings.Join(r.Args[i:], " "))
		}
	}
	return out
}

// tableOrder orders the table blocks of one restore make before break:
// each block commits on its own, so a table that gains a capturing target
// goes first, one that only loses them last. REDIRECT to TPROXY writes
// mangle's TPROXY before nat drops its inbound REDIRECT; TPROXY to
// REDIRECT writes nat before mangle drops TPROXY.
func tableOrder(target, old plan.RuleSet, tables []plan.Table) []plan.Table {
	rank := func(t plan.Table) int {
		newT, oldT := captureTargets(target, t), captureTargets(old, t)
		gains := slices.ContainsFunc(newT, func(x string) bool { return !slices.Contains(oldT, x) })
		loses := slices.ContainsFunc(oldT, func(x string) bool { return !slices.Contains(newT, x) })
		newJumps, oldJumps := len(target.ChainRules(t, "PREROUTING")), len(old.ChainRules(t, "PREROUTING"))
		switch {
		case gains && !loses, !loses && newJumps > oldJumps:
			return 0
		case loses && !gains, !gains && newJumps < oldJumps:
			return 2
		}
		return 1
	}
	out := slices.Clone(tables)
	slices.SortStableFunc(out, func(a, b plan.Table) int { return rank(a) - rank(b) })
	return out
}

// routingSteps compares the plan's routing with ours in the namespace: what
// is missing is added first, what is stale removed last.
func routingSteps(p plan.Plan, st State) []Step {
	var add, del RoutingChange
	for _, r := range p.Routes {
		if !st.Routing.hasRoute(r) || !st.Routing.hasTable(r.Family, r.Table) {
			add.AddRoutes = append(add.AddRoutes, r)
		}
	}
	for _, a := range p.Addrs {
		if !st.Routing.hasAddr(a) {
			add.AddAddrs = append(add.AddAddrs, a)
		}
	}
	for _, r := range st.Routing.Routes {
		if !slices.Contains(p.Routes, r) {
			del.DelRoutes = append(del.DelRoutes, r)
		}
	}
	for _, t := range st.Routing.Tables {
		if !slices.ContainsFunc(p.Routes, func(r plan.Route) bool { return r.Family == t.Family && r.Table == t.Table }) {
			del.DelTables = append(del.DelTables, t)
		}
	}
	for _, a := range st.Routing.Addrs {
		if !slices.Contains(p.Addrs, a) {
			del.DelAddrs = append(del.DelAddrs, a)
		}
	}
	var steps []Step
	if !add.empty() {
		steps = append(steps, Step{Kind: StepRouting, Phase: phaseRouteAdd, Routing: &add})
	}
	if !del.empty() {
		steps = append(steps, Step{Kind: StepRouting, Phase: phaseTidy, Routing: &del})
	}
	return steps
}

// emptiedTables lists the iptables-nft tables (nat, mangle, raw) that hold
// nothing once the steps ran: only base chains with an accept policy and no
// rule. Deleting them changes nothing for a packet, and leaves the
// namespace as it was before the first apply.
func emptiedTables(st State, steps []Step) []NftTableRef {
	var out []NftTableRef
	for _, fam := range families {
		fs := st.flavourState(FlavourNft, fam)
		want := plan.RuleSet{Family: fam}
		owned := plan.Owned(fam, fs.Saved)
		for _, s := range steps {
			if s.Kind == StepRestore && s.Flavour == FlavourNft && s.Family == fam {
				want = s.Want
			}
		}
		if idx := slices.IndexFunc(steps, func(s Step) bool {
			return s.Kind == StepRestore && s.Flavour == FlavourNft && s.Family == fam
		}); idx < 0 {
			// Unchanged: what is there stays, ours included.
			if fs.Read {
				want = plan.OwnedRuleSet(fam, fs.Saved)
			}
			owned = plan.Removal{}
		}
		for _, t := range []plan.Table{plan.TableNat, plan.TableMangle, plan.TableRaw} {
			if !slices.Contains(fs.Tables, string(t)) || !slices.Contains(fs.AcceptOnly, t) {
				continue
			}
			if slices.Contains(want.Tables(), t) {
				continue
			}
			empty := true
			for tc, n := range fs.Counts {
				if tc.Table != t {
					continue
				}
				if !plan.Builtin(t, tc.Chain) && !slices.Contains(owned.Chains, tc) {
					empty = false // a chain of someone else's
					break
				}
				ours := 0
				for _, r := range owned.Rules {
					if r.Table == t && r.Chain == tc.Chain {
						ours++
					}
				}
				if tc.Chain.Owned() {
					ours = n
				}
				if n-ours > 0 {
					empty = false
					break
				}
			}
			if empty {
				out = append(out, NftTableRef{Family: nftFamilyName(fam), Name: string(t), IfEmpty: true})
			}
		}
	}
	return out
}

func nftFamilyName(f plan.Family) string {
	if f == plan.IPv6 {
		return "ip6"
	}
	return "ip"
}
