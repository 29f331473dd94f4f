package validate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestRunRefusesIncompleteProbe(t *testing.T) {
	for _, p := range []Probe{
		{Port: 15002, Timeout: time.Second},
		{CapturePorts: []uint16{15006}, Timeout: time.Second},
		{CapturePorts: []uint16{15006}, Port: 15002},
	} {
		err := Run(context.Background(), p)
		require.Error(t, err)
		var ve *Error
		assert.False(t, errors.As(err, &ve), "a bad call is not a failed validation")
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Family: "ipv4", Target: "127.0.0.6:15002", Reason: "connection refused", Missing: "the rules"}
	assert.Equal(t, "validation failed (ipv4): probe to 127.0.0.6:15002: connection refused; missing: the rules", e.Error())
}

func TestDescribe(t *testing.T) {
	refused := &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	assert.Equal(t, "connection refused: no rule redirected it to a capture port", describe(refused, nil))
	assert.Contains(t, describe(&net.OpError{Op: "dial", Err: syscall.ENETUNREACH}, nil), "unreachable")
	assert.Equal(t, "context deadline exceeded", describe(nil, context.DeadlineExceeded))
}

// testNetns is a network namespace made for one test, with lo up, removed
// when the test ends.
type testNetns struct {
	name, lockFile string
}

func newTestNetns(t *testing.T) testNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	id := make([]byte, 4)
	_, err := rand.Read(id)
	require.NoError(t, err)
	n := testNetns{name: "ii-vld-" + hex.EncodeToString(id), lockFile: filepath.Join(t.TempDir(), "xtables.lock")}
	out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", n.name, err, out)
		}
	})
	n.ip(t, "link", "set", "lo", "up")
	return n
}

func (n testNetns) ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	require.NoError(t, err, "ip %v: %s", args, out)
}

// restore writes nat rules into the namespace with the given restore binary.
func (n testNetns) restore(t *testing.T, bin, rules string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.name, bin, "--noflush")
	cmd.Stdin = strings.NewReader("*nat\n" + rules + "COMMIT\n")
	cmd.Env = append(os.Environ(), "XTABLES_LOCKFILE="+n.lockFile)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s: %s", bin, out)
}

// do runs fn on a thread locked into the namespace, as Run's contract
// allows; the thread goes back to the scheduler only if it is back home.
func (n testNetns) do(t *testing.T, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer home.Close()
		target, err := netns.GetFromName(n.name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(home); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("back to the home namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

var probe15002 = Probe{CapturePorts: []uint16{15001, 15006}, Port: 15002, Timeout: 500 * time.Millisecond}

// TestRunKernel runs the probe in namespaces holding the rules of each
// case. The rules stand in for the tool's: a REDIRECT of the probe's
// connection to the inbound capture port.
func TestRunKernel(t *testing.T) {
	redirect4 := "-A OUTPUT -o lo -d 127.0.0.6/32 -p tcp -j REDIRECT --to-ports 15006\n"
	redirect6 := "-A OUTPUT -o lo -d ::6/128 -p tcp -j REDIRECT --to-ports 15006\n"
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, n testNetns) func()
		ipv6    bool
		reason  string // "" when the probe passes
		missing string
	}{
		{name: "no rules: refused", reason: "connection refused", missing: "ISTIO_IN_REDIRECT"},
		{name: "redirected: passes", setup: func(t *testing.T, n testNetns) func() {
			n.restore(t, "iptables-nft-restore", redirect4)
			return nil
		}},
		{name: "redirected to the outbound port: passes", setup: func(t *testing.T, n testNetns) func() {
			n.restore(t, "iptables-nft-restore", "-A OUTPUT -o lo -d 127.0.0.6/32 -p tcp -j REDIRECT --to-ports 15001\n")
			return nil
		}},
		{name: "both families redirected: passes", ipv6: true, setup: func(t *testing.T, n testNetns) func() {
			n.ip(t, "addr", "add", "::6/128", "dev", "lo")
			n.restore(t, "iptables-nft-restore", redirect4)
			n.restore(t, "ip6tables-nft-restore", redirect6)
			return nil
		}},
		{name: "IPv6 without ::6 on lo", ipv6: true, setup: func(t *testing.T, n testNetns) func() {
			n.restore(t, "iptables-nft-restore", redirect4)
			return nil
		}, reason: "::6 is not an address", missing: "::6/128 on lo"},
		{name: "IPv6 not redirected", ipv6: true, setup: func(t *testing.T, n testNetns) func() {
			n.ip(t, "addr", "add", "::6/128", "dev", "lo")
			n.restore(t, "iptables-nft-restore", redirect4)
			return nil
		}, reason: "connection refused"},
		{name: "capture ports taken", setup: func(t *testing.T, n testNetns) func() {
			var ls []net.Listener
			require.NoError(t, n.do(t, func() error {
				for _, a := range []string{"127.0.0.1:15001", "127.0.0.1:15006"} {
					l, err := net.Listen("tcp4", a)
					if err != nil {
						return err
					}
					ls = append(ls, l)
				}
				return nil
			}))
			return func() {
				for _, l := range ls {
					l.Close()
				}
			}
		}, reason: "cannot listen on 127.0.0.1:15001", missing: "run the validation before the proxy starts"},
		{name: "something else answers the probe port", setup: func(t *testing.T, n testNetns) func() {
			var l net.Listener
			require.NoError(t, n.do(t, func() (err error) {
				l, err = net.Listen("tcp4", "127.0.0.6:15002")
				return err
			}))
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			return func() { l.Close() }
		}, reason: "none of the listeners on 127.0.0.1:15001, 127.0.0.1:15006 accepted it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNetns(t)
			if tc.setup != nil {
				if done := tc.setup(t, n); done != nil {
					defer done()
				}
			}
			p := probe15002
			p.IPv6 = tc.ipv6
			start := time.Now()
			err := n.do(t, func() error { return Run(context.Background(), p) })
			if tc.reason == "" {
				require.NoError(t, err)
				return
			}
			var ve *Error
			require.ErrorAs(t, err, &ve)
			assert.Contains(t, ve.Reason, tc.reason)
			assert.Contains(t, ve.Missing, tc.missing)
			assert.Less(t, time.Since(start), p.Timeout+2*time.Second, "the timeout bounds the run")
		})
	}
}

// TestRunOwner: with the tool's owner rules, the probe passes only from
// a socket of the proxy's UID. The sockets take the thread's fsuid, which
// Run's contract (every socket on the calling goroutine) makes settable
// for the test.
func TestRunOwner(t *testing.T) {
	rules := "-A OUTPUT -j ISTIO_OUTPUT\n" +
		"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n" +
		"-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN\n" +
		"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT\n" +
		"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN\n" +
		"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"
	for _, tc := range []struct {
		uid  int
		pass bool
	}{{1337, true}, {1000, false}, {0, false}} {
		t.Run(fmt.Sprintf("uid %d", tc.uid), func(t *testing.T) {
			n := newTestNetns(t)
			n.restore(t, "iptables-nft-restore", ":ISTIO_OUTPUT - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n"+rules)
			err := n.do(t, func() error {
				prev, err := unix.SetfsuidRetUid(tc.uid)
				if err != nil {
					return err
				}
				defer unix.SetfsuidRetUid(prev) //nolint:errcheck // back to root; the thread is ours
				return Run(context.Background(), probe15002)
			})
			if tc.pass {
				assert.NoError(t, err)
				return
			}
			var ve *Error
			require.ErrorAs(t, err, &ve)
			assert.Contains(t, ve.Reason, "connection refused")
		})
	}
}
