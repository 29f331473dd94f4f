package cni

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// KubeconfigName is the file Install writes in the CNI config directory
// when it is given a kubeconfig; its extension is none the runtime reads.
const KubeconfigName = PluginType + ".kubeconfig"

// confExtensions are the files a runtime reads from the config directory,
// as libcni.ConfFiles lists them.
var confExtensions = []string{".conf", ".conflist", ".json"}

// FirstConfFile is the config file the runtime uses: the first of the
// directory's .conf, .conflist and .json files in lexical order.
func FirstConfFile(dir string) (string, error) {
	files, err := confFiles(dir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("no CNI network configuration (*.conf, *.conflist, *.json) in %s: the node's primary CNI has not written one yet", dir)
	}
	return files[0], nil
}

func confFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list the CNI config directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		for _, ext := range confExtensions {
			if filepath.Ext(e.Name()) == ext {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
	}
	sort.Strings(files)
	return files, nil
}

// InstallOptions say what Install puts where.
type InstallOptions struct {
	// BinDir and ConfDir are the runtime's CNI directories
	// (/opt/cni/bin, /etc/cni/net.d).
	BinDir, ConfDir string
	// Binary is the plugin binary to copy into BinDir.
	Binary string
	// Entry is our conflist entry, a JSON object; its "type" is set.
	Entry []byte
	// Kubeconfig, when not nil, is written to ConfDir/KubeconfigName (mode
	// 0600) and named in the entry's kubernetes.kubeconfig.
	Kubeconfig []byte
	// HostConfDir is ConfDir as the runtime on the node sees it, for the
	// kubeconfig's path in the entry (a DaemonSet mounts the node's
	// /etc/cni/net.d elsewhere); "" is ConfDir.
	HostConfDir string
}

// InstallResult names what Install wrote.
type InstallResult struct {
	Binary   string
	Conflist string
	// Converted is the single-network .conf that became Conflist and was
	// removed, or "".
	Converted string
}

// Install copies the binary and puts our entry at the end of the plugins of
// the node's first conflist (replacing an entry of ours in place), or turns
// the first file, a single network's .conf, into a conflist with the same
// base name. Every write is a temporary file renamed over the target.
func Install(o InstallOptions) (InstallResult, error) {
	var res InstallResult
	entry, err := ourEntry(o)
	if err != nil {
		return res, err
	}
	first, err := FirstConfFile(o.ConfDir)
	if err != nil {
		return res, err
	}
	res.Binary = filepath.Join(o.BinDir, PluginType)
	if err := copyFile(o.Binary, res.Binary, 0o755); err != nil {
		return res, fmt.Errorf("copy the plugin to %s: %w", res.Binary, err)
	}
	if o.Kubeconfig != nil {
		path := filepath.Join(o.ConfDir, KubeconfigName)
		if err := writeAtomic(path, o.Kubeconfig, 0o600); err != nil {
			return res, fmt.Errorf("write the kubeconfig %s: %w", path, err)
		}
	}
	text, err := os.ReadFile(first)
	if err != nil {
		return res, fmt.Errorf("read %s: %w", first, err)
	}
	mode := fileMode(first)
	target := first
	if !IsConflist(text) {
		if text, err = ConfToConflist(text); err != nil {
			return res, fmt.Errorf("%s: %w", first, err)
		}
		target = strings.TrimSuffix(first, filepath.Ext(first)) + ".conflist"
		if _, err := os.Stat(target); err == nil {
			return res, fmt.Errorf("turn %s into a conflist: %s exists", first, target)
		}
		res.Converted = first
	}
	if err := checkListVersion(text); err != nil {
		return res, fmt.Errorf("%s: %w", first, err)
	}
	out, err := InsertEntry(text, entry)
	if err != nil {
		return res, fmt.Errorf("%s: %w", first, err)
	}
	if err := writeAtomic(target, out, mode); err != nil {
		return res, fmt.Errorf("write %s: %w", target, err)
	}
	if res.Converted != "" {
		if err := os.Remove(res.Converted); err != nil {
			return res, fmt.Errorf("remove %s, now %s: %w", res.Converted, target, err)
		}
	}
	res.Conflist = target
	return res, nil
}

// SpecVersions are the CNI spec versions the plugin speaks.
var SpecVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// checkListVersion refuses a conflist whose cniVersion the plugin does not
// speak: the runtime would fail every pod's ADD.
func checkListVersion(conflist []byte) error {
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(conflist, &head); err != nil {
		return err
	}
	if !slices.Contains(SpecVersions, head.CNIVersion) {
		return fmt.Errorf("its cniVersion is %q; %s speaks %s only, and the runtime would fail every pod: upgrade the conflist's cniVersion first", head.CNIVersion, PluginType, strings.Join(SpecVersions, ", "))
	}
	return nil
}

// ourEntry is o.Entry with "type" set, and the kubeconfig named.
func ourEntry(o InstallOptions) ([]byte, error) {
	entry := map[string]json.RawMessage{}
	if len(o.Entry) > 0 {
		if err := json.Unmarshal(o.Entry, &entry); err != nil {
			return nil, fmt.Errorf("our entry is not a JSON object: %w", err)
		}
	}
	entry["type"], _ = json.Marshal(PluginType)
	if o.Kubeconfig != nil {
		k8s := map[string]json.RawMessage{}
		if raw, ok := entry["kubernetes"]; ok {
			if err := json.Unmarshal(raw, &k8s); err != nil {
				return nil, fmt.Errorf("our entry's kubernetes is not an object: %w", err)
			}
		}
		dir := o.HostConfDir
		if dir == "" {
			dir = o.ConfDir
		}
		k8s["kubeconfig"], _ = json.Marshal(filepath.Join(dir, KubeconfigName))
		entry["kubernetes"], _ = json.Marshal(k8s)
	}
	// "type" first, the other keys in order.
	keys := make([]string, 0, len(entry))
	for k := range entry {
		if k != "type" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	b := append([]byte(`{"type":`), entry["type"]...)
	for _, k := range keys {
		name, _ := json.Marshal(k)
		b = append(append(append(append(b, ','), name...), ':'), entry[k]...)
	}
	b = append(b, '}')
	// Settings checks every key the plugin will read.
	if _, _, err := ParseConf(b); err != nil {
		return nil, fmt.Errorf("our entry: %w", err)
	}
	return b, nil
}

// Uninstall removes our entry from every config file of confDir (a file
// left with no plugin is kept as it is), the kubeconfig Install wrote, and
// the binary. It returns the files it changed or removed.
func Uninstall(binDir, confDir string) ([]string, error) {
	files, err := confFiles(confDir)
	if err != nil {
		return nil, err
	}
	var changed []string
	var errs []error
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", f, err))
			continue
		}
		if !IsConflist(text) {
			continue
		}
		out, n, err := RemoveEntry(text)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if n == 0 {
			continue
		}
		if err := writeAtomic(f, out, fileMode(f)); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", f, err))
			continue
		}
		changed = append(changed, f)
	}
	for _, f := range []string{filepath.Join(confDir, KubeconfigName), filepath.Join(binDir, PluginType)} {
		switch err := os.Remove(f); {
		case err == nil:
			changed = append(changed, f)
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("remove %s: %w", f, err))
		}
	}
	return changed, errors.Join(errs...)
}

func fileMode(path string) fs.FileMode {
	if fi, err := os.Stat(path); err == nil {
		return fi.Mode().Perm()
	}
	return 0o644
}

// writeAtomic writes data to a temporary file in path's directory, syncs
// it and renames it over path: a reader sees the old file or the new one.
// The temporary name starts with a dot and has no extension a runtime
// reads.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename, a no-op
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	return writeAtomic(dst, data, mode)
}

// ServiceAccountKubeconfig is a kubeconfig for the API server the pod runs
// against (KUBERNETES_SERVICE_HOST and _PORT), authenticated with the
// service account in saDir (token and ca.crt), as istio-cni's installer
// writes one for its plugin.
func ServiceAccountKubeconfig(saDir, host, port string) ([]byte, error) {
	if host == "" || port == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not running in a pod")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("read the service account token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("read the service account CA: %w", err)
	}
	return KubeconfigFor("https://"+net.JoinHostPort(host, port), ca, strings.TrimSpace(string(token)))
}

// KubeconfigFor is a kubeconfig (JSON, which is YAML) naming one server,
// its CA (nil: the system's) and a bearer token.
func KubeconfigFor(server string, ca []byte, token string) ([]byte, error) {
	cluster := map[string]any{"server": server}
	if ca != nil {
		cluster["certificate-authority-data"] = base64.StdEncoding.EncodeToString(ca)
	}
	cfg := map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"clusters":        []any{map[string]any{"name": "local", "cluster": cluster}},
		"users":           []any{map[string]any{"name": PluginType, "user": map[string]any{"token": token}}},
		"contexts":        []any{map[string]any{"name": PluginType, "context": map[string]any{"cluster": "local", "user": PluginType}}},
		"current-context": PluginType,
	}
	return json.MarshalIndent(cfg, "", "  ")
}
