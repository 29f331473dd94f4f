package podbed

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCurl(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		headers map[string]string
		body    string
	}{
		{
			name:    "CRLF headers, then the body",
			out:     "HTTP/1.1 200 OK\r\nX-Ii-Proxy: 15001\r\nContent-Length: 31\r\n\r\nremote via=15001 peer=10.89.0.2\n",
			headers: map[string]string{"X-Ii-Proxy": "15001", "Content-Length": "31"},
			body:    "remote via=15001 peer=10.89.0.2",
		},
		{
			name:    "no proxy header, a body of two lines",
			out:     "HTTP/1.1 200 OK\nDate: Tue, 01 Dec 2026 10:00:00 GMT\n\nline one\nline two\n\n",
			headers: map[string]string{"X-Ii-Proxy": "", "Date": "Tue, 01 Dec 2026 10:00:00 GMT"},
			body:    "line one\nline two",
		},
		{
			name:    "no blank line: all headers, no body",
			out:     "HTTP/1.1 200 OK\nX-Ii-Client: 10.89.0.1\n",
			headers: map[string]string{"X-Ii-Client": "10.89.0.1"},
			body:    "",
		},
		{
			name:    "empty output",
			headers: map[string]string{"X-Ii-Proxy": ""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ParseCurl(tc.out)
			for k, v := range tc.headers {
				assert.Equal(t, v, r.Header(k), "header %s", k)
			}
			assert.Equal(t, tc.body, r.Body)
		})
	}
}

// TestContainersConf pins the configuration each backend gets: the text
// e2e/runtime (netavark) and e2e/cni (CNI) wrote before they shared it.
func TestContainersConf(t *testing.T) {
	const common = `[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "/s/events.log"
tmp_dir = "/s/tmp"
[network]
`
	for _, tc := range []struct {
		name string
		cni  bool
		want string
	}{
		{name: "netavark", want: common + `network_config_dir = "/s/networks"
`},
		{name: "CNI", cni: true, want: common + `network_backend = "cni"
network_config_dir = "/s/networks"
cni_plugin_dirs = ["/s/cni-bin", "/usr/lib/cni"]
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, containersConf("/s", tc.cni))
		})
	}
}

func TestEnvOr(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
		set               bool
	}{
		{name: "set", value: "vfs", set: true, want: "vfs"},
		{name: "empty", value: "", set: true, want: "overlay"},
		{name: "unset", want: "overlay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const k = "PODBED_TEST_STORAGE_DRIVER"
			if tc.set {
				t.Setenv(k, tc.value)
			} else {
				t.Setenv(k, "")
				require.NoError(t, os.Unsetenv(k))
			}
			assert.Equal(t, tc.want, EnvOr(k, "overlay"))
		})
	}
}

// TestImportedOnlyByTests holds the contract of doc.go: no package of the
// module imports podbed outside its tests.
func TestImportedOnlyByTests(t *testing.T) {
	const self = "github.com/mesh-init/istio-iptables/e2e/internal/podbed"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}: {{join .Imports " "}}`, "github.com/mesh-init/istio-iptables/...").CombinedOutput()
	require.NoError(t, err, "go list: %s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Greater(t, len(lines), 5, "go list listed the module's packages: %s", out)
	for _, line := range lines {
		pkg, imports, _ := strings.Cut(line, ": ")
		assert.NotContains(t, strings.Fields(imports), self, "%s imports podbed outside its tests", pkg)
	}
}

// TestInNetns: f runs in the namespace at the path (the one ip netns exec
// enters), and the caller's namespace is unchanged.
func TestInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("InNetns needs root to make a network namespace")
	}
	ns := NewNetns(t, t, "ii-podbed-")
	read := func() string {
		link, err := os.Readlink("/proc/thread-self/ns/net")
		require.NoError(t, err)
		return link
	}
	home := read()
	var inside string
	require.NoError(t, InNetns(NetnsPath(ns), func() error {
		inside = read()
		return nil
	}))
	want, err := exec.Command("ip", "netns", "exec", ns, "readlink", "/proc/self/ns/net").CombinedOutput()
	require.NoError(t, err, "%s", want)
	assert.Equal(t, strings.TrimSpace(string(want)), inside)
	assert.NotEqual(t, home, inside)
	assert.Equal(t, home, read())
}
