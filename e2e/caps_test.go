package e2e

// The capabilities istio-iptables needs, measured: every other test of this
// package runs the binary as the istio-init container does (install,
// toolCmd: UID 0 with CAP_NET_ADMIN and CAP_NET_RAW only, inside the pod's
// namespace) or as istio-validation (UID 1337, no capabilities). These
// tests cover the other callers: a process without NET_ADMIN, which must
// fail cleanly, one without NET_RAW (which only legacy iptables needs), and
// a CNI plugin or node agent, full root with --netns.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os/exec"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// netAdminHint is what the tool says when it lacks CAP_NET_ADMIN
// (cmd/istio-iptables/privilege.go).
const netAdminHint = "istio-iptables needs CAP_NET_ADMIN in the pod's network namespace (securityContext.capabilities.add: [NET_ADMIN, NET_RAW])"

// lonePod is a pod namespace with lo only, for tests that make no
// connection.
func lonePod(t *testing.T, suffix string) *bed {
	t.Helper()
	id := make([]byte, 4)
	_, err := rand.Read(id)
	require.NoError(t, err)
	b := &bed{pod: "ii-e2e-" + hex.EncodeToString(id) + "-" + suffix, lockFile: newLockFile(t)}
	addNetns(t, b.pod)
	return b
}

// runAs runs istio-iptables args in b's pod with privileges p and returns
// the exit code and output.
func runAs(t *testing.T, b *bed, p privileges, args ...string) (int, string) {
	t.Helper()
	cmd := podCmd(b.pod, b.lockFile, p, append([]string{toolBin}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	require.NoError(t, err, "%s\n%s", quote(cmd.Args), out.String())
	return 0, out.String()
}

// captureModes are the two modes, as TestCNICaller and TestLegacyInPod run
// them, with where the matrix says their connections land.
var captureModes = []struct {
	name     string
	args     []string
	captured map[string]string
}{
	{name: "REDIRECT", args: redirect, captured: redirectCaptured},
	{name: "TPROXY", args: tproxy, captured: tproxyCaptured},
}

// assertLands makes each of cs in both families and asserts it lands
// where captured says, or directly where captured does not name it.
func assertLands(t *testing.T, b *bed, captured map[string]string, cs ...conn) {
	t.Helper()
	for _, c := range cs {
		for _, f := range families {
			want := c.direct
			if w, ok := captured[c.name()]; ok {
				want = w
			}
			assert.Equal(t, want, land(b, c, f), "%s %s", f, c.name())
		}
	}
}

// TestWithoutNetAdmin: a pod that grants NET_RAW but not NET_ADMIN gets exit
// 1 and a message naming the capability and how to grant it, on every
// backend, for an apply over nothing, an apply over earlier rules (REDIRECT
// written, TPROXY asked: policy routing and ::6 too) and a cleanup; the
// namespace is left exactly as it was.
func TestWithoutNetAdmin(t *testing.T) {
	requireRoot(t)
	for _, backend := range []struct {
		name string
		flag string
	}{
		{"nft", "--iptables-mode=nft"},
		{"legacy", "--iptables-mode=legacy"},
		{"native nftables", "--native-nftables"},
	} {
		for _, tc := range []struct {
			name    string
			earlier []string // written first with NET_ADMIN; nil: nothing
			args    []string
		}{
			{name: "apply on a fresh pod", args: tproxy},
			{name: "apply over earlier rules", earlier: redirect, args: tproxy},
			{name: "cleanup", earlier: tproxy, args: []string{"--cleanup-only"}},
		} {
			t.Run(backend.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				b := lonePod(t, "cap")
				with := func(args []string) []string {
					return append(slices.Clone(args), backend.flag, "--ipv6=true")
				}
				if tc.earlier != nil {
					install(t, b, with(tc.earlier)...)
				}
				before := kernelState(t, b)
				code, out := runAs(t, b, netRawOnly, with(tc.args)...)
				assert.Equal(t, 1, code, "%s", out)
				assert.Contains(t, out, netAdminHint)
				assert.Equal(t, before, kernelState(t, b), "the namespace changed")
			})
		}
	}
}

// TestWithoutNetRaw: NET_ADMIN alone writes everything with iptables-nft and
// the native backend, but legacy iptables also needs NET_RAW (its raw
// socket): there the run exits 1, names the capability, and changes
// nothing.
func TestWithoutNetRaw(t *testing.T) {
	requireRoot(t)
	if nativeNft() {
		t.Skip("the iptables backends' test: the native backend runs in TestWithoutNetAdmin")
	}
	for _, tc := range []struct {
		name string
		flag string
		ok   bool
	}{
		{"nft", "--iptables-mode=nft", true},
		{"native nftables", "--native-nftables", true},
		{"legacy", "--iptables-mode=legacy", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := lonePod(t, "raw")
			before := kernelState(t, b)
			args := append(slices.Clone(tproxy), tc.flag, "--ipv6=true", "--redirect-dns", "--dns-servers", addrs["remote"][ipv4])
			code, out := runAs(t, b, netAdminOnly, args...)
			if tc.ok {
				require.Zero(t, code, "%s", out)
				assert.NotEqual(t, before, kernelState(t, b), "rules written")
				code, out = runAs(t, b, netAdminOnly, args...)
				assert.Zero(t, code, "%s", out)
				assert.Contains(t, out, "already in place")
				code, out = runAs(t, b, netAdminOnly, "--cleanup-only")
				assert.Zero(t, code, "%s", out)
				assert.Equal(t, before, kernelState(t, b), "after the cleanup")
				return
			}
			assert.Equal(t, 1, code, "%s", out)
			assert.Contains(t, out, "legacy iptables needs CAP_NET_RAW as well")
			assert.Equal(t, before, kernelState(t, b), "the namespace changed")
		})
	}
}

// TestCNICaller: the --netns path, as a CNI plugin or node agent runs the
// binary (full root, from outside the pod). Rules written that way capture
// as the init container's do; a re-run by the init container finds them in
// place and writes nothing; a CNI cleanup restores the kernel state. The
// init container itself cannot use --netns (setns needs CAP_SYS_ADMIN): it
// fails with exit 1, a message naming CAP_SYS_ADMIN and no NET_ADMIN hint,
// and nothing changed.
func TestCNICaller(t *testing.T) {
	requireRoot(t)
	for _, tc := range captureModes {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			before := kernelState(t, b)
			installCNI(t, b, tc.args...)
			assertLands(t, b, tc.captured,
				conn{from: fromClient, to: "pod", port: 8080, direct: "app:8080 peer=client"},
				conn{from: fromApp, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
				conn{from: fromProxy, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
			)
			written := kernelState(t, b)

			code, out := runAs(t, b, initContainer, tc.args...)
			assert.Zero(t, code, "%s", out)
			assert.Contains(t, out, "already in place", "the init container's re-run writes nothing")
			assert.Equal(t, written, kernelState(t, b))

			code, out = runAs(t, b, initContainer, append([]string{"--netns", b.podPath()}, tc.args...)...)
			assert.Equal(t, 1, code, "%s", out)
			assert.Contains(t, out, "entering another network namespace needs CAP_SYS_ADMIN")
			assert.NotContains(t, out, netAdminHint, "the init container holds NET_ADMIN; setns wants CAP_SYS_ADMIN")
			assert.Equal(t, written, kernelState(t, b))

			installCNI(t, b, "--cleanup-only")
			assert.Equal(t, before, kernelState(t, b))
		})
	}
}

// TestPrivilegesAsDeployed checks the harness itself: what a process started
// by podCmd holds, read from /proc/self/status inside the pod's namespace.
func TestPrivilegesAsDeployed(t *testing.T) {
	requireRoot(t)
	b := lonePod(t, "prv")
	for _, tc := range []struct {
		p    privileges
		want []string
	}{
		{initContainer, []string{"Uid:\t0\t0\t0\t0", "CapInh:\t0000000000003000", "CapPrm:\t0000000000003000", "CapEff:\t0000000000003000", "CapBnd:\t0000000000003000", "CapAmb:\t0000000000003000"}},
		{netRawOnly, []string{"Uid:\t0\t0\t0\t0", "CapEff:\t0000000000002000", "CapBnd:\t0000000000002000"}},
		{validationContainer, []string{"Uid:\t1337\t1337\t1337\t1337", "Gid:\t1337\t1337\t1337\t1337", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000"}},
	} {
		t.Run(tc.p.name, func(t *testing.T) {
			out, err := podCmd(b.pod, b.lockFile, tc.p, "cat", "/proc/self/status").CombinedOutput()
			require.NoError(t, err, "%s", out)
			for _, w := range tc.want {
				assert.Contains(t, string(out), w)
			}
			ns, err := podCmd(b.pod, b.lockFile, tc.p, "readlink", "/proc/self/ns/net").CombinedOutput()
			require.NoError(t, err, "%s", ns)
			assert.Equal(t, podNetns(t, b), string(bytes.TrimSpace(ns)), "born in the pod's namespace")
		})
	}
}

// podNetns is the namespace identity (net:[inode]) of b's pod.
func podNetns(t *testing.T, b *bed) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", b.pod, "readlink", "/proc/self/ns/net").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(bytes.TrimSpace(out))
}

// TestLegacyInPod: the legacy backend as the init container runs it (the
// matrix uses the default, iptables-nft): REDIRECT and TPROXY with DNS
// capture land the connections as the nft rules do, a re-run takes the
// no-op shortcut, and a cleanup restores the kernel state.
func TestLegacyInPod(t *testing.T) {
	requireRoot(t)
	if nativeNft() {
		t.Skip("the legacy backend's test: every install here is native")
	}
	for _, tc := range captureModes {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			before := kernelState(t, b)
			args := append(slices.Clone(tc.args), "--iptables-mode=legacy", "--redirect-dns", "--dns-servers", addrs["remote"][ipv4]+","+addrs["remote"][ipv6])
			install(t, b, args...)
			written := kernelState(t, b)
			assert.Contains(t, written, "-A ISTIO_OUTPUT_DNS", "the legacy tables hold the DNS rules")
			assertLands(t, b, tc.captured,
				conn{from: fromClient, to: "pod", port: 8080, direct: "app:8080 peer=client"},
				conn{from: fromClient, to: "pod", port: 80, fwd: true, direct: "app:80 peer=client"},
				conn{from: fromApp, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
				conn{from: fromProxy, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
				conn{from: fromProxy, to: "pod", port: 80, direct: "app:80 peer=pod"},
			)
			code, out := runAs(t, b, initContainer, args...)
			assert.Zero(t, code, "%s", out)
			assert.Contains(t, out, "already in place")
			assert.Equal(t, written, kernelState(t, b))
			install(t, b, "--cleanup-only")
			after := kernelState(t, b)
			assert.NotContains(t, after, "ISTIO")
			// A legacy table, once loaded in a namespace, stays: the kernel
			// cannot unregister it. Empty and with ACCEPT policies, it is
			// what an unloaded one does.
			assert.Equal(t, before, emptyTables.ReplaceAllString(after, ""))
		})
	}
}

// emptyTables matches a saved table with built-in chains only, ACCEPT
// policies and no rule.
var emptyTables = regexp.MustCompile(`(?m)^\*[a-z]+\n(?::[A-Z]+ ACCEPT \n)+COMMIT\n`)
