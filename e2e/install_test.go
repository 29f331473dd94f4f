package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// install programs the pod namespace exactly as a CNI plugin would: the
// istio-iptables binary with --netns, the given flags, and a private xtables
// lock. It fails t when the binary does.
func install(t *testing.T, b *bed, args ...string) {
	t.Helper()
	cmd := toolCmd(b, args...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", quote(cmd.Args), out)
}

// toolCmd prepares istio-iptables --netns <pod> args.
func toolCmd(b *bed, args ...string) *exec.Cmd {
	cmd := exec.Command(toolBin, append([]string{"--netns", b.podPath()}, args...)...)
	// A clean environment: a stray ENVOY_PORT or ISTIO_* variable in the
	// caller's would change the flags under test.
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin",
		"XTABLES_LOCKFILE=" + b.lockFile,
	}
	if nativeNft() {
		cmd.Env = append(cmd.Env, "NATIVE_NFTABLES=true")
	}
	return cmd
}

// quote renders argv as a shell would need it, for messages.
func quote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " *'\"") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// newLockFile returns a private XTABLES_LOCKFILE path for one test.
func newLockFile(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "xtables.lock")
}

// kernelState is what --cleanup-only must restore in the pod namespace
// (SPEC §4.4): both families' tables on both backends, policy routing, every
// route table, and lo's addresses (for ::6). Link-local routes are left out:
// the kernel adds them whenever the veths' fe80:: addresses finish DAD.
func kernelState(t *testing.T, b *bed) string {
	t.Helper()
	var sb strings.Builder
	for _, save := range []string{"iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		out, err := exec.Command("ip", "netns", "exec", b.pod, save).CombinedOutput()
		require.NoError(t, err, "%s: %s", save, out)
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "#") { // timestamps
				sb.WriteString(counters.ReplaceAllString(line, "") + "\n")
			}
		}
	}
	if nativeNft() {
		out, err := exec.Command("ip", "netns", "exec", b.pod, "nft", "list", "ruleset").CombinedOutput()
		require.NoError(t, err, "nft list ruleset: %s", out)
		sb.Write(out)
	}
	for _, args := range [][]string{
		{"-4", "rule"}, {"-6", "rule"},
		{"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
		{"addr", "show", "dev", "lo"},
	} {
		out, err := exec.Command("ip", append([]string{"-n", b.pod}, args...)...).CombinedOutput()
		require.NoError(t, err, "ip %v: %s", args, out)
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.Contains(line, "fe80:") {
				sb.WriteString(line + "\n")
			}
		}
	}
	return sb.String()
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)
