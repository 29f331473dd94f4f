package podbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The images the pods are played with: the app and proxy images of
// hack/runtime-images.sh, and the project's image (make image-oci), tagged
// as the examples name it.
const (
	AppImage   = "localhost/ii-runtime-app:bookworm"
	ProxyImage = "localhost/ii-runtime-proxy:bookworm"
	ToolImage  = "localhost/istio-iptables:dev"
)

// Config says where New finds its images and how it sets podman up.
type Config struct {
	// Root is the module root: the app and proxy archives default to
	// Root/.cache/runtime (E2E_RUNTIME_IMAGES overrides it), the project's
	// image to Root/.cache/image/istio-iptables-amd64.tar
	// (E2E_RUNTIME_TOOL_IMAGE).
	Root string
	// Netns is the name of the namespace podman runs in, made by the caller
	// (NewNetns).
	Netns string
	// StorePrefix names the temporary directory of the store and
	// configuration.
	StorePrefix string
	// CNI selects podman's CNI backend: plugins from Dir/cni-bin, then
	// /usr/lib/cni; conflists in Dir/networks; Dir/ipam made for
	// host-local; and a private XTABLES_LOCKFILE in podman's environment.
	// Otherwise podman uses its default, netavark, with its networks in
	// Dir/networks.
	CNI bool
}

// Podman runs podman inside a test's network namespace with a private store
// and configuration (../shared/RUNTIME.md).
type Podman struct {
	NS  string // the network namespace's name
	Dir string // the store, configuration and, with CNI, network directories
	env []string
}

// NSPath is the path of the namespace podman runs in.
func (pm *Podman) NSPath() string { return NetnsPath(pm.NS) }

// New writes the store and configuration for podman in cfg.Netns and loads
// the images; the store goes (pods, containers and mounts first) when owner
// ends. t is the test whose failure a setup error is.
func New(t, owner testing.TB, cfg Config) *Podman {
	t.Helper()
	pm := &Podman{NS: cfg.Netns}
	var err error
	pm.Dir, err = os.MkdirTemp("", cfg.StorePrefix)
	require.NoError(t, err)
	owner.Cleanup(func() { pm.teardown(owner) })
	dirs := []string{"root", "runroot", "tmp", "networks"}
	if cfg.CNI {
		dirs = append(dirs, "cni-bin", "ipam")
	}
	for _, d := range dirs {
		require.NoError(t, os.MkdirAll(filepath.Join(pm.Dir, d), 0o700))
	}
	conf := containersConf(pm.Dir, cfg.CNI)
	require.NoError(t, os.WriteFile(filepath.Join(pm.Dir, "containers.conf"), []byte(conf), 0o644))
	// No registry: every image is local.
	require.NoError(t, os.WriteFile(filepath.Join(pm.Dir, "registries.conf"), []byte("unqualified-search-registries = []\n"), 0o644))
	pm.env = []string{
		"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin",
		"HOME=" + pm.Dir,
		"TMPDIR=" + filepath.Join(pm.Dir, "tmp"),
		"CONTAINERS_CONF=" + filepath.Join(pm.Dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(pm.Dir, "registries.conf"),
	}
	if cfg.CNI {
		pm.env = append(pm.env, "XTABLES_LOCKFILE="+filepath.Join(pm.Dir, "xtables.lock"))
	}

	images := EnvOr("E2E_RUNTIME_IMAGES", filepath.Join(cfg.Root, ".cache", "runtime"))
	for _, archive := range []string{filepath.Join(images, "app.tar"), filepath.Join(images, "proxy.tar")} {
		pm.Run(t, "load", "-q", "-i", archive)
	}
	tool := EnvOr("E2E_RUNTIME_TOOL_IMAGE", filepath.Join(cfg.Root, ".cache", "image", "istio-iptables-amd64.tar"))
	m := loadedImage.FindStringSubmatch(pm.Run(t, "load", "-q", "-i", tool))
	require.NotNil(t, m, "podman load %s named no image", tool)
	if loaded := strings.TrimSpace(m[1]); loaded != ToolImage {
		pm.Run(t, "tag", loaded, ToolImage)
	}
	return pm
}

// containersConf is the CONTAINERS_CONF of a store in dir: runc, cgroupfs,
// file events, ulimits this sandbox can set, and netavark or CNI.
func containersConf(dir string, cni bool) string {
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/events.log"
tmp_dir = "%[1]s/tmp"
[network]
`, dir)
	if !cni {
		return conf + fmt.Sprintf("network_config_dir = \"%s/networks\"\n", dir)
	}
	return conf + fmt.Sprintf(`network_backend = "cni"
network_config_dir = "%[1]s/networks"
cni_plugin_dirs = ["%[1]s/cni-bin", "/usr/lib/cni"]
`, dir)
}

var loadedImage = regexp.MustCompile(`Loaded image(?:\(s\))?: *(\S+)`)

// teardown removes every pod and container, unmounts what the store left
// mounted and removes the store.
func (pm *Podman) teardown(t testing.TB) {
	_, _ = pm.Try("pod", "rm", "--all", "--force", "--time", "0")
	_, _ = pm.Try("rm", "--all", "--force", "--time", "0")
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var under []string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], pm.Dir+"/") {
			under = append(under, f[4])
		}
	}
	slices.Sort(under)
	for i := len(under) - 1; i >= 0; i-- {
		if out, err := exec.Command("umount", under[i]).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", under[i], err, out)
		}
	}
	if err := os.RemoveAll(pm.Dir); err != nil {
		t.Errorf("remove the podman store: %v", err)
	}
}

// Try runs podman args in the namespace, within two minutes, and returns
// its combined output.
func (pm *Podman) Try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"--net=" + pm.NSPath(), "podman",
		"--root", filepath.Join(pm.Dir, "root"), "--runroot", filepath.Join(pm.Dir, "runroot"),
		"--storage-driver", EnvOr("E2E_RUNTIME_STORAGE_DRIVER", "overlay")}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = pm.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Run is Try that fails t on error.
func (pm *Podman) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := pm.Try(args...)
	require.NoError(t, err, "%s", out)
	return out
}

// EnvOr is the environment variable k, or def when it is unset or empty.
func EnvOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
