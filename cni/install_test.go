package cni

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dirs makes a bin and a conf directory and a fake plugin binary.
func dirs(t *testing.T) (bin, conf, binary string) {
	t.Helper()
	root := t.TempDir()
	bin, conf = filepath.Join(root, "bin"), filepath.Join(root, "net.d")
	require.NoError(t, os.Mkdir(bin, 0o755))
	require.NoError(t, os.Mkdir(conf, 0o755))
	binary = filepath.Join(root, "plugin")
	require.NoError(t, os.WriteFile(binary, []byte("#!/bin/sh\necho plugin\n"), 0o755))
	return bin, conf, binary
}

func copyTestdata(t *testing.T, name, dir, as string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "conflist", name))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, as), b, 0o640))
	return b
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestInstallUninstallConflist(t *testing.T) {
	bin, conf, binary := dirs(t)
	first := copyTestdata(t, "bridge.conflist", conf, "10-podman.conflist")
	second := copyTestdata(t, "compact.conflist", conf, "20-other.conflist")

	res, err := Install(InstallOptions{BinDir: bin, ConfDir: conf, Binary: binary, Entry: []byte(testEntry), Kubeconfig: []byte("kubeconfig\n")})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(conf, "10-podman.conflist"), res.Conflist, "the first file in lexical order")
	assert.Empty(t, res.Converted)
	got, err := os.ReadFile(res.Binary)
	require.NoError(t, err)
	assert.Equal(t, "#!/bin/sh\necho plugin\n", string(got))
	fi, err := os.Stat(res.Binary)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())

	edited, err := os.ReadFile(res.Conflist)
	require.NoError(t, err)
	golden(t, "install-bridge.golden", []byte(strings.ReplaceAll(string(edited), conf, "CONFDIR")))
	fi, err = os.Stat(res.Conflist)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm(), "the file keeps its mode")
	fi, err = os.Stat(filepath.Join(conf, KubeconfigName))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	other, err := os.ReadFile(filepath.Join(conf, "20-other.conflist"))
	require.NoError(t, err)
	assert.Equal(t, second, other, "only the first conflist is edited")
	assert.ElementsMatch(t, []string{"10-podman.conflist", "20-other.conflist", KubeconfigName}, listDir(t, conf), "no temporary file is left")

	// Installing again changes nothing.
	_, err = Install(InstallOptions{BinDir: bin, ConfDir: conf, Binary: binary, Entry: []byte(testEntry), Kubeconfig: []byte("kubeconfig\n")})
	require.NoError(t, err)
	again, err := os.ReadFile(res.Conflist)
	require.NoError(t, err)
	assert.Equal(t, string(edited), string(again))

	changed, err := Uninstall(bin, conf)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{res.Conflist, filepath.Join(conf, KubeconfigName), res.Binary}, changed)
	back, err := os.ReadFile(res.Conflist)
	require.NoError(t, err)
	assert.Equal(t, string(first), string(back), "uninstall gives back the file byte for byte")
	assert.Empty(t, listDir(t, bin))
	assert.ElementsMatch(t, []string{"10-podman.conflist", "20-other.conflist"}, listDir(t, conf))

	changed, err = Uninstall(bin, conf)
	require.NoError(t, err)
	assert.Empty(t, changed, "a second uninstall finds nothing")
}

func TestInstallSingleConf(t *testing.T) {
	bin, conf, binary := dirs(t)
	copyTestdata(t, "single.conf", conf, "10-mynet.conf")
	res, err := Install(InstallOptions{BinDir: bin, ConfDir: conf, Binary: binary, Entry: []byte(testEntry)})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(conf, "10-mynet.conf"), res.Converted)
	assert.Equal(t, filepath.Join(conf, "10-mynet.conflist"), res.Conflist)
	assert.Equal(t, []string{"10-mynet.conflist"}, listDir(t, conf))
	edited, err := os.ReadFile(res.Conflist)
	require.NoError(t, err)
	golden(t, "install-single.golden", edited)
	assert.NotContains(t, string(edited), KubeconfigName, "no kubeconfig given, none named")
}

func TestInstallErrors(t *testing.T) {
	bin, conf, binary := dirs(t)
	_, err := Install(InstallOptions{BinDir: bin, ConfDir: conf, Binary: binary, Entry: []byte(testEntry)})
	assert.ErrorContains(t, err, "the node's primary CNI has not written one yet")

	copyTestdata(t, "bridge.conflist", conf, "10-podman.conflist")
	_, err = Install(InstallOptions{BinDir: bin, ConfDir: conf, Binary: binary, Entry: []byte(`{"capture":{"envoy-port":"70000"}}`)})
	assert.ErrorContains(t, err, `capture.envoy-port: port "70000" out of range`)
	assert.Empty(t, listDir(t, bin), "a bad entry installs nothing")

	_, err = Install(InstallOptions{BinDir: bin, ConfDir: conf, Binary: filepath.Join(conf, "missing"), Entry: []byte(testEntry)})
	assert.ErrorContains(t, err, "copy the plugin")

	old := `{"cniVersion": "0.3.1", "name": "old", "plugins": [{"type": "bridge"}]}`
	require.NoError(t, os.WriteFile(filepath.Join(conf, "05-old.conflist"), []byte(old), 0o644))
	_, err = Install(InstallOptions{BinDir: bin, ConfDir: conf, Binary: binary, Entry: []byte(testEntry)})
	assert.ErrorContains(t, err, `its cniVersion is "0.3.1"; istio-iptables-cni speaks 0.4.0, 1.0.0, 1.1.0 only`)
	kept, err := os.ReadFile(filepath.Join(conf, "05-old.conflist"))
	require.NoError(t, err)
	assert.Equal(t, old, string(kept))
}

func TestKubeconfigFor(t *testing.T) {
	b, err := KubeconfigFor("https://10.0.0.1:443", []byte("CA"), "tok")
	require.NoError(t, err)
	assert.Contains(t, string(b), `"server": "https://10.0.0.1:443"`)
	assert.Contains(t, string(b), `"certificate-authority-data": "Q0E="`)
	assert.Contains(t, string(b), `"token": "tok"`)
	_, err = ServiceAccountKubeconfig(t.TempDir(), "", "")
	assert.ErrorContains(t, err, "not running in a pod")
}
