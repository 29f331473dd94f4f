//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Hostile values: values crafted to inject rules or shell commands, and
// --netns paths that are not network namespaces. Each must be refused with
// exit 2 before anything is touched. TestHostileValuesRefused runs them in
// process (dry run, no root); TestHostileValuesWriteNothing runs the built
// binary against a real namespace that already holds rules and compares
// its state before and after each refused run.

// hostileCase is one refused command line.
type hostileCase struct {
	name string
	env  map[string]string
	args []string
	flag string // how stderr names the flag
}

// hostileBase captures all outbound traffic, so a hostile value let
// through would write rules (other ones than the namespace's earlier state
// holds). It sets none of the flags the environment cases use: a flag
// would win over the variable.
var hostileBase = []string{"-i", "*", "--ipv6=true"}

func hostileCases(t *testing.T) []hostileCase {
	t.Helper()
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	require.NoError(t, os.WriteFile(regular, []byte("not a namespace\n"), 0o644))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	link := filepath.Join(dir, "link-to-dir")
	require.NoError(t, os.Symlink(dir, link))

	c := func(name, flag string, args ...string) hostileCase {
		return hostileCase{name: name, args: args, flag: flag}
	}
	e := func(name, flag, env, v string) hostileCase {
		return hostileCase{name: name, env: map[string]string{env: v}, flag: flag + " (from " + env + ")"}
	}
	return []hostileCase{
		// Rule text inside a value.
		c("-x rule text", "-x:", "-x", "1.1.1.1/32 -j ACCEPT"),
		c("-i rule text", "-i:", "-i", "10.0.0.0/8 -j ACCEPT"),
		c("-b rule text", "-b:", "-b", "80 -j ACCEPT"),
		c("-u rule text", "-u:", "-u", "1337 -j ACCEPT"),
		c("-k rule text", "-k:", "-k", "eth0 -j ACCEPT"),
		// Embedded newlines and a whole table.
		c("-x newline rule", "-x:", "-x", "10.0.0.1\n-A OUTPUT -j ACCEPT"),
		c("-u newline COMMIT", "-u:", "-u", "1337\nCOMMIT"),
		c("-q newline table", "-q:", "-q", "3306\nCOMMIT\n*filter\n-A OUTPUT -j DROP\nCOMMIT"),
		c("-c trailing newline", "-c:", "-c", "eth0\n"),
		c("-o carriage return", "-o:", "-o", "25\r"),
		c("-d tab rule", "-d:", "-d", "15090\t-j\tACCEPT"),
		c("-b COMMIT", "-b:", "-b", "COMMIT"),
		c("-i COMMIT", "-i:", "-i", "COMMIT"),
		// Quotes.
		c("-x double quotes", "-x:", "-x", `"1.1.1.1"`),
		c("-i single quotes", "-i:", "-i", `'10.0.0.0/8'`),
		c("-c quote", "-c:", "-c", `eth0"`),
		c("-k single quote", "-k:", "-k", `eth0'`),
		c("-m quote and rule", "-m:", "-m", `REDIRECT" -j ACCEPT "`),
		// Shell.
		c("-p $(reboot)", "-p:", "-p", "$(reboot)"),
		c("-u $(reboot)", "-u:", "-u", "$(reboot)"),
		c("-g $(reboot)", "-g:", "-g", "$(reboot)"),
		c("-c $(reboot)", "-c:", "-c", "$(reboot)"),
		c("-x backticks", "-x:", "-x", "`reboot`"),
		c("-b semicolon", "-b:", "-b", "80;reboot"),
		c("-i * then shell", "-i:", "-i", "*; reboot"),
		c("-t and-and", "-t:", "-t", "1337 && reboot"),
		c("-r pipe", "-r:", "-r", "133|reboot"),
		c("--iptables-mode shell", "--iptables-mode:", "--iptables-mode", "nft; reboot"),
		c("--ipv6 shell", "--ipv6:", "--ipv6", "true; reboot"),
		c("--wait shell", "--wait:", "--wait", "30; reboot"),
		// Look-alikes.
		c("-e fullwidth digits", "-e:", "-e", "１５００８"),
		c("-k zero-width space", "-k:", "-k", "eth0\u200b"),
		// The same through the environment.
		e("ISTIO_SERVICE_EXCLUDE_CIDR rule text", "-x", "ISTIO_SERVICE_EXCLUDE_CIDR", "1.1.1.1/32 -j ACCEPT"),
		e("PROXY_UID $(reboot)", "-u", "PROXY_UID", "$(reboot)"),
		e("ISTIO_INBOUND_PORTS newline rule", "-b", "ISTIO_INBOUND_PORTS", "80\n-A OUTPUT -j ACCEPT"),
		e("KUBE_VIRT_INTERFACES rule text", "-k", "KUBE_VIRT_INTERFACES", "eth0 -j ACCEPT"),
		e("IPTABLES_WAIT shell", "--wait", "IPTABLES_WAIT", "$(reboot)"),
		// --netns that is not a network namespace.
		c("--netns regular file", "--netns:", "--netns", regular),
		c("--netns directory", "--netns:", "--netns", dir),
		c("--netns symlink to a directory", "--netns:", "--netns", link),
		c("--netns nothing", "--netns:", "--netns", filepath.Join(dir, "missing")),
		c("--netns mount namespace", "--netns:", "--netns", "/proc/self/ns/mnt"),
		c("--netns character device", "--netns:", "--netns", "/dev/null"),
		c("--netns fifo", "--netns:", "--netns", fifo),
		c("--netns with a newline", "--netns:", "--netns", "/proc/self/ns/net\n"),
		e("NETWORK_NAMESPACE regular file", "--netns", "NETWORK_NAMESPACE", regular),
	}
}

// TestHostileValuesRefused runs every hostile case in process with
// --dry-run: exit 2, nothing on stdout, the flag named, within seconds
// (opening a FIFO, say, must not hang the tool).
func TestHostileValuesRefused(t *testing.T) {
	for _, tc := range hostileCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan cliResult, 1)
			go func() { done <- runCLI(t, tc.env, append(append([]string{"-n"}, hostileBase...), tc.args...)...) }()
			var r cliResult
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("not refused after 10s: the tool hangs")
			}
			assert.Equal(t, exitUsage, r.code, "stderr: %s", r.stderr)
			assert.Empty(t, r.stdout)
			assert.Contains(t, r.stderr, tc.flag)
			assert.Contains(t, r.stderr, "Nothing was changed.")
		})
	}
}

// TestHostileValuesWriteNothing runs the built binary inside a namespace
// that already holds rules, as the istio-init container does (UID 0 with
// NET_ADMIN and NET_RAW only, no --netns; for the --netns cases, the hostile
// path; running inside the namespace means even a fallback to "the current
// namespace" could only touch the test's). The
// PATH holds the real iptables binaries and a fake reboot that leaves a
// mark. Every run must exit 2, leave every view of the namespace as it
// was, and never start reboot.
func TestHostileValuesWriteNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("kernel test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root to create a network namespace (run `go test` as root)")
	}
	bin := buildTool(t)
	ns := newHardeningNS(t)
	fakes := t.TempDir()
	mark := filepath.Join(t.TempDir(), "rebooted")
	require.NoError(t, os.WriteFile(filepath.Join(fakes, "reboot"), []byte("#!/bin/sh\ntouch "+mark+"\n"), 0o755))
	env := []string{
		"PATH=" + fakes + ":" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin",
		"XTABLES_LOCKFILE=" + filepath.Join(t.TempDir(), "xtables.lock"),
	}

	// The earlier state: rules of another configuration, in both families.
	code, stdout, stderr := runTool(t, bin, ns, env, "-p", "16001", "-b", "80", "-i", "10.0.0.0/8,fd00::/8", "--ipv6=true")
	require.Zero(t, code, "%s%s", stdout, stderr)
	before := ns.snapshot(t)
	require.Contains(t, before["iptables-nft-save"], "ISTIO_OUTPUT", "the earlier state holds rules")

	for _, tc := range hostileCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{}, hostileBase...)
			runEnv := env
			for k, v := range tc.env {
				runEnv = append(runEnv, k+"="+v)
			}
			code, stdout, stderr := runTool(t, bin, ns, runEnv, append(args, tc.args...)...)
			assert.Equal(t, exitUsage, code, "stderr: %s", stderr)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, tc.flag)
			assert.Contains(t, stderr, "Nothing was changed.")
			after := ns.snapshot(t)
			for view, want := range before {
				assert.Equal(t, want, after[view], "%s changed", view)
			}
			assert.NoFileExists(t, mark, "a shell ran reboot")
		})
	}
}

// buildTool builds the command into a temporary directory.
func buildTool(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "istio-iptables")
	out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// hardeningNS is a network namespace made for one test.
type hardeningNS struct{ name string }

func (n hardeningNS) path() string { return "/var/run/netns/" + n.name }

// newHardeningNS creates ii-h-<random> with lo up and deletes it when the
// test ends, failed or not.
func newHardeningNS(t *testing.T) hardeningNS {
	t.Helper()
	id := make([]byte, 5)
	_, err := rand.Read(id)
	require.NoError(t, err)
	n := hardeningNS{name: "ii-h-" + hex.EncodeToString(id)}
	out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput()
	require.NoError(t, err, "ip netns add: %s", out)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	out, err = exec.Command("ip", "-n", n.name, "link", "set", "lo", "up").CombinedOutput()
	require.NoError(t, err, "lo up: %s", out)
	return n
}

var saveNoise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]`)

// snapshot is every view of the namespace the tool may change.
func (n hardeningNS) snapshot(t *testing.T) map[string]string {
	t.Helper()
	views := map[string][]string{
		"iptables-nft-save":     {"ip", "netns", "exec", n.name, "iptables-nft-save"},
		"ip6tables-nft-save":    {"ip", "netns", "exec", n.name, "ip6tables-nft-save"},
		"iptables-legacy-save":  {"ip", "netns", "exec", n.name, "iptables-legacy-save"},
		"ip6tables-legacy-save": {"ip", "netns", "exec", n.name, "ip6tables-legacy-save"},
		"ip -4 rule":            {"ip", "-n", n.name, "-4", "rule"},
		"ip -6 rule":            {"ip", "-n", n.name, "-6", "rule"},
		"ip -4 route":           {"ip", "-n", n.name, "-4", "route", "show", "table", "all"},
		"ip -6 route":           {"ip", "-n", n.name, "-6", "route", "show", "table", "all"},
		"lo addresses":          {"ip", "-n", n.name, "addr", "show", "dev", "lo"},
	}
	s := map[string]string{}
	for view, argv := range views {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		require.NoError(t, err, "%s: %s", view, out)
		s[view] = saveNoise.ReplaceAllString(string(out), "")
	}
	return s
}

// initCaps runs a command as the istio-init container: UID 0 with only
// NET_ADMIN and NET_RAW, bounding set included (root would otherwise regain
// every capability on exec).
var initCaps = []string{"setpriv", "--bounding-set", "-all,+net_admin,+net_raw", "--inh-caps", "-all,+net_admin,+net_raw",
	"--ambient-caps", "-all,+net_admin,+net_raw", "--"}

// runTool runs the binary inside the namespace (nsenter --net, so the
// binary switches nothing) with the init container's capabilities
// (initCaps) and exactly env, and gives up after 20 s.
func runTool(t *testing.T, bin string, n hardeningNS, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append(append([]string{"--net=" + n.path()}, initCaps...), append([]string{bin}, args...)...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "the tool hangs: %s", e.String())
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), o.String(), e.String()
	}
	require.NoError(t, err)
	return 0, o.String(), e.String()
}
