package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mesh-init/istio-iptables/e2e/internal/podbed"
)

// user is who a helper process runs as.
type user struct {
	name     string
	uid, gid uint32
	caps     []uintptr // ambient capabilities
}

var (
	appUser   = user{name: "app", uid: 1000, gid: 1000}
	proxyUser = user{name: "proxy", uid: 1337, gid: 1337, caps: []uintptr{unix.CAP_NET_ADMIN}} // may set IP_TRANSPARENT
	gidUser   = user{name: "gid1337", uid: 1000, gid: 1337}                                    // the proxy's GID alone
	uidUser   = user{name: "uid1337", uid: 1337, gid: 1000}                                    // the proxy's UID alone
	rootUser  = user{name: "root", uid: 0, gid: 0}
	// appServer is the app's listening side: UID 1000, allowed to bind port 80.
	appServer = user{name: "app", uid: 1000, gid: 1000, caps: []uintptr{unix.CAP_NET_BIND_SERVICE}}
)

// helperCmd prepares this test binary to run role as u.
func helperCmd(role string, u user, env ...string) *exec.Cmd {
	cmd := exec.Command(helperBin)
	cmd.Dir = "/"
	cmd.Env = append([]string{helperEnv + "=" + role}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: u.uid, Gid: u.gid},
		AmbientCaps: u.caps,
		Pdeathsig:   syscall.SIGKILL, // never outlive the test
	}
	return cmd
}

// startIn starts cmd inside the named network namespace: the fork happens
// on a thread switched into it (podbed.InNetns), so the child is born
// there. The goroutines Start itself may launch only copy bytes between
// pipes, which no namespace affects.
func startIn(nsName string, cmd *exec.Cmd) error {
	return podbed.InNetns("/var/run/netns/"+nsName, cmd.Start)
}

// startServer runs a long-lived helper (server or proxy) in a namespace,
// waits until it listens, and kills it when t ends; its stderr is logged if
// t failed.
func startServer(t *testing.T, nsName, role string, u user, env ...string) {
	t.Helper()
	cmd := helperCmd(role, u, env...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, startIn(nsName, cmd), "start %s in %s", role, nsName)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("%s %v in %s stderr:\n%s", role, env, nsName, stderr)
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		require.Equal(t, "ready\n", line, "%s %v in %s did not start: %s", role, env, nsName, stderr)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s %v in %s not ready after 10s: %s", role, env, nsName, stderr)
	}
}

// connect runs one client connection from a namespace as u and returns the
// raw reply, or an error carrying the client's message (refused, timeout...).
func connect(nsName string, u user, addr, send string) (string, error) {
	cmd := helperCmd("client", u, envAddr+"="+addr, envSend+"="+send)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := startIn(nsName, cmd); err != nil {
		return "", err
	}
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(strings.TrimPrefix(stderr.String(), "client: "))
		if msg == "" {
			msg = err.Error()
		}
		return "", errors.New(msg)
	}
	return stdout.String(), nil
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
