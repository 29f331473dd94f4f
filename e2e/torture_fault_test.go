package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// ttFault is one lying, hanging or missing binary (or file) a run meets.
type ttFault struct {
	name string
	tr   ttTransition
	// prepare returns how the run is changed; dir is a fresh directory.
	prepare func(t *testing.T, dir string) ttRun
	// hangs: the run can only end by its own deadline (--timeout), and
	// must fail.
	hangs bool
	// ownBed: each trial gets a new bed (the legacy flavour leaves tables
	// a scrub does not remove).
	ownBed bool
	// tamper is a script run in the pod's namespace before the run.
	tamper string
	// names: when the run fails, its message must contain this. (Exit 0
	// is allowed when the new state is whole: the native backend may
	// remove iptables-nft rules over netlink.)
	names string
}

// shims writes executable shell scripts into dir and returns the PATH that
// puts them first.
func shims(t *testing.T, dir string, scripts map[string]string) string {
	t.Helper()
	for name, body := range scripts {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	}
	return dir + ":" + ttSystemPath
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// cfgLegacyRedirect is REDIRECT on the legacy iptables flavour.
var cfgLegacyRedirect = ttConfig{name: "legacy REDIRECT", args: append([]string{"--iptables-mode", "legacy"}, ttRedirect...)}

var restores = []string{"iptables-nft-restore", "ip6tables-nft-restore", "iptables-restore", "ip6tables-restore"}

// forEach maps every name to the same script, with $REAL set to the
// binary it replaces.
func forEach(t *testing.T, names []string, script string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, n := range names {
		real := n
		for _, d := range strings.Split(ttSystemPath, ":") {
			if fileExists(filepath.Join(d, n)) {
				real = filepath.Join(d, n)
				break
			}
		}
		m[n] = "REAL=" + real + "\n" + script
	}
	return m
}

var faults = []ttFault{
	{
		name: "*-restore exits 0, writes nothing",
		tr:   ttTransition{"clean->REDIRECT", cfgClean, cfgRedirect},
		prepare: func(t *testing.T, dir string) ttRun {
			return ttRun{path: shims(t, dir, forEach(t, restores, "cat >/dev/null\nexit 0"))}
		},
	},
	{
		name: "*-restore writes something else",
		tr:   ttTransition{"clean->REDIRECT", cfgClean, cfgRedirect},
		prepare: func(t *testing.T, dir string) ttRun {
			// Drops the inbound REDIRECT rule, then restores the rest for real.
			return ttRun{path: shims(t, dir, forEach(t, restores, `sed '/-j REDIRECT --to-ports 15006/d' | exec "$REAL" "$@"`))}
		},
	},
	{
		name: "*-save prints garbage",
		tr:   ttTransition{"REDIRECT->TPROXY", cfgRedirect, cfgTproxy},
		prepare: func(t *testing.T, dir string) ttRun {
			saves := []string{"iptables-nft-save", "ip6tables-nft-save", "iptables-save", "ip6tables-save"}
			return ttRun{path: shims(t, dir, forEach(t, saves,
				`printf '*nat\n:ISTIO_OUTPUT - [0:0]\n-A ISTIO_OUTPUT -j \001\002garbage\n%%%% not a save file\nCOMMIT\n'`))}
		},
	},
	{
		name: "*-restore hangs",
		tr:   ttTransition{"REDIRECT->TPROXY", cfgRedirect, cfgTproxy},
		prepare: func(t *testing.T, dir string) ttRun {
			return ttRun{path: shims(t, dir, forEach(t, restores, "exec sleep 3600"))}
		},
		hangs: true,
	},
	{
		name: "*-restore hangs, the tool is SIGKILLed alone",
		tr:   ttTransition{"REDIRECT->TPROXY", cfgRedirect, cfgTproxy},
		prepare: func(t *testing.T, dir string) ttRun {
			return ttRun{path: shims(t, dir, forEach(t, restores, "exec sleep 3600")),
				sig: syscall.SIGKILL, after: 300 * time.Millisecond}
		},
	},
	{
		// iptables-legacy-restore takes the xtables lock (iptables-nft does not).
		name: "XTABLES_LOCKFILE is a FIFO",
		tr:   ttTransition{"clean->legacy REDIRECT", cfgClean, cfgLegacyRedirect},
		prepare: func(t *testing.T, dir string) ttRun {
			fifo := filepath.Join(dir, "xtables.lock")
			require.NoError(t, unix.Mkfifo(fifo, 0o600))
			return ttRun{lock: fifo}
		},
		hangs:  true,
		ownBed: true,
	},
	{
		name: "mangle refused (no TPROXY extension)",
		tr:   ttTransition{"REDIRECT->TPROXY", cfgRedirect, cfgTproxy},
		prepare: func(t *testing.T, dir string) ttRun {
			return ttRun{env: []string{"XTABLES_LIBDIR=" + libdirWithout(t, dir, "libxt_TPROXY.so")}}
		},
	},
	{
		name: "no iptables binary: cleanup",
		tr:   ttTransition{"REDIRECT->cleanup", cfgRedirect, ttConfig{name: "cleanup"}},
		prepare: func(t *testing.T, dir string) ttRun {
			return ttRun{path: dir}
		},
		names: "iptables",
	},
	{
		name: "no iptables binary: native apply over iptables rules",
		tr:   ttTransition{"REDIRECT->native", cfgRedirect, cfgNativeRedirect},
		prepare: func(t *testing.T, dir string) ttRun {
			return ttRun{path: dir}
		},
		names: "iptables",
	},
	// Never certify what was not verified: someone else deletes one of
	// our rules; a re-run with the same flags must put it back, whatever
	// a no-op marker says.
	{
		name:    "a rule deleted by hand, same flags again",
		tr:      ttTransition{"REDIRECT->REDIRECT", cfgRedirect, cfgRedirect},
		prepare: ttNoFault,
		tamper:  "iptables-nft -t nat -D ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
	},
	{
		// Legacy tables are no nftables: their changes move no nftables generation.
		name:    "a legacy rule deleted by hand, same flags again",
		tr:      ttTransition{"legacy REDIRECT->legacy REDIRECT", cfgLegacyRedirect, cfgLegacyRedirect},
		prepare: ttNoFault,
		tamper:  "iptables-legacy -w -t nat -D ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
		ownBed:  true,
	},
}

// ttNoFault leaves the run as it is (the fault is a tamper).
func ttNoFault(*testing.T, string) ttRun { return ttRun{} }

// libdirWithout makes an XTABLES_LIBDIR in dir with every extension of the
// system's but the one named.
func libdirWithout(t *testing.T, dir, without string) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/*/xtables/libxt_REDIRECT.so")
	if len(matches) == 0 {
		matches, _ = filepath.Glob("/usr/lib*/xtables/libxt_REDIRECT.so")
	}
	require.NotEmpty(t, matches, "no xtables extension directory found")
	src := filepath.Dir(matches[0])
	libdir := filepath.Join(dir, "xtables")
	require.NoError(t, os.Mkdir(libdir, 0o755))
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() != without {
			require.NoError(t, os.Symlink(filepath.Join(src, e.Name()), filepath.Join(libdir, e.Name())))
		}
	}
	return libdir
}

// tortureFaults is category (d): each fault, from its transition's old
// state. The run must be detected (no exit 0 unless the new state is
// whole), bounded in time (a hanging child is killed by the tool's
// deadline, and dies with the tool), reported truly (judgeAfterRun), and
// must leave the namespace so that a plain run afterwards programs it
// whole: never a no-op certified by a marker written over a lie.
func tortureFaults(t *testing.T, tt *torture) {
	n := count(t, faultsEnv, 3)
	hangBound := 10 * time.Second
	if v := os.Getenv(hangBoundEnv); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "%s", hangBoundEnv)
		hangBound = d
	}
	shared := newTortureBed(t)
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			row := tt.report.row("d", f.name+" ("+f.tr.name+")")
			defer row.check(t)
			oldState := tt.expected.of(t, f.tr.old)
			newState := tt.expected.of(t, f.tr.expectedNew())
			for i := 0; i < n; i++ {
				if tt.outOfTime() {
					row.trial(false, "not run", fmt.Sprintf("time budget spent: %d of %d trials not run", n-i, n))
					return
				}
				b := shared
				if f.ownBed {
					b = newTortureBed(t)
				}
				if err := tt.setState(t, b, f.tr.old); err != nil {
					row.trial(false, "setup", err.Error())
					continue
				}
				if f.tamper != "" {
					if out, err := ttSh(b.podPath(), f.tamper); err != nil {
						row.trial(false, "setup", fmt.Sprintf("tamper: %v: %s", err, out))
						continue
					}
				}
				r := f.prepare(t, t.TempDir())
				r.args = f.tr.runArgs()
				r.bound = hangBound
				if f.hangs && tt.hasTimeout {
					r.args = append([]string{"--timeout", "2s"}, r.args...)
					r.bound = 7 * time.Second
				}
				res := tt.run(b.podPath(), b.lockFile, r)
				outcome, why := tt.judgeAfterRun(t, b, res, f.tr.old, f.tr.expectedNew(), oldState, newState)
				switch {
				case why != "":
				case res.code == 0 && f.hangs:
					outcome, why = "not detected", "exit 0 although a child hung"
				case res.code != 0 && f.names != "" && !strings.Contains(strings.ToLower(res.stderr), f.names):
					outcome, why = "unclear message", fmt.Sprintf("the message does not name %q", f.names)
				case res.code != 0 && strings.TrimSpace(res.stderr) == "" && !res.signaled:
					outcome, why = "unclear message", "failed without a message"
				}
				if why == "" {
					if o, w := tt.recover(t, b, f.tr.expectedNew()); w != "" {
						outcome, why = o, w
					}
				}
				if why != "" {
					why = fmt.Sprintf("run %s: %s", res, why)
				} else {
					outcome += fmt.Sprintf(", exit %d", res.code)
				}
				row.trial(why == "", outcome, why)
				row.max("longest run ms", int(res.took.Milliseconds()))
			}
		})
	}
	tortureLimits(t, tt, shared)
}

// withFlag returns args with flag's value replaced, or flag appended.
func withFlag(args []string, flag, value string) []string {
	out := append([]string{}, args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == flag {
			out[i+1] = value
			return out
		}
	}
	return append(out, flag, value)
}

// numbers is "prefix<from>,...,prefix<from+n-1>" with each number formatted by f.
func numbers(n int, f func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = f(i)
	}
	return strings.Join(parts, ",")
}

// ttLimitMessage is a refusal that names a limit.
var ttLimitMessage = regexp.MustCompile(`(?i)limit|at most|too many|maximum|exceed`)

// tortureLimits: lists the iptables backend takes, given to the native
// backend (findings 8 and 9). Each case runs once (a fresh apply of such a
// plan takes seconds). If a fresh apply in a scratch namespace succeeds,
// the run on the bed is judged as a transition (judgeAfterRun, then a
// plain run must leave it whole). If even a fresh apply fails, the
// native backend refuses the list: then the run must fail with a message
// that names the limit, and leave the old state whole.
func tortureLimits(t *testing.T, tt *torture, b *bed) {
	for _, c := range []struct {
		name string
		from ttConfig
		args []string
	}{
		{"native, -u of 4,000 UIDs, over TPROXY", cfgTproxy,
			withFlag(cfgNativeTproxy.args, "-u", "1337,"+numbers(3999, func(i int) string { return strconv.Itoa(2000 + i) }))},
		{"native, -b of 16,384 ports", cfgClean,
			// Port 80 first, so the probes' inbound connections are captured.
			withFlag(cfgNativeRedirect.args, "-b", "80,"+numbers(16383, func(i int) string { return strconv.Itoa(20000 + i) }))},
		{"native, -x of 3,276 CIDRs", cfgClean,
			withFlag(cfgNativeRedirect.args, "-x", numbers(3276, func(i int) string { return fmt.Sprintf("10.100.%d.%d/32", i/256, i%256) }))},
	} {
		row := tt.report.row("d", c.name)
		if tt.outOfTime() {
			row.trial(false, "not run", "time budget spent")
			continue
		}
		target := ttConfig{name: c.name, args: c.args}
		newState, refused := tt.expected.try(t, target)
		oldState := tt.expected.of(t, c.from)
		if err := tt.setState(t, b, c.from); err != nil {
			row.trial(false, "setup", err.Error())
			continue
		}
		res := tt.run(b.podPath(), b.lockFile, ttRun{args: c.args, bound: time.Minute})
		row.max("longest run ms", int(res.took.Milliseconds()))
		var outcome, why string
		if refused == nil {
			outcome, why = tt.judgeAfterRun(t, b, res, c.from, target, oldState, newState)
			if why == "" {
				if o, w := tt.recover(t, b, target); w != "" {
					outcome, why = o, w
				}
			}
		} else {
			got, err := snapshot(b.podPath())
			switch {
			case err != nil:
				outcome, why = "unreadable", err.Error()
			case res.code == 0:
				outcome, why = "FALSE MESSAGE", "exit 0, though a fresh apply of the same plan fails: "+refused.Error()
			case got != oldState:
				outcome, why = "not refused up front", "failed, and the old state is not whole: "+stateDiff(oldState, got)
			case !ttLimitMessage.MatchString(lastLines(res.stderr, 2)):
				outcome, why = "unclear message", "refused without naming a limit"
			default:
				outcome = "refused up front, named the limit"
			}
		}
		if why != "" {
			why = fmt.Sprintf("run %s: %s", res, why)
		}
		row.trial(why == "", outcome, why)
		row.check(t)
	}
}
