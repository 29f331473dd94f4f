package iptables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mesh-init/istio-iptables/plan"
)

// commit executes a transaction, phase by phase. The restores of one
// phase are independent (other families, other flavours) and run at once,
// each forked on this thread, which is in the namespace. Once every step
// reported success, the namespace is read back and compared with what the
// steps should have left; only then is the apply recorded. A failure rolls
// back what was written, reads the result back and says truly what the
// namespace holds. A stop request (SIGTERM) does not interrupt: the steps
// take milliseconds, and finishing leaves the new state whole and
// verified. hard is the run's deadline, which does interrupt.
func (e *executor) commit(stop, hard context.Context, tx Transaction, st State) error {
	start := time.Now()
	var done []Step
	for i := 0; i < len(tx.Steps); {
		j := i
		for j < len(tx.Steps) && tx.Steps[j].Phase == tx.Steps[i].Phase {
			j++
		}
		phase := tx.Steps[i:j]
		errs := e.runPhase(hard, phase)
		var failed []error
		for k, s := range phase {
			if errs[k] != nil {
				failed = append(failed, errs[k])
			}
			done = append(done, s) // a failed restore may have committed some of its tables
		}
		if len(failed) > 0 {
			// The rollback gets a budget of its own: the failure may be
			// the deadline itself (a hung binary), and a rollback cut
			// short at once would leave the partial state unexplained.
			rb, cancel := context.WithTimeout(context.WithoutCancel(hard), rollbackBudget)
			defer cancel()
			return e.rollback(rb, done, st, errors.Join(failed...))
		}
		i = j
	}
	var after *State
	if !tx.Empty() {
		st2, err := e.verify(hard, tx, st)
		if err != nil {
			// What reported success but is not there: put back what can
			// be put back (routing, the other steps), and say what is left.
			rb, cancel := context.WithTimeout(context.WithoutCancel(hard), rollbackBudget)
			defer cancel()
			return e.rollback(rb, tx.Steps, st, err)
		}
		if tx.Marker == MarkerRecord || tx.Marker == MarkerRemove {
			after = &st2 // read with ProbeNft
		}
	}
	if err := e.mark(tx, after); err != nil {
		e.log.Warn("could not record the apply; the next run reads the state in full", "err", err)
	}
	if stop.Err() != nil {
		e.log.Warn("stop requested during the apply: it was finished and verified first", "cause", context.Cause(stop))
	}
	if !tx.Empty() {
		e.log.Info("done", "steps", len(tx.Steps), "took", time.Since(start).Round(10*time.Microsecond))
	} else if !tx.Shortcut {
		e.log.Info("rules already in place, nothing written")
	}
	return nil
}

// rollbackBudget bounds a rollback, which runs past the run's deadline.
const rollbackBudget = 5 * time.Second

// runPhase runs one phase's steps: the restores concurrently, the
// netlink steps in order on this thread.
func (e *executor) runPhase(ctx context.Context, steps []Step) []error {
	errs := make([]error, len(steps))
	waits := map[int]func() error{}
	for i, s := range steps {
		if s.Kind == StepRestore {
			waits[i] = e.startRestore(ctx, s.Flavour, s.Family, s.Input)
		}
	}
	for i, s := range steps {
		switch s.Kind {
		case StepRestore:
			continue
		case StepNative:
			if errs[i] = e.k.WriteNative(*s.Native); errs[i] != nil && e.nativeCommitted(*s.Native) {
				// The batch was committed and only its acks were lost
				// (ENOBUFS on a huge batch): what counts is the table,
				// read back.
				e.log.Warn("the native write reported an error, but the table it wrote is in place, read back", "err", errs[i])
				errs[i] = nil
			}
		case StepDeleteTables:
			errs[i] = e.k.DeleteNftTables(s.Delete)
		case StepRouting:
			if errs[i] = e.k.ChangeRouting(*s.Routing); errs[i] != nil {
				errs[i] = fmt.Errorf("policy routing: %w", errs[i])
			}
		}
		if errs[i] == nil {
			msg := "written"
			if s.Kind == StepNative {
				msg = "rules written" // as a restore's, so logs read the same on every backend
			}
			e.log.Info(msg, "step", s.summary())
		}
	}
	for i, wait := range waits {
		errs[i] = wait()
		if errs[i] == nil {
			s := steps[i]
			e.log.Info("rules written", "family", s.Family, "backend", s.Flavour, "rules", len(s.Want.Rules),
				"tables", tableNames(s.Tables))
		}
	}
	return errs
}

// nativeCommitted reports whether the namespace holds the native table as
// w writes it: ours, with w's plan hash and rule counts.
func (e *executor) nativeCommitted(w NativeWrite) bool {
	st, err := e.k.Probe(ProbeNft)
	if err != nil || !st.Native.Ours || st.Native.Hash != w.Hash || len(st.Native.Chains) != len(w.Ruleset.Chains) {
		return false
	}
	for _, c := range w.Ruleset.Chains {
		if st.Native.Counts[c.Name] != len(c.Rules) {
			return false
		}
	}
	return true
}

func tableNames(ts []plan.Table) string {
	var s []string
	for _, t := range ts {
		s = append(s, string(t))
	}
	return strings.Join(s, ",")
}

// startRestore forks a flavour's *-restore --noflush on the calling thread
// (so it runs in the thread's namespace) and returns what waits for it and
// reports its failure.
func (e *executor) startRestore(ctx context.Context, fl Flavour, fam plan.Family, input string) func() error {
	path, err := e.lookPath(fl.binary(fam, "restore"))
	if err != nil {
		return func() error { return fmt.Errorf("%s: %w", fl.binary(fam, "restore"), ErrNoBinary) }
	}
	argv := []string{path, "--noflush", "--wait", strconv.Itoa(max(1, int(e.o.LockWait/time.Second)))}
	wait := e.run.Start(ctx, argv, []byte(input))
	return func() error {
		if _, err := wait(); err != nil {
			var ee *ExecError
			if errors.As(err, &ee) {
				return newRestoreError(fam, input, ee)
			}
			return fmt.Errorf("restore %s rules: %w", fam, err)
		}
		return nil
	}
}

// verify reads the namespace back and compares it with what the steps
// should have left. iptables-nft and the native table are compared over
// netlink, rule counts per chain and the owner tag (no process); legacy
// with *-save, rule by rule.
func (e *executor) verify(ctx context.Context, tx Transaction, before State) (State, error) {
	// Read back what the steps touched: nf_tables unless the only change
	// there was a native batch that carried its record (its kernel
	// transaction acknowledged every message, and is all or nothing),
	// routing when a step changed it.
	var parts ProbeParts
	if tx.Marker == MarkerRecord || tx.Marker == MarkerRemove {
		parts |= ProbeNft // the record needs the generation and the records
	}
	for _, s := range tx.Steps {
		switch {
		case s.Kind == StepRouting:
			parts |= ProbeRouting
		case s.Kind == StepNative && tx.Marker == MarkerInBatch:
		case s.Kind != StepRestore || s.Flavour == FlavourNft:
			parts |= ProbeNft
		}
	}
	var after State
	if parts != 0 {
		var err error
		if after, err = e.k.Probe(parts); err != nil {
			return State{}, fmt.Errorf("read the namespace back: %w: %w", err, ErrPartial)
		}
	}
	var errs []error
	for _, s := range tx.Steps {
		switch s.Kind {
		case StepRestore:
			if s.Flavour == FlavourNft {
				errs = append(errs, verifyCounts(s, before.flavourState(FlavourNft, s.Family), after.flavourState(FlavourNft, s.Family)))
				continue
			}
			bin, ok := before.Binaries[s.Flavour.binary(s.Family, "save")]
			if !ok {
				errs = append(errs, fmt.Errorf("%s %s: %s is not installed to read the result back", s.Flavour, s.Family, s.Flavour.binary(s.Family, "save")))
				continue
			}
			saved, err := e.save(ctx, bin, s.Family)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !holds(s.Want, saved) {
				errs = append(errs, fmt.Errorf("%s %s: %s exited 0, but %s does not show the rules it was given",
					s.Flavour, s.Family, s.Flavour.binary(s.Family, "restore"), s.Flavour.binary(s.Family, "save")))
			}
		case StepNative:
			if tx.Marker == MarkerInBatch {
				continue
			}
			n := after.Native
			if !n.Ours || n.Hash != s.Native.Hash {
				errs = append(errs, fmt.Errorf("native: table inet %s does not carry the tag of the plan written", NftTableName))
				continue
			}
			for _, c := range s.Native.Ruleset.Chains {
				if n.Counts[c.Name] != len(c.Rules) {
					errs = append(errs, fmt.Errorf("native: chain %s holds %d rules, %d written", c.Name, n.Counts[c.Name], len(c.Rules)))
				}
			}
			if len(n.Chains) != len(s.Native.Ruleset.Chains) {
				errs = append(errs, fmt.Errorf("native: table inet %s holds %d chains, %d written", NftTableName, len(n.Chains), len(s.Native.Ruleset.Chains)))
			}
		case StepRouting:
			for _, r := range s.Routing.AddRoutes {
				if !after.Routing.hasRoute(r) || !after.Routing.hasTable(r.Family, r.Table) {
					errs = append(errs, fmt.Errorf("routing: %s is not in place", strings.Join(r.Commands(), "; ")))
				}
			}
			for _, a := range s.Routing.AddAddrs {
				if !after.Routing.hasAddr(a) {
					errs = append(errs, fmt.Errorf("routing: %s is not in place", a.Command()))
				}
			}
		case StepDeleteTables:
			for _, d := range s.Delete {
				if d.Family == "inet" && d.Name == NftTableName && after.Native.Ours {
					errs = append(errs, fmt.Errorf("table inet %s is still there", NftTableName))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return State{}, fmt.Errorf("%w: %w", err, ErrNotVerified)
	}
	return after, nil
}

// holds reports whether saved holds exactly want of this tool's rules.
func holds(want plan.RuleSet, saved plan.Saved) bool {
	return plan.InPlace(want, saved)
}

// verifyCounts compares the rule counts iptables-nft left per chain with
// the step's: its own chains hold the plan's rules, builtin chains the
// foreign rules they held plus the plan's, and owned chains the plan drops
// are gone. A restore that exits 0 having written nothing, or something
// else, shows here.
func verifyCounts(s Step, before, after FlavourState) error {
	owned := plan.Owned(s.Family, s.Before)
	var errs []error
	want := map[plan.TableChain]int{}
	for tc, n := range before.Counts {
		if !plan.Builtin(tc.Table, tc.Chain) {
			continue
		}
		ours := 0
		for _, r := range owned.Rules {
			if r.Table == tc.Table && r.Chain == tc.Chain {
				ours++
			}
		}
		want[tc] = n - ours
	}
	for _, r := range s.Want.Rules {
		want[plan.TableChain{Table: r.Table, Chain: r.Chain}]++
	}
	for _, tc := range s.Want.Chains {
		if _, ok := want[tc]; !ok {
			want[tc] = 0
		}
	}
	for tc, n := range want {
		got, ok := after.Counts[tc]
		if !ok && !plan.Builtin(tc.Table, tc.Chain) {
			errs = append(errs, fmt.Errorf("%s: chain %s is missing", s.Family, tc))
			continue
		}
		if got != n {
			errs = append(errs, fmt.Errorf("%s: chain %s holds %d rules, %d expected", s.Family, tc, got, n))
		}
	}
	for _, tc := range owned.Chains {
		if _, ok := after.Counts[tc]; ok && !slices.Contains(s.Want.Chains, tc) {
			errs = append(errs, fmt.Errorf("%s: chain %s is still there", s.Family, tc))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s exited 0, but: %w", s.Flavour.binary(s.Family, "restore"), err)
	}
	return nil
}

// mark records a verified apply at the generation its own transaction
// moves to, or removes the records.
func (e *executor) mark(tx Transaction, after *State) error {
	switch tx.Marker {
	case MarkerRecord:
		if after == nil {
			st, err := e.k.Probe(ProbeNft)
			if err != nil {
				return err
			}
			after = &st
		}
		st := *after
		name := MarkerName(tx.Hash, st.Generation+1)
		if slices.Equal(st.Markers, []string{MarkerName(tx.Hash, st.Generation)}) {
			return nil // still current
		}
		return e.k.SetMarker(st.Markers, name)
	case MarkerRemove:
		if after == nil {
			st, err := e.k.Probe(ProbeNft)
			if err != nil {
				return err
			}
			after = &st
		}
		if len(after.Markers) == 0 {
			return nil
		}
		return e.k.SetMarker(after.Markers, "")
	}
	return nil
}

// rollback puts back what the done steps changed, in reverse order, and
// reads the result back. It reports ErrRolledBack when the earlier state
// is proven intact, ErrPartial otherwise, naming what is left.
func (e *executor) rollback(ctx context.Context, done []Step, st State, cause error) error {
	var left []string
	for i := len(done) - 1; i >= 0; i-- {
		s := done[i]
		switch s.Kind {
		case StepRestore:
			if err := e.undoRestore(ctx, s, st); err != nil {
				left = append(left, err.Error())
			}
		case StepNative:
			if s.Native.Replace {
				left = append(left, "the native table holds the new rules (its earlier rules cannot be put back)")
				continue
			}
			if err := e.k.DeleteNftTables([]NftTableRef{{Family: "inet", Name: NftTableName}}); err != nil {
				left = append(left, "the new native table: "+err.Error())
			}
		case StepRouting:
			// The inverse change: what was added goes, what was removed
			// comes back.
			undo := RoutingChange{AddRoutes: s.Routing.DelRoutes, AddAddrs: s.Routing.DelAddrs, DelAddrs: s.Routing.AddAddrs}
			for _, r := range s.Routing.AddRoutes {
				if !st.Routing.hasRoute(r) {
					undo.DelRoutes = append(undo.DelRoutes, r)
				}
				if !st.Routing.hasTable(r.Family, r.Table) {
					undo.DelTables = append(undo.DelTables, RouteTable{Family: r.Family, Table: r.Table})
				}
			}
			if err := e.k.ChangeRouting(undo); err != nil {
				left = append(left, "routing: "+err.Error())
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("%w; rolling back failed: %s: %w", cause, strings.Join(left, "; "), ErrPartial)
	}
	e.log.Info("rolled back, and read back: the earlier state is intact")
	return fmt.Errorf("%w: %w", cause, ErrRolledBack)
}

// undoRestore makes one flavour and family hold again what it held before
// the step (this tool's rules as they were; foreign rules were never
// touched), whatever part of the step committed, and reads it back.
func (e *executor) undoRestore(ctx context.Context, s Step, st State) error {
	bin, ok := st.Binaries[s.Flavour.binary(s.Family, "save")]
	if !ok {
		return fmt.Errorf("%s %s: %s is not installed to read what was committed", s.Flavour, s.Family, s.Flavour.binary(s.Family, "save"))
	}
	now, err := e.save(ctx, bin, s.Family)
	if err != nil {
		return fmt.Errorf("%s %s: %w", s.Flavour, s.Family, err)
	}
	earlier := plan.OwnedRuleSet(s.Family, s.Before)
	if !plan.InPlace(earlier, now) {
		old := plan.Owned(s.Family, now)
		input := plan.RenderTables(earlier, old, differing(earlier, now, old.Tables(earlier)))
		if err := e.startRestore(ctx, s.Flavour, s.Family, input)(); err != nil {
			return fmt.Errorf("%s %s: %w", s.Flavour, s.Family, err)
		}
		if now, err = e.save(ctx, bin, s.Family); err != nil {
			return fmt.Errorf("%s %s: %w", s.Flavour, s.Family, err)
		}
		if !plan.InPlace(earlier, now) {
			return fmt.Errorf("%s %s: the earlier rules are not back", s.Flavour, s.Family)
		}
	}
	if s.Flavour == FlavourNft {
		// Tables the step created, now empty again, go too.
		var created []NftTableRef
		for _, t := range s.Tables {
			if !slices.Contains(st.flavourState(FlavourNft, s.Family).Tables, string(t)) {
				created = append(created, NftTableRef{Family: nftFamilyName(s.Family), Name: string(t), IfEmpty: true})
			}
		}
		if len(created) > 0 {
			if err := e.k.DeleteNftTables(created); err != nil {
				return fmt.Errorf("%s %s: %w", s.Flavour, s.Family, err)
			}
		}
	}
	e.log.Info("rolled back", "family", s.Family, "backend", s.Flavour)
	return nil
}

// differing lists the tables, of those given, whose owned rules in saved
// differ from want's: a restore that makes saved hold want needs to touch
// only these, and leaves the others' commits alone.
func differing(want plan.RuleSet, saved plan.Saved, tables []plan.Table) []plan.Table {
	var out []plan.Table
	for _, t := range tables {
		sub := plan.RuleSet{Family: want.Family}
		for _, tc := range want.Chains {
			if tc.Table == t {
				sub.Chains = append(sub.Chains, tc)
			}
		}
		for _, r := range want.Rules {
			if r.Table == t {
				sub.Rules = append(sub.Rules, r)
			}
		}
		var only plan.Saved
		if st, ok := saved.Table(t); ok {
			only.Tables = []plan.SavedTable{st}
		}
		if !plan.InPlace(sub, only) {
			out = append(out, t)
		}
	}
	return out
}
