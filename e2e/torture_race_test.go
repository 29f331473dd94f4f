package e2e

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// tortureRaces is category (c): two runs started at once on the same
// namespace, from a given state. Afterwards the namespace must hold
// exactly one of the allowed configurations (never a mix, never a
// duplicate rule, never nothing when both applied), the probes must land
// as that configuration says, neither run may hang or leave a child
// behind, two failed runs must have changed nothing, and a plain run of
// the first allowed configuration must then yield it whole.
func tortureRaces(t *testing.T, tt *torture) {
	n := count(t, racesEnv, 25)
	b := newTortureBed(t)
	for _, pair := range []struct {
		name  string
		from  ttConfig
		a, b  []string
		allow []ttConfig
		bCNI  bool // B runs as a CNI plugin would (root, --netns, from the host)
	}{
		{"same flags", cfgClean, ttRedirect, ttRedirect, []ttConfig{cfgRedirect}, false},
		{"different flags", cfgClean, ttRedirect, ttTproxy, []ttConfig{cfgRedirect, cfgTproxy}, false},
		{"apply vs cleanup", cfgTproxy, ttRedirect, ttClean, []ttConfig{cfgRedirect, cfgClean}, false},
		{"iptables vs native", cfgClean, ttRedirect, cfgNativeRedirect.args, []ttConfig{cfgRedirect, cfgNativeRedirect}, false},
		// The lock must live in the namespace: the init container and a
		// CNI plugin on the host see the same one.
		{"init container vs CNI plugin (--netns)", cfgClean, ttRedirect, ttTproxy, []ttConfig{cfgRedirect, cfgTproxy}, true},
	} {
		t.Run(pair.name, func(t *testing.T) {
			row := tt.report.row("c", pair.name+" (from "+pair.from.name+")")
			defer row.check(t)
			for i := 0; i < n; i++ {
				if tt.outOfTime() {
					row.trial(false, "not run", fmt.Sprintf("time budget spent: %d of %d trials not run", n-i, n))
					return
				}
				if err := tt.setState(t, b, pair.from); err != nil {
					row.trial(false, "setup", err.Error())
					continue
				}
				// Start both within a few milliseconds, in either order.
				var wg sync.WaitGroup
				var resA, resB ttResult
				delayA, delayB := time.Duration(rand.IntN(3000))*time.Microsecond, time.Duration(rand.IntN(3000))*time.Microsecond
				wg.Add(2)
				go func() {
					defer wg.Done()
					time.Sleep(delayA)
					resA = tt.run(b.podPath(), b.lockFile, ttRun{args: pair.a})
				}()
				go func() {
					defer wg.Done()
					time.Sleep(delayB)
					resB = tt.run(b.podPath(), b.lockFile, ttRun{args: pair.b, cni: pair.bCNI})
				}()
				wg.Wait()
				outcome, why := tt.judgeRace(t, b, resA, resB, pair.from, pair.allow)
				if why == "" {
					if o, w := tt.recover(t, b, pair.allow[0]); w != "" {
						outcome, why = o, w
					}
				}
				if why != "" {
					why = fmt.Sprintf("A %s; B %s: %s", resA, resB, why)
				}
				row.trial(why == "", outcome, why)
			}
		})
	}
	tortureLockWait(t, tt, b)
}

// tortureLockWait: a run that holds the namespace's lock (its *-restore
// hangs) and a second run with --wait 1. The second must give up within
// about a second, exit non-zero with a message about the lock, and change
// nothing; without a lock it would write beside the first.
func tortureLockWait(t *testing.T, tt *torture, b *bed) {
	n := count(t, faultsEnv, 3)
	row := tt.report.row("c", "lock held by a hung run, another with --wait 1")
	defer row.check(t)
	for i := 0; i < n; i++ {
		if tt.outOfTime() {
			row.trial(false, "not run", fmt.Sprintf("time budget spent: %d of %d trials not run", n-i, n))
			return
		}
		if err := tt.setState(t, b, cfgRedirect); err != nil {
			row.trial(false, "setup", err.Error())
			continue
		}
		outcome, why := tt.lockWaitTrial(t, b)
		row.trial(why == "", outcome, why)
	}
}

func (tt *torture) lockWaitTrial(t *testing.T, b *bed) (string, string) {
	t.Helper()
	holder := ttRun{args: ttTproxy, path: shims(t, t.TempDir(), forEach(t, restores, "exec sleep 3600")), bound: 15 * time.Second}
	if tt.hasTimeout {
		holder.args = append([]string{"--timeout", "10s"}, holder.args...)
	}
	done := make(chan ttResult, 1)
	go func() { done <- tt.run(b.podPath(), b.lockFile, holder) }()
	defer func() {
		killStrays(nsProcs(b.podPath())) // the hung shim: the holder then ends
		<-done
		killStrays(strays(b.podPath()))
	}()
	// The holder holds the lock once its *-restore runs.
	hung := false
	for wait := 0; wait < 60 && !hung; wait++ {
		for _, p := range nsProcs(b.podPath()) {
			hung = hung || strings.Contains(p, " sleep ")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !hung {
		return "setup", "the holder's *-restore never started"
	}
	// The holder may have written its first steps (make-before-break):
	// the waiting run is judged against the state it found.
	before, err := snapshot(b.podPath())
	if err != nil {
		return "unreadable", err.Error()
	}
	res := tt.run(b.podPath(), b.lockFile, ttRun{args: append([]string{"--wait", "1"}, ttRedirect...), bound: 10 * time.Second})
	got, err := snapshot(b.podPath())
	switch {
	case err != nil:
		return "unreadable", err.Error()
	case res.code == 0:
		return "no lock", fmt.Sprintf("a second run succeeded while another held the namespace: %s", res)
	case res.took > 4*time.Second:
		return "wait not bounded", fmt.Sprintf("--wait 1, yet it took %s: %s", res.took.Round(time.Millisecond), res)
	case !strings.Contains(strings.ToLower(res.stderr), "lock"):
		return "unclear message", fmt.Sprintf("the message does not mention the lock: %s", res)
	case got != before:
		return "changed", "the waiting run changed the state: " + stateDiff(before, got)
	}
	return fmt.Sprintf("gave up after ~%ds, named the lock", int(res.took.Round(time.Second).Seconds())), ""
}

// judgeRace checks the state two concurrent runs left.
func (tt *torture) judgeRace(t *testing.T, b *bed, resA, resB ttResult, from ttConfig, allow []ttConfig) (string, string) {
	t.Helper()
	if left := strays(b.podPath()); len(left) > 0 {
		killStrays(left)
		return "orphan", "children of the tool still run in the namespace: " + strings.Join(left, ", ")
	}
	if resA.bounded || resB.bounded {
		return "hung", "a run did not end within its bound"
	}
	got, err := snapshot(b.podPath())
	if err != nil {
		return "unreadable", err.Error()
	}
	if resA.code != 0 && resB.code != 0 {
		allow = []ttConfig{from} // both failed: nothing may have changed
	}
	var held *ttConfig
	var diffs []string
	for _, c := range allow {
		want := tt.expected.of(t, c)
		if got == want {
			held = &c
			break
		}
		diffs = append(diffs, c.name+": "+stateDiff(want, got))
	}
	if held == nil {
		return "MIXED", "the state is none of the allowed ones whole: " + strings.Join(diffs, "; ")
	}
	p := probe(b)
	if ok, bad := p.safeUnder(*held); !ok {
		return "ESCAPE", fmt.Sprintf("state %s whole, yet a probe landed elsewhere: %s", held.name, bad)
	}
	return "one whole: " + held.name, ""
}
