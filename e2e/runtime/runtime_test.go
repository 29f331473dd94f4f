package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"sigs.k8s.io/yaml"
)

// The images the examples are played with. The app and proxy images come
// from hack/runtime-images.sh; the project's image is loaded from make
// image-oci's archive and tagged as the examples name it.
const (
	appImage   = "localhost/ii-runtime-app:bookworm"
	proxyImage = "localhost/ii-runtime-proxy:bookworm"
	toolImage  = "localhost/istio-iptables:dev"
	// remotePort is where the remote server listens, in the test's
	// namespace (the pod reaches it at its gateway address).
	remotePort = "9090"
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
		var pm *podman
		if !check(t, "setup: namespace, podman store and images", func(t *testing.T) {
			pm = newPodman(t, et, root)
			startRemote(t, et, pm.nsPath())
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
func playExample(t *testing.T, pm *podman, file string) {
	ex := loadExample(t, file)
	t.Cleanup(func() { _, _ = pm.try("kube", "play", "--down", ex.path) })

	var first podState
	if !check(t, "kube play: the init container succeeds under its securityContext", func(t *testing.T) {
		pm.run(t, "kube", "play", ex.path)
		first = pm.state(t, ex)
		assertRules(t, ex, first)
	}) {
		return
	}
	traffic(t, pm, ex, first, "")

	check(t, "a re-run of the init container on the programmed namespace writes nothing", func(t *testing.T) {
		before := saveRules(t, first)
		out, err := pm.try(ex.rerunArgs(nil, ex.init.Args)...)
		require.NoError(t, err, "%s", out)
		assert.Contains(t, out, "already in place")
		assert.NotContains(t, out, "rules written")
		assert.Equal(t, before, saveRules(t, first))
	})
	check(t, "the init container without NET_ADMIN fails, names it, and changes nothing", func(t *testing.T) {
		before := saveRules(t, first)
		other := append(slices.Clone(ex.init.Args), "-p", "15101") // another outbound port: this run must write
		out, err := pm.try(ex.rerunArgs([]string{"NET_RAW"}, other)...)
		require.Error(t, err, "%s", out)
		assert.Contains(t, out, "istio-iptables needs CAP_NET_ADMIN in the pod's network namespace")
		assert.Equal(t, before, saveRules(t, first))
	})
	check(t, "the init container's --cleanup-only removes every rule", func(t *testing.T) {
		out, err := pm.try(ex.rerunArgs(nil, []string{"--cleanup-only"})...)
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
		pm.run(t, "kube", "play", "--replace", ex.path)
		second = pm.state(t, ex)
		assert.NotEqual(t, first.netns, second.netns, "a replaced pod has a new namespace")
		assertRules(t, ex, second)
	}) {
		return
	}
	traffic(t, pm, ex, second, " (after --replace)")

	check(t, "kube play --down", func(t *testing.T) {
		pm.run(t, "kube", "play", "--down", ex.path)
	})
}

// traffic starts the proxy in the pod's sidecar and makes the connections.
func traffic(t *testing.T, pm *podman, ex *example, st podState, suffix string) {
	inbound := "inbound :80 passes the proxy (" + ex.inbound + ")" + suffix
	var got reply
	if !check(t, inbound, func(t *testing.T) {
		pm.run(t, "exec", "-d", ex.container("istio-proxy"), "haproxy", "-db", "-f", "/etc/haproxy/"+ex.proxyConfig())
		var err error
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, err = get(pm.nsPath(), "http://"+net.JoinHostPort(st.ip, "80")+"/")
			if err == nil && got.header("X-Ii-Proxy") != "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.NoError(t, err)
		assert.Equal(t, ex.inbound, got.header("X-Ii-Proxy"), "listener that took it; reply %+v", got)
		assert.Equal(t, "app remote=127.0.0.6", got.body, "the app answered the proxy's passthrough")
	}) {
		return
	}
	name := "the proxy sees the client's own address" + suffix
	if ex.mode == "TPROXY" {
		name = "TPROXY keeps the client's address (transparent 15006 listener)" + suffix
	}
	check(t, name, func(t *testing.T) {
		assert.Equal(t, got.local, got.header("X-Ii-Client"), "the client connected from %s", got.local)
	})

	url := "http://" + net.JoinHostPort(st.gateway, remotePort) + "/"
	check(t, "outbound from the app passes 15001 to the original destination"+suffix, func(t *testing.T) {
		out := pm.run(t, "exec", ex.container("app"), "curl", "-sS", "-m", "5", "-D", "-", url)
		r := parseCurl(out)
		assert.Equal(t, "15001", r.header("X-Ii-Proxy"), "%s", out)
		assert.Equal(t, "remote via=15001 peer="+st.ip, r.body, "%s", out)
	})
	check(t, "the proxy's own traffic goes direct"+suffix, func(t *testing.T) {
		out := pm.run(t, "exec", ex.container("istio-proxy"), "curl", "-sS", "-m", "5", "-D", "-", url)
		r := parseCurl(out)
		assert.Empty(t, r.header("X-Ii-Proxy"), "%s", out)
		assert.Equal(t, "remote via= peer="+st.ip, r.body, "%s", out)
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
	replace(m.Spec.InitContainers[0], toolImage)
	for _, c := range m.Spec.Containers {
		image := map[string]string{"app": appImage, "istio-proxy": proxyImage}[c.Name]
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
// args (SPEC §3.1: -z when given; else 15006 with -b '*', the -p port with
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
	return append(append(args, toolImage), toolArgs...)
}

// podman runs podman in the test's namespace with a private store and
// configuration (../shared/RUNTIME.md).
type podman struct {
	ns, dir string
	env     []string
}

func (pm *podman) nsPath() string { return "/var/run/netns/" + pm.ns }

// newPodman makes the test's namespace, the store and configuration, and
// loads the images; all of it goes when owner ends.
func newPodman(t, owner *testing.T, root string) *podman {
	t.Helper()
	id := make([]byte, 4)
	_, err := rand.Read(id)
	require.NoError(t, err)
	pm := &podman{ns: "ii-rt-" + hex.EncodeToString(id)}
	out, err := exec.Command("ip", "netns", "add", pm.ns).CombinedOutput()
	require.NoError(t, err, "ip netns add: %s", out)
	owner.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", pm.ns).CombinedOutput(); err != nil {
			owner.Errorf("ip netns del %s: %v: %s", pm.ns, err, out)
		}
	})
	out, err = exec.Command("ip", "-n", pm.ns, "link", "set", "lo", "up").CombinedOutput()
	require.NoError(t, err, "lo up: %s", out)

	pm.dir, err = os.MkdirTemp("", "ii-rt-podman-")
	require.NoError(t, err)
	owner.Cleanup(func() { pm.teardown(owner) })
	for _, d := range []string{"root", "runroot", "tmp", "networks"} {
		require.NoError(t, os.MkdirAll(filepath.Join(pm.dir, d), 0o700))
	}
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/events.log"
tmp_dir = "%[1]s/tmp"
[network]
network_config_dir = "%[1]s/networks"
`, pm.dir)
	require.NoError(t, os.WriteFile(filepath.Join(pm.dir, "containers.conf"), []byte(conf), 0o644))
	// No registry: every image is local.
	require.NoError(t, os.WriteFile(filepath.Join(pm.dir, "registries.conf"), []byte("unqualified-search-registries = []\n"), 0o644))
	pm.env = []string{
		"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin",
		"HOME=" + pm.dir,
		"TMPDIR=" + filepath.Join(pm.dir, "tmp"),
		"CONTAINERS_CONF=" + filepath.Join(pm.dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(pm.dir, "registries.conf"),
	}

	images := envOr("E2E_RUNTIME_IMAGES", filepath.Join(root, ".cache", "runtime"))
	tool := envOr("E2E_RUNTIME_TOOL_IMAGE", filepath.Join(root, ".cache", "image", "istio-iptables-amd64.tar"))
	for _, archive := range []string{filepath.Join(images, "app.tar"), filepath.Join(images, "proxy.tar")} {
		pm.run(t, "load", "-q", "-i", archive)
	}
	m := loadedImage.FindStringSubmatch(pm.run(t, "load", "-q", "-i", tool))
	require.NotNil(t, m, "podman load %s named no image", tool)
	if loaded := strings.TrimSpace(m[1]); loaded != toolImage {
		pm.run(t, "tag", loaded, toolImage)
	}
	images2 := pm.run(t, "images", "--format", "{{.Repository}}:{{.Tag}}")
	for _, want := range []string{appImage, proxyImage, toolImage} {
		require.Contains(t, images2, want)
	}
	return pm
}

var loadedImage = regexp.MustCompile(`Loaded image(?:\(s\))?: *(\S+)`)

// teardown removes every pod and container, unmounts what the store left
// mounted and removes the store.
func (pm *podman) teardown(t *testing.T) {
	_, _ = pm.try("pod", "rm", "--all", "--force", "--time", "0")
	_, _ = pm.try("rm", "--all", "--force", "--time", "0")
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var under []string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], pm.dir+"/") {
			under = append(under, f[4])
		}
	}
	slices.Sort(under)
	for i := len(under) - 1; i >= 0; i-- {
		if out, err := exec.Command("umount", under[i]).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", under[i], err, out)
		}
	}
	if err := os.RemoveAll(pm.dir); err != nil {
		t.Errorf("remove the podman store: %v", err)
	}
}

func (pm *podman) cmd(ctx context.Context, args ...string) *exec.Cmd {
	argv := append([]string{"--net=" + pm.nsPath(), "podman",
		"--root", filepath.Join(pm.dir, "root"), "--runroot", filepath.Join(pm.dir, "runroot"),
		"--storage-driver", envOr("E2E_RUNTIME_STORAGE_DRIVER", "overlay")}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = pm.env
	return cmd
}

// try runs podman args and returns its combined output.
func (pm *podman) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := pm.cmd(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// run is try that fails t on error.
func (pm *podman) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := pm.try(args...)
	require.NoError(t, err, "%s", out)
	return out
}

// podState is where a played pod lives.
type podState struct {
	pid         string // of the app container, for nsenter
	netns       string // net:[inode]
	ip, gateway string
}

func (pm *podman) state(t *testing.T, ex *example) podState {
	t.Helper()
	out := pm.run(t, "inspect", "--format", "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{.Gateway}}{{end}}", ex.container("app"))
	f := strings.Fields(out)
	require.Len(t, f, 3, "inspect: %q", out)
	link, err := os.Readlink("/proc/" + f[0] + "/ns/net")
	require.NoError(t, err)
	status := strings.TrimSpace(pm.run(t, "pod", "inspect", "--format", "{{.State}}", ex.pod))
	assert.Equal(t, "Running", status, "pod %s", ex.pod)
	return podState{pid: f[0], netns: link, ip: f[1], gateway: f[2]}
}

// startRemote starts the original destination of the pod's outbound
// connections: an HTTP server in the test's namespace answering
// "remote via=<the X-Ii-Proxy header> peer=<source address>".
func startRemote(t, owner *testing.T, nsPath string) {
	t.Helper()
	var ln net.Listener
	require.NoError(t, inNetns(nsPath, func() (err error) {
		ln, err = net.Listen("tcp", ":"+remotePort)
		return err
	}))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		peer, _, _ := net.SplitHostPort(req.RemoteAddr)
		fmt.Fprintf(w, "remote via=%s peer=%s", req.Header.Get("X-Ii-Proxy"), peer)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	owner.Cleanup(func() { _ = srv.Close() })
}

// inNetns runs f on a locked OS thread switched into the namespace at
// path; sockets f opens belong to that namespace. The thread is returned
// to the scheduler only if switching back worked.
func inNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer origin.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := f()
		if err := netns.Set(origin); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from netns %s: %w", path, err))
			return
		}
		goruntime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// reply is an HTTP answer: its headers, body and the client's own address.
type reply struct {
	headers http.Header
	body    string
	local   string
}

func (r reply) header(k string) string { return r.headers.Get(k) }

// get makes one HTTP request from the namespace at nsPath.
func get(nsPath, url string) (reply, error) {
	var local string
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(nsPath, func() (err error) {
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		if err == nil {
			local, _, _ = net.SplitHostPort(c.LocalAddr().String())
		}
		return c, err
	}}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return reply{}, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return reply{headers: resp.Header, body: strings.TrimSpace(string(body)), local: local}, nil
}

// parseCurl reads curl -D - output: the headers, a blank line, the body.
func parseCurl(out string) reply {
	r := reply{headers: http.Header{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			r.headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	var rest bytes.Buffer
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	r.body = strings.TrimSpace(rest.String())
	return r
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

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
