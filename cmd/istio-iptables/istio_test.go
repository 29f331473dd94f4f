package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// istioDefault is what Istio's injection template passes istio-init for
// its defaults (manifests/charts/istio-control/istio-discovery/files/
// injection-template.yaml), and ourDefault the same in our own spelling.
var (
	istioDefault = []string{"istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"}
	ourDefault = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"}
)

// TestIstioSpelling: each of Istio's flags and variables, given as Istio's
// injector or CNI would, prints the same dry run as our own spelling of
// the same request, and exits 0.
func TestIstioSpelling(t *testing.T) {
	dry := []string{"-n", "--ipv6=false"}
	for _, tc := range []struct {
		name       string
		istio, our []string
		env        map[string]string // for the Istio run only
	}{
		{name: "the template's defaults", istio: istioDefault, our: ourDefault},
		{name: "--log_as_json and the --log_* family", our: ourDefault,
			istio: append(append([]string{}, istioDefault...), "--log_as_json", "--log_caller=default", "--log_stacktrace_level=default:none",
				"--log_target=stdout", "--log_rotate=", "--log_rotate_max_age=30", "--log_rotate_max_size=104857600", "--log_rotate_max_backups=1000")},
		{name: "--run-validation --skip-rule-apply (Istio CNI)",
			istio: append(append([]string{}, istioDefault...), "--run-validation", "--skip-rule-apply"),
			our:   append(append([]string{}, ourDefault...), "--run-validation", "--skip-rule-apply")},
		{name: "--force-apply", istio: append(append([]string{}, istioDefault...), "--force-apply"), our: ourDefault},
		{name: "--native-nftables", istio: append(append([]string{}, istioDefault...), "--native-nftables"),
			our: append(append([]string{}, ourDefault...), "--native-nftables")},
		{name: "no-op switches", our: ourDefault,
			istio: append(append([]string{}, istioDefault...), "--reconcile", "--dual-stack", "--cni-mode", "--restore-format", "--host-nsenter-exec")},
		{name: "no-op variables", istio: istioDefault, our: ourDefault,
			env: map[string]string{"RECONCILE": "true", "DUAL_STACK": "true", "ISTIO_DUAL_STACK": "true", "CNI_MODE": "true", "FORCE_APPLY": "true"}},
		{name: "--network-namespace", istio: append(append([]string{}, istioDefault...), "--network-namespace", "/proc/self/ns/net"),
			our: append(append([]string{}, ourDefault...), "--netns", "/proc/self/ns/net")},
		{name: "ISTIO_META_DNS_CAPTURE", istio: append(append([]string{}, istioDefault...), "--dns-servers", "10.96.0.10"),
			our: append(append([]string{}, ourDefault...), "--redirect-dns", "--dns-servers", "10.96.0.10"),
			env: map[string]string{"ISTIO_META_DNS_CAPTURE": "true"}},
		{name: "INVALID_DROP", istio: istioDefault, our: append(append([]string{}, ourDefault...), "--drop-invalid"),
			env: map[string]string{"INVALID_DROP": "true"}},
		{name: "INBOUND_INTERCEPTION_MODE", istio: []string{"istio-iptables", "-i", "*", "-b", "*"},
			our: []string{"-m", "TPROXY", "-i", "*", "-b", "*"}, env: map[string]string{"INBOUND_INTERCEPTION_MODE": "TPROXY"}},
		{name: "INBOUND_TPROXY_MARK", istio: []string{"istio-iptables", "-m", "TPROXY", "-i", "*", "-b", "*"},
			our: []string{"-m", "TPROXY", "-t", "1400", "-i", "*", "-b", "*"}, env: map[string]string{"INBOUND_TPROXY_MARK": "1400"}},
		{name: "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", istio: istioDefault,
			our: append(append([]string{}, ourDefault...), "--istio-outbound-ipv4-loopback-cidr", "127.0.0.0/8"),
			env: map[string]string{"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.0/8"}},
		{name: "our variable wins over Istio's alias", istio: istioDefault, our: ourDefault,
			env: map[string]string{"REDIRECT_DNS": "false", "ISTIO_META_DNS_CAPTURE": "true", "DNS_SERVERS": "10.96.0.10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			byIstio := runCLI(t, tc.env, append(tc.istio, dry...)...)
			byOurs := runCLI(t, nil, append(tc.our, dry...)...)
			require.Equal(t, exitOK, byIstio.code, byIstio.stderr)
			require.Equal(t, exitOK, byOurs.code, byOurs.stderr)
			require.NotEmpty(t, byOurs.stdout)
			assert.Equal(t, byOurs.stdout, byIstio.stdout)
		})
	}
}

// TestIstioIptablesVersion: Istio's --iptables-version picks the backend
// as --iptables-mode does; a contradiction or a bad value is refused.
func TestIstioIptablesVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"legacy", []string{"--iptables-version", "legacy"}, nil, exitOK, "iptables-mode=legacy"},
		{"nft by variable", nil, map[string]string{"IPTABLES_VERSION": "nft"}, exitOK, "iptables-mode=nft"},
		{"--force-legacy-iptables", []string{"--force-legacy-iptables"}, nil, exitOK, "iptables-mode=legacy"},
		{"empty is auto", []string{"--iptables-version="}, nil, exitOK, "iptables-mode=auto"},
		{"same as --iptables-mode", []string{"--iptables-version", "nft", "--iptables-mode", "nft"}, nil, exitOK, "iptables-mode=nft"},
		{"bad value", []string{"--iptables-version", "nf"}, nil, exitUsage, `--iptables-version: "nf" is not nft or legacy`},
		{"bad variable", nil, map[string]string{"IPTABLES_VERSION": "x"}, exitUsage, `--iptables-version (from IPTABLES_VERSION): "x"`},
		{"contradiction", []string{"--iptables-version", "legacy", "--iptables-mode", "nft"}, nil, exitUsage, "disagree"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.env, append(tc.args, "-n", "--ipv6=false", "-i", "*")...)
			assert.Equal(t, tc.code, r.code, r.stderr)
			assert.Contains(t, r.stderr, tc.want)
		})
	}
}

// TestIstioLogFlags: --log_output_level sets the level (Istio's
// scope:level form included), --log_as_json makes every line a JSON
// object, none silences the logs, and a bad level is refused.
func TestIstioLogFlags(t *testing.T) {
	base := []string{"-n", "--ipv6=false", "-i", "*", "--capture-all-dns"} // a warning: without --redirect-dns
	t.Run("info shows the configuration", func(t *testing.T) {
		r := runCLI(t, nil, append(base, "--log_output_level=default:info")...)
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.Contains(t, r.stderr, "level=INFO msg=configuration")
	})
	t.Run("warn hides it, keeps the warning", func(t *testing.T) {
		r := runCLI(t, nil, append(base, "--log_output_level=default:warn")...)
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.NotContains(t, r.stderr, "level=INFO")
		assert.Contains(t, r.stderr, "level=WARN")
	})
	t.Run("the most verbose scope counts", func(t *testing.T) {
		r := runCLI(t, nil, append(base, "--log_output_level=default:error,iptables:debug")...)
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.Contains(t, r.stderr, "level=INFO")
	})
	t.Run("none", func(t *testing.T) {
		r := runCLI(t, nil, append(base, "--log_output_level=none")...)
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.Empty(t, r.stderr)
		assert.NotEmpty(t, r.stdout)
	})
	t.Run("json", func(t *testing.T) {
		r := runCLI(t, nil, append(base, "--log_as_json")...)
		require.Equal(t, exitOK, r.code, r.stderr)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		require.NotEmpty(t, lines)
		for _, l := range lines {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &m), "line %q", l)
			assert.Contains(t, m, "level")
		}
	})
	for _, bad := range [][]string{
		{"--log_output_level=default:loud"}, {"--log_stacktrace_level=x"}, {"--log_target=/var/log/x"}, {"--log_rotate_max_age=soon"},
	} {
		t.Run("bad "+bad[0], func(t *testing.T) {
			r := runCLI(t, nil, append(base, bad...)...)
			assert.Equal(t, exitUsage, r.code, r.stderr)
			assert.Empty(t, r.stdout)
			flag, _, _ := strings.Cut(bad[0], "=")
			assert.Contains(t, r.stderr, flag+":")
		})
	}
	t.Run("no-ops are named", func(t *testing.T) {
		r := runCLI(t, nil, "-n", "--ipv6=false", "--reconcile", "--force-apply", "--iptables-trace-logging")
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.Contains(t, r.stderr, `flags="--reconcile --force-apply"`)
		assert.Contains(t, r.stderr, "--iptables-trace-logging is not supported")
	})
}

// TestUsageMessages: the small things a user met (issue 16).
func TestUsageMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag suggests the nearest", []string{"--redirect-dsn"}, "unknown flag: --redirect-dsn (did you mean --redirect-dns?)"},
		{"Istio's underscore spelling", []string{"--log-output-level=info"}, "(did you mean --log_output_level?)"},
		{"a shell-expanded *", []string{"-i", "flags.go", "main.go", "run_test.go"},
			`unexpected argument "main.go run_test.go" (the only positional argument is 'clean'); these look like file names: ` +
				"the shell expands an unquoted * into the files of the current directory, so quote it: -i '*', -b '*'"},
		{"a too long interface name", []string{"-c", "abcdefghijklmnop"}, `-c: "abcdefghijklmnop" is 16 bytes long: Linux interface names are at most 15 bytes`},
		{"a bad loopback range", []string{"--istio-outbound-ipv4-loopback-cidr", "10.0.0.0/8"}, "is not inside the loopback range 127.0.0.0/8"},
		{"a proxy mark of TPROXY's", []string{"-m", "TPROXY", "--proxy-mark", "1338"}, "--proxy-mark: \"1338\" is the TPROXY mark"},
		{"-u '' needs --proxy-mark", []string{"-u", ""}, "-u: at least one id is needed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, nil, append(tc.args, "-n", "--ipv6=false")...)
			assert.Equal(t, exitUsage, r.code, r.stderr)
			assert.Empty(t, r.stdout)
			assert.Contains(t, r.stderr, tc.want)
		})
	}
	t.Run("a long expansion is cut", func(t *testing.T) {
		msg := positionalError([]string{"a", "b", "c", "d", "e"}, func(string) bool { return true })
		assert.Contains(t, msg, `unexpected argument "a b c ... (2 more)"`)
		assert.Contains(t, msg, "quote it")
		assert.NotContains(t, positionalError([]string{"x", "y"}, func(string) bool { return false }), "quote it")
	})
	t.Run("no suggestion when nothing is near", func(t *testing.T) {
		r := runCLI(t, nil, "--frobnicate")
		assert.Equal(t, exitUsage, r.code)
		assert.Contains(t, r.stderr, "unknown flag: --frobnicate\n")
	})
	t.Run("a host-bits CIDR warns with the value used", func(t *testing.T) {
		r := runCLI(t, nil, "-n", "--ipv6=false", "-i", "10.0.0.1/8", "-x", "192.168.1.1/16")
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.Contains(t, r.stderr, `-i: \"10.0.0.1/8\" has host bits set; it is used as 10.0.0.0/8`)
		assert.Contains(t, r.stderr, `-x: \"192.168.1.1/16\" has host bits set; it is used as 192.168.0.0/16`)
		assert.Contains(t, r.stdout, "-d 10.0.0.0/8 -j ISTIO_REDIRECT")
	})
	t.Run("--help mentions explain and Istio's flags", func(t *testing.T) {
		r := runCLI(t, nil, "--help")
		require.Equal(t, exitOK, r.code)
		assert.Contains(t, r.stdout, "istio-iptables explain [flags] --direction inbound|outbound --dst IP:PORT")
		assert.Contains(t, r.stdout, "Istio's flags (pilot-agent istio-iptables), accepted with Istio's meaning:")
		assert.Contains(t, r.stdout, "--force-apply\n        no-op here:")
	})
	t.Run("-u '' with --proxy-mark", func(t *testing.T) {
		r := runCLI(t, nil, "-n", "--ipv6=false", "-i", "*", "-u", "", "--proxy-mark", "4242")
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.NotContains(t, r.stdout, "--uid-owner")
		assert.NotContains(t, r.stdout, "--gid-owner")
		assert.Contains(t, r.stdout, "-A ISTIO_OUTPUT -m mark --mark 4242 -j RETURN")
		assert.Contains(t, r.stderr, "only sockets carrying --proxy-mark are exempt")
	})
}

func TestParseLogLevel(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"", "INFO"}, {"info", "INFO"}, {"default:debug", "DEBUG"}, {"default:warn,ads:error", "WARN"},
		{"fatal", "ERROR"}, {"WARNING", "WARN"},
	} {
		l, err := parseLogLevel(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, l.String(), tc.in)
	}
	l, err := parseLogLevel("default:none")
	require.NoError(t, err)
	assert.Equal(t, levelNone, l)
	_, err = parseLogLevel("default:chatty")
	assert.Error(t, err)
}

func TestEditDistance(t *testing.T) {
	assert.Equal(t, 0, editDistance("log_as_json", "log-as-json"))
	assert.Equal(t, 2, editDistance("redirect-dsn", "redirect-dns"))
	assert.Equal(t, 3, editDistance("", "abc"))
}

// TestExplainIfaceLo: `explain --iface lo` is the pod talking to itself
// (issue 16): outbound, the destination is taken as local, so the
// proxy's call to its own pod IP goes to the inbound listener and the
// app's is not captured; inbound over lo is refused with how to ask it.
func TestExplainIfaceLo(t *testing.T) {
	for _, tc := range []struct {
		name, uid, verdict string
		port               int
	}{
		{"the proxy calling its pod IP", "1337", "redirect", 15006},
		{"the app calling its pod IP", "1000", "direct", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, nil, explainArgs("--direction", "outbound", "--dst", "10.1.1.5:80", "--uid", tc.uid, "--iface", "lo", "--output", "json")...)
			require.Equal(t, exitOK, r.code, r.stderr)
			var got struct {
				Verdict string `json:"verdict"`
				Port    int    `json:"port"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &got), r.stdout)
			assert.Equal(t, tc.verdict, got.Verdict, r.stdout)
			assert.Equal(t, tc.port, got.Port)
		})
	}
	r := runCLI(t, nil, explainArgs("--direction", "inbound", "--dst", "10.1.1.5:80", "--iface", "lo")...)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "ask it as --direction outbound --iface lo")
}

// TestExplainMark: explain --mark is the socket mark of --proxy-mark: the
// marked proxy goes direct, the same UID unmarked is captured.
func TestExplainMark(t *testing.T) {
	args := func(more ...string) []string {
		return append([]string{"explain", "-p", "15001", "-z", "15006", "-u", "", "--proxy-mark", "4242", "-i", "*", "-b", "*",
			"--ipv6=false", "--direction", "outbound", "--dst", "10.0.0.5:8080", "--uid", "1000", "--output", "json"}, more...)
	}
	for _, tc := range []struct {
		name, verdict string
		more          []string
	}{
		{"unmarked", "redirect", nil},
		{"marked", "direct", []string{"--mark", "0x1092"}},
		{"another mark", "redirect", []string{"--mark", "7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, nil, args(tc.more...)...)
			require.Equal(t, exitOK, r.code, r.stderr)
			var got struct {
				Verdict string `json:"verdict"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &got), r.stdout)
			assert.Equal(t, tc.verdict, got.Verdict, r.stdout)
		})
	}
	r := runCLI(t, nil, "explain", "-i", "*", "-b", "*", "--ipv6=false", "--direction", "inbound", "--dst", "10.1.1.5:80", "--mark", "1")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "--mark is for outbound connections")
}

// TestExplainUnknownFlag: explain's unknown flags get the nearest one
// suggested too.
func TestExplainUnknownFlag(t *testing.T) {
	r := runCLI(t, nil, "explain", "--direction", "outbound", "--dst", "10.0.0.5:80", "--from-net", "/x")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "unknown flag: --from-net (did you mean --from-netns?)")
}
