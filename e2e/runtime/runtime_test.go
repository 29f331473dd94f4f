package runtime

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/mesh-init/istio-iptables/e2e/internal/podbed"
)

// tally counts the checks for the summary line.
var tally struct {
	sync.Mutex
	passed, failed int
}

func TestMain(m *testing.M) {
	code := m.Run()
	if enabled() {
		if tally.failed > 0 && code == 0 {
			code = 1
		}
		if code != 0 && tally.failed == 0 {
			tally.failed = 1 // a failure outside any check still fails the summary
		}
		fmt.Printf("e2e-runtime: %d passed, %d failed\n", tally.passed, tally.failed)
	}
	os.Exit(code)
}

func enabled() bool { return os.Getenv("E2E_RUNTIME") == "1" }

// check runs f as a subtest and counts it.
func check(t *testing.T, name string, f func(t *testing.T)) bool {
	t.Helper()
	ok := t.Run(name, f)
	tally.Lock()
	defer tally.Unlock()
	if ok {
		tally.passed++
	} else {
		tally.failed++
	}
	return ok
}

// TestExamples plays every examples/kubernetes/*.yaml in podman and checks
// the pod the way a mesh needs it: the init container succeeds under the
// manifest's securityContext, inbound :80 reaches the app through the
// proxy, the app's outbound traffic passes 15001 to the original
// destination, the proxy's own goes direct, the proxy sees the client's
// address, a re-run of the init container on the programmed namespace
// changes nothing, and after kube play --replace (a new namespace) all of it
// holds again. In between, the init container without NET_ADMIN fails with
// the hint and changes nothing, and its --cleanup-only removes every rule.
// The machine's own namespace must be unchanged.
func TestExamples(t *testing.T) {
	if !enabled() {
		t.Skip("container-runtime test: run make e2e-runtime (root; E2E_RUNTIME=1 with the images it builds)")
	}
	require.Zero(t, os.Geteuid(), "e2e-runtime needs root")
	root := repoRoot(t)
	examples, err := filepath.Glob(filepath.Join(root, "examples", "kubernetes", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, examples, "no examples/kubernetes/*.yaml")

	host := hostState(t)
	// Everything podman makes goes when this subtest ends, before the
	// machine's namespace is compared.
	t.Run("examples", func(et *testing.T) {
		t := et
		var pm *podbed.Podman
		if !check(t, "setup: namespace, podman store and images", func(t *testing.T) {
			pm = newPodman(t, et, root)
			podbed.StartRemote(t, et, pm.NSPath())
		}) {
			return
		}
		for _, file := range examples {
			name := strings.TrimSuffix(filepath.Base(file), ".yaml")
			t.Run(name, func(t *testing.T) { playExample(t, pm, file) })
		}
	})
	check(t, "the machine's own namespace is unchanged", func(t *testing.T) {
		assert.Equal(t, host, hostState(t))
	})
}

// playExample runs one manifest through play, the checks, --replace, the
// checks again and --down.
func playExample(t *testing.T, pm *podbed.Podman, file string) {
	ex := loadExample(t, file)
	t.Cleanup(func() { _, _ = pm.Try("kube", "play", "--down", ex.path) })

	var first podState
	if !check(t, "kube play: the init container succeeds under its securityContext", func(t *testing.T) {
		pm.Run(t, "kube", "play", ex.path)
		first = state(t, pm, ex)
		assertRules(t, ex, first)
	}) {
		return
	}
	traffic(t, pm, ex, first, "")

	check(t, "a re-run of the init container on the programmed namespace writes nothing", func(t *testing.T) {
		before := saveRules(t, first)
		out, err := pm.Try(ex.rerunArgs(nil, ex.init.Args)...)
		require.NoError(t, err, "%s", out)
		assert.Contains(t, out, "already in place")
		assert.NotContains(t, out, "rules written")
		assert.Equal(t, before, saveRules(t, first))
	})
	check(t, "the init container without NET_ADMIN fails, names it, and changes nothing", func(t *testing.T) {
		before := saveRules(t, first)
		other := append(slices.Clone(ex.init.Args), "-p", "15101") // another outbound port: this run must write
		out, err := pm.Try(ex.rerunArgs([]string{"NET_RAW"}, other)...)
		require.Error(t, err, "%s", out)
		assert.Contains(t, out, "istio-iptables needs CAP_NET_ADMIN in the pod's network namespace")
		assert.Equal(t, before, saveRules(t, first))
	})
	check(t, "the init container's --cleanup-only removes every rule", func(t *testing.T) {
		out, err := pm.Try(ex.rerunArgs(nil, []string{"--cleanup-only"})...)
		require.NoError(t, err, "%s", out)
		assert.NotContains(t, saveRules(t, first), "ISTIO")
	})

	var second podState
	if !check(t, "kube play --replace: the init container runs again, in the new namespace", func(t *testing.T) {
		// Held open, the old namespace keeps its inode number, which the
		// kernel would otherwise reuse for the new one.
		old, err := os.Open("/proc/" + first.pid + "/ns/net")
		require.NoError(t, err)
		defer old.Close()
		pm.Run(t, "kube", "play", "--replace", ex.path)
		second = state(t, pm, ex)
		assert.NotEqual(t, first.netns, second.netns, "a replaced pod has a new namespace")
		assertRules(t, ex, second)
	}) {
		return
	}
	traffic(t, pm, ex, second, " (after --replace)")

	check(t, "kube play --down", func(t *testing.T) {
		pm.Run(t, "kube", "play", "--down", ex.path)
	})
}

// traffic starts the proxy in the pod's sidecar and makes the connections.
func traffic(t *testing.T, pm *podbed.Podman, ex *example, st podState, suffix string) {
	inbound := "inbound :80 passes the proxy (" + ex.inbound + ")" + suffix
	var got podbed.Reply
	if !check(t, inbound, func(t *testing.T) {
		pm.Run(t, "exec", "-d", ex.container("istio-proxy"), "haproxy", "-db", "-f", "/etc/haproxy/"+ex.proxyConfig())
		var err error
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, err = podbed.Get(pm.NSPath(), "http://"+net.JoinHostPort(st.ip, "80")+"/")
			if err == nil && got.Header("X-Ii-Proxy") != "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.NoError(t, err)
		assert.Equal(t, ex.inbound, got.Header("X-Ii-Proxy"), "listener that took it; reply %+v", got)
		assert.Equal(t, "app remote=127.0.0.6", got.Body, "the app answered the proxy's passthrough")
	}) {
		return
	}
	name := "the proxy sees the client's own address" + suffix
	if ex.mode == "TPROXY" {
		name = "TPROXY keeps the client's address (transparent 15006 listener)" + suffix
	}
	check(t, name, func(t *testing.T) {
		assert.Equal(t, got.Local, got.Header("X-Ii-Client"), "the client connected from %s", got.Local)
	})

	url := "http://" + net.JoinHostPort(st.gateway, podbed.RemotePort) + "/"
	check(t, "outbound from the app passes 15001 to the original destination"+suffix, func(t *testing.T) {
		out := pm.Run(t, "exec", ex.container("app"), "curl", "-sS", "-m", "5", "-D", "-", url)
		r := podbed.ParseCurl(out)
		assert.Equal(t, "15001", r.Header("X-Ii-Proxy"), "%s", out)
		assert.Equal(t, "remote via=15001 peer="+st.ip, r.Body, "%s", out)
	})
	check(t, "the proxy's own traffic goes direct"+suffix, func(t *testing.T) {
		out := pm.Run(t, "exec", ex.container("istio-proxy"), "curl", "-sS", "-m", "5", "-D", "-", url)
		r := podbed.ParseCurl(out)
		assert.Empty(t, r.Header("X-Ii-Proxy"), "%s", out)
		assert.Equal(t, "remote via= peer="+st.ip, r.Body, "%s", out)
	})
}

// assertRules reads the pod's namespace: the capture chains, and for TPROXY
// the policy route.
func assertRules(t *testing.T, ex *example, st podState) {
	t.Helper()
	saved := saveRules(t, st)
	assert.Contains(t, saved, ":ISTIO_OUTPUT")
	assert.Contains(t, saved, "-j ISTIO_REDIRECT")
	if ex.mode == "TPROXY" {
		assert.Contains(t, saved, "-j TPROXY")
		out, err := exec.Command("nsenter", "--net=/proc/"+st.pid+"/ns/net", "ip", "rule").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "fwmark 0x539 lookup 133")
	}
}

var saveNoise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]`)

// saveRules is iptables-nft-save of the pod's namespace, without counters.
func saveRules(t *testing.T, st podState) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net=/proc/"+st.pid+"/ns/net", "iptables-nft-save").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return saveNoise.ReplaceAllString(string(out), "")
}

// example is one manifest, its temporary copy, and what it asks of the
// proxy.
type example struct {
	pod     string // metadata.name
	path    string // the copy podman plays
	init    container
	mode    string // REDIRECT or TPROXY
	inbound string // the port inbound connections are captured to
}

// manifest is the part of a pod manifest the test reads.
type manifest struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		RestartPolicy  string      `json:"restartPolicy"`
		InitContainers []container `json:"initContainers"`
		Containers     []container `json:"containers"`
	} `json:"spec"`
}

type container struct {
	Name  string   `json:"name"`
	Image string   `json:"image"`
	Args  []string `json:"args"`
	Env   []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env"`
	VolumeMounts []struct {
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
	SecurityContext struct {
		RunAsUser              *int64 `json:"runAsUser"`
		ReadOnlyRootFilesystem bool   `json:"readOnlyRootFilesystem"`
		Capabilities           struct {
			Add  []string `json:"add"`
			Drop []string `json:"drop"`
		} `json:"capabilities"`
	} `json:"securityContext"`
}

// loadExample reads file and writes the copy podman plays: the app and
// sidecar images replaced by the local ones, the init container's by the
// project's, and restartPolicy OnFailure (see doc.go).
func loadExample(t *testing.T, file string) *example {
	t.Helper()
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	var m manifest
	require.NoError(t, yaml.Unmarshal(raw, &m), "parse %s", file)
	require.Len(t, m.Spec.InitContainers, 1, "%s: one init container", file)
	text := string(raw)
	replace := func(c container, image string) {
		old := "image: " + c.Image + "\n"
		require.Contains(t, text, old, "%s: container %s", file, c.Name)
		text = strings.Replace(text, old, "image: "+image+"\n", 1)
	}
	replace(m.Spec.InitContainers[0], podbed.ToolImage)
	for _, c := range m.Spec.Containers {
		image := map[string]string{"app": podbed.AppImage, "istio-proxy": podbed.ProxyImage}[c.Name]
		require.NotEmpty(t, image, "%s: no local image for container %q", file, c.Name)
		replace(c, image)
	}
	switch m.Spec.RestartPolicy {
	case "":
		require.Contains(t, text, "\nspec:\n")
		text = strings.Replace(text, "\nspec:\n", "\nspec:\n  restartPolicy: OnFailure\n", 1)
	case "Always":
		text = strings.Replace(text, "restartPolicy: Always", "restartPolicy: OnFailure", 1)
	}
	ex := &example{pod: m.Metadata.Name, path: filepath.Join(t.TempDir(), filepath.Base(file)), init: m.Spec.InitContainers[0]}
	require.NoError(t, os.WriteFile(ex.path, []byte(text), 0o644))
	ex.mode, ex.inbound = captureOf(ex.init.Args)
	require.Contains(t, []string{"REDIRECT", "TPROXY"}, ex.mode, "%s: -m", file)
	return ex
}

// captureOf reads the mode and the inbound capture port from istio-init's
// args (docs/contract.md §3.1: -z when given; else 15006 with -b '*', the -p port with
// a port list).
func captureOf(args []string) (mode, inbound string) {
	flags := map[string]string{"-m": "REDIRECT", "-p": "15001", "-b": ""}
	for i := 0; i+1 < len(args); i++ {
		if strings.HasPrefix(args[i], "-") {
			flags[args[i]] = args[i+1]
		}
	}
	switch z, ok := flags["-z"]; {
	case ok:
		inbound = z
	case flags["-b"] == "*":
		inbound = "15006"
	default:
		inbound = flags["-p"]
	}
	return strings.ToUpper(flags["-m"]), inbound
}

// container is the name kube play gives a container of the pod.
func (ex *example) container(name string) string { return ex.pod + "-" + name }

// proxyConfig is the haproxy configuration of hack/runtime-images.sh for
// the mode: tproxy.cfg listens transparently on 15006.
func (ex *example) proxyConfig() string { return strings.ToLower(ex.mode) + ".cfg" }

// rerunArgs is podman run for the init container again, in the running
// pod, with the manifest's securityContext (capabilities add instead of
// its own, when given), volumes (as tmpfs: emptyDir) and environment, and
// toolArgs: the restarted-init case.
func (ex *example) rerunArgs(add, toolArgs []string) []string {
	c := ex.init
	args := []string{"run", "--rm", "--pod", ex.pod}
	for _, d := range c.SecurityContext.Capabilities.Drop {
		args = append(args, "--cap-drop", strings.ToLower(d))
	}
	if add == nil {
		add = c.SecurityContext.Capabilities.Add
	}
	for _, a := range add {
		args = append(args, "--cap-add", strings.ToLower(a))
	}
	if u := c.SecurityContext.RunAsUser; u != nil {
		args = append(args, "--user", fmt.Sprint(*u))
	}
	if c.SecurityContext.ReadOnlyRootFilesystem {
		args = append(args, "--read-only")
	}
	for _, v := range c.VolumeMounts {
		args = append(args, "--tmpfs", v.MountPath)
	}
	for _, e := range c.Env {
		args = append(args, "--env", e.Name+"="+e.Value)
	}
	return append(append(args, podbed.ToolImage), toolArgs...)
}

// newPodman makes the test's namespace, the store and configuration, and
// loads the images; all of it goes when owner ends.
func newPodman(t, owner *testing.T, root string) *podbed.Podman {
	t.Helper()
	ns := podbed.NewNetns(t, owner, "ii-rt-")
	pm := podbed.New(t, owner, podbed.Config{Root: root, Netns: ns, StorePrefix: "ii-rt-podman-"})
	images := pm.Run(t, "images", "--format", "{{.Repository}}:{{.Tag}}")
	for _, want := range []string{podbed.AppImage, podbed.ProxyImage, podbed.ToolImage} {
		require.Contains(t, images, want)
	}
	return pm
}

// podState is where a played pod lives.
type podState struct {
	pid         string // of the app container, for nsenter
	netns       string // net:[inode]
	ip, gateway string
}

// state reads where ex's pod lives, and asserts the pod is running.
func state(t *testing.T, pm *podbed.Podman, ex *example) podState {
	t.Helper()
	out := pm.Run(t, "inspect", "--format", "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{.Gateway}}{{end}}", ex.container("app"))
	f := strings.Fields(out)
	require.Len(t, f, 3, "inspect: %q", out)
	link, err := os.Readlink("/proc/" + f[0] + "/ns/net")
	require.NoError(t, err)
	status := strings.TrimSpace(pm.Run(t, "pod", "inspect", "--format", "{{.State}}", ex.pod))
	assert.Equal(t, "Running", status, "pod %s", ex.pod)
	return podState{pid: f[0], netns: link, ip: f[1], gateway: f[2]}
}

var hostNoise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]|packets \d+ bytes \d+`)

// hostState is the machine's own namespace as the issue names it:
// iptables-save, nft list ruleset, ip rule and ip route.
func hostState(t *testing.T) string {
	t.Helper()
	var sb strings.Builder
	for _, argv := range [][]string{
		{"iptables-save"}, {"ip6tables-save"}, {"nft", "list", "ruleset"},
		{"ip", "-4", "rule"}, {"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
	} {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", argv, out)
		fmt.Fprintf(&sb, "== %s\n%s", strings.Join(argv, " "), hostNoise.ReplaceAllString(string(out), ""))
	}
	return sb.String()
}

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	if r := os.Getenv("E2E_RUNTIME_ROOT"); r != "" {
		return r
	}
	wd, err := os.Getwd()
	require.NoError(t, err)
	return filepath.Dir(filepath.Dir(wd))
}
