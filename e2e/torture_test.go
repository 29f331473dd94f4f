package e2e

// The torture suite of issue 14 (make torture): the real binary, run the
// way an init container runs it (inside the pod's namespace, UID 0 with
// only NET_ADMIN and NET_RAW), against races, signals, lying binaries and
// foreign state, judged by what the kernel holds afterwards and by where
// real TCP connections land. docs/torture.md says what each category
// proves. Files:
//
//	torture_test.go     the entry point, the trial counts, the report
//	torture_tool_test.go    how the tool is started, signalled and bounded; state snapshots
//	torture_traffic_test.go the flood and probe helpers and how a landing is judged
//	torture_swap_test.go    (a) REDIRECT<->TPROXY swaps under a connection flood
//	torture_signal_test.go  (b) SIGTERM / process-group SIGKILL during each transition
//	torture_race_test.go    (c) concurrent pairs
//	torture_fault_test.go   (d) lying, hanging and missing binaries
//	torture_foreign_test.go (e) foreign routing, tables and chains; a broken lo

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// Environment of the suite. Counts default to the minimums.
const (
	tortureEnv       = "E2E_TORTURE"        // 1: run the suite (plain go test ./e2e/ skips it)
	tortureOnlyEnv   = "TORTURE_ONLY"       // comma list of categories to run (a,b,c,d,e); default all
	tortureReportEnv = "TORTURE_REPORT"     // file the table and the summary line are written to
	tortureBinEnv    = "TORTURE_BIN"        // the binary under test; default the one TestMain builds
	tortureBudgetEnv = "TORTURE_BUDGET"     // overall time budget, a Go duration (default 12m)
	swapsEnv         = "TORTURE_SWAPS"      // (a) swaps per backend, default 100
	signalsEnv       = "TORTURE_SIGNALS"    // (b) trials per transition and signal, default 50
	racesEnv         = "TORTURE_RACES"      // (c) trials per pair, default 25
	faultsEnv        = "TORTURE_FAULTS"     // (d) trials per fault, default 3
	hangBoundEnv     = "TORTURE_HANG_BOUND" // (d) how long a hung run may take before the suite kills it, default 10s
)

// TestTorture runs the categories in order, one at a time (they share two
// cores with everything else), and writes the table of trials.
func TestTorture(t *testing.T) {
	if os.Getenv(tortureEnv) != "1" {
		t.Skipf("set %s=1 (or run make torture) for the torture suite of issue 14 (about 10 minutes)", tortureEnv)
	}
	requireRoot(t)
	tt := newTorture(t)
	defer tt.report.write(t)
	// Nothing here may touch the machine's own namespace.
	host, err := hostState()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if now, err := hostState(); err != nil || now != host {
			t.Errorf("the machine's own network namespace changed during the suite (%v): %s", err, stateDiff(host, now))
		}
	}()
	categories := []struct {
		id, name string
		run      func(*testing.T, *torture)
	}{
		{"a", "swaps under flood", tortureSwaps},
		{"b", "signals", tortureSignals},
		{"c", "concurrent pairs", tortureRaces},
		{"d", "lying binaries", tortureFaults},
		{"e", "foreign state", tortureForeign},
	}
	only := os.Getenv(tortureOnlyEnv)
	for _, c := range categories {
		if only != "" && !strings.Contains(","+only+",", ","+c.id+",") {
			continue
		}
		t.Run(c.id+" "+c.name, func(t *testing.T) { c.run(t, tt) })
	}
}

// torture is what every category shares: the binary, the expected states
// computed once, the report and the time budget.
type torture struct {
	bin      string
	deadline time.Time
	report   *tortureReport
	expected *expectedStates
	// hasTimeout says whether the binary has the deadline flag --timeout.
	hasTimeout bool
}

func newTorture(t *testing.T) *torture {
	t.Helper()
	bin := os.Getenv(tortureBinEnv)
	if bin == "" {
		bin = toolBin
	}
	budget := 12 * time.Minute
	if v := os.Getenv(tortureBudgetEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", tortureBudgetEnv, v, err)
		}
		budget = d
	}
	tt := &torture{bin: bin, deadline: time.Now().Add(budget), report: &tortureReport{start: time.Now()}}
	tt.expected = &expectedStates{tt: tt, states: map[string]string{}, failed: map[string]error{}}
	help, _ := ttOutput(bin, "--help")
	tt.hasTimeout = strings.Contains(help, "--timeout")
	t.Logf("torture: binary %s, deadline flag --timeout: %v", bin, tt.hasTimeout)
	return tt
}

// hostState is the machine's own tables, policy routing and routes, read
// in this process's namespace.
func hostState() (string, error) {
	cmd := exec.Command("/bin/sh", "-c", snapshotScript+"echo '== main4'; ip -4 route show; echo '== main6'; ip -6 route show | grep -v expires")
	cmd.Env = []string{"PATH=" + ttSystemPath}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("read the machine's own network state: %w: %s", err, out)
	}
	return normalizeState(string(out)), nil
}

// count reads a trial count from env, with a default.
func count(t *testing.T, env string, def int) int {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive count", env, v)
	}
	return n
}

// outOfTime says whether the overall budget is spent; trials not run for
// that reason are recorded as failures, so a run never passes short.
func (tt *torture) outOfTime() bool { return time.Now().After(tt.deadline) }

// tortureReport collects one row per case: its trials, their outcomes and
// the first failures.
type tortureReport struct {
	mu    sync.Mutex
	start time.Time
	rows  []*trialRow
}

// trialRow is one case of a category (a backend, a transition and signal,
// a pair, a fault, a foreign object).
type trialRow struct {
	mu             sync.Mutex
	category, name string
	passed, failed int
	outcomes       map[string]int // label -> trials
	figures        map[string]int // e.g. connections, escapes, timeouts
	failures       []string       // the first few, for the log
	start          time.Time
	took           time.Duration
}

func (r *tortureReport) row(category, name string) *trialRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	row := &trialRow{category: category, name: name, outcomes: map[string]int{}, figures: map[string]int{}, start: time.Now()}
	r.rows = append(r.rows, row)
	return row
}

// trial records one trial: its outcome label and, when it failed, why.
func (row *trialRow) trial(pass bool, outcome, why string) {
	row.mu.Lock()
	defer row.mu.Unlock()
	row.outcomes[outcome]++
	row.took = time.Since(row.start)
	if pass {
		row.passed++
		return
	}
	row.failed++
	if len(row.failures) < 8 {
		row.failures = append(row.failures, fmt.Sprintf("trial %d (%s): %s", row.passed+row.failed, outcome, why))
	}
}

// add adds n to a figure of the row.
func (row *trialRow) add(figure string, n int) {
	row.mu.Lock()
	defer row.mu.Unlock()
	row.figures[figure] += n
}

// max raises a figure of the row to n.
func (row *trialRow) max(figure string, n int) {
	row.mu.Lock()
	defer row.mu.Unlock()
	if n > row.figures[figure] {
		row.figures[figure] = n
	}
}

// check fails t with the row's first failures, if it has any.
func (row *trialRow) check(t *testing.T) {
	t.Helper()
	row.mu.Lock()
	defer row.mu.Unlock()
	if row.failed > 0 {
		t.Errorf("%s %s: %d of %d trials failed:\n  %s", row.category, row.name, row.failed, row.passed+row.failed,
			strings.Join(row.failures, "\n  "))
	}
}

func (row *trialRow) String() string {
	row.mu.Lock()
	defer row.mu.Unlock()
	return joinCounts(row.outcomes) + figuresSep(row.figures) + joinCounts(row.figures)
}

func figuresSep(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	return "; "
}

func joinCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// write prints the table and, as its last line, "torture: N passed, M
// failed", to TORTURE_REPORT (or the test log).
func (r *tortureReport) write(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "cat\tcase\ttrials\tpassed\tfailed\ttime\toutcomes; figures")
	passed, failed := 0, 0
	for _, row := range r.rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", row.category, row.name, row.passed+row.failed, row.passed, row.failed,
			row.took.Round(100*time.Millisecond), row)
		passed += row.passed
		failed += row.failed
	}
	tw.Flush()
	if t.Failed() && failed == 0 {
		failed = 1 // a harness failure outside any trial still fails the run
		fmt.Fprintln(&sb, "the suite itself failed outside any trial: see the test log")
	}
	fmt.Fprintf(&sb, "total time %s\n", time.Since(r.start).Round(time.Second))
	fmt.Fprintf(&sb, "torture: %d passed, %d failed\n", passed, failed)
	if path := os.Getenv(tortureReportEnv); path != "" {
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Errorf("write torture report %s: %v", path, err)
		}
	}
	t.Logf("torture report:\n%s", sb.String())
}
