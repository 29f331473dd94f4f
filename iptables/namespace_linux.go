//go:build linux

package iptables

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespace is the network namespace a run programs, opened once: every
// read and write of the run (netlink, nftables, the forked *-restore) goes
// through the same handle, so a path that changes under the run cannot
// split it between two namespaces.
type Namespace struct {
	path string
	fd   netns.NsHandle // -1: the current namespace, nothing is switched
}

// CurrentNamespace is the namespace the process runs in: an init
// container's. Nothing is switched and no namespace fd is used, which
// would need CAP_SYS_ADMIN.
func CurrentNamespace() *Namespace { return &Namespace{fd: -1} }

// OpenNamespace opens the network namespace at path ("" the current one)
// and checks, on the opened file, that it is one: a nsfs file of type
// CLONE_NEWNET. Anything that is not a regular file is refused before it
// is opened: opening a FIFO blocks for ever, opening a device can act on
// it.
func OpenNamespace(path string) (*Namespace, error) {
	if path == "" {
		return CurrentNamespace(), nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%q is a directory, not a network namespace", path)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%q is not a namespace file (expected /var/run/netns/NAME or /proc/PID/ns/net)", path)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		unix.Close(fd)
		return nil, fmt.Errorf("%q is not a namespace file (expected /var/run/netns/NAME or /proc/PID/ns/net)", path)
	}
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	if t != unix.CLONE_NEWNET {
		unix.Close(fd)
		return nil, fmt.Errorf("%q is a namespace, but not a network namespace", path)
	}
	return &Namespace{path: path, fd: netns.NsHandle(fd)}, nil
}

// Path is the path the namespace was opened from ("" the current one).
func (n *Namespace) Path() string { return n.path }

// Close releases the handle.
func (n *Namespace) Close() error {
	if n.fd < 0 {
		return nil
	}
	err := n.fd.Close()
	n.fd = -1
	return err
}

// ErrSetns is a namespace the process may not enter.
var ErrSetns = errors.New("entering another network namespace needs CAP_SYS_ADMIN; an init container runs in the pod's namespace already and needs no --netns")

// Do runs fn on an OS thread in the namespace, the way containernetworking's
// ns.Do does: on a fresh goroutine with its thread locked; the thread is
// unlocked only when it is back in the original namespace, so a failed
// restore cannot leak a thread in the wrong namespace. Sockets fn opens and
// processes it forks are born in the namespace. For the current namespace
// fn runs where it is called.
func (n *Namespace) Do(fn func() error) error {
	if n.fd < 0 {
		// Nothing to switch: run here. No thread is locked either, which
		// would make every netlink wake-up a hand-off between threads.
		// (A forked child's parent-death signal follows the thread that
		// forked it, and the Go runtime does not end idle threads.)
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("read current netns: %w", err)
			return // the thread exits locked and is discarded
		}
		defer orig.Close()
		if err := netns.Set(n.fd); err != nil {
			if errors.Is(err, unix.EPERM) {
				err = fmt.Errorf("%w: %w", err, ErrSetns)
			}
			errc <- fmt.Errorf("enter netns %s: %w", n.path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", n.path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// HasGlobalIPv6 reports whether the namespace has a global IPv6 address on
// an interface other than lo. In the current namespace it needs no
// privilege.
func (n *Namespace) HasGlobalIPv6() (bool, error) {
	var has bool
	err := n.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
		addrs, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V6) })
		if err != nil {
			return fmt.Errorf("list IPv6 addresses: %w", err)
		}
		for _, a := range addrs {
			if a.Scope != unix.RT_SCOPE_UNIVERSE || a.IP.IsLoopback() || a.IP.IsLinkLocalUnicast() {
				continue
			}
			if l, err := h.LinkByIndex(a.LinkIndex); err == nil && l.Attrs().Flags&net.FlagLoopback != 0 {
				continue
			}
			has = true
			return nil
		}
		return nil
	})
	return has, err
}

// retry repeats a netlink dump that the kernel interrupted.
func retry[T any](list func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var out []T
		if out, err = list(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

// CheckNetns verifies that path names a network namespace (see
// OpenNamespace), for callers that only check.
func CheckNetns(path string) error {
	ns, err := OpenNamespace(path)
	if err != nil {
		return err
	}
	return ns.Close()
}

// HasGlobalIPv6 opens the namespace at path ("" the current one) and
// reports whether it has a global IPv6 address (Namespace.HasGlobalIPv6).
func HasGlobalIPv6(path string) (bool, error) {
	ns, err := OpenNamespace(path)
	if err != nil {
		return false, err
	}
	defer ns.Close()
	return ns.HasGlobalIPv6()
}
