package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// install programs the pod namespace exactly as the istio-init container
// does (toolCmd): the istio-iptables binary inside the pod's namespace, as
// UID 0 with CAP_NET_ADMIN and CAP_NET_RAW only, without --netns. It fails t
// when the binary does.
func install(t *testing.T, b *bed, args ...string) {
	t.Helper()
	runInstall(t, toolCmd(b, args...))
}

// installCNI programs the pod namespace as a CNI plugin or node agent does
// (cniCmd): full root in the test's own namespace, with --netns.
func installCNI(t *testing.T, b *bed, args ...string) {
	t.Helper()
	runInstall(t, cniCmd(b, args...))
}

func runInstall(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", quote(cmd.Args), out)
}

// privileges are the credentials and capabilities a container process runs
// with. caps are setpriv(1) names; they are the bounding, inheritable,
// permitted, effective and ambient sets alike, as a container runtime sets
// them for `capabilities: {drop: [ALL], add: [...]}`.
type privileges struct {
	name     string
	uid, gid int
	caps     []string
}

var (
	// initContainer is istio-init as Istio's injector and our examples run
	// it: UID 0, NET_ADMIN and NET_RAW, nothing else.
	initContainer = privileges{name: "istio-init", caps: []string{"net_admin", "net_raw"}}
	// netRawOnly lacks NET_ADMIN, the capability every write needs.
	netRawOnly = privileges{name: "NET_RAW only", caps: []string{"net_raw"}}
	// netAdminOnly lacks NET_RAW, which legacy iptables needs.
	netAdminOnly = privileges{name: "NET_ADMIN only", caps: []string{"net_admin"}}
	// validationContainer is Istio's istio-validation: UID 1337, no
	// capabilities at all.
	validationContainer = privileges{name: "istio-validation", uid: 1337, gid: 1337}
)

// wrap returns argv run through setpriv with exactly p. Without setpriv, a
// process started by root would keep (or, exec'ing as UID 0, regain) every
// capability: the bounding set is what stops that.
func (p privileges) wrap(argv ...string) []string {
	set := "-all"
	for _, c := range p.caps {
		set += ",+" + c
	}
	return append([]string{"setpriv",
		"--reuid", strconv.Itoa(p.uid), "--regid", strconv.Itoa(p.gid), "--clear-groups",
		"--bounding-set", set, "--inh-caps", set, "--ambient-caps", set, "--"}, argv...)
}

// podCmd prepares argv to run as a container of the pod does: born inside
// the named namespace (nsenter --net, so nothing in the binary switches
// namespaces) with privileges p, and a clean environment holding the
// PATH and lockFile as XTABLES_LOCKFILE.
func podCmd(nsName, lockFile string, p privileges, argv ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + nsName}, p.wrap(argv...)...)...)
	cmd.Dir = "/"
	cmd.Env = toolEnv(lockFile)
	return cmd
}

// toolCmd prepares istio-iptables args as the istio-init container runs it
// (initContainer privileges, inside the pod's namespace, no --netns).
func toolCmd(b *bed, args ...string) *exec.Cmd {
	return podCmd(b.pod, b.lockFile, initContainer, append([]string{toolBin}, args...)...)
}

// cniCmd prepares istio-iptables --netns <pod> args as a CNI plugin or a
// node agent runs it: full root, from the test's own namespace.
func cniCmd(b *bed, args ...string) *exec.Cmd {
	cmd := exec.Command(toolBin, append([]string{"--netns", b.podPath()}, args...)...)
	cmd.Env = toolEnv(b.lockFile)
	return cmd
}

// toolEnv is a clean environment: a stray ENVOY_PORT or ISTIO_* variable in
// the caller's would change the flags under test.
func toolEnv(lockFile string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin",
		"XTABLES_LOCKFILE=" + lockFile,
	}
	if nativeNft() {
		env = append(env, "NATIVE_NFTABLES=true")
	}
	return env
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
// (docs/contract.md §4.4): both families' tables on both backends, policy routing, every
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
