package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// entry is our plugin's entry with Istio's sidecar capture.
const entry = `{"type":"istio-iptables-cni","capture":{"envoy-port":"15001","inbound-capture-port":"15006","istio-service-cidr":"*","istio-inbound-ports":"*","istio-local-exclude-ports":"15090,15021,15020"},"excludeNamespaces":["kube-system"],"logLevel":"warn"}`

// cniConfig is libcni over the plugin's directory and Debian's plugins,
// with a private result cache.
func cniConfig(t *testing.T) *libcni.CNIConfig {
	t.Helper()
	t.Setenv("XTABLES_LOCKFILE", filepath.Join(t.TempDir(), "xtables.lock"))
	return libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(pluginBin), "/usr/lib/cni"}, t.TempDir(), nil)
}

func confList(t *testing.T, version string, plugins ...string) *libcni.NetworkConfigList {
	t.Helper()
	text := fmt.Sprintf(`{"cniVersion":%q,"name":"ii-test","plugins":[%s]}`, version, strings.Join(plugins, ","))
	list, err := libcni.ConfListFromBytes([]byte(text))
	require.NoError(t, err)
	return list
}

func runtimeConf(ns, pod string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: "c-" + ns, NetNS: nsPath(ns), IfName: "lo",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", pod}}}
}

// TestLifecycle: ADD, ADD again, CHECK, a drift, CHECK fails naming it, DEL,
// and the namespace equals its snapshot, for each spec version libcni and
// Debian's loopback plugin share; then STATUS and GC (1.1.0), and DEL of a
// namespace that is gone.
func TestLifecycle(t *testing.T) {
	needRoot(t)
	host := snapshot(t, "")
	ctx := context.Background()
	for _, version := range []string{"0.4.0", "1.0.0"} {
		t.Run(version, func(t *testing.T) {
			c := cniConfig(t)
			ns := newNetns(t, "ii-cni-")
			// loopback's DEL sets lo down: so does the snapshot.
			run(t, "ip", "-n", ns, "link", "set", "lo", "down")
			before := snapshot(t, ns)
			list := confList(t, version, `{"type":"loopback"}`, entry)
			rt := runtimeConf(ns, "p")

			// What loopback alone returns is what the list must return.
			loopback := confList(t, version, `{"type":"loopback"}`)
			want, err := c.AddNetworkList(ctx, loopback, rt)
			require.NoError(t, err)
			require.NoError(t, c.DelNetworkList(ctx, loopback, rt))

			res, err := c.AddNetworkList(ctx, list, rt)
			require.NoError(t, err)
			assert.Equal(t, resultJSON(t, want), resultJSON(t, res), "prevResult passes through")
			nat := natRules(t, ns)
			assert.Contains(t, nat, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
			assert.Contains(t, nat, "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006")

			_, err = c.AddNetworkList(ctx, list, rt)
			require.NoError(t, err, "ADD again")
			assert.Equal(t, nat, natRules(t, ns), "a second ADD changes nothing")

			require.NoError(t, c.CheckNetworkList(ctx, list, rt), "CHECK after ADD")

			run(t, "nsenter", "--net="+nsPath(ns), "iptables-nft", "-t", "nat", "-I", "ISTIO_OUTPUT", "1", "-j", "RETURN")
			err = c.CheckNetworkList(ctx, list, rt)
			require.Error(t, err, "CHECK after a drift")
			var terr *types.Error
			require.ErrorAs(t, err, &terr)
			assert.Equal(t, uint(100), terr.Code, "%+v", terr)
			assert.Contains(t, terr.Msg, "the namespace does not hold the plan")
			assert.Contains(t, terr.Msg, "restore", "the drift names the step that would repair it")
			assert.Contains(t, terr.Msg, "drift: ipv4: unexpected -t nat -A ISTIO_OUTPUT -j RETURN", "and the rule")
			t.Logf("CHECK after the drift: code %d: %s", terr.Code, terr.Msg)

			require.NoError(t, c.DelNetworkList(ctx, list, rt))
			assert.Equal(t, before, snapshot(t, ns), "after DEL the namespace equals its snapshot")
			require.NoError(t, c.DelNetworkList(ctx, list, rt), "DEL again")

			run(t, "ip", "netns", "del", ns)
			require.NoError(t, c.DelNetworkList(ctx, list, rt), "DEL of a namespace that is gone")
		})
	}
	t.Run("STATUS and GC", func(t *testing.T) {
		c := cniConfig(t)
		list := confList(t, "1.1.0", entry)
		require.NoError(t, c.GetStatusNetworkList(ctx, list))
		require.NoError(t, c.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}}}))
	})
	t.Run("an uncaptured pod: CHECK names rules of ours", func(t *testing.T) {
		c := cniConfig(t)
		ns := newNetns(t, "ii-cni-")
		excluded := strings.Replace(entry, `"kube-system"`, `"default"`, 1)
		list := confList(t, "1.0.0", `{"type":"loopback"}`, excluded)
		rt := runtimeConf(ns, "p")
		run(t, "ip", "-n", ns, "link", "set", "lo", "down")
		before := snapshot(t, ns)
		_, err := c.AddNetworkList(ctx, list, rt)
		require.NoError(t, err)
		assert.Contains(t, snapshot(t, ns), "inet 127.0.0.1/8")
		assert.NotContains(t, natRules(t, ns), "ISTIO", "an excluded pod gets nothing")
		require.NoError(t, c.CheckNetworkList(ctx, list, rt))
		// Rules of ours appear: CHECK says the pod should hold none.
		_, err = c.AddNetworkList(ctx, confList(t, "1.0.0", `{"type":"loopback"}`, entry), rt)
		require.NoError(t, err)
		err = c.CheckNetworkList(ctx, list, rt)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "the pod is not captured")
		assert.Contains(t, err.Error(), "ipv4: unexpected chain nat/ISTIO_OUTPUT")
		require.NoError(t, c.DelNetworkList(ctx, list, rt))
		assert.Equal(t, before, snapshot(t, ns))
	})
	assert.Equal(t, host, snapshot(t, ""), "the machine's own namespace is unchanged")
}

func resultJSON(t *testing.T, r types.Result) map[string]any {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, r.PrintTo(&b))
	var m map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &m))
	return m
}

// TestAddLatency runs the plugin's ADD as a runtime does (env, stdin with
// prevResult) on 50 namespaces the test makes, and reports the median.
func TestAddLatency(t *testing.T) {
	needRoot(t)
	host := snapshot(t, "")
	const pods = 50
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	conf := strings.TrimSuffix(entry, "}") + `,"cniVersion":"1.0.0","name":"ii-test","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"lo","sandbox":"x"}],"ips":[{"interface":0,"address":"127.0.0.1/8"}]}}`
	invoke := func(command, ns string) (time.Duration, error) {
		cmd := exec.Command(pluginBin)
		cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID=c-"+ns, "CNI_NETNS="+nsPath(ns), "CNI_IFNAME=eth0",
			"CNI_PATH="+filepath.Dir(pluginBin), "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME="+ns, "XTABLES_LOCKFILE="+lock)
		cmd.Stdin = strings.NewReader(conf)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		if err != nil {
			return took, fmt.Errorf("%s %s: %w: %s", command, ns, err, out)
		}
		return took, nil
	}
	var took []time.Duration
	for i := 0; i < pods; i++ {
		ns := newNetns(t, "ii-cnil-")
		d, err := invoke("ADD", ns)
		require.NoError(t, err)
		took = append(took, d)
		require.Contains(t, natRules(t, ns), "-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
		_, err = invoke("DEL", ns)
		require.NoError(t, err)
		run(t, "ip", "netns", "del", ns)
	}
	slices.Sort(took)
	median := (took[pods/2-1] + took[pods/2]) / 2
	line := fmt.Sprintf("ADD latency per pod: median %s of %d (min %s, p90 %s, max %s), each a fresh namespace, REDIRECT with Istio's sidecar capture",
		median.Round(100*time.Microsecond), pods, took[0].Round(100*time.Microsecond), took[pods*9/10].Round(100*time.Microsecond), took[pods-1].Round(100*time.Microsecond))
	t.Log(line)
	fmt.Println(line)
	assert.Equal(t, host, snapshot(t, ""), "the machine's own namespace is unchanged")
}
