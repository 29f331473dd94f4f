package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// install programs the pod namespace exactly as a CNI plugin would: the
// istio-iptables binary with --netns, the given flags, and a private xtables
// lock. It fails t when the binary does.
func install(t *testing.T, b *bed, args ...string) {
	t.Helper()
	argv := append([]string{"--netns", b.podPath()}, args...)
	cmd := exec.Command(toolBin, argv...)
	// A clean environment: a stray ENVOY_PORT or ISTIO_* variable in the
	// caller's would change the flags under test.
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin",
		"XTABLES_LOCKFILE=" + b.lockFile,
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "istio-iptables %s\n%s", quote(argv), out)
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
