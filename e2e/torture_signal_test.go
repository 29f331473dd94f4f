package e2e

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ttTransition is a change of configuration a run makes.
type ttTransition struct {
	name     string
	old, new ttConfig
}

var transitions = []ttTransition{
	{"REDIRECT->TPROXY", cfgRedirect, cfgTproxy},
	{"TPROXY->REDIRECT", cfgTproxy, cfgRedirect},
	{"iptables->native", cfgRedirect, cfgNativeRedirect},
	{"native->iptables", cfgNativeRedirect, cfgRedirect},
	{"apply->cleanup", cfgRedirect, ttConfig{name: "cleanup", args: nil}},
	{"cleanup->apply", cfgClean, cfgRedirect},
}

// runArgs is what a run making the transition is given.
func (tr ttTransition) runArgs() []string {
	if !tr.new.captures() {
		return ttClean
	}
	return tr.new.args
}

// expectedNew is the configuration the namespace holds when the run is
// done: the clean namespace for a cleanup.
func (tr ttTransition) expectedNew() ttConfig {
	if !tr.new.captures() {
		return cfgClean
	}
	return tr.new
}

// ttIntact is what the tool says when it claims nothing changed.
var (
	ttIntact = regexp.MustCompile(`(?i)earlier state is intact`)
	// ttEmptyReason is an exec error with no reason at all (finding 7:
	// "exit status -1: " on SIGTERM).
	ttEmptyReason = regexp.MustCompile(`exit status -1: *("|$)`)
	// ttPartial is a message that admits the namespace may hold neither
	// state whole.
	ttPartial = regexp.MustCompile(`(?i)may hold part|part of the new state|partial|not intact|cannot (be )?prove|could not (be )?(verif|prov)`)
)

// tortureSignals is category (b): for each transition and each of SIGTERM
// (to the tool) and SIGKILL (to its process group), trials that bring the
// bed to the old configuration, start the run to the new one, and signal
// it at a random moment within its usual duration. Then:
//   - the state read back is the old configuration whole, the new one
//     whole, or fail-closed: every probe connection lands as under the old
//     or the new configuration, or fails (timeout, refused), never an
//     escape or a loop;
//   - the message is true: exit 0 only with the new state whole, "the
//     earlier state is intact" only with the old state whole, never an
//     exec error without a reason;
//   - no child of the tool is left running in the namespace;
//   - a plain run of the new configuration then yields it whole (no
//     marker certifies a state nobody checked, no leftover table).
func tortureSignals(t *testing.T, tt *torture) {
	n := count(t, signalsEnv, 50)
	b := newTortureBed(t)
	for _, tr := range transitions {
		for _, sig := range []struct {
			name  string
			sig   syscall.Signal
			group bool
		}{
			{"SIGTERM", syscall.SIGTERM, false},
			{"SIGKILL group", syscall.SIGKILL, true},
		} {
			t.Run(tr.name+" "+sig.name, func(t *testing.T) {
				row := tt.report.row("b", tr.name+", "+sig.name)
				defer row.check(t)
				oldState := tt.expected.of(t, tr.old)
				newState := tt.expected.of(t, tr.expectedNew())
				usual, err := tt.usualDuration(t, b, tr)
				if err != nil {
					row.trial(false, "calibration", err.Error())
					return
				}
				row.add("usual ms", int(usual.Milliseconds()))
				for i := 0; i < n; i++ {
					if tt.outOfTime() {
						row.trial(false, "not run", fmt.Sprintf("time budget spent: %d of %d trials not run", n-i, n))
						return
					}
					if err := tt.setState(t, b, tr.old); err != nil {
						row.trial(false, "setup", err.Error())
						continue
					}
					after := time.Duration(rand.Int64N(int64(usual)*12/10 + 1))
					res := tt.run(b.podPath(), b.lockFile, ttRun{args: tr.runArgs(), sig: sig.sig, group: sig.group, after: after})
					outcome, why := tt.judgeAfterRun(t, b, res, tr.old, tr.expectedNew(), oldState, newState)
					if why == "" {
						if o, w := tt.recover(t, b, tr.expectedNew()); w != "" {
							outcome, why = o, w
						}
					}
					if why != "" {
						why = fmt.Sprintf("signal at %s (sent: %v), run %s: %s", after.Round(time.Microsecond), res.sent, res, why)
					}
					row.trial(why == "", outcome, why)
				}
			})
		}
	}
}

// usualDuration runs tr three times without a signal and returns the
// median duration; each run must succeed and leave the new state whole.
func (tt *torture) usualDuration(t *testing.T, b *bed, tr ttTransition) (time.Duration, error) {
	t.Helper()
	var took []time.Duration
	for i := 0; i < 3; i++ {
		if err := tt.setState(t, b, tr.old); err != nil {
			return 0, err
		}
		res := tt.run(b.podPath(), b.lockFile, ttRun{args: tr.runArgs()})
		if res.code != 0 {
			return 0, fmt.Errorf("%s without any signal: %s", tr.name, res)
		}
		got, err := snapshot(b.podPath())
		if err != nil {
			return 0, err
		}
		if want := tt.expected.of(t, tr.expectedNew()); got != want {
			return 0, fmt.Errorf("%s without any signal does not leave %s whole: %s", tr.name, tr.expectedNew().name, stateDiff(want, got))
		}
		took = append(took, res.took)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	return took[1], nil
}

// judgeAfterRun reads the state a run (interrupted or not) left and
// checks it against the old and the new configuration, the probes and
// the run's own message. It returns an outcome label and, on failure, why.
func (tt *torture) judgeAfterRun(t *testing.T, b *bed, res ttResult, old, newCfg ttConfig, oldState, newState string) (string, string) {
	t.Helper()
	if left := strays(b.podPath()); len(left) > 0 {
		killStrays(left)
		return "orphan", "children of the tool still run in the namespace: " + strings.Join(left, ", ")
	}
	if res.bounded {
		return "hung", "the run did not end within its bound"
	}
	got, err := snapshot(b.podPath())
	if err != nil {
		return "unreadable", err.Error()
	}
	p := probe(b)
	state := "fail-closed"
	switch got {
	case oldState:
		state = "old whole"
	case newState:
		state = "new whole"
	}
	if ok, bad := p.safeUnder(old, newCfg); !ok {
		return "ESCAPE", fmt.Sprintf("state %s, a probe escaped: %s; state vs old: %s", state, bad, stateDiff(oldState, got))
	}
	// A whole state must also carry traffic as it should (a probe may
	// still fail closed while conntrack settles, never land elsewhere).
	if whole, ok := map[string]ttConfig{"old whole": old, "new whole": newCfg}[state]; ok {
		if ok, bad := p.safeUnder(whole); !ok {
			return "ESCAPE", fmt.Sprintf("state %s, yet a probe landed elsewhere: %s", state, bad)
		}
	}
	msg := res.stderr
	switch {
	case res.code == 0 && !res.signaled && got != newState:
		return "FALSE MESSAGE", fmt.Sprintf("exit 0, but the state is %s, not the new one whole: %s", state, stateDiff(newState, got))
	case ttIntact.MatchString(msg) && got != oldState:
		return "FALSE MESSAGE", fmt.Sprintf("says %q, but the state is %s: %s", ttIntact.FindString(msg), state, stateDiff(oldState, got))
	case ttEmptyReason.MatchString(msg):
		return "FALSE MESSAGE", "an error with no reason: " + lastLines(msg, 1)
	case res.sent && !res.signaled && state == "fail-closed" && !ttPartial.MatchString(msg):
		// The tool handled the signal: it must finish or roll back the
		// step, or say that it could not.
		return "not rolled back", "handled the signal, left neither state whole, and did not say so: " + stateDiff(oldState, got)
	}
	return state, ""
}

// recover runs c plainly (nothing interferes) and returns an outcome and
// why the bed is then not c whole, or "" when it is.
func (tt *torture) recover(t *testing.T, b *bed, c ttConfig) (string, string) {
	t.Helper()
	args := c.args
	if !c.captures() {
		args = ttClean
	}
	res := tt.run(b.podPath(), b.lockFile, ttRun{args: args})
	got, err := snapshot(b.podPath())
	if err != nil {
		return "unreadable", err.Error()
	}
	if want := tt.expected.of(t, c); got != want {
		outcome := "no recovery"
		if onlyEmptyTables(want, got) {
			outcome = "empty tables left"
		}
		return outcome, fmt.Sprintf("a plain run of %s afterwards (%s) does not leave it whole: %s", c.name, res, stateDiff(want, got))
	}
	if res.code != 0 {
		return "no recovery", fmt.Sprintf("a plain run of %s afterwards failed: %s", c.name, res)
	}
	return "", ""
}

// ttEmptyTableLine is a line of an iptables table with no rule and no
// chain of its own: its header, a builtin chain, its COMMIT.
var ttEmptyTableLine = regexp.MustCompile(`^(\*[a-z]+|:[A-Z]+ ACCEPT|COMMIT)$`)

// onlyEmptyTables says whether got is want plus empty tables, nothing else.
func onlyEmptyTables(want, got string) bool {
	if len(lineSurplus("-", want, got)) > 0 {
		return false
	}
	for _, l := range lineSurplus("", got, want) {
		if !ttEmptyTableLine.MatchString(l) {
			return false
		}
	}
	return true
}
