package cni

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/e2e/internal/podbed"
)

// The network the pod is played on. Its images are podbed's: the app and
// proxy images of hack/runtime-images.sh, and the project's image for
// istio-validation (make image-oci).
const (
	network = "ii-cni"
	subnet  = "10.89.7.0/24"
	gateway = "10.89.7.1"
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
		podbed.StartRemote(t, t, pm.NSPath())

		conflist := strings.ReplaceAll(bridgeConflist, "IPAMDIR", filepath.Join(pm.Dir, "ipam"))
		listPath := filepath.Join(pm.Dir, "networks", network+".conflist")
		require.NoError(t, os.WriteFile(listPath, []byte(conflist), 0o644))
		entryPath := filepath.Join(pm.Dir, "entry.json")
		require.NoError(t, os.WriteFile(entryPath, []byte(entry), 0o644))
		out := run(t, pluginBin, "install", "--cni-bin-dir", filepath.Join(pm.Dir, "cni-bin"), "--cni-conf-dir", filepath.Join(pm.Dir, "networks"), "--plugin-config", entryPath)
		t.Logf("install: %s", strings.TrimSpace(out))
		installed, err := os.ReadFile(listPath)
		require.NoError(t, err)
		require.Contains(t, string(installed), `"type": "istio-iptables-cni"`)

		manifest := podManifest(t, root, pm.Dir)
		const podName = "istio-iptables-cni-pod"
		t.Cleanup(func() { _, _ = pm.Try("kube", "play", "--down", manifest) })
		pm.Run(t, "kube", "play", "--network", network, manifest)

		pid := strings.TrimSpace(pm.Run(t, "inspect", "--format", "{{.State.Pid}}", podName+"-app"))
		ip := strings.TrimSpace(pm.Run(t, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", podName+"-app"))
		require.NotEmpty(t, ip)
		assert.Equal(t, "Running", strings.TrimSpace(pm.Run(t, "pod", "inspect", "--format", "{{.State}}", podName)))

		t.Run("istio-validation passed: capture was in place before the first container", func(t *testing.T) {
			logs := pm.Run(t, "logs", podName+"-istio-validation")
			assert.Contains(t, logs, "validation passed", "%s", logs)
			state := pm.Run(t, "inspect", "--format", "{{.State.ExitCode}} {{.Config.User}}", podName+"-istio-validation")
			assert.Equal(t, "0 1337:1337", strings.TrimSpace(state))
		})
		rules := noise.ReplaceAllString(run(t, "nsenter", "--net=/proc/"+pid+"/ns/net", "iptables-nft-save", "-t", "nat"), "")
		assert.Contains(t, rules, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT")

		t.Run("inbound :80 passes the proxy's 15006", func(t *testing.T) {
			pm.Run(t, "exec", "-d", podName+"-istio-proxy", "haproxy", "-db", "-f", "/etc/haproxy/redirect.cfg")
			var got podbed.Reply
			var err error
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				if got, err = podbed.Get(pm.NSPath(), "http://"+net.JoinHostPort(ip, "80")+"/"); err == nil && got.Header("X-Ii-Proxy") != "" {
					break
				}
			}
			require.NoError(t, err)
			assert.Equal(t, "15006", got.Header("X-Ii-Proxy"))
			assert.Equal(t, "app remote=127.0.0.6", got.Body)
		})
		t.Run("outbound from the app passes 15001 to the original destination", func(t *testing.T) {
			out := pm.Run(t, "exec", podName+"-app", "curl", "-sS", "-m", "5", "-D", "-", "http://"+net.JoinHostPort(gateway, podbed.RemotePort)+"/")
			r := podbed.ParseCurl(out)
			assert.Equal(t, "15001", r.Header("X-Ii-Proxy"), "%s", out)
			assert.Equal(t, "remote via=15001 peer="+ip, r.Body)
		})
		t.Run("the proxy's own traffic goes direct", func(t *testing.T) {
			out := pm.Run(t, "exec", podName+"-istio-proxy", "curl", "-sS", "-m", "5", "-D", "-", "http://"+net.JoinHostPort(gateway, podbed.RemotePort)+"/")
			assert.Equal(t, "remote via= peer="+ip, podbed.ParseCurl(out).Body, "%s", out)
		})
		t.Run("kube play --down runs DEL, which removes the rules", func(t *testing.T) {
			held, err := os.Open("/proc/" + pid + "/ns/net")
			require.NoError(t, err)
			defer held.Close()
			heldPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), held.Fd())
			pm.Run(t, "kube", "play", "--down", manifest)
			after := noise.ReplaceAllString(run(t, "nsenter", "--net="+heldPath, "iptables-nft-save"), "")
			assert.NotContains(t, after, "ISTIO", "the namespace after DEL")
			assert.NotContains(t, noise.ReplaceAllString(run(t, "nsenter", "--net="+heldPath, "nft", "list", "ruleset"), ""), "ISTIO")
		})
		t.Run("uninstall gives the conflist back byte for byte", func(t *testing.T) {
			run(t, pluginBin, "uninstall", "--cni-bin-dir", filepath.Join(pm.Dir, "cni-bin"), "--cni-conf-dir", filepath.Join(pm.Dir, "networks"))
			back, err := os.ReadFile(listPath)
			require.NoError(t, err)
			assert.Equal(t, conflist, string(back))
			assert.NoFileExists(t, filepath.Join(pm.Dir, "cni-bin", "istio-iptables-cni"))
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
		{"image: istio-iptables:dev\n", "image: " + podbed.ToolImage + "\n"},
		{"image: nginx:1.27\n", "image: " + podbed.AppImage + "\n"},
		{"image: busybox:1.36\n", "image: " + podbed.ProxyImage + "\n"},
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

// newPodman is podman on the CNI backend in a namespace of the test's own
// (../shared/RUNTIME.md), its plugins in pm.Dir/cni-bin, its conflists in
// pm.Dir/networks.
func newPodman(t *testing.T, root string) *podbed.Podman {
	t.Helper()
	ns := newNetns(t, "ii-cnir-")
	return podbed.New(t, t, podbed.Config{Root: root, Netns: ns, StorePrefix: "ii-cni-podman-", CNI: true})
}
