package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Istio's injector (issue 13, part 4). The istio-init container of
// istio/istio's manifests/charts/istio-control/istio-discovery/files/
// injection-template.yaml (2026) is started with
//
//	args:
//	- istio-iptables
//	- "-p" {{ .MeshConfig.ProxyListenPort | default "15001" }}
//	- "-z" {{ .MeshConfig.ProxyInboundListenPort | default "15006" }}
//	- "-u" {{ if $tproxy }} "1337" {{ else }} {{ .ProxyUID | default "1337" }} {{ end }}
//	- "-m" sidecar.istio.io/interceptionMode (default REDIRECT)
//	- "-i" traffic.sidecar.istio.io/includeOutboundIPRanges (default global.proxy.includeIPRanges: "*")
//	- "-x" traffic.sidecar.istio.io/excludeOutboundIPRanges (default "")
//	- "-b" traffic.sidecar.istio.io/includeInboundPorts (default global.proxy.includeInboundPorts: "*")
//	- "-d" "15090,15021," + excludeInboundPort(status.sidecar.istio.io/port (15020),
//	       traffic.sidecar.istio.io/excludeInboundPorts), or "15090,15021" when that is empty
//	- "-q" traffic.sidecar.istio.io/includeOutboundPorts   (only when set)
//	- "-o" traffic.sidecar.istio.io/excludeOutboundPorts   (only when set)
//	- "-k" istio.io/reroute-virtual-interfaces, else traffic.sidecar.istio.io/kubevirtInterfaces (only when set)
//	- "-c" traffic.sidecar.istio.io/excludeInterfaces      (only when set)
//	- "--log_output_level=" sidecar.istio.io/agentLogLevel (default global.logging.level: "default:info")
//	- "--log_as_json"                        when global.logAsJson
//	- "--run-validation" "--skip-rule-apply" when CNI is enabled (the istio-validation container), else
//	- "--force-apply"                        when global.proxy_init.forceApplyIptables
//	- "--native-nftables"                    when global.nativeNftables
//	env: the mesh's ProxyMetadata (ISTIO_META_DNS_CAPTURE, INVALID_DROP, ...)
//
// excludeInboundPort(port, ports) appends the status port to the excluded
// ports unless it is "0" or already there. templateArgs renders that
// logic; each case below is one annotation, value or ProxyMetadata entry.

// annotations are the pod annotations and chart values a case sets.
type annotations map[string]string

// templateArgs renders the istio-init args of the injection template for
// the annotations and values in a (keys as in the template).
func templateArgs(a annotations) []string {
	get := func(k, def string) string {
		if v, ok := a[k]; ok {
			return v
		}
		return def
	}
	mode := get("sidecar.istio.io/interceptionMode", "REDIRECT")
	args := []string{"istio-iptables",
		"-p", "15001", "-z", "15006", "-u", "1337", "-m", mode,
		"-i", get("traffic.sidecar.istio.io/includeOutboundIPRanges", "*"),
		"-x", get("traffic.sidecar.istio.io/excludeOutboundIPRanges", ""),
		"-b", get("traffic.sidecar.istio.io/includeInboundPorts", "*"),
		"-d"}
	if ex := excludeInboundPort(get("status.sidecar.istio.io/port", "15020"), get("traffic.sidecar.istio.io/excludeInboundPorts", "")); ex != "" {
		args = append(args, "15090,15021,"+ex)
	} else {
		args = append(args, "15090,15021")
	}
	if v, ok := a["traffic.sidecar.istio.io/includeOutboundPorts"]; ok {
		args = append(args, "-q", v)
	}
	if v, ok := a["traffic.sidecar.istio.io/excludeOutboundPorts"]; ok {
		args = append(args, "-o", v)
	}
	if v, ok := a["istio.io/reroute-virtual-interfaces"]; ok {
		args = append(args, "-k", v)
	} else if v, ok := a["traffic.sidecar.istio.io/kubevirtInterfaces"]; ok {
		args = append(args, "-k", v)
	}
	if v, ok := a["traffic.sidecar.istio.io/excludeInterfaces"]; ok {
		args = append(args, "-c", v)
	}
	args = append(args, "--log_output_level="+get("sidecar.istio.io/agentLogLevel", "default:info"))
	if a["values.global.logAsJson"] == "true" {
		args = append(args, "--log_as_json")
	}
	if a["values.global.proxy_init.forceApplyIptables"] == "true" {
		args = append(args, "--force-apply")
	}
	if a["values.global.nativeNftables"] == "true" {
		args = append(args, "--native-nftables")
	}
	return args
}

// excludeInboundPort is the template function of that name: the status
// port is added to the excluded ports, unless it is empty, "0" or
// already listed.
func excludeInboundPort(port, excluded string) string {
	port = strings.TrimSpace(port)
	if port == "" || port == "0" {
		return excluded
	}
	var out []string
	for _, p := range strings.Split(excluded, ",") {
		if p = strings.TrimSpace(p); p == port {
			return excluded
		} else if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(append(out, port), ",")
}

// templateCase is one annotation (or value, or ProxyMetadata variable) of
// the template and the same request in our own spelling.
type templateCase struct {
	name string
	a    annotations
	env  []string // ProxyMetadata, as istio-init's environment
	ours []string // our spelling: flags only, no variable
}

// ourBase is the template's defaults in our spelling.
var ourBase = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"}

func ours(replace map[string]string, more ...string) []string {
	out := append([]string{}, ourBase...)
	for i := 0; i+1 < len(out); i += 2 {
		if v, ok := replace[out[i]]; ok {
			out[i+1] = v
		}
	}
	return append(out, more...)
}

var templateCases = []templateCase{
	{name: "defaults", ours: ours(nil)},
	{name: "interceptionMode TPROXY", a: annotations{"sidecar.istio.io/interceptionMode": "TPROXY"}, ours: ours(map[string]string{"-m": "TPROXY"})},
	{name: "includeOutboundIPRanges", a: annotations{"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.96.0.0/12,fd00:10::/64"},
		ours: ours(map[string]string{"-i": "10.96.0.0/12,fd00:10::/64"})},
	{name: "excludeOutboundIPRanges", a: annotations{"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.1/32,fd00::1/128"},
		ours: ours(map[string]string{"-x": "10.0.0.1/32,fd00::1/128"})},
	{name: "includeInboundPorts", a: annotations{"traffic.sidecar.istio.io/includeInboundPorts": "80,8080"},
		ours: ours(map[string]string{"-b": "80,8080"})},
	{name: "excludeInboundPorts", a: annotations{"traffic.sidecar.istio.io/excludeInboundPorts": "9000"},
		ours: ours(map[string]string{"-d": "15090,15021,9000,15020"})},
	{name: "status port 0", a: annotations{"status.sidecar.istio.io/port": "0"}, ours: ours(map[string]string{"-d": "15090,15021"})},
	{name: "includeOutboundPorts", a: annotations{"traffic.sidecar.istio.io/includeOutboundPorts": "3306"}, ours: ours(nil, "-q", "3306")},
	{name: "excludeOutboundPorts", a: annotations{"traffic.sidecar.istio.io/excludeOutboundPorts": "25,587"}, ours: ours(nil, "-o", "25,587")},
	{name: "reroute-virtual-interfaces", a: annotations{"istio.io/reroute-virtual-interfaces": "virt0"}, ours: ours(nil, "-k", "virt0")},
	{name: "kubevirtInterfaces", a: annotations{"traffic.sidecar.istio.io/kubevirtInterfaces": "virt0,virt1"}, ours: ours(nil, "-k", "virt0,virt1")},
	{name: "excludeInterfaces", a: annotations{"traffic.sidecar.istio.io/excludeInterfaces": "d1"}, ours: ours(nil, "-c", "d1")},
	{name: "agentLogLevel", a: annotations{"sidecar.istio.io/agentLogLevel": "debug"}, ours: ours(nil)},
	{name: "logAsJson", a: annotations{"values.global.logAsJson": "true"}, ours: ours(nil)},
	{name: "forceApplyIptables", a: annotations{"values.global.proxy_init.forceApplyIptables": "true"}, ours: ours(nil)},
	{name: "nativeNftables", a: annotations{"values.global.nativeNftables": "true"}, ours: ours(nil, "--native-nftables")},
	{name: "ProxyMetadata ISTIO_META_DNS_CAPTURE", env: []string{"ISTIO_META_DNS_CAPTURE=true"}, ours: ours(nil, "--redirect-dns")},
	{name: "ProxyMetadata INVALID_DROP", env: []string{"INVALID_DROP=true"}, ours: ours(nil, "--drop-invalid")},
	{name: "ProxyMetadata ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", env: []string{"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=127.0.0.0/8"},
		ours: ours(nil, "--istio-outbound-ipv4-loopback-cidr", "127.0.0.0/8")},
	{name: "ProxyMetadata ISTIO_OUTBOUND_OWNER_GROUPS", env: []string{"ISTIO_OUTBOUND_OWNER_GROUPS=101,202"},
		ours: ours(nil, "--istio-outbound-owner-groups", "101,202")},
}

// TestIstioTemplateArgs runs istio-init's args and environment as Istio's
// injection template renders them, for its defaults and each annotation,
// value and ProxyMetadata variable, in a namespace of its own as the init
// container does (inside it, UID 0, NET_ADMIN and NET_RAW only), and the
// same request in our own spelling in a twin namespace; the kernel
// states (iptables-save and ip6tables-save of both flavours, nft list
// ruleset, policy routing) must be equal, and not empty.
func TestIstioTemplateArgs(t *testing.T) {
	requireRoot(t)
	for _, tc := range templateCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			istio := newPodNS(t)
			our := newPodNS(t)
			args := templateArgs(tc.a)
			cmd := podCmd(istio, newLockFile(t), initContainer, append([]string{toolBin}, args...)...)
			cmd.Env = append(cmd.Env, tc.env...)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s\n%s", quote(args), out)
			ourCmd := podCmd(our, newLockFile(t), initContainer, append([]string{toolBin}, tc.ours...)...)
			ourOut, err := ourCmd.CombinedOutput()
			require.NoError(t, err, "%s\n%s", quote(tc.ours), ourOut)
			got, want := nsState(t, istio), nsState(t, our)
			require.Contains(t, want, "ISTIO_", "our run wrote nothing")
			assert.Equal(t, want, got, "Istio's args %s\nand ours %s\nleft different kernel states", quote(args), quote(tc.ours))
		})
	}
}

// TestIstioTemplateValidation: with CNI enabled the template runs the
// same args plus --run-validation --skip-rule-apply as istio-validation
// (UID 1337, no capability) after the CNI plugin wrote the rules: it exits
// 0 and changes nothing; without the rules it exits 126, as Istio's.
func TestIstioTemplateValidation(t *testing.T) {
	requireRoot(t)
	ns := newPodNS(t)
	args := append(templateArgs(nil), "--run-validation", "--skip-rule-apply")
	validate := func() (int, string) {
		cmd := podCmd(ns, newLockFile(t), validationContainer, append([]string{toolBin}, args...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		require.NoError(t, err, "%s", out)
		return 0, string(out)
	}
	code, out := validate()
	assert.Equal(t, 126, code, "validation without rules: %s", out)
	plugin := podCmd(ns, newLockFile(t), initContainer, append([]string{toolBin}, ourBase...)...)
	pout, err := plugin.CombinedOutput()
	require.NoError(t, err, "%s", pout)
	before := nsState(t, ns)
	code, out = validate()
	assert.Equal(t, 0, code, "validation with the rules: %s", out)
	assert.Contains(t, out, "validation passed")
	assert.Equal(t, before, nsState(t, ns), "--skip-rule-apply changed the kernel state")
}

// newPodNS creates a namespace standing for a pod: lo up and an eth0 (a veth
// whose peer stays in the namespace)
// with an IPv4 and a global IPv6 address (so --ipv6=auto, which the
// template leaves at its default, writes both families). It is deleted
// when t ends.
func newPodNS(t *testing.T) string {
	t.Helper()
	name := "ii-tpl-" + parityID(t)
	h := addNetns(t, name)
	out, err := exec.Command("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p").CombinedOutput()
	require.NoError(t, err, "%s", out)
	setUp(t, h.nl, "eth0")
	setUp(t, h.nl, "eth0p")
	addAddr(t, h, "eth0", "10.66.1.1", 24, 64)
	addAddr(t, h, "eth0", "fd66:1::1", 24, 64)
	return name
}

// nsState is the netfilter and policy-routing state of a namespace, with
// comments and counters taken out so two namespaces compare.
func nsState(t *testing.T, ns string) string {
	t.Helper()
	var sb strings.Builder
	// The iptables-nft tables are read through *-save (nft lists them in
	// the order the two families' restores happened to commit); nft reads
	// the native backend's table.
	native := []string{"true"}
	if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables").CombinedOutput(); err == nil &&
		strings.Contains(string(out), "table inet istio-iptables\n") {
		native = []string{"nft", "list", "table", "inet", "istio-iptables"}
	}
	for _, argv := range [][]string{
		{"iptables-nft-save"}, {"ip6tables-nft-save"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"},
		native, {"ip", "-4", "rule"}, {"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"}, {"ip", "addr", "show", "dev", "lo"},
	} {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
		require.NoError(t, err, "%v: %s", argv, out)
		sb.WriteString("## " + strings.Join(argv, " ") + "\n")
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "#") || strings.Contains(line, "istio_iptables_") {
				continue // save timestamps; the re-run marker's generation
			}
			if argv[0] == "ip" && argv[2] == "route" && !strings.Contains(line, "table 133") {
				continue // the kernel's own routes, listed in no fixed order; TPROXY's table is ours
			}
			line = counters.ReplaceAllString(line, "")
			sb.WriteString(nftCounters.ReplaceAllString(line, "counter") + "\n")
		}
	}
	return sb.String()
}

// nftCounters are the counters `nft list ruleset` prints.
var nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// parityID is a random name part for the namespaces of these tests.
func parityID(t *testing.T) string {
	t.Helper()
	id := make([]byte, 4)
	_, err := rand.Read(id)
	require.NoError(t, err)
	return hex.EncodeToString(id)
}
