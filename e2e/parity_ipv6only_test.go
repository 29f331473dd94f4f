package e2e

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIPv6OnlyPod: a pod with IPv6 addresses only (IPv4 only on lo), as
// reported against Istio for years (its tool picks the family from the
// first address and crash-loops or leaves IPv6 uncaptured). With the
// default --ipv6=auto the IPv6 rules are written and capture works;
// the IPv4 rules written alongside harm nothing: localhost still works
// for the app and the proxy, and the run exits 0. REDIRECT and TPROXY.
func TestIPv6OnlyPod(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		args []string
		want map[string]string // connection → landing, in IPv6
	}{
		{"REDIRECT", specArgs("REDIRECT", "-i", "*"), map[string]string{
			"client→pod:80":   "proxy:15006 orig=pod:80 peer=client",
			"app→remote:8080": "proxy:15001 orig=remote:8080 peer=podr",
		}},
		{"TPROXY", specArgs("TPROXY", "-i", "*"), map[string]string{
			"client→pod:80":   "proxy:15006 orig=pod:80 peer=client",
			"app→remote:8080": "proxy:15001 orig=remote:8080 peer=podr",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			for ns, devs := range map[string][]string{b.pod: {"eth0", "eth1"}, b.client: {"eth0"}, b.remote: {"eth0"}} {
				for _, dev := range devs {
					out, err := exec.Command("ip", "-n", ns, "-4", "addr", "flush", "dev", dev).CombinedOutput()
					require.NoError(t, err, "flush IPv4 of %s in %s: %s", dev, ns, out)
				}
			}
			install(t, b, tc.args...) // no --ipv6: auto
			for _, save := range []string{"ip6tables-save", "iptables-save"} {
				out, err := exec.Command("ip", "netns", "exec", b.pod, save).CombinedOutput()
				require.NoError(t, err, "%s", out)
				if !nativeNft() {
					assert.Contains(t, string(out), "-A OUTPUT -j ISTIO_OUTPUT", "%s", save)
				}
			}
			var rows []row
			for _, c := range []conn{
				{from: fromClient, to: "pod", port: 80, direct: "app:80 peer=client"},
				{from: fromApp, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
				{from: fromProxy, to: "remote", port: 8080, direct: "remote:8080 peer=podr"},
				{from: fromApp, to: "lo", port: 80, direct: "app:80 peer=lo"},
				{from: fromProxy, to: "lo", port: 80, direct: "app:80 peer=lo"},
			} {
				want := c.direct
				if w, ok := tc.want[c.from.name+"→"+c.to+":"+strconv.Itoa(c.port)]; ok {
					want = w
				}
				rows = append(rows, row{family: ipv6, conn: c, want: want, got: land(b, c, ipv6)})
			}
			// IPv4: only localhost exists, and stays usable.
			for _, c := range []conn{
				{from: fromApp, to: "lo", port: 80, direct: "app:80 peer=lo"},
				{from: fromProxy, to: "lo", port: 8080, direct: "app:8080 peer=lo"},
			} {
				rows = append(rows, row{family: ipv4, conn: c, want: c.direct, got: land(b, c, ipv4)})
			}
			// And the IPv4 client truly has no route to the pod.
			_, err := connect(b.client, rootUser, net.JoinHostPort(addrs["pod"][ipv4], "80"), "GET")
			require.Error(t, err)
			assert.True(t, strings.Contains(err.Error(), "unreachable") || strings.Contains(err.Error(), "timeout"), "%v", err)
			assertTable(t, config{name: "IPv6-only " + tc.name, runs: [][]string{tc.args}}, rows)
		})
	}
}
