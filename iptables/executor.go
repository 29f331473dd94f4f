package iptables

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/mesh-init/istio-iptables/plan"
)

// Executor writes a Plan into a network namespace and removes it again.
type Executor interface {
	// Apply makes the namespace hold exactly p, whatever an earlier run
	// left there; foreign rules are untouched.
	Apply(ctx context.Context, p plan.Plan) error
	// Cleanup removes everything this tool owns, in both families and on
	// every backend; absent objects are not errors.
	Cleanup(ctx context.Context) error
	// Check reports whether the namespace holds exactly p: nil, or an
	// error wrapping ErrDrift that names what differs.
	Check(ctx context.Context, p plan.Plan) error
	// Decide reads the namespace and returns the transaction an Apply of
	// p (a Cleanup when cleanup is set) would commit, committing nothing:
	// the dry run against a live namespace.
	Decide(ctx context.Context, p plan.Plan, cleanup bool) (Transaction, error)
}

// Options configure the real executor.
type Options struct {
	// Namespace is the namespace to program; nil is the current one.
	Namespace *Namespace
	// Mode picks the backend (contract §4.1).
	Mode BackendMode
	// LockWait bounds the wait for the namespace's lock and for the
	// xtables lock; 0 means 30 s.
	LockWait time.Duration
	// Timeout bounds the whole run, waits included; 0 means LockWait plus
	// 10 s. A process still running then is killed, and the run says what
	// state it left.
	Timeout time.Duration
	// Logger receives one line per step and the backend choice; nil
	// discards them.
	Logger *slog.Logger
}

// kernel is the one seam around the running system besides the iptables
// processes. Every method runs on the calling thread's namespace. The
// Linux one is in kernel_linux.go; tests use a fake.
type kernel interface {
	// Lock takes the namespace's one-writer lock, waiting up to wait.
	Lock(ctx context.Context, wait time.Duration) (release func(), err error)
	// Probe reads what the kernel shows without a process, the parts
	// asked for: everything of State but Binaries and the *-save output.
	Probe(parts ProbeParts) (State, error)
	// WriteNative writes the native table in one batch.
	WriteNative(w NativeWrite) error
	// DeleteNftTables deletes nftables tables in one batch.
	DeleteNftTables(refs []NftTableRef) error
	// SetMarker removes the named records and adds one ("" none).
	SetMarker(remove []string, add string) error
	// ChangeRouting adds and removes tagged policy routing and addresses.
	ChangeRouting(ch RoutingChange) error
}

// ProbeParts selects what Probe reads.
type ProbeParts uint8

// The parts of a probe.
const (
	ProbeNft     ProbeParts = 1 << iota // nf_tables: iptables-nft's tables, the native table, the records, the generation
	ProbeLegacy                         // the legacy table names
	ProbeRouting                        // our policy routing, lo
	ProbeAll     = ProbeNft | ProbeLegacy | ProbeRouting
)

// enterer runs a function on a thread in the namespace (*Namespace).
type enterer interface {
	Do(fn func() error) error
	Path() string
}

// The outcomes a failed run reports, for cmd to word its message.
var (
	// ErrUnchanged: the run failed before it wrote anything.
	ErrUnchanged = errors.New("nothing was changed")
	// ErrRolledBack: the run wrote, failed, and put the earlier state
	// back, which was then read back and found intact.
	ErrRolledBack = errors.New("rolled back: the earlier state is intact (read back)")
	// ErrPartial: the namespace may hold part of the new state.
	ErrPartial = errors.New("the namespace may hold part of the new state; run again")
	// ErrNotVerified: a step reported success, but reading the namespace
	// back does not show what it should have written.
	ErrNotVerified = errors.New("the namespace does not hold what was written")
	// ErrDrift: Check found the namespace differs from the plan.
	ErrDrift = errors.New("the namespace does not hold the plan")
	// ErrDeadline: the run's deadline passed.
	ErrDeadline = errors.New("the run's deadline (--timeout) passed")
	// ErrNoBinary is an iptables binary the run needs that is missing.
	ErrNoBinary = errors.New("binary not found")
)

// Outcome words what a failed run left, as the executor proved it: the
// earlier state is called intact only when it was read back.
func Outcome(err error) string {
	switch {
	case errors.Is(err, ErrUnchanged):
		return "nothing was changed"
	case errors.Is(err, ErrRolledBack):
		return "rolled back; the earlier state is intact (read back)"
	case errors.Is(err, ErrPartial):
		return "the namespace may hold part of the new state"
	}
	return "the state of the namespace is unknown"
}

type executor struct {
	o        Options
	ns       enterer
	run      execer
	lookPath func(string) (string, error)
	k        kernel
	log      *slog.Logger
}

// NewExecutor returns the real executor.
func NewExecutor(o Options) (Executor, error) {
	if err := o.Mode.Validate(); o.Mode != "" && err != nil {
		return nil, err
	}
	ns := o.Namespace
	if ns == nil {
		ns = CurrentNamespace()
	}
	return newExecutor(o, ns, osExecer{}, exec.LookPath, newKernel()), nil
}

func newExecutor(o Options, ns enterer, run execer, lookPath func(string) (string, error), k kernel) *executor {
	if o.Mode == "" {
		o.Mode = BackendAuto
	}
	if o.LockWait == 0 {
		o.LockWait = 30 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = o.LockWait + 10*time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &executor{o: o, ns: ns, run: run, lookPath: lookPath, k: k, log: log}
}

// Apply implements Executor.
func (e *executor) Apply(ctx context.Context, p plan.Plan) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("invalid plan: %w: %w", err, ErrUnchanged)
	}
	_, err := e.runTx(ctx, p, decideOptions{Mode: e.o.Mode}, true)
	return err
}

// Cleanup implements Executor.
func (e *executor) Cleanup(ctx context.Context) error {
	_, err := e.runTx(ctx, plan.Plan{}, decideOptions{Mode: e.o.Mode, Cleanup: true}, true)
	return err
}

// Decide implements Executor.
func (e *executor) Decide(ctx context.Context, p plan.Plan, cleanup bool) (Transaction, error) {
	return e.runTx(ctx, p, decideOptions{Mode: e.o.Mode, Cleanup: cleanup}, false)
}

// Check implements Executor: the namespace holds p when the transaction
// that would apply it changes nothing.
func (e *executor) Check(ctx context.Context, p plan.Plan) error {
	tx, err := e.runTx(ctx, p, decideOptions{Mode: e.o.Mode, full: true}, false)
	if err != nil {
		return err
	}
	if tx.Empty() {
		return nil
	}
	var what []string
	for _, s := range tx.Steps {
		what = append(what, s.summary())
	}
	return fmt.Errorf("%w: applying it would take %d steps: %s", ErrDrift, len(tx.Steps), strings.Join(what, "; "))
}

// runTx is every run's one shape: in the namespace, under its lock, read
// the state once (the probe, then *-save only where it shows something to
// read), decide purely, and, when asked, commit.
func (e *executor) runTx(ctx context.Context, p plan.Plan, o decideOptions, commit bool) (Transaction, error) {
	hard, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), e.o.Timeout, ErrDeadline)
	defer cancel()
	var tx Transaction
	err := e.ns.Do(func() error {
		release, err := e.k.Lock(hard, e.o.LockWait)
		if err != nil {
			return fmt.Errorf("%w: %w", err, ErrUnchanged)
		}
		defer release()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stopped before anything was read (%w): %w", context.Cause(ctx), ErrUnchanged)
		}
		st, err := e.k.Probe(ProbeAll)
		if err != nil {
			return fmt.Errorf("read the namespace: %w: %w", err, ErrUnchanged)
		}
		st.Binaries = e.binaries()
		if short, ok := decideShortcut(p, st, o); ok && !o.full {
			tx = short
			if commit {
				e.log.Info("rules already in place, nothing read or written", "backend", tx.Backend,
					"generation", st.Generation, "record", MarkerName(tx.Hash, st.Generation))
				return e.commit(ctx, hard, tx, st)
			}
			return nil
		}
		if st, err = e.readSaves(hard, st); err != nil {
			return fmt.Errorf("%w: %w", err, ErrUnchanged)
		}
		if tx, err = decide(p, st, o); err != nil {
			return fmt.Errorf("%w: %w", err, ErrUnchanged)
		}
		if !commit {
			return nil
		}
		if tx.Backend != "" {
			e.log.Info("backend", "iptables", tx.Backend)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stopped before anything was written (%w): %w", context.Cause(ctx), ErrUnchanged)
		}
		return e.commit(ctx, hard, tx, st)
	})
	if err != nil {
		return Transaction{}, err
	}
	return tx, nil
}

// binaries resolves every iptables binary once.
func (e *executor) binaries() map[string]string {
	out := map[string]string{}
	for _, name := range binaryNames() {
		if p, err := e.lookPath(name); err == nil {
			out[name] = p
		}
	}
	return out
}

// readSaves runs *-save for each flavour and family where the probe shows
// something only it can tell: an ISTIO_* chain (nft), or any legacy table.
// A fresh namespace starts no process.
func (e *executor) readSaves(ctx context.Context, st State) (State, error) {
	for _, fl := range flavours {
		for _, fam := range families {
			fs := st.Iptables[fl][fam]
			if !fs.mayHoldOwned(fl) {
				continue
			}
			bin, ok := st.Binaries[fl.binary(fam, "save")]
			if !ok {
				continue // decide names what cannot be read
			}
			saved, err := e.save(ctx, bin, fam)
			if err != nil {
				return State{}, err
			}
			fs.Saved, fs.Read = saved, true
			st.Iptables[fl][fam] = fs
		}
	}
	return st, nil
}

func (e *executor) save(ctx context.Context, bin string, fam plan.Family) (plan.Saved, error) {
	out, err := e.run.Run(ctx, []string{bin}, nil)
	if err != nil {
		return plan.Saved{}, fmt.Errorf("read %s state: %w", fam, err)
	}
	s, err := plan.ParseSave(string(out))
	if err != nil {
		return plan.Saved{}, fmt.Errorf("read %s state from %s: %w", fam, bin, err)
	}
	return s, nil
}
