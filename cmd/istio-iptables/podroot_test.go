//go:build linux

package main

// Issue 15: nothing the pod controls can steer the tool. The built binary
// runs, as a CNI plugin would, with --netns /proc/PID/ns/net, where PID is
// a helper process this test starts inside a namespace of its own,
// chrooted into a fake pod root: /proc/PID/root is that root. Each case
// plants one hostile file there and asserts the outcome, the time taken
// (under 1 s) and the peak memory of the run (under 50 MB).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// podRootHelperEnv, when set, makes TestPodRootHelperProcess the helper:
// chroot into its value, say "ready", wait for stdin to close.
const podRootHelperEnv = "ISTIO_IPTABLES_PODROOT_HELPER"

// Bounds of issue 15 for every run.
const (
	maxRunTime = time.Second
	maxRunRSS  = 50 << 20 // bytes
)

// The node's secret, outside every pod root: a read that escapes the
// root would capture 10.66.66.66 and could log the secret word.
const (
	nodeSecretResolv = "nameserver 10.66.66.66 HOST-ONLY-SECRET-abc123\n"
	nodePasswd       = "istio-proxy:x:1000:1000::/:/bin/sh\n"
)

// TestPodRootHelperProcess is not a test: it is the pod's process that
// the tests below start (the os/exec TestHelperProcess pattern).
func TestPodRootHelperProcess(t *testing.T) {
	root := os.Getenv(podRootHelperEnv)
	if root == "" {
		t.Skip("the helper process of TestPodRoot*; it runs only when they start it")
	}
	if err := syscall.Chroot(root); err != nil {
		fmt.Println("chroot:", err)
		os.Exit(1)
	}
	if err := os.Chdir("/"); err != nil {
		fmt.Println("chdir:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// startPod starts the helper chrooted into root inside the namespace n,
// and stops it when the test ends. It returns its PID.
func startPod(t *testing.T, n hardeningNS, root string) int {
	t.Helper()
	nsenter, err := exec.LookPath("nsenter")
	require.NoError(t, err)
	cmd := exec.Command(nsenter, "--net="+n.path(), "--", os.Args[0], "-test.run=^TestPodRootHelperProcess$")
	cmd.Env = []string{podRootHelperEnv + "=" + root}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("the pod helper %d did not stop when its stdin closed", cmd.Process.Pid)
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		require.Equal(t, "ready\n", line, "the pod helper did not start")
	case <-time.After(10 * time.Second):
		t.Fatal("the pod helper did not start within 10 s")
	}
	pid := cmd.Process.Pid
	// The helper is in the test's namespace and in its fake root.
	var a, b unix.Stat_t
	require.NoError(t, unix.Stat(n.path(), &a))
	require.NoError(t, unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &b))
	require.Equal(t, a.Ino, b.Ino, "the pod helper is not in %s", n.path())
	link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/root")
	require.NoError(t, err)
	require.Equal(t, root, link, "the pod helper is not chrooted")
	return pid
}

// measuredRun is one run of the binary.
type measuredRun struct {
	code           int
	stdout, stderr string
	took           time.Duration
	maxRSS         int64 // bytes
}

// runMeasured runs the binary inside the namespace n, with exactly env,
// under GNU time, which reports the tool's own peak RSS. The rusage Go
// gets for its child would not do: Go starts children with vfork, and
// the kernel counts the parent's (this test's) peak RSS into the child's
// at exec. GNU time forks, so its child starts from time's small RSS.
func runMeasured(t *testing.T, bin string, n hardeningNS, env []string, args ...string) measuredRun {
	t.Helper()
	nsenter, err := exec.LookPath("nsenter")
	require.NoError(t, err)
	gnuTime := "/usr/bin/time" // .ci/run installs it (Debian package time)
	_, err = os.Stat(gnuTime)
	require.NoError(t, err, "GNU time measures the peak memory: apt-get install time")
	rss := filepath.Join(t.TempDir(), "maxrss")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append([]string{"--net=" + n.path(), "--", gnuTime, "-f", "%M", "-o", rss, bin}, args...)
	cmd := exec.CommandContext(ctx, nsenter, argv...)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err = cmd.Run()
	r := measuredRun{stdout: o.String(), stderr: e.String(), took: time.Since(start)}
	require.NoError(t, ctx.Err(), "the tool hangs: %s", r.stderr)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	b, err := os.ReadFile(rss)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n") // "Command exited with non-zero status 2" first, then %M
	kib, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	require.NoError(t, err, "GNU time wrote %q", b)
	r.maxRSS = kib * 1024
	return r
}

// hostState is the machine's own netfilter and routing state.
func hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, argv := range [][]string{
		{"iptables-save"}, {"ip6tables-save"}, {"nft", "list", "ruleset"},
		{"ip", "rule"}, {"ip", "-6", "rule"}, {"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
	} {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", argv, out)
		fmt.Fprintf(&b, "== %v\n%s", argv, saveNoise.ReplaceAllString(string(out), ""))
	}
	return b.String()
}

// podFile writes name (relative to the root) with content.
func podFile(t *testing.T, root, name, content string) {
	t.Helper()
	p := filepath.Join(root, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
}

func podSymlink(t *testing.T, root, target, name string) {
	t.Helper()
	p := filepath.Join(root, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.Symlink(target, p))
}

// podRootCase is one hostile (or, as a control, honest) pod root.
type podRootCase struct {
	name     string
	setup    func(t *testing.T, root string)
	env      []string // beyond PATH and XTABLES_LOCKFILE
	args     []string // beyond --netns /proc/PID/ns/net and the base
	netns    string   // instead of /proc/PID/ns/net: %s is the namespace's path
	wantCode int
	// check asserts stdout and stderr; proc is /proc/PID/root.
	check func(t *testing.T, r measuredRun, proc string)
}

const dnsRule = "-d 10.96.0.10/32 -j REDIRECT --to-ports 15053"

// refusedResolv asserts a resolv.conf refused for reason: a warning
// naming the path and the reason, no DNS server, nothing from the file.
func refusedResolv(reason string) func(t *testing.T, r measuredRun, proc string) {
	return func(t *testing.T, r measuredRun, proc string) {
		t.Helper()
		assert.Contains(t, r.stderr, `level=WARN msg="resolv.conf not used: no DNS server is known from it" path=`+proc+"/etc/resolv.conf")
		assert.Contains(t, r.stderr, reason)
		assert.Contains(t, r.stderr, "DNS capture is off")
		assert.NotContains(t, r.stdout, "--to-ports 15053", "no DNS server may be captured")
		assert.NotContains(t, r.stdout+r.stderr, "10.66.66.66", "the node's file was read")
		assert.NotContains(t, r.stderr, "HOST-ONLY-SECRET", "the node's file reached the log")
	}
}

func TestPodRootHostileFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace and chroots a helper process into a fake pod root")
	}
	bin := buildTool(t)
	before := hostState(t)
	t.Cleanup(func() { assert.Equal(t, before, hostState(t), "the machine's own namespace changed") })
	n := newHardeningNS(t)

	node := t.TempDir() // the node's files, outside every pod root
	require.NoError(t, os.WriteFile(filepath.Join(node, "resolv.conf"), []byte(nodeSecretResolv), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(node, "passwd"), []byte(nodePasswd), 0o644))
	up := strings.Repeat("../", 16) + strings.TrimPrefix(node, "/")

	dns := []string{"--redirect-dns"}
	cases := []podRootCase{
		// Controls: an honest pod root is read.
		{name: "honest resolv.conf: the addresses, nothing else, reach the log", args: dns,
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/resolv.conf", "search svc.cluster.local\nnameserver 10.96.0.10\nnameserver HOST-ONLY-SECRET-abc123\n")
			},
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stdout, dnsRule)
				assert.Contains(t, r.stderr, `msg="DNS servers from resolv.conf" path=`+proc+"/etc/resolv.conf servers=10.96.0.10")
				assert.Contains(t, r.stderr, "lines=3", "the unusable value is named by its line")
				assert.NotContains(t, r.stderr, "HOST-ONLY-SECRET")
			}},
		{name: "symlink inside the pod root is followed there", args: dns,
			setup: func(t *testing.T, root string) {
				podFile(t, root, "run/resolv.conf", "nameserver 10.96.0.10\n")
				podSymlink(t, root, "/run/resolv.conf", "etc/resolv.conf")
			},
			check: func(t *testing.T, r measuredRun, proc string) { assert.Contains(t, r.stdout, dnsRule) }},
		// Hostile resolv.conf.
		{name: "absolute symlink out of the root", args: dns,
			setup: func(t *testing.T, root string) {
				podSymlink(t, root, filepath.Join(node, "resolv.conf"), "etc/resolv.conf")
			},
			check: refusedResolv("no such file or directory")},
		{name: "relative symlink out of the root", args: dns,
			setup: func(t *testing.T, root string) { podSymlink(t, root, up+"/resolv.conf", "etc/resolv.conf") },
			check: refusedResolv("no such file or directory")},
		{name: "symlinked /etc out of the root", args: dns,
			setup: func(t *testing.T, root string) { podSymlink(t, root, node, "etc") },
			check: refusedResolv("no such file or directory")},
		{name: "symlink to /dev/zero", args: dns,
			setup: func(t *testing.T, root string) {
				require.NoError(t, os.MkdirAll(filepath.Join(root, "dev"), 0o755))
				require.NoError(t, unix.Mknod(filepath.Join(root, "dev/zero"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
				podSymlink(t, root, "/dev/zero", "etc/resolv.conf")
			},
			check: refusedResolv("not a regular file (a character device)")},
		{name: "FIFO", args: dns,
			setup: func(t *testing.T, root string) {
				require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
				require.NoError(t, syscall.Mkfifo(filepath.Join(root, "etc/resolv.conf"), 0o644))
			},
			check: refusedResolv("not a regular file (a FIFO)")},
		{name: "directory", args: dns,
			setup: func(t *testing.T, root string) {
				require.NoError(t, os.MkdirAll(filepath.Join(root, "etc/resolv.conf"), 0o755))
			},
			check: refusedResolv("not a regular file (a directory)")},
		{name: "10 MB file", args: dns,
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/resolv.conf", "nameserver 10.96.0.10\n"+strings.Repeat("# padding\n", 1<<20))
			},
			check: refusedResolv("larger than the limit (10485782 bytes, the limit is 65536)")},
		{name: "NUL bytes", args: dns,
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/resolv.conf", "nameserver 10.96.0.10\n\x00\x00\x00nameserver 10.66.66.66\n")
			},
			check: refusedResolv("not a text file: it holds a NUL byte")},
		{name: "a forged log record", args: dns,
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/resolv.conf", "nameserver 10.96.0.10\rtime=2000-01-01 level=ERROR msg=forged\n")
			},
			check: refusedResolv("line 1 holds a control character")},
		// The user database.
		{name: "passwd naming istio-proxy at another UID",
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/passwd", "root:x:0:0::/root:/bin/sh\nistio-proxy:x:4242:4242::/:/sbin/nologin\n")
			},
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stdout, "--uid-owner 4242 ")
				assert.Contains(t, r.stdout, "--gid-owner 4242 ")
				assert.NotContains(t, r.stdout, "--uid-owner 1337 ")
				assert.NotContains(t, r.stdout, "--uid-owner 1000 ", "the node's istio-proxy")
			}},
		{name: "-u and -g names in the pod's database", args: []string{"-u", "istio-proxy,app", "-g", "mesh"},
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/passwd", "istio-proxy:x:4242:4242::/:/sbin/nologin\napp:x:5000:5000::/:/bin/sh\n")
				podFile(t, root, "etc/group", "mesh:x:4343:\n")
			},
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stdout, "--uid-owner 4242 ")
				assert.Contains(t, r.stdout, "--uid-owner 5000 ")
				assert.Contains(t, r.stdout, "--gid-owner 4343 ")
			}},
		{name: "a name the pod does not know is refused", args: []string{"-u", "root"},
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/passwd", "istio-proxy:x:4242:4242::/:/sbin/nologin\n")
			},
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, `-u: unknown name "root": look up in `+proc+"/etc/passwd: no such name")
			}},
		{name: "passwd symlinked out to the node's", args: nil,
			setup: func(t *testing.T, root string) { podSymlink(t, root, filepath.Join(node, "passwd"), "etc/passwd") },
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stdout, "--uid-owner 1337 ", "no istio-proxy in the pod: 1337")
				assert.NotContains(t, r.stdout, "--uid-owner 1000 ", "the node's istio-proxy")
			}},
		{name: "passwd as a FIFO", args: nil,
			setup: func(t *testing.T, root string) {
				require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
				require.NoError(t, syscall.Mkfifo(filepath.Join(root, "etc/passwd"), 0o644))
			},
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, `-u: the default is the UID of user "istio-proxy" (ENVOY_USER's default), which cannot be resolved: read `+
					proc+"/etc/passwd: not a regular file (a FIFO); pass -u with a number")
			}},
		{name: "passwd of 10 MB", args: nil,
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/passwd", strings.Repeat("x:x:1:1::/:/bin/sh\n", 10<<20/19))
			},
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, "larger than the limit")
			}},
		{name: "passwd with NUL bytes", args: nil,
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/passwd", "istio-proxy:x:4242:4242::/:/bin/sh\n\x00")
			},
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, "not a text user database: it holds a NUL byte")
			}},
		{name: "ENVOY_USER=root is refused as the default -u", env: []string{"ENVOY_USER=root"},
			setup:    func(t *testing.T, root string) { podFile(t, root, "etc/passwd", "root:x:0:0::/root:/bin/sh\n") },
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, `-u: the default is the UID of ENVOY_USER "root", which is 0 in the pod's user database (`+proc+
					"/etc/passwd, group): root is never exempted implicitly; pass -u 0 to exempt it")
				assert.Empty(t, r.stdout)
			}},
		{name: "istio-proxy at UID 0 in the pod is refused as the default -u",
			setup:    func(t *testing.T, root string) { podFile(t, root, "etc/passwd", "istio-proxy:x:0:0::/:/bin/sh\n") },
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, "root is never exempted implicitly")
			}},
		{name: "an explicit -u 0 exempts root", env: []string{"ENVOY_USER=root"}, args: []string{"-u", "0"},
			setup: func(t *testing.T, root string) { podFile(t, root, "etc/passwd", "root:x:0:0::/root:/bin/sh\n") },
			check: func(t *testing.T, r measuredRun, proc string) { assert.Contains(t, r.stdout, "--uid-owner 0 ") }},
		{name: "a name the pod maps to 0 is refused, -u and -g", args: []string{"-u", "istio-proxy", "-g", "wheel"},
			setup: func(t *testing.T, root string) {
				podFile(t, root, "etc/passwd", "istio-proxy:x:0:0::/:/bin/sh\n")
				podFile(t, root, "etc/group", "wheel:x:0:\n")
			},
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, `-u: unknown name "istio-proxy": it is 0 in the pod's user database (`+proc+
					"/etc/passwd, group): root is exempted only by an explicit 0")
				assert.Contains(t, r.stderr, `-g: unknown name "wheel": it is 0 in the pod's user database`)
			}},
		// A named namespace: the pod's root is unknown.
		{name: "a name with /var/run/netns is refused", args: []string{"-u", "istio-proxy"}, netns: "%s",
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, `-u: unknown name "istio-proxy": the pod's user database is not known with --netns "`+n.path()+`"`)
				assert.Contains(t, r.stderr, "give the numeric UID")
			}},
		{name: "ENVOY_USER with /var/run/netns is refused", env: []string{"ENVOY_USER=envoy"}, netns: "%s",
			wantCode: exitUsage,
			check: func(t *testing.T, r measuredRun, proc string) {
				assert.Contains(t, r.stderr, `-u: the default is the UID of ENVOY_USER "envoy", which cannot be resolved: the pod's user database is not known`)
			}},
		{name: "the default -u with /var/run/netns is 1337", netns: "%s",
			check: func(t *testing.T, r measuredRun, proc string) { assert.Contains(t, r.stdout, "--uid-owner 1337 ") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.setup != nil {
				tc.setup(t, root)
			}
			pid := startPod(t, n, root)
			proc := "/proc/" + strconv.Itoa(pid) + "/root"
			netns := "/proc/" + strconv.Itoa(pid) + "/ns/net"
			if tc.netns != "" {
				netns = fmt.Sprintf(tc.netns, n.path())
			}
			env := append([]string{"PATH=" + t.TempDir(), "XTABLES_LOCKFILE=" + filepath.Join(t.TempDir(), "xtables.lock")}, tc.env...)
			args := append([]string{"--dry-run", "--ipv6=false", "-i", "*", "--netns", netns}, tc.args...)
			r := runMeasured(t, bin, n, env, args...)
			t.Logf("exit %d in %v, max RSS %.1f MB", r.code, r.took.Round(time.Millisecond), float64(r.maxRSS)/(1<<20))
			require.Equal(t, tc.wantCode, r.code, "stderr: %s", r.stderr)
			assert.Less(t, r.took, maxRunTime, "the run took too long")
			assert.Less(t, r.maxRSS, int64(maxRunRSS), "the run used too much memory")
			assertLogLinesSafe(t, r.stderr)
			tc.check(t, r, proc)
		})
	}
}
