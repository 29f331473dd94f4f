package cni

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pluginBin is the plugin, built once by TestMain.
var pluginBin string

func TestMain(m *testing.M) {
	if !enabled() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ii-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "istio-iptables-cni")
	build := exec.Command("go", "build", "-trimpath", "-o", pluginBin, "github.com/mesh-init/istio-iptables/cmd/istio-iptables-cni")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the plugin: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func enabled() bool { return os.Getenv("E2E_CNI") == "1" }

// needRoot skips unless make e2e-cni runs the test as root.
func needRoot(t *testing.T) {
	t.Helper()
	if !enabled() {
		t.Skip("CNI end-to-end test: run make e2e-cni (root; E2E_CNI=1)")
	}
	require.Zero(t, os.Geteuid(), "make e2e-cni needs root")
}

// newNetns makes a namespace with lo up; it goes when the test ends.
func newNetns(t *testing.T, prefix string) string {
	t.Helper()
	id := make([]byte, 4)
	_, err := rand.Read(id)
	require.NoError(t, err)
	name := prefix + hex.EncodeToString(id)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func nsPath(name string) string { return "/var/run/netns/" + name }

func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	require.NoError(t, err, "%v: %s", argv, out)
	return string(out)
}

var noise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]|packets \d+ bytes \d+`)

// snapshot is what a namespace holds of netfilter and policy routing, in
// both families and both iptables flavours, plus lo's addresses ("" the
// machine's own).
func snapshot(t *testing.T, ns string) string {
	t.Helper()
	var sb strings.Builder
	for _, argv := range [][]string{
		{"iptables-nft-save"}, {"ip6tables-nft-save"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"},
		{"nft", "list", "ruleset"}, {"ip", "-4", "rule"}, {"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"ip", "addr", "show", "dev", "lo"},
	} {
		if ns != "" {
			argv = append([]string{"nsenter", "--net=" + nsPath(ns)}, argv...)
		}
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", argv, out)
		fmt.Fprintf(&sb, "== %s\n%s", strings.Join(argv, " "), noise.ReplaceAllString(string(out), ""))
	}
	return sb.String()
}

// natRules is iptables-nft-save -t nat of a namespace, without counters.
func natRules(t *testing.T, ns string) string {
	t.Helper()
	return noise.ReplaceAllString(run(t, "nsenter", "--net="+nsPath(ns), "iptables-nft-save", "-t", "nat"), "")
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}
