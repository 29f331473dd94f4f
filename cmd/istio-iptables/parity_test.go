package main

// Command-line tests of the options of issue 8: the switches, the DNS
// servers read from resolv.conf, and the validation's place in a run.
// The real validation (sockets) runs in the e2e tests, inside a test
// namespace.

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunSwitches: the switches work bare, with a value, and from their
// variable; a bare switch does not swallow the next argument.
func TestRunSwitches(t *testing.T) {
	base := []string{"-n", "--ipv6=false", "-i", "*", "-b", "*"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want bool
	}{
		{"bare", nil, []string{"--drop-invalid"}, true},
		{"bare, then a flag", nil, []string{"--drop-invalid", "-p", "15001"}, true},
		{"=true", nil, []string{"--drop-invalid=true"}, true},
		{"=false", nil, []string{"--drop-invalid=false"}, false},
		{"=0 wins over the variable", map[string]string{"DROP_INVALID": "true"}, []string{"--drop-invalid=0"}, false},
		{"variable", map[string]string{"DROP_INVALID": "TRUE"}, nil, true},
		{"off by default", nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.env, append(append([]string{}, base...), tc.args...)...)
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Equal(t, tc.want, strings.Contains(r.stdout, "-j ISTIO_DROP"), r.stdout)
		})
	}
	r := runCLI(t, nil, append(base, "--drop-invalid", "maybe")...)
	assert.Equal(t, exitUsage, r.code, "a bare switch leaves the next word a positional argument")
	assert.Contains(t, r.stderr, `unexpected argument "maybe"`)
}

// TestRunDNSServersFromResolvConf: without --dns-servers, --redirect-dns
// reads the servers of resolv.conf (and says so); a given list, capture-all
// or no --redirect-dns reads nothing.
func TestRunDNSServersFromResolvConf(t *testing.T) {
	base := []string{"-n", "--ipv6=false", "-i", "*"}
	r := runCLI(t, nil, append(base, "--redirect-dns")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stderr, `msg="DNS servers from resolv.conf" path=/etc/resolv.conf`)
	for _, args := range [][]string{
		{"--redirect-dns", "--dns-servers", "10.96.0.10"},
		{"--redirect-dns", "--dns-servers", ""},
		{"--redirect-dns", "--capture-all-dns"},
		{"--redirect-dns=false"},
		{},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, nil, append(base, args...)...)
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.NotContains(t, r.stderr, "path=/etc/resolv.conf", "read resolv.conf")
		})
	}
	r = runCLI(t, map[string]string{"DNS_SERVERS": "10.96.0.10"}, append(base, "--redirect-dns")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.NotContains(t, r.stderr, "path=/etc/resolv.conf")
	assert.Contains(t, r.stdout, "-d 10.96.0.10/32 -j REDIRECT --to-ports 15053")

	r = runCLI(t, nil, append(base, "--redirect-dns", "--dns-servers", "")...)
	assert.Contains(t, r.stderr, "DNS capture is off: --redirect-dns is set, but --capture-all-dns is false and --dns-servers is empty")
	assert.NotContains(t, r.stdout, "ISTIO_OUTPUT_DNS")
}

// TestRunValidationPlace: --run-validation with --netns is refused (it
// probes its own namespace as its own UID); with --cleanup-only it is
// ignored with a warning; the dry run only describes it.
func TestRunValidationPlace(t *testing.T) {
	r := runCLI(t, nil, "-n", "--run-validation", "--netns", "/proc/self/ns/net")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "--run-validation probes the namespace it runs in")
	assert.Empty(t, r.stdout)

	r = runCLI(t, map[string]string{"RUN_VALIDATION": "true"}, "-n", "--cleanup-only", "--netns", "/proc/self/ns/net")
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stderr, "--run-validation is ignored with --cleanup-only")

	r = runCLI(t, nil, "-n", "--ipv6=false", "-i", "*", "-b", "80", "-p", "16001", "--run-validation")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	assert.Equal(t, "# validation: listen on ports 16001 of lo, connect as this process to 127.0.0.6 port 15002, "+
		"pass when a listener gets it with original port 15002, within 5s", lines[len(lines)-1])
	assert.Contains(t, r.stdout, "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001")

	r = runCLI(t, nil, "-n", "--ipv6=false", "--skip-rule-apply")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "# skip-rule-apply: no rule is written\n", r.stdout)
	assert.Contains(t, r.stderr, "--skip-rule-apply without --run-validation: nothing to do")
}

// TestHelpNamesExit126: the help lists the validation's exit code.
func TestHelpNamesExit126(t *testing.T) {
	r := runCLI(t, nil, "--help")
	require.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "126 the validation failed")
	_, err := os.Stat("/proc/self/ns/net")
	require.NoError(t, err)
}
