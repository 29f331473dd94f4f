package cni

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	ourcni "github.com/mesh-init/istio-iptables/cni"
	"github.com/mesh-init/istio-iptables/e2e/internal/podbed"
)

// The plugin authenticates as the DaemonSet's service account, so the
// manifest's RBAC is what lets it read pods.
const pluginUser = "system:serviceaccount:kube-system:istio-iptables-cni"

// TestAPIServer runs a real kube-apiserver and etcd in a namespace of their
// own (the "node"), creates pods, and runs the plugin's ADD in that
// namespace for each, against a pod namespace the test makes.
func TestAPIServer(t *testing.T) {
	needRoot(t)
	host := snapshot(t, "")
	start := time.Now()
	bin := kubeAPIServer(t)
	_, err := exec.LookPath("etcd")
	require.NoError(t, err, "etcd: apt-get install etcd-server")

	node := newNetns(t, "ii-cnik-")
	run(t, "ip", "-n", node, "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1") // no dummy module here
	run(t, "ip", "-n", node, "addr", "add", "10.250.0.1/24", "dev", "dummy0")
	run(t, "ip", "-n", node, "link", "set", "dummy0", "up")
	dir := t.TempDir()
	adminToken, pluginToken := token(t), token(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokens.csv"),
		[]byte(adminToken+",admin,admin,system:masters\n"+pluginToken+","+pluginUser+",uid-cni,system:serviceaccounts\n"), 0o600))
	saKey(t, filepath.Join(dir, "sa.key"))

	etcd := daemon(t, node, filepath.Join(dir, "etcd.log"), "etcd", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380")
	_ = etcd
	api := daemon(t, node, filepath.Join(dir, "apiserver.log"), bin,
		"--etcd-servers=http://127.0.0.1:2379", "--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"), "--cert-dir="+filepath.Join(dir, "certs"),
		"--bind-address=127.0.0.1", "--secure-port=6443", "--advertise-address=10.250.0.1",
		"--service-cluster-ip-range=10.251.0.0/24", "--authorization-mode=RBAC")

	admin := client(t, node, adminToken)
	ready(t, admin, filepath.Join(dir, "apiserver.log"))
	t.Logf("kube-apiserver ready %s after the test started", time.Since(start).Round(time.Second))
	ctx := context.Background()
	_, err = admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	ca, err := os.ReadFile(filepath.Join(dir, "certs", "apiserver.crt"))
	require.NoError(t, err)
	kc, err := ourcni.KubeconfigFor("https://127.0.0.1:6443", ca, pluginToken)
	require.NoError(t, err)
	kubeconfig := filepath.Join(dir, "plugin.kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, kc, 0o600))
	conf := strings.TrimSuffix(entry, "}") + fmt.Sprintf(`,"kubernetes":{"kubeconfig":%q,"timeout":"3s"},"cniVersion":"1.0.0","name":"ii-test","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.88.0.5/16"}]}}`, kubeconfig)
	lock := filepath.Join(t.TempDir(), "xtables.lock")

	pods := map[string]*corev1.Pod{
		"with-proxy":    pod("with-proxy", nil, "app", "istio-proxy"),
		"without-proxy": pod("without-proxy", nil, "app"),
		"annotated": pod("annotated", map[string]string{
			"sidecar.istio.io/interceptionMode":                "TPROXY",
			"traffic.sidecar.istio.io/includeInboundPorts":     "8080",
			"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
			"traffic.sidecar.istio.io/excludeOutboundPorts":    "25",
		}, "app", "istio-proxy"),
		"injected":       pod("injected", map[string]string{"sidecar.istio.io/status": `{"containers":["istio-proxy"]}`}, "app"),
		"opted-out":      pod("opted-out", map[string]string{"sidecar.istio.io/inject": "false"}, "app", "istio-proxy"),
		"bad-annotation": pod("bad-annotation", map[string]string{"traffic.sidecar.istio.io/includeInboundPorts": "99999"}, "app", "istio-proxy"),
	}
	for _, p := range pods {
		_, err := admin.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err, "create pod %s", p.Name)
	}

	add := func(t *testing.T, podName string) (string, result) {
		t.Helper()
		podNS := newNetns(t, "ii-cnip-")
		return podNS, invokeIn(t, node, "ADD", podNS, "default", podName, conf, lock)
	}

	t.Run("without RBAC the lookup is forbidden and ADD fails", func(t *testing.T) {
		ns, r := add(t, "with-proxy")
		e := r.err(t)
		assert.Equal(t, uint(11), e.Code)
		assert.Contains(t, e.Msg, "forbidden")
		assert.NotContains(t, natRules(t, ns), "ISTIO")
	})
	applyRBAC(t, admin)

	for _, tc := range []struct {
		pod     string
		capture bool
		want    []string // in iptables-nft-save of nat and mangle
		not     []string
	}{
		{pod: "with-proxy", capture: true, want: []string{"-A ISTIO_OUTPUT -j ISTIO_REDIRECT", "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN", "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"}},
		{pod: "without-proxy"},
		{pod: "annotated", capture: true,
			want: []string{"-A ISTIO_INBOUND -p tcp -m tcp --dport 8080 -j ISTIO_TPROXY", "-A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN", "-A ISTIO_OUTPUT -p tcp -m tcp --dport 25 -j RETURN", "TPROXY --on-port 15006"},
			not:  []string{"-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT", "--dport 15090"}},
		{pod: "injected", capture: true, want: []string{"-A ISTIO_OUTPUT -j ISTIO_REDIRECT"}},
		{pod: "opted-out"},
	} {
		t.Run(tc.pod, func(t *testing.T) {
			ns, r := add(t, tc.pod)
			require.Zero(t, r.code, "%s\n%s", r.stdout, r.stderr)
			jsonEqual(t, `{"cniVersion":"1.0.0","ips":[{"address":"10.88.0.5/16"}]}`, r.stdout)
			rules := natRules(t, ns) + noise.ReplaceAllString(run(t, "nsenter", "--net="+nsPath(ns), "iptables-nft-save", "-t", "mangle"), "")
			if !tc.capture {
				assert.NotContains(t, rules, "ISTIO", "not captured")
				return
			}
			for _, w := range tc.want {
				assert.Contains(t, rules, w)
			}
			for _, n := range tc.not {
				assert.NotContains(t, rules, n)
			}
			r = invokeIn(t, node, "CHECK", ns, "default", tc.pod, conf, lock)
			assert.Zero(t, r.code, "CHECK: %s %s", r.stdout, r.stderr)
			r = invokeIn(t, node, "DEL", ns, "default", tc.pod, conf, lock)
			assert.Zero(t, r.code, "DEL: %s %s", r.stdout, r.stderr)
			assert.NotContains(t, natRules(t, ns), "ISTIO")
		})
	}
	t.Run("a bad annotation fails the ADD, naming it", func(t *testing.T) {
		ns, r := add(t, "bad-annotation")
		e := r.err(t)
		assert.Equal(t, uint(101), e.Code)
		assert.Contains(t, e.Msg, `annotation traffic.sidecar.istio.io/includeInboundPorts: port "99999" out of range`)
		assert.NotContains(t, natRules(t, ns), "ISTIO")
	})
	t.Run("a pod the API does not know fails the ADD", func(t *testing.T) {
		_, r := add(t, "no-such-pod")
		e := r.err(t)
		assert.Equal(t, uint(11), e.Code)
		assert.Contains(t, e.Msg, "not found")
	})
	t.Run("API down: ADD fails, unless the namespace is excluded", func(t *testing.T) {
		require.NoError(t, api.Process.Kill())
		_, _ = api.Process.Wait()
		ns, r := add(t, "with-proxy")
		e := r.err(t)
		assert.Equal(t, uint(11), e.Code)
		assert.Contains(t, e.Msg, "so it is not started uncaptured")
		assert.NotContains(t, natRules(t, ns), "ISTIO")
		ns = newNetns(t, "ii-cnip-")
		r = invokeIn(t, node, "ADD", ns, "kube-system", "coredns", conf, lock)
		require.Zero(t, r.code, "%s %s", r.stdout, r.stderr)
		assert.NotContains(t, natRules(t, ns), "ISTIO")
	})
	t.Logf("TestAPIServer took %s (kube-apiserver build included when it was not cached)", time.Since(start).Round(time.Second))
	assert.Equal(t, host, snapshot(t, ""), "the machine's own namespace is unchanged")
}

// kubeAPIServer is the cached binary, built by hack/kube-apiserver.sh when
// missing (about 6 to 13 minutes on 2 cores).
func kubeAPIServer(t *testing.T) string {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(filepath.Join(repoRoot(t), "hack", "kube-apiserver.sh"))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	require.NoError(t, cmd.Run(), "hack/kube-apiserver.sh: %s", stderr.String())
	if strings.Contains(stderr.String(), "built") {
		t.Logf("built kube-apiserver in %s", time.Since(start).Round(time.Second))
	}
	return strings.TrimSpace(out.String())
}

func token(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

func saKey(t *testing.T, path string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der := x509.MarshalPKCS1PrivateKey(key)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600))
}

// daemon starts argv in the namespace; it is killed when the test ends.
func daemon(t *testing.T, ns, logPath string, argv ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command("nsenter", append([]string{"--net=" + nsPath(ns)}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		logf.Close()
	})
	return cmd
}

// client talks to the API server in the node namespace: every connection is
// dialled from a thread switched into it.
func client(t *testing.T, ns, tok string) *kubernetes.Clientset {
	t.Helper()
	cfg := &rest.Config{Host: "https://127.0.0.1:6443", BearerToken: tok, Timeout: 10 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := podbed.InNetns(nsPath(ns), func() (err error) {
				c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}
	c, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	return c
}

func ready(t *testing.T, c *kubernetes.Clientset, logPath string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && string(body) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(logPath)
			if len(logs) > 4000 {
				logs = logs[len(logs)-4000:]
			}
			require.FailNow(t, "kube-apiserver not ready", "%v %s\n%s", err, body, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The system namespaces come a moment after /readyz.
	for time.Now().Before(deadline) {
		if _, err := c.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.FailNow(t, "no default namespace")
}

func pod(name string, annotations map[string]string, containers ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: "example.invalid/" + c})
	}
	return p
}

// applyRBAC creates the ClusterRole and ClusterRoleBinding of the
// DaemonSet manifest, unchanged.
func applyRBAC(t *testing.T, c *kubernetes.Clientset) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "kubernetes", "cni", "istio-iptables-cni.yaml"))
	require.NoError(t, err)
	ctx := context.Background()
	var n int
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var kind struct{ Kind string }
		require.NoError(t, yaml.Unmarshal([]byte(doc), &kind))
		switch kind.Kind {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			require.NoError(t, yaml.Unmarshal([]byte(doc), &r))
			_, err := c.RbacV1().ClusterRoles().Create(ctx, &r, metav1.CreateOptions{})
			require.NoError(t, err)
			n++
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			require.NoError(t, yaml.Unmarshal([]byte(doc), &b))
			_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &b, metav1.CreateOptions{})
			require.NoError(t, err)
			n++
		}
	}
	require.Equal(t, 2, n, "the manifest's ClusterRole and ClusterRoleBinding")
	// RBAC takes effect when the authorizer's cache has the binding.
	plugin := func() error {
		_, err := c.CoreV1().Pods("default").Get(ctx, "with-proxy", metav1.GetOptions{})
		return err
	}
	require.NoError(t, plugin())
	time.Sleep(time.Second)
}

// invokeIn runs the plugin in the node namespace as the runtime would.
func invokeIn(t *testing.T, node, command, podNS, k8sNS, podName, conf, lock string) result {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+nsPath(node), pluginBin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID=c-"+podNS, "CNI_NETNS="+nsPath(podNS), "CNI_IFNAME=eth0",
		"CNI_PATH="+filepath.Dir(pluginBin), "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE="+k8sNS+";K8S_POD_NAME="+podName, "XTABLES_LOCKFILE="+lock)
	cmd.Stdin = strings.NewReader(conf)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

type result struct {
	stdout, stderr string
	code           int
}

type cniError struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
}

func (r result) err(t *testing.T) cniError {
	t.Helper()
	require.NotZero(t, r.code, "the plugin succeeded: %s %s", r.stdout, r.stderr)
	var e cniError
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &e), "error JSON on stdout: %q (stderr %s)", r.stdout, r.stderr)
	return e
}

func jsonEqual(t *testing.T, want, got string) {
	t.Helper()
	var w, g any
	require.NoError(t, json.Unmarshal([]byte(want), &w))
	require.NoError(t, json.Unmarshal([]byte(got), &g), "%q", got)
	assert.Equal(t, w, g)
}
