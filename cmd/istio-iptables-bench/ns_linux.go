//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// nsKind is how a fresh namespace is set up.
type nsKind int

const (
	// nsIPv4: lo up, nothing else (--ipv6=auto finds no global IPv6).
	nsIPv4 nsKind = iota
	// nsDual: also a veth carrying 10.66.0.1/24 and fd00:66::1/64, so
	// --ipv6=auto turns IPv6 on.
	nsDual
	// nsPod: lo up and a veth d0 (its peer d1 up in the same namespace,
	// so d0 has carrier) with 10.66.0.1/24 and the default route, so that
	// routing finds a route for any destination before nat OUTPUT; what
	// leaves through d0 finds no neighbour and goes nowhere. (The dummy
	// link type is not in every kernel.) Conntrack forgets a
	// closed connection after 1 s instead of 10 s, so the data path's
	// table stays small.
	nsPod
)

// ns is a namespace the bench made, at /var/run/netns/name.
type ns struct {
	name string
	path string
}

var (
	seqMu sync.Mutex
	seq   int
	// live are the namespaces not deleted yet, so that cleanupAll (on
	// failure or a signal) can remove them.
	live = map[string]ns{}
)

func newNS(kind nsKind) (ns, error) {
	seqMu.Lock()
	seq++
	n := ns{name: fmt.Sprintf("ii-bench-%d-%d", os.Getpid(), seq)}
	n.path = "/var/run/netns/" + n.name
	live[n.name] = n
	seqMu.Unlock()
	cmds := [][]string{{"netns", "add", n.name}, {"-n", n.name, "link", "set", "lo", "up"}}
	switch kind {
	case nsDual:
		cmds = append(cmds, []string{"-n", n.name, "link", "add", "d0", "type", "veth", "peer", "name", "d1"},
			[]string{"-n", n.name, "link", "set", "d0", "up"},
			[]string{"-n", n.name, "addr", "add", "fd00:66::1/64", "dev", "d0", "nodad"},
			[]string{"-n", n.name, "addr", "add", "10.66.0.1/24", "dev", "d0"})
	case nsPod:
		cmds = append(cmds, []string{"-n", n.name, "link", "add", "d0", "type", "veth", "peer", "name", "d1"},
			[]string{"-n", n.name, "link", "set", "d1", "up"},
			[]string{"-n", n.name, "link", "set", "d0", "up"},
			[]string{"-n", n.name, "addr", "add", "10.66.0.1/24", "dev", "d0"},
			[]string{"-n", n.name, "route", "add", "default", "dev", "d0"})
	}
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			n.delete()
			return ns{}, fmt.Errorf("set up namespace %s: ip %s: %w: %s", n.name, strings.Join(c, " "), err, bytes.TrimSpace(out))
		}
	}
	if kind == nsPod {
		err := inNS(n, func() error {
			return os.WriteFile("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close", []byte("1\n"), 0o644)
		})
		if err != nil {
			n.delete()
			return ns{}, fmt.Errorf("set up namespace %s: conntrack close timeout: %w", n.name, err)
		}
	}
	return n, nil
}

func (n ns) delete() {
	exec.Command("ip", "netns", "del", n.name).Run()
	seqMu.Lock()
	delete(live, n.name)
	seqMu.Unlock()
}

// cleanupAll deletes every namespace the bench made and has not deleted.
func cleanupAll() {
	seqMu.Lock()
	var all []ns
	for _, n := range live {
		all = append(all, n)
	}
	seqMu.Unlock()
	for _, n := range all {
		n.delete()
	}
}

// inNS runs f on an OS thread switched into n, the way
// containernetworking's ns.Do does: a new goroutine locks its thread,
// switches, runs f, switches back, and unlocks only when the switch back
// worked (a locked thread that exits is discarded, so a failed restore
// cannot leak). f must start no goroutine that needs the namespace.
func inNS(n ns, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- fmt.Errorf("open this thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(n.path)
		if err != nil {
			ch <- fmt.Errorf("open namespace %s: %w", n.path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			ch <- fmt.Errorf("enter namespace %s: %w", n.path, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			ch <- fmt.Errorf("leave namespace %s: %w", n.path, err)
			return // the locked thread is discarded
		}
		runtime.UnlockOSThread()
		ch <- ferr
	}()
	return <-ch
}

// startIn runs argv with stdin inside n, forked from a thread switched
// there (as kubelet starts an initContainer already in the pod's
// namespace), and returns its wall time from start to exit and the CPU
// time (user+sys) the child used.
func startIn(n ns, argv []string, stdin []byte, env []string) (sample, error) {
	var s sample
	err := inNS(n, func() error {
		cmd := exec.Command(argv[0], argv[1:]...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		cmd.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		s.wall = time.Since(start)
		if cmd.ProcessState != nil {
			s.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}
		if err != nil {
			return fmt.Errorf("run %s in %s: %w: %s", shortArgv(argv), n.name, err, bytes.TrimSpace(stderr.Bytes()))
		}
		return nil
	})
	return s, err
}

// shortArgv is argv for an error message, long arguments cut.
func shortArgv(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if len(a) > 60 {
			a = a[:60] + "..."
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// processes counts the iptables, nft and ip processes one run of argv in
// n starts, through a PATH of shims that log their name and exec the real
// binary.
func processes(n ns, argv []string) (int, error) {
	dir, err := os.MkdirTemp("", "ii-bench-shim")
	if err != nil {
		return 0, fmt.Errorf("count processes: %w", err)
	}
	defer os.RemoveAll(dir)
	logf := filepath.Join(dir, "log")
	var names []string
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, fl := range []string{"nft", "legacy"} {
			for _, tool := range []string{"save", "restore"} {
				names = append(names, fmt.Sprintf("%s-%s-%s", fam, fl, tool))
			}
		}
	}
	names = append(names, "nft", "ip", "iptables", "ip6tables")
	for _, name := range names {
		shim := fmt.Sprintf("#!/bin/sh\necho %s >> %s\nexec /usr/sbin/%s \"$@\"\n", name, logf, name)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(shim), 0o755); err != nil {
			return 0, fmt.Errorf("count processes: %w", err)
		}
	}
	if _, err := startIn(n, argv, nil, []string{"PATH=" + dir}); err != nil {
		return 0, err
	}
	data, err := os.ReadFile(logf)
	if err != nil && !os.IsNotExist(err) {
		return 0, fmt.Errorf("count processes: %w", err)
	}
	return len(strings.Fields(string(data))), nil
}
