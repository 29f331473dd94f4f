package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOneLine(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", `-u: unknown name "istio-proxy"`, `-u: unknown name "istio-proxy"`},
		{"newline", "a\nb", `a\nb`},
		{"carriage return", "a\rb", `a\rb`},
		{"escape", "a\x1b[2Jb", `a\x1b[2Jb`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"invalid UTF-8", "a\xffb", `a\xffb`},
		{"UTF-8 kept", "é = ok", "é = ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, oneLine(tc.in))
		})
	}
}

// forged is a whole fake log record; a value carrying it after a newline
// would, printed raw, add a record of its own.
const forged = "time=2000-01-01T00:00:00Z level=ERROR msg=forged"

// TestLogValuesQuoted: a newline or an "=" in a value taken from a flag, a
// variable or a path never starts a line of stderr. Every line is a whole
// slog record or a whole usage message.
func TestLogValuesQuoted(t *testing.T) {
	// A namespace path with a newline in its name, which is a real
	// namespace (a symlink to our own), so the run goes on and logs it.
	dir := t.TempDir()
	link := filepath.Join(dir, "ns\n"+forged+" x=")
	require.NoError(t, os.Symlink("/proc/self/ns/net", link))
	_, err := os.Stat("/proc/self/ns/net")
	require.NoError(t, err)

	base := []string{"-n", "--ipv6=false", "-i", "*"}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		want     string // how the value shows, escaped
	}{
		{"--netns path, logged", nil, append(base, "--netns", link), exitOK, `\n` + forged},
		{"--netns path, refused", nil, append(base, "--netns", dir+"/none\n"+forged), exitUsage, `\n` + forged},
		{"-u name", nil, append(base, "-u", "proxy\n"+forged), exitUsage, `\n` + forged},
		{"-g name", nil, append(base, "-g", "proxy\n"+forged), exitUsage, `\n` + forged},
		{"-b value", nil, append(base, "-b", "80\n"+forged), exitUsage, `\n` + forged},
		{"ENVOY_USER with --netns", map[string]string{"ENVOY_USER": "proxy\n" + forged}, append(base, "--netns", link), exitUsage, `\n` + forged},
		{"a variable", map[string]string{"ENVOY_PORT": "15001\n" + forged}, base, exitUsage, `\n` + forged},
		{"an unknown flag", nil, append(base, "--x\n"+forged), exitUsage, `--x\ntime`},
		{"a positional argument", nil, append(base, "clean\n"+forged), exitUsage, `\n` + forged},
		{"--iptables-mode", nil, append(base, "--iptables-mode", "nft\n"+forged), exitUsage, `\n` + forged},
		{"--probe-timeout", nil, append(base, "--probe-timeout", "5s\n"+forged), exitUsage, `\n` + forged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.env, tc.args...)
			require.Equal(t, tc.wantCode, r.code, r.stderr)
			assert.Contains(t, r.stderr, tc.want, "the value reaches stderr, escaped")
			assertLogLinesSafe(t, r.stderr)
		})
	}
}

// assertLogLinesSafe: every line of stderr is a slog record or a usage
// message, and none is the forged record.
func assertLogLinesSafe(t *testing.T, stderr string) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		ok := strings.HasPrefix(l, "time=") && !strings.HasPrefix(l, "time=2000-01-01") ||
			strings.HasPrefix(l, "istio-iptables: ") || strings.HasPrefix(l, "Run 'istio-iptables --help'")
		assert.True(t, ok, "a line of stderr is a forged record or no record: %q", l)
	}
}
