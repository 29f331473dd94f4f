package e2e

// --run-validation, the way Istio's istio-validation container runs it:
// the binary itself, inside the pod's namespace (no --netns), as UID 1337
// with no capabilities at all (bounding set included), with
// --skip-rule-apply after the rules were written by a root run with --netns
// (as a CNI plugin would). The namespace holds nothing but lo: the probe
// listens on the capture ports itself, so no proxy may run.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runToolIn runs istio-iptables inside the named namespace with
// privileges p, without --netns, and returns its exit code and output.
func runToolIn(t *testing.T, nsName, lockFile string, p privileges, args ...string) (int, string) {
	t.Helper()
	cmd := podCmd(nsName, lockFile, p, append([]string{toolBin}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	require.NoError(t, err, "%s", out.String())
	return 0, out.String()
}

// probeTimeout bounds each probe. A probe that must fail retries until it
// runs out; 1s was too short on a loaded machine (load 11 on 2 cores: the
// first connect was cut short and reported as a timeout, not refused).
const probeTimeout = "3s"

// Who runs the probe: Istio's istio-validation container (UID 1337, no
// capabilities), others with no capabilities either, and root as
// istio-init runs.
var (
	probeAsGID = privileges{name: "gid1337", uid: 1000, gid: 1337}
	probeAsApp = privileges{name: "app", uid: 1000, gid: 1000}
)

// TestValidation: the probe passes as the proxy with the rules (REDIRECT
// and TPROXY, both families), and fails with exit 126 and a message saying
// what is missing without them, as another UID, and as root. The probe
// run gets the capture flags of the run that wrote the rules, as Istio's
// istio-validation container gets istio-init's.
func TestValidation(t *testing.T) {
	requireRoot(t)
	probe := func(capture []string, more ...string) []string {
		args := append(append([]string{}, capture...), "--skip-rule-apply", "--run-validation", "--probe-timeout", probeTimeout, "--ipv6=true")
		return append(args, more...)
	}
	for _, tc := range []struct {
		name    string
		rules   []string // written first by root with --netns; nil: none
		as      privileges
		args    []string
		code    int
		message []string
	}{
		{name: "no rules, as the proxy", as: validationContainer, args: probe(redirect), code: 126,
			message: []string{"validation failed (ipv4)", "probe to 127.0.0.6:15002: connection refused", "missing: the nat rules", `process="uid 1337 gid 1337"`}},
		{name: "REDIRECT rules, as the proxy", rules: redirect, as: validationContainer, args: probe(redirect), code: 0,
			message: []string{"listen on ports 15001,15006 of lo", "127.0.0.6 and [::6] port 15002", "validation passed"}},
		{name: "TPROXY rules, as the proxy", rules: tproxy, as: validationContainer, args: probe(tproxy), code: 0,
			message: []string{"validation passed"}},
		{name: "classic istio-init rules, as the proxy", rules: classic, as: validationContainer, args: probe(classic), code: 0,
			message: []string{"listen on ports 15001 of lo", "validation passed"}},
		// The proxy's GID alone is not enough: with one UID, its lo rule
		// (-o lo -m owner ! --uid-owner 1337 -j RETURN) returns everything
		// else first (see Known limitations, unreachable rules).
		{name: "rules, as the proxy's GID alone", rules: redirect, as: probeAsGID, args: probe(redirect), code: 126,
			message: []string{"connection refused", `process="uid 1000 gid 1337"`}},
		{name: "rules, as the app", rules: redirect, as: probeAsApp, args: probe(redirect), code: 126,
			message: []string{"connection refused", `process="uid 1000 gid 1000"`, `proxy="-u 1337 -g 1337`}},
		{name: "rules, as root", rules: redirect, as: initContainer, args: probe(redirect), code: 126,
			message: []string{"connection refused", `process="uid 0 gid 0"`}},
		{name: "another probe port", rules: redirect, as: validationContainer, code: 0,
			args:    probe(redirect, "--iptables-probe-port", "16002"),
			message: []string{"port 16002", "validation passed"}},
		{name: "IPv6 rules missing", rules: append(append([]string{}, redirect...), "--ipv6=false"), as: validationContainer, args: probe(redirect), code: 126,
			message: []string{"validation failed (ipv6)", "::6/128 on lo"}},
		{name: "rules of another inbound port", rules: append(append([]string{}, redirect...), "-z", "15106"), as: validationContainer, args: probe(redirect), code: 126,
			message: []string{"connection refused"}},
		// One run that writes the rules and validates them: as root, it
		// writes them and then finds that root is not the proxy.
		{name: "apply and validate in one run, as root", as: initContainer, code: 126,
			args:    append(append([]string{}, redirect...), "--run-validation", "--probe-timeout", probeTimeout, "--ipv6=true"),
			message: []string{"written", "validation failed", `process="uid 0 gid 0"`}}, // "rules written", or "written" (native)
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := make([]byte, 4)
			_, err := rand.Read(id)
			require.NoError(t, err)
			name := "ii-e2e-" + hex.EncodeToString(id) + "-vld"
			addNetns(t, name)
			lock := newLockFile(t)
			if tc.rules != nil {
				// --ipv6=true first, so that a case's own --ipv6 wins.
				// Written as a CNI plugin would: root, with --netns.
				cmd := exec.Command(toolBin, append([]string{"--netns", "/var/run/netns/" + name, "--ipv6=true"}, tc.rules...)...)
				cmd.Env = toolEnv(lock)
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "%s", out)
			}
			code, out := runToolIn(t, name, lock, tc.as, tc.args...)
			assert.Equal(t, tc.code, code, "%s", out)
			for _, m := range tc.message {
				assert.Contains(t, out, m)
			}
		})
	}
}
