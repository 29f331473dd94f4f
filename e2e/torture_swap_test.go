package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// newTortureBed is the e2e bed (bed_test.go) tuned for floods: TIME_WAIT
// reuse and a wide port range in the client and the pod, so tens of
// thousands of short connections do not run out of source ports.
func newTortureBed(t *testing.T) *bed {
	t.Helper()
	b := newBed(t)
	for _, ns := range []string{b.client, b.pod} {
		out, err := ttSh("/var/run/netns/"+ns,
			"echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse && echo '20000 60999' > /proc/sys/net/ipv4/ip_local_port_range")
		require.NoError(t, err, "tune %s: %s", ns, out)
	}
	return b
}

// setState brings the bed to c without trusting the tool's cleanup: a
// scrub, then (unless c is clean) a fresh apply. It returns what went
// wrong when the bed does not then hold exactly c's expected state.
func (tt *torture) setState(t *testing.T, b *bed, c ttConfig) error {
	t.Helper()
	if err := scrub(b.podPath()); err != nil {
		return err
	}
	if c.captures() {
		if res := tt.run(b.podPath(), b.lockFile, ttRun{args: c.args}); res.code != 0 {
			return fmt.Errorf("apply %s on a scrubbed namespace: %s", c.name, res)
		}
	}
	got, err := snapshot(b.podPath())
	if err != nil {
		return err
	}
	if want := tt.expected.of(t, c); got != want {
		return fmt.Errorf("after a fresh apply of %s the namespace is not its expected state: %s", c.name, stateDiff(want, got))
	}
	return nil
}

// tortureSwaps is category (a): per backend, swaps REDIRECT<->TPROXY
// (each a run that must exit 0) while floods of new connections run
// inbound from the client and outbound from the app, in both families.
// Each swap is a trial: it fails if its run failed, or if any connection
// started between its start and the next swap's start escaped (reached
// the app or the remote without the proxy), looped, or landed anywhere
// else. Timeouts (a swap that black-holes new connections) are counted
// and reported; they do not fail a trial. The state after the last swap
// must be that configuration whole.
func tortureSwaps(t *testing.T, tt *torture) {
	n := count(t, swapsEnv, 100)
	for _, backend := range []struct {
		name   string
		r, tpx ttConfig
	}{
		{"iptables (nft)", cfgRedirect, cfgTproxy},
		{"native nftables", cfgNativeRedirect, cfgNativeTproxy},
	} {
		t.Run(backend.name, func(t *testing.T) {
			row := tt.report.row("a", "REDIRECT<->TPROXY swaps, "+backend.name)
			defer row.check(t)
			b := newTortureBed(t)
			if err := tt.setState(t, b, backend.r); err != nil {
				row.trial(false, "setup", err.Error())
				return
			}
			var in, out []string
			for _, f := range families {
				in = append(in, net.JoinHostPort(addrs["pod"][f], "80"))
				out = append(out, net.JoinHostPort(addrs["remote"][f], "8080"))
			}
			floods := []*flood{
				startFlood(t, b.client, rootUser, inbound, in, 4),
				startFlood(t, b.pod, appUser, outbound, out, 2),
			}
			time.Sleep(300 * time.Millisecond) // a baseline before the first swap
			type swap struct {
				start int64
				to    ttConfig
				res   ttResult
			}
			var swaps []swap
			cur := backend.r
			for i := 0; i < n; i++ {
				if tt.outOfTime() {
					row.trial(false, "not run", fmt.Sprintf("time budget spent: %d of %d swaps not run", n-i, n))
					break
				}
				next := backend.tpx
				if cur.name == backend.tpx.name {
					next = backend.r
				}
				start := time.Now().UnixNano()
				res := tt.run(b.podPath(), b.lockFile, ttRun{args: next.args})
				swaps = append(swaps, swap{start: start, to: next, res: res})
				cur = next
				time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			var conns []floodConn
			for _, f := range floods {
				conns = append(conns, f.stop()...)
			}
			sort.Slice(conns, func(i, j int) bool { return conns[i].start < conns[j].start })

			// Bucket the connections: before the first swap, then by swap.
			buckets := make([][]floodConn, len(swaps)+1)
			j := 0
			for _, c := range conns {
				for j < len(swaps) && c.start >= swaps[j].start {
					j++
				}
				buckets[j] = append(buckets[j], c)
			}
			verdicts := map[string]int{}
			var slowOnes []string // timeouts and slow answers, for the log
			judgeBucket := func(cs []floodConn, swap string) (bad []string) {
				for _, c := range cs {
					verdicts[c.verdict]++
					if (c.verdict == vTimeout || c.took > 900*time.Millisecond) && len(slowOnes) < 10 {
						slowOnes = append(slowOnes, fmt.Sprintf("%s, %s after %s: %s", swap, c.dir.name, c.took.Round(time.Millisecond), c.landing))
					}
					if c.took > 900*time.Millisecond && c.verdict == vCaptured {
						verdicts["slow"]++ // answered only after a SYN retransmit
					}
					switch c.verdict {
					case vDirect, vLoop, vWrong:
						bad = append(bad, fmt.Sprintf("%s %s: %s", c.dir.name, c.verdict, c.landing))
					}
				}
				return bad
			}
			if bad := judgeBucket(buckets[0], "before any swap"); len(bad) > 0 {
				row.trial(false, "baseline", fmt.Sprintf("%d bad connections before any swap, e.g. %s", len(bad), bad[0]))
			}
			for i, s := range swaps {
				bad := judgeBucket(buckets[i+1], fmt.Sprintf("swap %d to %s", i+1, s.to.name))
				switch {
				case s.res.code != 0:
					row.trial(false, "run failed", fmt.Sprintf("swap to %s: %s", s.to.name, s.res))
				case len(bad) > 0:
					row.trial(false, "escape/loop", fmt.Sprintf("swap to %s: %d of %d connections: %s", s.to.name, len(bad), len(buckets[i+1]), strings.Join(first(bad, 3), "; ")))
				default:
					row.trial(true, "clean swap", "")
				}
			}
			if len(slowOnes) > 0 {
				t.Logf("%s: timed out or slow (counted, not failed):\n  %s", backend.name, strings.Join(slowOnes, "\n  "))
			}
			row.add("connections", len(conns))
			row.add("escapes", verdicts[vDirect])
			row.add("loops", verdicts[vLoop])
			row.add("wrong", verdicts[vWrong])
			row.add("timeouts", verdicts[vTimeout])
			row.add("errors", verdicts[vError])
			row.add("slow", verdicts["slow"])
			for _, f := range floods {
				if len(f.bad) > 0 {
					t.Errorf("%s flood printed %d lines the suite cannot read, e.g. %q", f.dir.name, len(f.bad), f.bad[0])
				}
			}
			if len(conns) == 0 {
				t.Errorf("the floods made no connection at all")
			}
			got, err := snapshot(b.podPath())
			require.NoError(t, err)
			if want := tt.expected.of(t, cur); got != want {
				row.trial(false, "final state", fmt.Sprintf("after the last swap (to %s) the state is not that configuration whole: %s", cur.name, stateDiff(want, got)))
			}
		})
	}
}

func first(list []string, n int) []string {
	if len(list) > n {
		return list[:n]
	}
	return list
}
