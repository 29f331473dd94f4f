package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The test binary is the plugin when II_CNI_TEST_PLUGIN is set: the runtime's
// view (env, stdin, stdout, exit code) without building another binary.
func TestMain(m *testing.M) {
	if os.Getenv("II_CNI_TEST_PLUGIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type result struct {
	stdout, stderr string
	code           int
}

// cniError is the spec's error JSON.
type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

func (r result) err(t *testing.T) cniError {
	t.Helper()
	require.NotZero(t, r.code, "the plugin succeeded: %s", r.stdout)
	var e cniError
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &e), "error JSON on stdout: %q (stderr %s)", r.stdout, r.stderr)
	return e
}

// invoke runs the plugin as a runtime does.
func invoke(t *testing.T, command, netns, cniArgs, conf string) result {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "II_CNI_TEST_PLUGIN=1", "CNI_COMMAND="+command, "CNI_CONTAINERID=c1",
		"CNI_NETNS="+netns, "CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni", "CNI_ARGS="+cniArgs, "CNI_NETNS_OVERRIDE=1")
	cmd.Stdin = strings.NewReader(conf)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// prevResults are what the main plugin returns, per spec version.
var prevResults = map[string]string{
	"0.4.0": `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/var/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"10.88.0.5/16","gateway":"10.88.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}`,
	"1.0.0": `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/var/run/netns/x"}],"ips":[{"interface":0,"address":"10.88.0.5/16","gateway":"10.88.0.1"},{"interface":0,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}`,
	"1.1.0": `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","mtu":1500,"sandbox":"/var/run/netns/x"}],"ips":[{"interface":0,"address":"10.88.0.5/16","gateway":"10.88.0.1"}],"routes":[{"dst":"0.0.0.0/0","priority":10}],"dns":{"nameservers":["10.96.0.10"]}}`,
}

func conf(version, extra, prev string) string {
	c := fmt.Sprintf(`{"cniVersion":%q,"name":"test","type":"istio-iptables-cni","excludeNamespaces":["kube-system"]%s`, version, extra)
	if prev != "" {
		c += `,"prevResult":` + prev
	}
	return c + "}"
}

func jsonEqual(t *testing.T, want, got string) {
	t.Helper()
	var w, g any
	require.NoError(t, json.Unmarshal([]byte(want), &w))
	require.NoError(t, json.Unmarshal([]byte(got), &g), "%q", got)
	assert.Equal(t, w, g)
}

func TestVersion(t *testing.T) {
	r := invoke(t, "VERSION", "", "", `{"cniVersion":"1.1.0"}`)
	require.Zero(t, r.code, r.stderr)
	var v struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
	assert.Equal(t, []string{"0.4.0", "1.0.0", "1.1.0"}, v.SupportedVersions)
}

func TestAddPassesPrevResult(t *testing.T) {
	for version, prev := range prevResults {
		t.Run(version, func(t *testing.T) {
			// An excluded pod: no namespace is touched, so no root is needed.
			r := invoke(t, "ADD", "/nonexistent", "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns", conf(version, "", prev))
			require.Zero(t, r.code, "%s %s", r.stdout, r.stderr)
			jsonEqual(t, prev, r.stdout)
			assert.Contains(t, r.stderr, `namespace \"kube-system\" is excluded`)
		})
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	unreachable := filepath.Join(dir, "kubeconfig")
	kc := `{"apiVersion":"v1","kind":"Config","clusters":[{"name":"c","cluster":{"server":"https://127.0.0.1:1","insecure-skip-tls-verify":true}}],` +
		`"users":[{"name":"u","user":{"token":"t"}}],"contexts":[{"name":"x","context":{"cluster":"c","user":"u"}}],"current-context":"x"}`
	require.NoError(t, os.WriteFile(unreachable, []byte(kc), 0o600))
	lookup := fmt.Sprintf(`,"kubernetes":{"kubeconfig":%q,"timeout":"2s"}`, unreachable)
	prev := prevResults["1.0.0"]
	for _, tc := range []struct {
		name, command, netns, args, conf string
		code                             uint
		msg                              []string
	}{
		{name: "bad entry names the key", command: "ADD", conf: conf("1.0.0", `,"capture":{"envoy-port":"x"}`, prev), code: 7,
			msg: []string{`capture.envoy-port: port "x" is not a number`}},
		{name: "not chained", command: "ADD", args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=a", conf: conf("1.0.0", "", ""), code: 7,
			msg: []string{"no prevResult", "chained plugin"}},
		{name: "API unreachable fails the ADD", command: "ADD", args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=a", conf: conf("1.0.0", lookup, prev), code: 11,
			msg: []string{"cannot read pod default/a from the API server, so it is not started uncaptured"}},
		{name: "API unreachable fails the CHECK", command: "CHECK", args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=a", conf: conf("1.0.0", lookup, prev), code: 11,
			msg: []string{"cannot read pod default/a"}},
		{name: "lookup without the pod's name", command: "ADD", args: "IgnoreUnknown=1", conf: conf("1.0.0", lookup, prev), code: 4,
			msg: []string{"no K8S_POD_NAMESPACE and K8S_POD_NAME"}},
		{name: "CHECK needs 0.4.0", command: "CHECK", conf: conf("0.3.1", "", prev), code: 1, msg: []string{"config version does not allow CHECK"}},
		{name: "a namespace that is not one", command: "ADD", netns: dir, args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=a", conf: conf("1.0.0", "", prev), code: 8,
			msg: []string{"open the pod's network namespace", "is a directory"}},
		{name: "STATUS with the kubeconfig missing", command: "STATUS", conf: conf("1.1.0", `,"kubernetes":{"kubeconfig":"/nonexistent"}`, ""), code: 50,
			msg: []string{"not ready: the kubeconfig is not readable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netns := tc.netns
			if netns == "" {
				netns = "/nonexistent"
			}
			e := invoke(t, tc.command, netns, tc.args, tc.conf).err(t)
			assert.Equal(t, tc.code, e.Code, "%+v", e)
			for _, m := range tc.msg {
				assert.Contains(t, e.Msg, m)
			}
		})
	}
	t.Run("API unreachable, excluded namespace: ADD passes", func(t *testing.T) {
		r := invoke(t, "ADD", "/nonexistent", "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=a", conf("1.0.0", lookup, prev))
		require.Zero(t, r.code, "%s %s", r.stdout, r.stderr)
		jsonEqual(t, prev, r.stdout)
	})
}

func TestDelStatusGC(t *testing.T) {
	for _, tc := range []struct{ name, command, netns, conf string }{
		{"DEL of a namespace that is gone", "DEL", "/var/run/netns/ii-cni-gone-0", conf("1.0.0", "", "")},
		{"DEL with no namespace", "DEL", "", conf("1.0.0", "", "")},
		{"DEL with an entry it cannot read still succeeds", "DEL", "/nonexistent", `{"cniVersion":"1.0.0","name":"t","type":"istio-iptables-cni","capture":{"bogus":1}}`},
		{"STATUS", "STATUS", "", conf("1.1.0", "", "")},
		{"GC", "GC", "", conf("1.1.0", `,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]`, "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := invoke(t, tc.command, tc.netns, "", tc.conf)
			assert.Zero(t, r.code, "%s %s", r.stdout, r.stderr)
			assert.Empty(t, r.stdout)
		})
	}
}

func TestInstallSubcommand(t *testing.T) {
	root := t.TempDir()
	bin, confDir := filepath.Join(root, "bin"), filepath.Join(root, "net.d")
	require.NoError(t, os.Mkdir(bin, 0o755))
	require.NoError(t, os.Mkdir(confDir, 0o755))
	list := "{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"n\",\n  \"plugins\": [\n    {\"type\": \"ptp\"}\n  ]\n}\n"
	require.NoError(t, os.WriteFile(filepath.Join(confDir, "10-n.conflist"), []byte(list), 0o644))
	kubeconfig := filepath.Join(root, "kc")
	require.NoError(t, os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600))

	var out, errb bytes.Buffer
	code := runSubcommand([]string{"install", "--cni-bin-dir", bin, "--cni-conf-dir", confDir, "--kubeconfig", kubeconfig}, &out, &errb)
	require.Zero(t, code, errb.String())
	assert.Contains(t, out.String(), "entry in "+filepath.Join(confDir, "10-n.conflist"))
	edited, err := os.ReadFile(filepath.Join(confDir, "10-n.conflist"))
	require.NoError(t, err)
	var got struct {
		Plugins []json.RawMessage `json:"plugins"`
	}
	require.NoError(t, json.Unmarshal(edited, &got))
	require.Len(t, got.Plugins, 2)
	assert.Contains(t, string(got.Plugins[1]), `"istio-service-cidr": "*"`, "the default entry: Istio's sidecar capture")
	assert.Contains(t, string(got.Plugins[1]), filepath.Join(confDir, "istio-iptables-cni.kubeconfig"))
	self, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	copied, err := os.ReadFile(filepath.Join(bin, "istio-iptables-cni"))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(self, copied), "install copies this binary")

	out.Reset()
	require.Zero(t, runSubcommand([]string{"uninstall", "--cni-bin-dir", bin, "--cni-conf-dir", confDir}, &out, &errb), errb.String())
	back, err := os.ReadFile(filepath.Join(confDir, "10-n.conflist"))
	require.NoError(t, err)
	assert.Equal(t, list, string(back))
	assert.NoFileExists(t, filepath.Join(bin, "istio-iptables-cni"))

	assert.Equal(t, 2, runSubcommand([]string{"frobnicate"}, &out, &errb))
	assert.Equal(t, 2, runSubcommand([]string{"install", "--bogus"}, &out, &errb))
}
