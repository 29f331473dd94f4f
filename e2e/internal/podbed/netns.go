package podbed

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
)

// NetnsPath is where ip netns keeps the namespace called name.
func NetnsPath(name string) string { return "/var/run/netns/" + name }

// NewNetns makes a network namespace named prefix and 8 random hex digits,
// with lo up, and returns its name. It is removed when owner ends; t is the
// test whose failure a setup error is.
func NewNetns(t, owner testing.TB, prefix string) string {
	t.Helper()
	id := make([]byte, 4)
	_, err := rand.Read(id)
	require.NoError(t, err)
	name := prefix + hex.EncodeToString(id)
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "ip netns add: %s", out)
	owner.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			owner.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	out, err = exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput()
	require.NoError(t, err, "lo up: %s", out)
	return name
}

// InNetns runs f on a locked OS thread switched into the namespace at
// path; sockets f opens belong to that namespace. The thread is returned
// to the scheduler only if switching back worked.
func InNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer origin.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := f()
		if err := netns.Set(origin); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
