package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// specFlags is the docs/contract.md §3.2 call.
var specFlags = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"}

func explainArgs(more ...string) []string {
	return append(append([]string{"explain"}, specFlags...), more...)
}

// TestExplainIssueExample runs the example of the issue and checks the
// output line by line.
func TestExplainIssueExample(t *testing.T) {
	r := runCLI(t, nil, explainArgs("--direction", "outbound", "--dst", "10.0.0.5:8080", "--uid", "1000")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "outbound tcp 10.0.0.5:8080 uid=1000: captured, REDIRECT to 15001 (original destination kept)\n"+
		"  nat OUTPUT         1  -j ISTIO_OUTPUT\n"+
		"  nat ISTIO_OUTPUT   9  -j ISTIO_REDIRECT\n"+
		"  nat ISTIO_REDIRECT 1  -p tcp -j REDIRECT --to-ports 15001\n", r.stdout)
	assert.Empty(t, r.stderr)
}

// TestExplainCommand covers the flags, the environment, the JSON output
// and the exit codes: 0 whatever the verdict, 1 unreadable input, 2 bad usage.
func TestExplainCommand(t *testing.T) {
	dir := t.TempDir()
	save := filepath.Join(dir, "rules.save")
	require.NoError(t, os.WriteFile(save, []byte("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp --dport 25 -j DROP\nCOMMIT\n"), 0o644))
	garbage := filepath.Join(dir, "garbage.save")
	require.NoError(t, os.WriteFile(garbage, []byte("not a save file\n"), 0o644))
	cases := []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		verdict  string
		port     int
		contains string // in stdout (exit 0) or stderr
	}{
		{name: "outbound captured", args: explainArgs("--direction", "outbound", "--dst", "10.0.0.5:8080", "--uid", "1000"), verdict: "redirect", port: 15001},
		{name: "proxy not captured", args: explainArgs("--direction", "outbound", "--dst", "10.0.0.5:8080", "--uid", "1337"), verdict: "direct"},
		{name: "gid defaults to uid, another gid exempts", args: explainArgs("--direction", "outbound", "--dst", "10.0.0.5:8080", "--uid", "1000", "--gid", "1337"), verdict: "direct"},
		{name: "inbound captured", args: explainArgs("--direction", "inbound", "--dst", "10.1.1.5:80"), verdict: "redirect", port: 15006},
		{name: "inbound ipv6 with --ipv6=auto", args: explainArgs("--direction", "inbound", "--dst", "[fd00::5]:80"), verdict: "redirect", port: 15006},
		{name: "ipv6 off", args: explainArgs("--ipv6=false", "--direction", "inbound", "--dst", "[fd00::5]:80"), verdict: "direct"},
		{name: "excluded port", args: explainArgs("--direction", "inbound", "--dst", "10.1.1.5:15090"), verdict: "direct"},
		{name: "pod IP via --local", args: explainArgs("--direction", "outbound", "--dst", "10.1.1.5:80", "--uid", "1337", "--local", "10.1.1.5"), verdict: "redirect", port: 15006},
		{name: "tproxy from env", env: map[string]string{"ISTIO_INBOUND_INTERCEPTION_MODE": "TPROXY", "ISTIO_INBOUND_PORTS": "*"}, verdict: "tproxy", port: 15006},
		{name: "tproxy flag", args: append(explainArgs("--direction", "inbound", "--dst", "10.1.1.5:80"), "-m", "TPROXY"), verdict: "tproxy", port: 15006},
		{name: "owner unknown is not a guess", args: explainArgs("--direction", "outbound", "--dst", "10.0.0.5:8080"), verdict: "unknown", contains: "pass --uid"},
		{name: "udp", args: explainArgs("--direction", "outbound", "--dst", "10.0.0.5:53", "--proto", "udp", "--uid", "1000"), verdict: "direct"},
		{name: "from save: drop", args: []string{"explain", "--from-save", save, "--direction", "outbound", "--dst", "10.0.0.5:25"}, verdict: "drop"},
		{name: "from save: other port", args: []string{"explain", "--from-save", save, "--direction", "outbound", "--dst", "10.0.0.5:26"}, verdict: "direct"},
		{name: "from a kernel's save: tproxy", args: []string{"explain", "--from-save", "../../explain/testdata/tproxy_ipv4.save", "--direction", "inbound", "--dst", "10.1.1.5:80"}, verdict: "tproxy", port: 15006},
		{name: "from a kernel's save: proxy to its pod IP", args: []string{"explain", "--from-save", "../../explain/testdata/tproxy_ipv6.save", "--direction", "outbound", "--dst", "[fd00::5]:15008", "--uid", "1337", "--local", "fd00::5"}, verdict: "tproxy", port: 15006},
		{name: "missing direction and dst", args: []string{"explain"}, code: exitUsage, contains: "--direction is required"},
		{name: "bad dst", args: explainArgs("--direction", "inbound", "--dst", "10.0.0.5"), code: exitUsage, contains: `--dst: "10.0.0.5" is not IP:PORT`},
		{name: "bad direction", args: explainArgs("--direction", "up", "--dst", "10.0.0.5:80"), code: exitUsage, contains: `--direction: "up"`},
		{name: "bad proto", args: explainArgs("--direction", "inbound", "--dst", "10.0.0.5:80", "--proto", "sctp"), code: exitUsage, contains: "--proto"},
		{name: "uid on inbound", args: explainArgs("--direction", "inbound", "--dst", "10.0.0.5:80", "--uid", "1"), code: exitUsage, contains: "inbound packets have no owner"},
		{name: "bad output", args: explainArgs("--direction", "inbound", "--dst", "10.0.0.5:80", "--output", "yaml"), code: exitUsage, contains: "--output"},
		{name: "mixed families", args: explainArgs("--direction", "inbound", "--dst", "10.0.0.5:80", "--src", "fd00::1"), code: exitUsage, contains: "not of one family"},
		{name: "bad capture flag", args: explainArgs("--direction", "inbound", "--dst", "10.0.0.5:80", "-b", "70000"), code: exitUsage, contains: `-b: port "70000" out of range`},
		{name: "bad capture env", env: map[string]string{"ENVOY_PORT": "x"}, code: exitUsage, contains: "ENVOY_PORT"},
		{name: "both sources", args: []string{"explain", "--from-save", save, "--from-netns", "/proc/self/ns/net", "--direction", "inbound", "--dst", "10.0.0.5:80"}, code: exitUsage, contains: "exclude each other"},
		{name: "unreadable save", args: []string{"explain", "--from-save", filepath.Join(dir, "none"), "--direction", "inbound", "--dst", "10.0.0.5:80"}, code: exitFailed, contains: "read --from-save"},
		{name: "garbage save", args: []string{"explain", "--from-save", garbage, "--direction", "inbound", "--dst", "10.0.0.5:80"}, code: exitFailed, contains: "unexpected line"},
		{name: "not a namespace", args: []string{"explain", "--from-netns", save, "--direction", "inbound", "--dst", "10.0.0.5:80"}, code: exitFailed, contains: "not a namespace file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if len(args) == 0 {
				// The capture flags come from the environment only.
				args = []string{"explain", "--direction", "inbound", "--dst", "10.1.1.5:80"}
			}
			if tc.code == exitOK {
				args = append(args, "--output", "json")
			}
			r := runCLI(t, tc.env, args...)
			require.Equal(t, tc.code, r.code, "stdout %s\nstderr %s", r.stdout, r.stderr)
			if tc.code != exitOK {
				assert.Contains(t, r.stderr, tc.contains)
				assert.Empty(t, r.stdout)
				return
			}
			var got struct {
				Verdict string `json:"verdict"`
				Port    int    `json:"port"`
				Trace   []struct {
					Table, Chain, Text string
					Rule               int
				} `json:"trace"`
				Reason string `json:"reason"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &got), r.stdout)
			assert.Equal(t, tc.verdict, got.Verdict, "%s", r.stdout)
			assert.Equal(t, tc.port, got.Port)
			assert.Contains(t, got.Reason, tc.contains)
			assert.True(t, strings.HasPrefix(r.stdout, "{"), "JSON only on stdout")
		})
	}
}

// TestExplainHelp lists explain's own flags.
func TestExplainHelp(t *testing.T) {
	r := runCLI(t, nil, "explain", "--help")
	require.Equal(t, exitOK, r.code)
	for _, f := range []string{"--direction", "--dst", "--src", "--proto", "--uid", "--gid", "--iface", "--local", "--output", "--from-netns", "--from-save"} {
		assert.Contains(t, r.stdout, f)
	}
}
