package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cliResult is what one call of run produced.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command with args and exactly the variables in env (the
// test process's own environment never leaks in). PATH is emptied first: a
// run that should have been a dry run or refused but went on to apply
// finds no iptables binary and cannot touch the test machine.
func runCLI(t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	if !strings.HasPrefix(os.Getenv("PATH"), os.TempDir()) {
		t.Setenv("PATH", t.TempDir())
	}
	var stdout, stderr bytes.Buffer
	getenv := func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
	code := run(args, getenv, &stdout, &stderr)
	return cliResult{code, stdout.String(), stderr.String()}
}

// allFlagDefs returns the flag table of the command.
func allFlagDefs() []flagDef {
	var o options
	_, all := newFlags(&o)
	var defs []flagDef
	for _, d := range all {
		if !d.istio { // Istio's own flags: istio_test.go
			defs = append(defs, d)
		}
	}
	return defs
}

// badInputBugs are the bad inputs still accepted, by case name.
var badInputBugs = map[string]string{}

// TestRunBadInput: every bad value exits 2, names the flag and the value
// on stderr, and prints nothing on stdout. Each runs with --dry-run, so a
// value let through prints a plan and exits 0 instead of touching the
// machine.
func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular-file")
	require.NoError(t, os.WriteFile(regular, nil, 0o644))

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string // substrings of stderr: the flag, the value
	}{
		{"port 0", nil, []string{"-p", "0"}, []string{"-p:", `"0"`}},
		{"port 65536", nil, []string{"-p", "65536"}, []string{"-p:", `"65536"`}},
		{"port not a number", nil, []string{"-z", "abc"}, []string{"-z:", `"abc"`}},
		{"huge port", nil, []string{"-e", "99999999999999999999999"}, []string{"-e:", `"99999999999999999999999"`}},
		{"two ports for -p", nil, []string{"-p", "1,2"}, []string{"-p:", `"1,2"`}},
		{"-b list with *", nil, []string{"-b", "80,*"}, []string{"-b:", `"80,*"`}},
		{"-b port 0 in a list", nil, []string{"-b", "80,0"}, []string{"-b:", `"0"`}},
		{"-x *", nil, []string{"-x", "*"}, []string{"-x:", `"*"`}},
		{"-d *", nil, []string{"-d", "*"}, []string{"-d:", `"*"`}},
		{"-q *", nil, []string{"-q", "*"}, []string{"-q:", `"*"`}},
		{"-o not a port", nil, []string{"-o", "smtp"}, []string{"-o:", `"smtp"`}},
		{"-i with * and a CIDR", nil, []string{"-i", "*,10.0.0.0/8"}, []string{"-i:", `"*,10.0.0.0/8"`}},
		{"CIDR with a bad mask", nil, []string{"-i", "10.0.0.0/33"}, []string{"-i:", `"10.0.0.0/33"`}},
		{"rule text in -x", nil, []string{"-x", "1.1.1.1/32 -j ACCEPT"}, []string{"-x:", `"1.1.1.1/32 -j ACCEPT"`}},
		{"IPv4-mapped IPv6", nil, []string{"-x", "::ffff:10.0.0.1"}, []string{"-x:", `"::ffff:10.0.0.1"`}},
		{"IPv6 zone", nil, []string{"-i", "fe80::1%eth0"}, []string{"-i:", `"fe80::1%eth0"`}},
		{"newline inside -b", nil, []string{"-b", "80\n-A OUTPUT -j ACCEPT"}, []string{"-b:", strconv.Quote("80\n-A OUTPUT -j ACCEPT")}},
		{"newline inside -i", nil, []string{"-i", "10.0.0.0/8\nCOMMIT"}, []string{"-i:", strconv.Quote("10.0.0.0/8\nCOMMIT")}},
		{"COMMIT as a port", nil, []string{"-p", "COMMIT"}, []string{"-p:", `"COMMIT"`}},
		{"COMMIT as a CIDR", nil, []string{"-x", "COMMIT"}, []string{"-x:", `"COMMIT"`}},
		{"unknown mode", nil, []string{"-m", "NAT"}, []string{"-m:", `"NAT"`}},
		{"lowercase mode", nil, []string{"-m", "tproxy"}, []string{"-m:", `"tproxy"`}},
		{"unknown user", nil, []string{"-u", "no-such-user-xyz"}, []string{"-u:", `"no-such-user-xyz"`}},
		{"unknown group", nil, []string{"-g", "no-such-group-xyz"}, []string{"-g:", `"no-such-group-xyz"`}},
		{"reserved uid", nil, []string{"-u", "4294967295"}, []string{"-u:", `"4294967295"`}},
		{"uid out of range", nil, []string{"-u", "4294967296"}, []string{"-u:", `"4294967296"`}},
		{"empty uid list", nil, []string{"-u", ","}, []string{"-u:", `","`}},
		{"unknown flag", nil, []string{"--no-such-flag"}, []string{"--no-such-flag"}},
		{"unknown short flag", nil, []string{"-y", "1"}, []string{"-y"}},
		{"flag without its value", nil, []string{"-p"}, []string{"-p"}},
		{"-k option as interface", nil, []string{"-k", "-j"}, []string{"-k:", `"-j"`}},
		{"-c rule text as interface", nil, []string{"-c", "eth0 -j ACCEPT"}, []string{"-c:", `"eth0 -j ACCEPT"`}},
		{"-c negation", nil, []string{"-c", "!eth0"}, []string{"-c:", `"!eth0"`}},
		{"-k interface of 16 chars", nil, []string{"-k", "abcdefghijklmnop"}, []string{"-k:", `"abcdefghijklmnop"`}},
		{"-c slash", nil, []string{"-c", "eth0/1"}, []string{"-c:", `"eth0/1"`}},
		{"-t 0", nil, []string{"-t", "0"}, []string{"-t:", `"0"`}},
		{"-t 4294967295", nil, []string{"-t", "4294967295"}, []string{"-t:", `"4294967295"`}},
		{"-t hex", nil, []string{"-t", "0x539"}, []string{"-t:", `"0x539"`}},
		{"-r 254", nil, []string{"-r", "254"}, []string{"-r:", `"254"`}},
		{"-r 0", nil, []string{"-r", "0"}, []string{"-r:", `"0"`}},
		{"--ipv6 maybe", nil, []string{"--ipv6", "maybe"}, []string{"--ipv6:", `"maybe"`}},
		{"--iptables-mode foo", nil, []string{"--iptables-mode", "foo"}, []string{"--iptables-mode:", `"foo"`}},
		{"--netns missing", nil, []string{"--netns", "/nonexistent/ns"}, []string{"--netns:", `"/nonexistent/ns"`}},
		{"--netns a directory", nil, []string{"--netns", dir}, []string{"--netns:", strconv.Quote(dir)}},
		{"--netns a regular file", nil, []string{"--netns", regular}, []string{"--netns:", strconv.Quote(regular)}},
		{"--netns a pid namespace", nil, []string{"--netns", "/proc/self/ns/pid"}, []string{"--netns:", `"/proc/self/ns/pid"`}},
		{"bad ENVOY_PORT", map[string]string{"ENVOY_PORT": "abc"}, nil, []string{"-p", "ENVOY_PORT", `"abc"`}},
		{"bad ISTIO_SERVICE_CIDR", map[string]string{"ISTIO_SERVICE_CIDR": "10.0.0.0/99"}, nil, []string{"-i", "ISTIO_SERVICE_CIDR", `"10.0.0.0/99"`}},
		{"bad PROXY_UID", map[string]string{"PROXY_UID": "no-such-user-xyz"}, nil, []string{"-u", "PROXY_UID", `"no-such-user-xyz"`}},
		{"bad ISTIO_IPV6", map[string]string{"ISTIO_IPV6": "perhaps"}, nil, []string{"--ipv6", "ISTIO_IPV6", `"perhaps"`}},
		{"bad NETWORK_NAMESPACE", map[string]string{"NETWORK_NAMESPACE": "/nonexistent/ns"}, nil, []string{"--netns", "/nonexistent/ns"}},
		{"unexpected positional argument", nil, []string{"-p", "15001", "apply"}, []string{`"apply"`}},
		{"clean plus another argument", nil, []string{"clean", "now"}, []string{`"clean now"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if bug, ok := badInputBugs[tc.name]; ok {
				t.Skip(bug)
			}
			r := runCLI(t, tc.env, append([]string{"-n"}, tc.args...)...)
			assert.Equal(t, exitUsage, r.code, "stderr: %s", r.stderr)
			assert.Empty(t, r.stdout)
			for _, w := range tc.want {
				assert.Contains(t, r.stderr, w)
			}
			assert.Contains(t, r.stderr, "Nothing was changed.")
		})
	}
}

// TestRunBadInputAllReported: several bad values are all reported at once,
// one line each, whether they come from flags or variables.
func TestRunBadInputAllReported(t *testing.T) {
	r := runCLI(t, map[string]string{"ISTIO_LOCAL_EXCLUDE_PORTS": "70000", "ISTIO_IPV6": "perhaps"},
		"-n", "-p", "0", "-b", "x", "-m", "FOO", "-x", "*", "-k", "-bad", "-t", "0", "-r", "255",
		"--iptables-mode", "foo", "--netns", "/nonexistent", "extra")
	assert.Equal(t, exitUsage, r.code)
	assert.Empty(t, r.stdout)
	for _, want := range []string{
		`-p: port "0" out of range 1-65535`,
		`-b: port "x" is not a number`,
		`-m: mode "FOO"`,
		`-x: "*"`,
		`-k: "-bad"`,
		`-t: "0"`,
		`-r: table "255"`,
		`--iptables-mode: "foo"`,
		`--netns: "/nonexistent"`,
		`"extra"`,
		`-d (from ISTIO_LOCAL_EXCLUDE_PORTS): port "70000" out of range 1-65535`,
		`--ipv6 (from ISTIO_IPV6): "perhaps"`,
	} {
		assert.Contains(t, r.stderr, want)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	assert.Len(t, lines, 13, "one line per problem and the hint:\n%s", r.stderr)
}

// envConfigs is one configuration given both ways: as variables, and as
// the equivalent flags.
type envConfig struct {
	name  string
	env   map[string]string
	flags []string
}

func envConfigs(t *testing.T) []envConfig {
	t.Helper()
	netns := "/proc/self/ns/net"
	require.FileExists(t, netns)
	return []envConfig{
		{
			name: "redirect, every capture variable",
			env: map[string]string{
				"ENVOY_PORT": "15101", "INBOUND_CAPTURE_PORT": "15106", "INBOUND_TUNNEL_PORT": "15108",
				"PROXY_UID": "1,2", "PROXY_GID": "3", "ISTIO_INBOUND_INTERCEPTION_MODE": "REDIRECT",
				"ISTIO_INBOUND_PORTS": "*", "ISTIO_LOCAL_EXCLUDE_PORTS": "15090,15021",
				"ISTIO_SERVICE_CIDR": "10.0.0.0/8,fd00::/8", "ISTIO_SERVICE_EXCLUDE_CIDR": "10.96.0.0/12,fd00:10::/64",
				"ISTIO_OUTBOUND_PORTS": "3306", "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE": "25",
				"KUBE_VIRT_INTERFACES": "eth1,eth2", "ISTIO_EXCLUDE_INTERFACES": "eth3",
				"DRY_RUN": "true", "NETWORK_NAMESPACE": netns, "ISTIO_IPV6": "true", "IPTABLES_MODE": "nft",
				"IPTABLES_WAIT": "5",
			},
			flags: []string{
				"-p", "15101", "-z", "15106", "-e", "15108", "-u", "1,2", "-g", "3", "-m", "REDIRECT",
				"-b", "*", "-d", "15090,15021", "-i", "10.0.0.0/8,fd00::/8", "-x", "10.96.0.0/12,fd00:10::/64",
				"-q", "3306", "-o", "25", "-k", "eth1,eth2", "-c", "eth3",
				"-n", "--netns", netns, "--ipv6", "true", "--iptables-mode", "nft", "--wait", "5",
			},
		},
		{
			name: "tproxy with marks",
			env: map[string]string{
				"ISTIO_INBOUND_INTERCEPTION_MODE": "TPROXY", "ISTIO_INBOUND_PORTS": "80,8080",
				"ISTIO_INBOUND_TPROXY_MARK": "1400", "ISTIO_INBOUND_TPROXY_ROUTE_TABLE": "140",
				"ISTIO_SERVICE_CIDR": "*", "PROXY_UID": "1337", "DRY_RUN": "1", "ISTIO_IPV6": "false",
				"IPTABLES_MODE": "legacy", "DRY_RUN_DIFF": "false", "ISTIO_IPTABLES_TIMEOUT": "20s",
			},
			flags: []string{
				"-m", "TPROXY", "-b", "80,8080", "-t", "1400", "-r", "140", "-i", "*", "-u", "1337",
				"--dry-run", "--ipv6=false", "--iptables-mode=legacy", "--diff=false", "--timeout", "20s",
			},
		},
		{
			name:  "cleanup",
			env:   map[string]string{"CLEANUP_ONLY": "true", "DRY_RUN": "true"},
			flags: []string{"--cleanup-only", "-n"},
		},
		{
			name:  "cleanup, positional",
			env:   map[string]string{"CLEANUP_ONLY": "true", "DRY_RUN": "true"},
			flags: []string{"clean", "-n"},
		},
		{
			name: "DNS servers, drop-invalid, owner groups, validation (issue 8)",
			env: map[string]string{
				"ISTIO_SERVICE_CIDR": "*", "ISTIO_INBOUND_PORTS": "*", "DRY_RUN": "true", "ISTIO_IPV6": "true",
				"REDIRECT_DNS": "true", "DNS_SERVERS": "10.96.0.10,fd00::a", "DROP_INVALID": "1",
				"ISTIO_OUTBOUND_OWNER_GROUPS": "101", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888",
				"RUN_VALIDATION": "true", "IPTABLES_PROBE_PORT": "16002", "PROBE_TIMEOUT": "2s",
			},
			flags: []string{
				"-i", "*", "-b", "*", "-n", "--ipv6=true", "--redirect-dns", "--dns-servers", "10.96.0.10,fd00::a", "--drop-invalid=1",
				"--istio-outbound-owner-groups", "101", "--istio-outbound-owner-groups-exclude", "888",
				"--run-validation", "--iptables-probe-port", "16002", "--probe-timeout", "2s",
			},
		},
		{
			name: "capture all DNS, validation only (issue 8)",
			env: map[string]string{
				"DRY_RUN": "true", "ISTIO_IPV6": "false", "REDIRECT_DNS": "true", "CAPTURE_ALL_DNS": "true",
				"SKIP_RULE_APPLY": "true", "RUN_VALIDATION": "1",
			},
			flags: []string{"-n", "--ipv6=false", "--redirect-dns", "--capture-all-dns=true", "--skip-rule-apply", "--run-validation=1"},
		},
		{
			name: "native nftables dry run (issue 9)",
			env: map[string]string{
				"NATIVE_NFTABLES": "true", "DRY_RUN": "true", "ISTIO_IPV6": "true", "ISTIO_SERVICE_CIDR": "*",
				"ISTIO_INBOUND_PORTS": "*", "ISTIO_LOCAL_EXCLUDE_PORTS": "15090,15021",
			},
			flags: []string{"--native-nftables", "-n", "--ipv6=true", "-i", "*", "-b", "*", "-d", "15090,15021"},
		},
		{
			name: "loopback range, proxy mark (issue 16)",
			env: map[string]string{
				"ISTIO_SERVICE_CIDR": "*", "ISTIO_INBOUND_PORTS": "*", "DRY_RUN": "true", "ISTIO_IPV6": "false",
				"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.0/8", "PROXY_MARK": "4242", "PROXY_UID": "1337",
			},
			flags: []string{"-i", "*", "-b", "*", "-n", "--ipv6=false", "--istio-outbound-ipv4-loopback-cidr", "127.0.0.0/8", "--proxy-mark", "4242", "-u", "1337"},
		},
	}
}

// logTime strips the slog time so two runs' logs compare.
var logTime = regexp.MustCompile(`(?m)^time=\S+ `)

// TestRunEnvEqualsFlags: a configuration given by variables prints the
// same dry run (and logs the same configuration) as given by flags, for
// every flag that has a variable.
func TestRunEnvEqualsFlags(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range envConfigs(t) {
		t.Run(tc.name, func(t *testing.T) {
			for k := range tc.env {
				covered[k] = true
			}
			byEnv := runCLI(t, tc.env)
			byFlags := runCLI(t, nil, tc.flags...)
			require.Equal(t, exitOK, byEnv.code, byEnv.stderr)
			require.Equal(t, exitOK, byFlags.code, byFlags.stderr)
			require.NotEmpty(t, byEnv.stdout)
			assert.Equal(t, byFlags.stdout, byEnv.stdout)
			assert.Equal(t, logTime.ReplaceAllString(byFlags.stderr, ""), logTime.ReplaceAllString(byEnv.stderr, ""))
		})
	}
	for _, d := range allFlagDefs() {
		assert.True(t, covered[d.env], "no env-vs-flag case covers %s (%s)", d.env, d.flagName())
	}
}

// TestRunEnvShapesThePlan: the variables really reach the plan (the two
// runs above could agree by both ignoring the configuration).
func TestRunEnvShapesThePlan(t *testing.T) {
	cfgs := envConfigs(t)
	r := runCLI(t, cfgs[0].env)
	require.Equal(t, exitOK, r.code, r.stderr)
	for _, want := range []string{
		"# ipv6", "--to-ports 15101", "--to-ports 15106", "--dport 15108 -j RETURN", "--uid-owner 2", "--gid-owner 3",
		"--dport 15021 -j RETURN", "-d fd00::/8 -j ISTIO_REDIRECT", "-d 10.96.0.0/12 -j RETURN", "--dport 3306 -j ISTIO_REDIRECT",
		"-p udp --dport 25 -j RETURN", "-I PREROUTING 1 -i eth2 -d 10.0.0.0/8 -j ISTIO_REDIRECT", "-A OUTPUT -o eth3 -j RETURN",
	} {
		assert.Contains(t, r.stdout, want)
	}
	r = runCLI(t, cfgs[1].env)
	require.Equal(t, exitOK, r.code, r.stderr)
	for _, want := range []string{"*mangle", "--tproxy-mark 1400/0xffffffff", "ip rule add fwmark 1400 lookup 140", "--dport 8080 -j ISTIO_TPROXY"} {
		assert.Contains(t, r.stdout, want)
	}
	assert.Contains(t, r.stderr, "iptables-mode=legacy")
	r = runCLI(t, cfgs[2].env)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "# cleanup")
	r = runCLI(t, cfgs[4].env)
	require.Equal(t, exitOK, r.code, r.stderr)
	for _, want := range []string{
		"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 15053",
		"-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d fd00::a/128 -j REDIRECT --to-ports 15053",
		"-A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP",
		"-A ISTIO_OUTPUT -m owner ! --gid-owner 101 -j RETURN",
		"# validation: listen on ports 15001,15006 of lo, connect as this process to 127.0.0.6 and [::6] port 16002",
		"within 2s",
	} {
		assert.Contains(t, r.stdout, want)
	}
	assert.Contains(t, r.stderr, "--istio-outbound-owner-groups-exclude is only used with --istio-outbound-owner-groups '*'; ignored")
	r = runCLI(t, cfgs[5].env)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "# skip-rule-apply: no rule is written\n"+
		"# validation: listen on ports 15001 of lo, connect as this process to 127.0.0.6 port 15002, pass when a listener gets it with original port 15002, within 5s\n",
		r.stdout)
}

// badEnvValue is a value each variable refuses.
func badEnvValue(env string) string {
	bad := map[string]string{
		"NETWORK_NAMESPACE": "/nonexistent", "DRY_RUN": "not-a-bool", "CLEANUP_ONLY": "not-a-bool", "NATIVE_NFTABLES": "not-a-bool",
		"ISTIO_IPV6": "perhaps", "IPTABLES_MODE": "foo", "ISTIO_INBOUND_INTERCEPTION_MODE": "NAT",
		"PROXY_UID": "no-such-user-xyz", "PROXY_GID": "no-such-group-xyz",
		"KUBE_VIRT_INTERFACES": "-j", "ISTIO_EXCLUDE_INTERFACES": "-j",
		"ISTIO_SERVICE_CIDR": "10.0.0.0/99", "ISTIO_SERVICE_EXCLUDE_CIDR": "*",
		"ISTIO_INBOUND_TPROXY_MARK": "0", "ISTIO_INBOUND_TPROXY_ROUTE_TABLE": "254",
		"REDIRECT_DNS": "maybe", "CAPTURE_ALL_DNS": "maybe", "DROP_INVALID": "maybe", "RUN_VALIDATION": "maybe",
		"SKIP_RULE_APPLY": "maybe", "DNS_SERVERS": "10.96.0.0/12", "ISTIO_OUTBOUND_OWNER_GROUPS": "no-such-group-xyz",
		"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "*", "PROBE_TIMEOUT": "5",
		"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "10.0.0.0/8", "PROXY_MARK": "0x100000000",
		"DRY_RUN_DIFF": "maybe", "ISTIO_IPTABLES_TIMEOUT": "forever",
	}
	if v, ok := bad[env]; ok {
		return v
	}
	return "0" // a bad port
}

// TestRunBadEnvNamesVariable: a bad value from a variable is refused
// naming the flag, the variable and the value.
func TestRunBadEnvNamesVariable(t *testing.T) {
	for _, d := range allFlagDefs() {
		t.Run(d.env, func(t *testing.T) {
			v := badEnvValue(d.env)
			// A bad -e (or -p) makes the run a usage error whatever
			// happens to the variable, so even a bad DRY_RUN cannot start
			// a real run.
			guard := []string{"-e", "0"}
			if d.env == "INBOUND_TUNNEL_PORT" {
				guard = []string{"-p", "0"}
			}
			r := runCLI(t, map[string]string{d.env: v}, guard...)
			require.Equal(t, exitUsage, r.code, r.stderr)
			assert.Empty(t, r.stdout)
			assert.Contains(t, r.stderr, d.flagName()+" (from "+d.env+")")
			assert.Contains(t, r.stderr, strconv.Quote(v))
		})
	}
}

// TestRunFlagsWinOverEnv: for every flag, a variable holding a bad value
// is ignored when the flag is given.
func TestRunFlagsWinOverEnv(t *testing.T) {
	good := map[string]string{
		"ENVOY_PORT": "15001", "INBOUND_CAPTURE_PORT": "15006", "INBOUND_TUNNEL_PORT": "15008",
		"PROXY_UID": "1337", "PROXY_GID": "1337", "ISTIO_INBOUND_INTERCEPTION_MODE": "REDIRECT",
		"ISTIO_INBOUND_PORTS": "*", "ISTIO_LOCAL_EXCLUDE_PORTS": "15090", "ISTIO_SERVICE_CIDR": "*",
		"ISTIO_SERVICE_EXCLUDE_CIDR": "10.96.0.0/12", "ISTIO_OUTBOUND_PORTS": "3306",
		"ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE": "25", "KUBE_VIRT_INTERFACES": "eth1", "ISTIO_EXCLUDE_INTERFACES": "eth2",
		"ISTIO_INBOUND_TPROXY_MARK": "1337", "ISTIO_INBOUND_TPROXY_ROUTE_TABLE": "133",
		"DRY_RUN": "true", "NETWORK_NAMESPACE": "/proc/self/ns/net", "ISTIO_IPV6": "false",
		"IPTABLES_MODE": "auto", "CLEANUP_ONLY": "false", "IPTABLES_WAIT": "30", "NATIVE_NFTABLES": "false",
		"REDIRECT_DNS": "false", "CAPTURE_ALL_DNS": "false", "DNS_SERVERS": "10.96.0.10", "DROP_INVALID": "true",
		"ISTIO_OUTBOUND_OWNER_GROUPS": "101", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888", "RUN_VALIDATION": "false",
		"SKIP_RULE_APPLY": "false", "IPTABLES_PROBE_PORT": "15002", "PROBE_TIMEOUT": "5s",
		"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.0/8", "PROXY_MARK": "4242",
		"DRY_RUN_DIFF": "false", "ISTIO_IPTABLES_TIMEOUT": "40s",
	}
	for _, d := range allFlagDefs() {
		t.Run(d.env, func(t *testing.T) {
			value, ok := good[d.env]
			require.True(t, ok, "no good value for %s", d.env)
			badValue := badEnvValue(d.env)
			// The bad value is ignored when the flag is given.
			args := []string{"--" + d.long + "=" + value}
			if d.long != "dry-run" {
				args = append(args, "-n")
			}
			if d.long != "ipv6" {
				args = append(args, "--ipv6=false")
			}
			r := runCLI(t, map[string]string{d.env: badValue}, args...)
			assert.Equal(t, exitOK, r.code, "--%s=%s with %s=%q: %s", d.long, value, d.env, badValue, r.stderr)
			assert.NotEmpty(t, r.stdout)
		})
	}
	t.Run("the flag's value is the one used", func(t *testing.T) {
		r := runCLI(t, map[string]string{"ENVOY_PORT": "16000", "ISTIO_INBOUND_PORTS": "8080"}, "-n", "--ipv6=false", "-p", "15001", "-b", "80")
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.Contains(t, r.stdout, "--to-ports 15001")
		assert.NotContains(t, r.stdout, "16000")
		assert.Contains(t, r.stdout, "--dport 80 -j ISTIO_IN_REDIRECT")
		assert.NotContains(t, r.stdout, "8080")
	})
	t.Run("an empty variable is ignored", func(t *testing.T) {
		r := runCLI(t, map[string]string{"ENVOY_PORT": ""}, "-n", "--ipv6=false")
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.Contains(t, r.stdout, "--to-ports 15001")
	})
}

// TestRunDefaultProxyUID: without -u or PROXY_UID the uid is that of
// $ENVOY_USER (default istio-proxy) when it exists, else 1337; never 0
// (issue 15): ENVOY_USER=root is refused unless -u 0 is explicit.
func TestRunDefaultProxyUID(t *testing.T) {
	r := runCLI(t, map[string]string{"ENVOY_USER": "no-such-user-xyz"}, "-n", "--ipv6=false")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "--uid-owner 1337 ")
	assert.Contains(t, r.stdout, "--gid-owner 1337 ")

	r = runCLI(t, map[string]string{"ENVOY_USER": "root"}, "-n", "--ipv6=false")
	require.Equal(t, exitUsage, r.code, r.stderr)
	assert.Contains(t, r.stderr, `-u: the default is the UID of ENVOY_USER "root", which is 0 in this system's user database: `+
		"root is never exempted implicitly; pass -u 0 to exempt it")
	assert.Empty(t, r.stdout)

	r = runCLI(t, map[string]string{"ENVOY_USER": "root"}, "-n", "--ipv6=false", "-u", "0")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "--uid-owner 0 ", "an explicit -u 0 exempts root")
}

// helpEntries splits help text into one entry per flag: a line that
// starts with the flag's name and the lines up to the next flag's line.
func helpEntries(text string) map[string]string {
	start := regexp.MustCompile(`^\s*(-[a-zA-Z], )?--([a-z0-9-]+)`)
	out := map[string]string{}
	cur := ""
	for _, l := range strings.Split(text, "\n") {
		if m := start.FindStringSubmatch(l); m != nil {
			cur = m[2]
		} else if strings.TrimSpace(l) == "" {
			cur = ""
		}
		if cur != "" {
			out[cur] += l + "\n"
		}
	}
	return out
}

// TestRunHelp: --help lists every flag with its short form, its variable
// and its default, in the flag's own entry.
func TestRunHelp(t *testing.T) {
	defs := allFlagDefs()
	assert.Len(t, defs, 37, "the contract lists 21 flags with a variable, plus --wait (issue 7), ten of issue 8, --native-nftables (issue 9), "+
		"two of issue 16 (Istio's own flags: istio_test.go), --timeout (issue 14) and --diff (issue 19)")
	for _, arg := range []string{"--help", "-h"} {
		t.Run(arg, func(t *testing.T) {
			r := runCLI(t, nil, arg)
			require.Equal(t, exitOK, r.code)
			assert.Empty(t, r.stderr)
			entries := helpEntries(r.stdout)
			for _, d := range defs {
				entry, ok := entries[d.long]
				require.True(t, ok, "--%s missing from help:\n%s", d.long, r.stdout)
				assert.Contains(t, entry, d.env, "--%s", d.long)
				assert.Contains(t, entry, "default", "--%s", d.long)
				if d.short != "" {
					assert.Contains(t, entry, "-"+d.short+", --"+d.long)
				}
			}
			assert.Contains(t, entries, "help")
			assert.Contains(t, entries, "version")
			assert.Contains(t, r.stdout, "Exit codes")
		})
	}
}

// TestRunVersion: version, commit and the Go version.
func TestRunVersion(t *testing.T) {
	r := runCLI(t, nil, "--version")
	require.Equal(t, exitOK, r.code)
	assert.Empty(t, r.stderr)
	assert.Contains(t, r.stdout, version)
	assert.Contains(t, r.stdout, commit)
	assert.Contains(t, r.stdout, runtime.Version())
	assert.Equal(t, 1, strings.Count(r.stdout, "\n"))
}

// goldenCommandLines are the command lines written above the capture
// golden cases (capture/golden_test.go); their dry run must print the
// golden file. The ipv6_auto cases depend on the host and are left out.
var goldenCommandLines = map[string]string{
	"classic_istio_init":        `-p 15001 -u 1337 -m REDIRECT -i '*' -x "" -b 80, -d "" --ipv6=false`,
	"redirect_default":          `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false`,
	"tproxy_default":            `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false`,
	"inbound_ports_list":        `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b 80,8080 -d 15090,15021,15020 --ipv6=false`,
	"inbound_ports_empty":       `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b "" -d 15090,15021,15020 --ipv6=false`,
	"service_cidr_list_exclude": `-p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8,172.16.0.0/12 -x 10.96.0.0/12,10.0.0.1 -b '*' -d 15090,15021,15020 --ipv6=false`,
	"service_cidr_empty":        `-p 15001 -z 15006 -u 1337 -m REDIRECT -i "" -x "" -b '*' -d 15090,15021,15020 --ipv6=false`,
	"outbound_ports":            `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -q 3306,5432 --ipv6=false`,
	"outbound_ports_exclude":    `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -o 25,587 --ipv6=false`,
	"exclude_interfaces":        `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -c eth1,eth2 --ipv6=false`,
	"kubevirt_all":              `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -k eth1,eth2 --ipv6=false`,
	"kubevirt_cidrs":            `-p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8,192.168.0.0/16 -x "" -b '*' -d 15090,15021,15020 -k eth1,eth2 --ipv6=false`,
	"uids_gids":                 `-p 15001 -z 15006 -u 1,2 -g 3,4 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false`,
	"explicit_z_ports_list":     `-p 15001 -z 15100 -u 1337 -m REDIRECT -i '*' -x "" -b 80,8080 -d "" --ipv6=false`,
	"tunnel_port":               `-p 15001 -z 15006 -e 15009 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false`,
	"tproxy_ports_list":         `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b 80,8080 -d "" --ipv6=false`,
	"tproxy_inbound_empty":      `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b "" -d "" --ipv6=false`,
	"tproxy_exclude_interfaces": `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 -c eth1 --ipv6=false`,
	"tproxy_custom_marks":       `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 -t 1400 -r 140 --ipv6=false`,
	"tproxy_ipv6":               `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=true`,
	"ipv6_mixed_cidrs":          `-p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8,fd00::/8 -x 10.96.0.0/12,fd00:10::/64 -b '*' -d 15090,15021,15020 --ipv6=true`,
	"ipv6_only_ipv4_cidrs":      `-p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8 -x 10.96.0.0/12 -b '*' -d 15090,15021,15020 --ipv6=true`,

	"dns_servers":                    `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10 --ipv6=false`,
	"dns_capture_all":                `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --capture-all-dns --ipv6=false`,
	"dns_uids_gids":                  `-p 15001 -z 15006 -u 3,4 -g 1,2 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 127.0.0.53,::127.0.0.53 --ipv6=true`,
	"dns_ipv6":                       `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10,fd00:10::a --ipv6=true`,
	"dns_ipv6_ipv4_server_only":      `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10 --ipv6=true`,
	"dns_capture_all_ipv6":           `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --capture-all-dns --ipv6=true`,
	"dns_tproxy":                     `-p 15001 -z 15006 -u 1337 -m TPROXY -i 9.9.0.0/16 -x 1.1.0.0/16 -b '*' -d "" -c not-istio-nic --redirect-dns --dns-servers 127.0.0.53 --ipv6=true`,
	"drop_invalid":                   `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --drop-invalid --ipv6=false`,
	"drop_invalid_tproxy_ipv6":       `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 -c eth1 --drop-invalid --ipv6=true`,
	"owner_groups":                   `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --istio-outbound-owner-groups 101,202 --ipv6=false`,
	"owner_groups_exclude":           `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --istio-outbound-owner-groups-exclude 888,999 --ipv6=false`,
	"dns_owner_groups_ipv6":          `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10,fd00:10::a --istio-outbound-owner-groups 101,202 --ipv6=true`,
	"dns_owner_groups_exclude_ipv6":  `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10,fd00:10::a --istio-outbound-owner-groups-exclude 888,999 --ipv6=true`,
	"all_issue8_options_tproxy_ipv6": `-p 15001 -z 15006 -u 1,2 -g 3 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 -o 25 --redirect-dns --capture-all-dns --drop-invalid --istio-outbound-owner-groups-exclude 888 --ipv6=true`,

	"loopback_cidr_include":     `-p 15001 -z 15006 -u 1337 -m REDIRECT -i 127.1.2.3/32,10.0.0.0/8,::1/128 -x "" -b '*' -d 15090,15021,15020 --ipv6=true`,
	"loopback_outbound_iprange": `-p 15001 -z 15006 -u 3,4 -g 1,2 -m REDIRECT -i 127.1.2.3/32 -x "" -b "" -d "" --redirect-dns --dns-servers 127.0.0.53 --ipv6=false`,
	"ipv4_loopback_cidr_tproxy": `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --istio-outbound-ipv4-loopback-cidr 127.0.0.0/8 --ipv6=false`,
	"proxy_mark_only":           `-p 15001 -z 15006 -u '' -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --proxy-mark 4242 --ipv6=true`,
	"proxy_mark_tproxy_dns":     `-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --proxy-mark 0x1092 --redirect-dns --dns-servers 10.96.0.10 --ipv6=false`,
	"kubevirt_dns":              `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -k eth1,eth2 --redirect-dns --dns-servers 10.96.0.10,fd00:10::a --ipv6=true`,
	"kubevirt_dns_capture_all":  `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -k eth1 --redirect-dns --capture-all-dns --ipv6=false`,
}

// shellWords splits a command line with '…' and "…" quoting, as a shell
// would for these simple lines.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var out []string
	var cur strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	require.Zero(t, quote, "unterminated quote in %q", line)
	if in {
		out = append(out, cur.String())
	}
	return out
}

// TestRunGoldenCommandLines: the command line printed above each golden
// case gives exactly the golden dry run (flags reach Config as the golden
// table says).
func TestRunGoldenCommandLines(t *testing.T) {
	files, err := filepath.Glob("../../capture/testdata/*.golden")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".golden")
		if strings.HasPrefix(name, "ipv6_auto") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			line, ok := goldenCommandLines[name]
			require.True(t, ok, "no command line for golden %s", name)
			want, err := os.ReadFile(f)
			require.NoError(t, err)
			r := runCLI(t, nil, append(shellWords(t, line), "-n")...)
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Equal(t, string(want), r.stdout)
		})
	}
	assert.Equal(t, []string{"a", "*", "", "b c"}, shellWords(t, `a '*' "" "b c"`))
}

// TestRunDryRunStartsNoProcess: the dry run with --ipv6=false needs no
// binary: with PATH holding only fake iptables/ip tools that record being
// started, it succeeds and none of them ran.
func TestRunDryRunStartsNoProcess(t *testing.T) {
	bin := t.TempDir()
	marker := filepath.Join(t.TempDir(), "started")
	script := "#!/bin/sh\necho \"$0 $*\" >> " + marker + "\nexit 1\n"
	for _, name := range []string{
		"iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore", "ip6tables-restore",
		"iptables-nft", "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft-save", "ip6tables-nft-restore",
		"iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore", "ip6tables-legacy-save", "ip6tables-legacy-restore",
		"ip", "nft", "sh", "modprobe",
	} {
		require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755))
	}
	t.Setenv("PATH", bin)
	for _, args := range [][]string{
		{"-n", "--ipv6=false", "-b", "*", "-i", "*"},
		{"-n", "--ipv6=false", "-m", "TPROXY", "-b", "*", "-i", "*"},
		{"-n", "--ipv6=true", "-m", "TPROXY", "-b", "80", "-i", "*"},
		{"-n", "--cleanup-only"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, nil, args...)
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.NotEmpty(t, r.stdout)
			_, err := os.Stat(marker)
			assert.True(t, os.IsNotExist(err), "a process was started")
		})
	}
}

// TestRunIPv6AutoSpelling: every spelling --ipv6 accepts as auto must
// behave as auto.
func TestRunIPv6AutoSpelling(t *testing.T) {
	want := runCLI(t, nil, "-n", "--ipv6=auto")
	require.Equal(t, exitOK, want.code, want.stderr)
	for _, v := range []string{" auto", "auto ", "AUTO", " Auto "} {
		t.Run(strconv.Quote(v), func(t *testing.T) {
			r := runCLI(t, nil, "-n", "--ipv6="+v)
			if r.code == exitUsage {
				return // refusing the spelling is a fix too
			}
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Equal(t, want.stdout, r.stdout)
			r = runCLI(t, map[string]string{"ISTIO_IPV6": v}, "-n")
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Equal(t, want.stdout, r.stdout)
		})
	}
}

// TestRunStdoutOnlyPlan: logs go to stderr, so `-n > rules.txt` holds
// only the plan.
func TestRunStdoutOnlyPlan(t *testing.T) {
	r := runCLI(t, nil, "-n", "--ipv6=false", "-b", "80", "-d", "81", "-k", "eth1")
	require.Equal(t, exitOK, r.code)
	assert.True(t, strings.HasPrefix(r.stdout, "# ipv4\n*nat\n"), r.stdout)
	assert.NotContains(t, r.stdout, "level=")
	assert.Contains(t, r.stderr, "msg=configuration")
	assert.Contains(t, r.stderr, "level=WARN", "-d without -b '*' and -k without -i warn")
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		ok := strings.HasPrefix(l, "# ipv") || strings.HasPrefix(l, "*") || strings.HasPrefix(l, ":") ||
			strings.HasPrefix(l, "-A ") || strings.HasPrefix(l, "-I ") || l == "COMMIT" || strings.HasPrefix(l, "ip ")
		assert.True(t, ok, "unexpected stdout line %q", l)
	}
	assert.True(t, slices.Contains(strings.Split(r.stdout, "\n"), "COMMIT"))
}
