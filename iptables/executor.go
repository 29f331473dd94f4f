package iptables

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mesh-init/istio-iptables/plan"
)

// BackendMode is the --iptables-mode choice.
type BackendMode string

// The backend modes.
const (
	BackendAuto   BackendMode = "auto"
	BackendNft    BackendMode = "nft"
	BackendLegacy BackendMode = "legacy"
)

// Validate accepts auto, nft and legacy.
func (m BackendMode) Validate() error {
	switch m {
	case BackendAuto, BackendNft, BackendLegacy:
		return nil
	}
	return fmt.Errorf("%q is not auto, nft or legacy", string(m))
}

// backend is one iptables flavour.
type backend string

const (
	nft    backend = "nft"
	legacy backend = "legacy"
)

// binary names a flavour's tool for a family, e.g. ip6tables-nft-restore.
func (b backend) binary(f plan.Family, tool string) string {
	base := "iptables"
	if f == plan.IPv6 {
		base = "ip6tables"
	}
	return base + "-" + string(b) + "-" + tool
}

func (b backend) other() backend {
	if b == nft {
		return legacy
	}
	return nft
}

// Executor writes a Plan into a network namespace and removes it again.
type Executor interface {
	// Apply makes the namespace hold exactly p, whatever an earlier run
	// left there; foreign rules are untouched.
	Apply(ctx context.Context, p plan.Plan) error
	// Cleanup removes everything this tool owns, in both families and both
	// backends; absent objects are not errors.
	Cleanup(ctx context.Context) error
}

// Options configure the real executor.
type Options struct {
	// Netns is the path of the namespace to program; "" is the current one.
	Netns string
	// Mode picks the iptables flavour (SPEC §4.1).
	Mode BackendMode
	// LockWait bounds the wait for the xtables lock; 0 means 30 s.
	LockWait time.Duration
	// Logger receives one line per family and the backend choice; nil
	// discards them.
	Logger *slog.Logger
}

// kernel is what the executor needs from the running system besides the
// iptables binaries: namespaces, state that the kernel shows without a
// process, policy routing. The Linux one is in kernel_linux.go.
type kernel interface {
	// Do runs fn with the calling thread in the namespace at path.
	Do(path string, fn func() error) error
	// LegacyTables lists the legacy x_tables tables loaded in the current
	// namespace (/proc/thread-self/net/ip{,6}_tables_names).
	LegacyTables(f plan.Family) ([]string, error)
	// NftTables lists the nf_tables tables of the ip and ip6 families.
	NftTables() (map[plan.Family][]string, error)
	// DeleteEmptyNftTables deletes those of the given iptables-nft tables
	// that hold no rule and no user chain.
	DeleteEmptyNftTables(f plan.Family, tables []plan.Table) error
	// NftMarkers lists the marker tables (MarkerPrefix, family inet) and
	// returns the current nf_tables generation, in one netlink session.
	NftMarkers() (markers []string, gen uint32, err error)
	// SetNftMarker replaces every marker table by one called name (none
	// when name is "") in one transaction.
	SetNftMarker(name string) error
	// SyncRoutes makes the TPROXY policy routing and addresses be exactly
	// routes and addrs, removing stale TPROXY routing of an earlier run.
	SyncRoutes(routes []plan.Route, addrs []plan.Addr) error
}

type executor struct {
	o        Options
	run      execer
	lookPath func(string) (string, error)
	k        kernel
	log      *slog.Logger
	bins     map[string]string // name -> resolved path
	nftTabs  map[plan.Family][]string
	chosen   backend // the backend of the last apply
}

// NewExecutor returns the real executor.
func NewExecutor(o Options) (Executor, error) {
	return newExecutor(o, osExecer{}, exec.LookPath, newKernel()), nil
}

func newExecutor(o Options, run execer, lookPath func(string) (string, error), k kernel) *executor {
	if o.Mode == "" {
		o.Mode = BackendAuto
	}
	if o.LockWait == 0 {
		o.LockWait = 30 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &executor{o: o, run: run, lookPath: lookPath, k: k, log: log, bins: map[string]string{}}
}

// ErrNoBinary is returned when an iptables binary the run needs is missing.
var ErrNoBinary = errors.New("binary not found")

// bin resolves a binary once.
func (e *executor) bin(name string) (string, error) {
	if p, ok := e.bins[name]; ok {
		return p, nil
	}
	p, err := e.lookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, ErrNoBinary)
	}
	e.bins[name] = p
	return p, nil
}

func (e *executor) has(name string) bool {
	_, err := e.bin(name)
	return err == nil
}

// familyState is what one flavour holds in one family.
type familyState struct {
	saved plan.Saved
	read  bool // whether anything was read (false: known empty)
}

// state is the state read once at the start of a run.
type state struct {
	chosen backend
	by     map[backend]map[plan.Family]familyState
}

// save runs `*-save` for a flavour and family, unless the kernel shows
// without a process that the flavour holds no table at all in that family.
func (e *executor) save(ctx context.Context, b backend, f plan.Family) (familyState, error) {
	var tables []string
	var err error
	if b == nft {
		if e.nftTabs == nil {
			if e.nftTabs, err = e.k.NftTables(); err != nil {
				return familyState{}, err
			}
		}
		tables = e.nftTabs[f]
	} else {
		tables, err = e.k.LegacyTables(f)
	}
	if err != nil {
		return familyState{}, err
	}
	// Any table counts, not only ours: backend choice looks for rules in
	// every table (SPEC §4.1). No table at all means nothing to read.
	if len(tables) == 0 {
		return familyState{}, nil
	}
	name := b.binary(f, "save")
	path, err := e.bin(name)
	if err != nil {
		return familyState{}, err
	}
	out, err := e.run.Run(ctx, []string{path}, nil)
	if err != nil {
		return familyState{}, fmt.Errorf("read %s state: %w", f, err)
	}
	s, err := plan.ParseSave(string(out))
	if err != nil {
		return familyState{}, fmt.Errorf("read %s state from %s: %w", f, name, err)
	}
	return familyState{saved: s, read: true}, nil
}

// readState reads both flavours' state for the families and picks the
// backend (SPEC §4.1): legacy only when legacy holds rules and nft holds
// none; otherwise nft; a flavour that is not installed is not used.
func (e *executor) readState(ctx context.Context, fams []plan.Family) (state, error) {
	st := state{by: map[backend]map[plan.Family]familyState{nft: {}, legacy: {}}}
	installed := func(b backend) bool {
		for _, f := range fams {
			if !e.has(b.binary(f, "restore")) {
				return false
			}
		}
		return true
	}
	hasRules := map[backend]bool{}
	for _, b := range []backend{nft, legacy} {
		if !installed(b) {
			continue
		}
		for _, f := range fams {
			fs, err := e.save(ctx, b, f)
			if err != nil {
				return state{}, err
			}
			st.by[b][f] = fs
			hasRules[b] = hasRules[b] || fs.saved.HasRules()
		}
	}
	switch e.o.Mode {
	case BackendNft:
		st.chosen = nft
	case BackendLegacy:
		st.chosen = legacy
	default:
		st.chosen = nft
		if hasRules[legacy] && !hasRules[nft] {
			st.chosen = legacy
		}
		if !installed(st.chosen) && installed(st.chosen.other()) {
			st.chosen = st.chosen.other()
		}
	}
	if !installed(st.chosen) {
		var missing []string
		for _, f := range fams {
			if !e.has(st.chosen.binary(f, "restore")) {
				missing = append(missing, st.chosen.binary(f, "restore"))
			}
		}
		return state{}, fmt.Errorf("iptables %s backend: %s: %w", st.chosen, strings.Join(missing, ", "), ErrNoBinary)
	}
	return st, nil
}

// restore feeds one transaction to a flavour's *-restore --noflush.
func (e *executor) restore(ctx context.Context, b backend, f plan.Family, input string) error {
	return e.startRestore(ctx, b, f, input)()
}

// startRestore starts a flavour's *-restore --noflush on the calling
// thread (so it runs in the thread's namespace) and returns what waits for
// it and reports its failure.
func (e *executor) startRestore(ctx context.Context, b backend, f plan.Family, input string) func() error {
	path, err := e.bin(b.binary(f, "restore"))
	if err != nil {
		return func() error { return err }
	}
	argv := []string{path, "--noflush", "--wait", strconv.Itoa(int(e.o.LockWait / time.Second))}
	wait := e.run.Start(ctx, argv, []byte(input))
	return func() error {
		if _, err := wait(); err != nil {
			var ee *ExecError
			if errors.As(err, &ee) {
				return newRestoreError(f, input, ee)
			}
			return fmt.Errorf("restore %s rules: %w", f, err)
		}
		return nil
	}
}

// written is a family already changed in this run, with what undoes it.
type written struct {
	b    backend
	f    plan.Family
	undo string
	// tables the undo may leave empty
	tables []plan.Table
}

// Apply implements Executor.
func (e *executor) Apply(ctx context.Context, p plan.Plan) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("invalid plan: %w", err)
	}
	return e.k.Do(e.o.Netns, func() error { return e.apply(ctx, p) })
}

func (e *executor) apply(ctx context.Context, p plan.Plan) error {
	hash := plan.Hash(p)
	if done, err := e.unchangedSinceMarker(hash); err != nil {
		return err
	} else if done {
		if len(p.Routes) > 0 || len(p.Addrs) > 0 {
			if err := e.k.SyncRoutes(p.Routes, p.Addrs); err != nil {
				return fmt.Errorf("policy routing: %w", err)
			}
		}
		return nil
	}
	if err := e.applyRules(ctx, p); err != nil {
		return err
	}
	if err := e.removeNative(); err != nil { // a native run's table: no duplicate capture
		return fmt.Errorf("remove the native nftables table: %w", err)
	}
	e.recordMarker(hash)
	return nil
}

// unchangedSinceMarker is the no-op fast path of a re-run: the marker
// table records this plan at the current nf_tables generation, and no
// legacy table exists that could change the backend choice. Nothing is
// read with *-save and nothing is written.
func (e *executor) unchangedSinceMarker(hash string) (bool, error) {
	if e.o.Mode == BackendLegacy {
		return false, nil
	}
	markers, gen, err := e.k.NftMarkers()
	if err != nil || !markerCurrent(markers, hash, gen) {
		return false, nil // no marker, or it cannot be read: the full path decides
	}
	for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
		if tables, err := e.k.LegacyTables(f); err != nil || len(tables) > 0 {
			return false, nil
		}
	}
	e.log.Info("rules already in place, nothing read or written", "backend", nft, "generation", gen,
		"marker", MarkerName(hash, gen))
	return true, nil
}

// recordMarker writes the marker of a successful apply on nft, or removes
// a stale one after an apply on legacy. A failure only costs the next
// re-run its fast path, so it is logged, not returned.
func (e *executor) recordMarker(hash string) {
	name := ""
	if e.chosen == nft {
		_, gen, err := e.k.NftMarkers()
		if err != nil {
			e.log.Warn("cannot read the nf_tables generation; the next re-run reads the state in full", "err", err)
			return
		}
		// The marker's own transaction bumps the generation by one.
		name = MarkerName(hash, gen+1)
	}
	if err := e.k.SetNftMarker(name); err != nil {
		e.log.Warn("cannot record the apply; the next re-run reads the state in full", "err", err)
	}
}

func (e *executor) applyRules(ctx context.Context, p plan.Plan) error {
	var fams []plan.Family
	for _, rs := range p.RuleSets {
		fams = append(fams, rs.Family)
	}
	// The other family is read too when its binaries exist, so that rules
	// of an earlier run with other flags are removed there.
	all := slices.Clone(fams)
	for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
		if !slices.Contains(all, f) && (e.has(nft.binary(f, "restore")) || e.has(legacy.binary(f, "restore"))) {
			all = append(all, f)
		}
	}
	st, err := e.readState(ctx, fams)
	if err != nil {
		return err
	}
	for _, f := range all {
		if slices.Contains(fams, f) {
			continue
		}
		for _, b := range []backend{nft, legacy} {
			if e.has(b.binary(f, "restore")) {
				fs, err := e.save(ctx, b, f)
				if err != nil {
					return err
				}
				st.by[b][f] = fs
			}
		}
	}
	e.log.Info("backend", "iptables", st.chosen)
	e.chosen = st.chosen

	var done []written
	foundOwned := false
	rollback := func(cause error) error {
		for i := len(done) - 1; i >= 0; i-- {
			w := done[i]
			if err := e.restore(context.WithoutCancel(ctx), w.b, w.f, w.undo); err != nil {
				return fmt.Errorf("%w; rolling back %s failed too: %v: %w", cause, w.f, err, ErrPartial)
			}
			if w.b == nft {
				// A first apply rolled back leaves empty tables: remove them.
				if err := e.k.DeleteEmptyNftTables(w.f, w.tables); err != nil {
					return fmt.Errorf("%w; rolling back %s: %v: %w", cause, w.f, err, ErrPartial)
				}
			}
			e.log.Info("rolled back", "family", w.f, "backend", w.b)
		}
		return cause
	}
	// Every transaction is known before any is written: one per family
	// and flavour that needs a change. They are independent (another
	// family, another flavour), so they run at once: each *-restore is
	// forked here, on the thread that is in the namespace, and then all
	// are waited for. A dual-stack apply costs the slower family, not
	// the sum. If any fails, the others are rolled back.
	type tx struct {
		b       backend
		f       plan.Family
		rs      plan.RuleSet
		old     plan.Removal
		input   string
		undo    plan.RuleSet
		emptied []plan.Table
	}
	var txs []tx
	for _, f := range all {
		rs, want := p.RuleSet(f)
		if !want {
			rs = plan.RuleSet{Family: f}
		}
		for _, b := range []backend{st.chosen, st.chosen.other()} {
			fs := st.by[b][f]
			if b != st.chosen {
				rs = plan.RuleSet{Family: f} // the other flavour keeps nothing of ours
			}
			old := plan.Owned(f, fs.saved)
			foundOwned = foundOwned || !old.Empty()
			if (b != st.chosen || !want) && old.Empty() {
				continue
			}
			if plan.InPlace(rs, fs.saved) {
				e.log.Info("rules already in place, nothing written", "family", f, "backend", b)
				continue
			}
			txs = append(txs, tx{b: b, f: f, rs: rs, old: old, input: plan.Render(rs, old), undo: RestoreRuleSet(f, fs.saved), emptied: emptied(rs, old)})
		}
	}
	start := time.Now()
	waits := make([]func() error, len(txs))
	for i, t := range txs {
		waits[i] = e.startRestore(ctx, t.b, t.f, t.input)
	}
	var failed []error
	for i, t := range txs {
		if err := waits[i](); err != nil {
			failed = append(failed, err)
			continue
		}
		newState := plan.Owned(t.f, cleanState(t.f, t.rs))
		done = append(done, written{t.b, t.f, plan.Render(t.undo, newState), emptied(t.undo, newState)})
		e.log.Info("rules written", "family", t.f, "backend", t.b, "rules", len(t.rs.Rules),
			"removed", len(t.old.Rules)+len(t.old.Chains), "took", time.Since(start).Round(10*time.Microsecond))
	}
	if len(failed) > 0 {
		return rollback(errors.Join(failed...))
	}
	for _, t := range txs {
		if t.b == nft {
			if err := e.k.DeleteEmptyNftTables(t.f, t.emptied); err != nil {
				e.log.Warn("could not delete empty tables", "family", t.f, "err", err)
			}
		}
	}
	// Stale TPROXY routing can only be left by an earlier run, whose rules
	// would have been found: with none found and none wanted, skip netlink.
	if len(p.Routes) == 0 && len(p.Addrs) == 0 && !foundOwned {
		return nil
	}
	if err := e.k.SyncRoutes(p.Routes, p.Addrs); err != nil {
		return rollback(fmt.Errorf("policy routing: %w", err))
	}
	return nil
}

// emptied lists the tables old used that rs does not.
func emptied(rs plan.RuleSet, old plan.Removal) []plan.Table {
	var out []plan.Table
	for _, t := range old.Tables(plan.RuleSet{}) {
		if !slices.Contains(rs.Tables(), t) {
			out = append(out, t)
		}
	}
	return out
}

// Cleanup implements Executor.
func (e *executor) Cleanup(ctx context.Context) error {
	return e.k.Do(e.o.Netns, func() error { return e.cleanup(ctx) })
}

func (e *executor) cleanup(ctx context.Context) error {
	removed := 0
	for _, b := range []backend{nft, legacy} {
		for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
			if !e.has(b.binary(f, "restore")) {
				continue
			}
			fs, err := e.save(ctx, b, f)
			if err != nil {
				return err
			}
			old := plan.Owned(f, fs.saved)
			if old.Empty() {
				continue
			}
			if err := e.restore(ctx, b, f, plan.Render(plan.RuleSet{Family: f}, old)); err != nil {
				return err
			}
			removed += len(old.Rules) + len(old.Chains)
			e.log.Info("removed", "family", f, "backend", b, "rules", len(old.Rules), "chains", len(old.Chains))
			if b == nft {
				if err := e.k.DeleteEmptyNftTables(f, old.Tables(plan.RuleSet{})); err != nil {
					e.log.Warn("could not delete empty tables", "family", f, "err", err)
				}
			}
		}
	}
	if err := e.removeNative(); err != nil {
		return fmt.Errorf("remove the native nftables table: %w", err)
	}
	if err := e.k.SyncRoutes(nil, nil); err != nil {
		return fmt.Errorf("policy routing: %w", err)
	}
	if markers, _, err := e.k.NftMarkers(); err == nil && len(markers) > 0 {
		if err := e.k.SetNftMarker(""); err != nil {
			return fmt.Errorf("remove the record of the last apply: %w", err)
		}
		removed += len(markers)
	}
	if removed == 0 {
		e.log.Info("nothing to remove")
	}
	return nil
}

// RestoreRuleSet rebuilds, from saved state, the rule set that writes this
// tool's rules back as they are there: the owned chains with their rules,
// and the owned builtin-chain rules, those on top of their chain inserted.
// It is what a rollback writes.
func RestoreRuleSet(f plan.Family, s plan.Saved) plan.RuleSet {
	owned := plan.Owned(f, s)
	rs := plan.RuleSet{Family: f, Chains: owned.Chains}
	for _, t := range []plan.Table{plan.TableNat, plan.TableMangle, plan.TableRaw} {
		st, _ := s.Table(t)
		for _, c := range plan.BuiltinChains(t) {
			top := true
			var inserted []plan.Rule
			for _, r := range st.ChainRules(c) {
				isOwned := slices.ContainsFunc(owned.Rules, func(o plan.SavedRule) bool { return o.Table == t && slices.Equal(o.Args, r.Args) && o.Chain == c })
				switch {
				case isOwned && top:
					inserted = append([]plan.Rule{{Table: t, Chain: c, Insert: true, Args: r.Args}}, inserted...)
				case isOwned:
					rs.Rules = append(rs.Rules, plan.Rule{Table: t, Chain: c, Args: r.Args})
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
				rs.Rules = append(rs.Rules, plan.Rule{Table: t, Chain: tc.Chain, Args: r.Args})
			}
		}
	}
	return rs
}

// cleanState turns a rule set into the saved state it produces in a clean
// namespace, so Owned can say what a rollback has to remove.
func cleanState(f plan.Family, rs plan.RuleSet) plan.Saved {
	var s plan.Saved
	for _, t := range rs.Tables() {
		st := plan.SavedTable{Name: t}
		for _, tc := range rs.Chains {
			if tc.Table == t {
				st.Chains = append(st.Chains, plan.SavedChain{Name: tc.Chain, Policy: "-"})
			}
		}
		for _, c := range append(plan.BuiltinChains(t), chainsOf(rs, t)...) {
			for _, r := range rs.ChainRules(t, c) {
				args := r.Args
				if sp, err := plan.ParseSpec(f, r.Args); err == nil {
					args = sp.Args()
				}
				st.Rules = append(st.Rules, plan.SavedRule{Table: t, Chain: c, Args: args})
			}
		}
		s.Tables = append(s.Tables, st)
	}
	return s
}

func chainsOf(rs plan.RuleSet, t plan.Table) []plan.Chain {
	var out []plan.Chain
	for _, tc := range rs.Chains {
		if tc.Table == t {
			out = append(out, tc.Chain)
		}
	}
	return out
}
