package cni

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The images the pod is played with: the app and proxy images of
// hack/runtime-images.sh, and the project's image for istio-validation
// (make image-oci), tagged as the example names it.
const (
	appImage   = "localhost/ii-runtime-app:bookworm"
	proxyImage = "localhost/ii-runtime-proxy:bookworm"
	toolImage  = "localhost/istio-iptables:dev"
	remotePort = "9090"
	network    = "ii-cni"
	subnet     = "10.89.7.0/24"
	gateway    = "10.89.7.1"
)

// bridgeConflist is the node's network before install: bridge with
// host-local. install appends our entry; uninstall must give this back.
const bridgeConflist = `{
  "cniVersion": "1.0.0",
  "name": "ii-cni",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni-ii0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "routes": [{ "dst": "0.0.0.0/0" }],
        "ranges": [[{ "subnet": "10.89.7.0/24", "gateway": "10.89.7.1" }]],
        "dataDir": "IPAMDIR"
      }
    }
  ]
}
`

// TestPodman: podman's CNI backend, in a namespace of the test's own, plays
// examples/kubernetes/cni/pod-cni.yaml on a network whose conflist chains
// bridge, host-local and our plugin (put there by install). The pod has no
// istio-init: the rules are in place before any container starts, which the
// istio-validation init container (UID 1337, no capability) proves; real
// connections pass the proxy; kube play --down runs DEL, which empties the
// namespace (held open to be read); uninstall gives the conflist back byte
// for byte.
func TestPodman(t *testing.T) {
	needRoot(t)
	start := time.Now()
	host := snapshot(t, "")
	root := repoRoot(t)
	t.Run("pod", func(t *testing.T) {
		pm := newPodman(t, root)
		startRemote(t, pm.ns)

		conflist := strings.ReplaceAll(bridgeConflist, "IPAMDIR", filepath.Join(pm.dir, "ipam"))
		listPath := filepath.Join(pm.dir, "networks", network+".conflist")
		require.NoError(t, os.WriteFile(listPath, []byte(conflist), 0o644))
		entryPath := filepath.Join(pm.dir, "entry.json")
		require.NoError(t, os.WriteFile(entryPath, []byte(entry), 0o644))
		out := run(t, pluginBin, "install", "--cni-bin-dir", filepath.Join(pm.dir, "cni-bin"), "--cni-conf-dir", filepath.Join(pm.dir, "networks"), "--plugin-config", entryPath)
		t.Logf("install: %s", strings.TrimSpace(out))
		installed, err := os.ReadFile(listPath)
		require.NoError(t, err)
		require.Contains(t, string(installed), `"type": "istio-iptables-cni"`)

		manifest := podManifest(t, root, pm.dir)
		const podName = "istio-iptables-cni-pod"
		t.Cleanup(func() { _, _ = pm.try("kube", "play", "--down", manifest) })
		pm.run(t, "kube", "play", "--network", network, manifest)

		pid := strings.TrimSpace(pm.run(t, "inspect", "--format", "{{.State.Pid}}", podName+"-app"))
		ip := strings.TrimSpace(pm.run(t, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", podName+"-app"))
		require.NotEmpty(t, ip)
		assert.Equal(t, "Running", strings.TrimSpace(pm.run(t, "pod", "inspect", "--format", "{{.State}}", podName)))

		t.Run("istio-validation passed: capture was in place before the first container", func(t *testing.T) {
			logs := pm.run(t, "logs", podName+"-istio-validation")
			assert.Contains(t, logs, "validation passed", "%s", logs)
			state := pm.run(t, "inspect", "--format", "{{.State.ExitCode}} {{.Config.User}}", podName+"-istio-validation")
			assert.Equal(t, "0 1337:1337", strings.TrimSpace(state))
		})
		rules := noise.ReplaceAllString(run(t, "nsenter", "--net=/proc/"+pid+"/ns/net", "iptables-nft-save", "-t", "nat"), "")
		assert.Contains(t, rules, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT")

		t.Run("inbound :80 passes the proxy's 15006", func(t *testing.T) {
			pm.run(t, "exec", "-d", podName+"-istio-proxy", "haproxy", "-db", "-f", "/etc/haproxy/redirect.cfg")
			var got reply
			var err error
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				if got, err = get(pm.ns, "http://"+net.JoinHostPort(ip, "80")+"/"); err == nil && got.headers.Get("X-Ii-Proxy") != "" {
					break
				}
			}
			require.NoError(t, err)
			assert.Equal(t, "15006", got.headers.Get("X-Ii-Proxy"))
			assert.Equal(t, "app remote=127.0.0.6", got.body)
		})
		t.Run("outbound from the app passes 15001 to the original destination", func(t *testing.T) {
			out := pm.run(t, "exec", podName+"-app", "curl", "-sS", "-m", "5", "-D", "-", "http://"+net.JoinHostPort(gateway, remotePort)+"/")
			r := parseCurl(out)
			assert.Equal(t, "15001", r.headers.Get("X-Ii-Proxy"), "%s", out)
			assert.Equal(t, "remote via=15001 peer="+ip, r.body)
		})
		t.Run("the proxy's own traffic goes direct", func(t *testing.T) {
			out := pm.run(t, "exec", podName+"-istio-proxy", "curl", "-sS", "-m", "5", "-D", "-", "http://"+net.JoinHostPort(gateway, remotePort)+"/")
			assert.Equal(t, "remote via= peer="+ip, parseCurl(out).body, "%s", out)
		})
		t.Run("kube play --down runs DEL, which removes the rules", func(t *testing.T) {
			held, err := os.Open("/proc/" + pid + "/ns/net")
			require.NoError(t, err)
			defer held.Close()
			heldPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), held.Fd())
			pm.run(t, "kube", "play", "--down", manifest)
			after := noise.ReplaceAllString(run(t, "nsenter", "--net="+heldPath, "iptables-nft-save"), "")
			assert.NotContains(t, after, "ISTIO", "the namespace after DEL")
			assert.NotContains(t, noise.ReplaceAllString(run(t, "nsenter", "--net="+heldPath, "nft", "list", "ruleset"), ""), "ISTIO")
		})
		t.Run("uninstall gives the conflist back byte for byte", func(t *testing.T) {
			run(t, pluginBin, "uninstall", "--cni-bin-dir", filepath.Join(pm.dir, "cni-bin"), "--cni-conf-dir", filepath.Join(pm.dir, "networks"))
			back, err := os.ReadFile(listPath)
			require.NoError(t, err)
			assert.Equal(t, conflist, string(back))
			assert.NoFileExists(t, filepath.Join(pm.dir, "cni-bin", "istio-iptables-cni"))
		})
	})
	assert.Equal(t, host, snapshot(t, ""), "the machine's own namespace is unchanged")
	t.Logf("TestPodman took %s", time.Since(start).Round(time.Second))
	fmt.Printf("podman CNI runtime test: %s\n", time.Since(start).Round(time.Second))
}

// podManifest writes the example pod with the local images, restartPolicy
// OnFailure (podman 4.3 restarts finished init containers under Always),
// no published port, and the init container kept so its log can be read.
func podManifest(t *testing.T, root, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "examples", "kubernetes", "cni", "pod-cni.yaml"))
	require.NoError(t, err)
	text := string(raw)
	for _, r := range [][2]string{
		{"image: istio-iptables:dev\n", "image: " + toolImage + "\n"},
		{"image: nginx:1.27\n", "image: " + appImage + "\n"},
		{"image: busybox:1.36\n", "image: " + proxyImage + "\n"},
		{"      ports:\n        - containerPort: 80\n", ""},
		{"\nspec:\n", "\nspec:\n  restartPolicy: OnFailure\n"},
		{"  annotations:\n", "  annotations:\n    io.podman.annotations.init.container.type: always\n"},
	} {
		require.Contains(t, text, r[0])
		text = strings.Replace(text, r[0], r[1], 1)
	}
	path := filepath.Join(dir, "pod-cni.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

// podman runs podman inside the test's namespace with a private store and
// configuration, on the CNI backend (../shared/RUNTIME.md).
type podman struct {
	ns, dir string
	env     []string
}

func newPodman(t *testing.T, root string) *podman {
	t.Helper()
	pm := &podman{ns: newNetns(t, "ii-cnir-")}
	var err error
	pm.dir, err = os.MkdirTemp("", "ii-cni-podman-")
	require.NoError(t, err)
	t.Cleanup(func() { pm.teardown(t) })
	for _, d := range []string{"root", "runroot", "tmp", "networks", "cni-bin", "ipam"} {
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
network_backend = "cni"
network_config_dir = "%[1]s/networks"
cni_plugin_dirs = ["%[1]s/cni-bin", "/usr/lib/cni"]
`, pm.dir)
	require.NoError(t, os.WriteFile(filepath.Join(pm.dir, "containers.conf"), []byte(conf), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(pm.dir, "registries.conf"), []byte("unqualified-search-registries = []\n"), 0o644))
	pm.env = []string{
		"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin",
		"HOME=" + pm.dir,
		"TMPDIR=" + filepath.Join(pm.dir, "tmp"),
		"CONTAINERS_CONF=" + filepath.Join(pm.dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(pm.dir, "registries.conf"),
		"XTABLES_LOCKFILE=" + filepath.Join(pm.dir, "xtables.lock"),
	}
	images := envOr("E2E_RUNTIME_IMAGES", filepath.Join(root, ".cache", "runtime"))
	for _, archive := range []string{filepath.Join(images, "app.tar"), filepath.Join(images, "proxy.tar")} {
		pm.run(t, "load", "-q", "-i", archive)
	}
	tool := envOr("E2E_RUNTIME_TOOL_IMAGE", filepath.Join(root, ".cache", "image", "istio-iptables-amd64.tar"))
	m := loadedImage.FindStringSubmatch(pm.run(t, "load", "-q", "-i", tool))
	require.NotNil(t, m, "podman load %s named no image", tool)
	if loaded := strings.TrimSpace(m[1]); loaded != toolImage {
		pm.run(t, "tag", loaded, toolImage)
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

func (pm *podman) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"--net=" + nsPath(pm.ns), "podman",
		"--root", filepath.Join(pm.dir, "root"), "--runroot", filepath.Join(pm.dir, "runroot"),
		"--storage-driver", envOr("E2E_RUNTIME_STORAGE_DRIVER", "overlay")}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = pm.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func (pm *podman) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := pm.try(args...)
	require.NoError(t, err, "%s", out)
	return out
}

// startRemote is the pods' outbound destination, in the podman namespace:
// it answers "remote via=<X-Ii-Proxy> peer=<source address>".
func startRemote(t *testing.T, ns string) {
	t.Helper()
	var ln net.Listener
	require.NoError(t, inNetns(nsPath(ns), func() (err error) {
		ln, err = net.Listen("tcp", ":"+remotePort)
		return err
	}))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		peer, _, _ := net.SplitHostPort(req.RemoteAddr)
		fmt.Fprintf(w, "remote via=%s peer=%s", req.Header.Get("X-Ii-Proxy"), peer)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

type reply struct {
	headers http.Header
	body    string
}

// get makes one HTTP request from the namespace.
func get(ns, url string) (reply, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(nsPath(ns), func() (err error) {
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
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
	return reply{headers: resp.Header, body: strings.TrimSpace(string(body))}, nil
}

// parseCurl reads curl -D - output: headers, a blank line, the body.
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

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
