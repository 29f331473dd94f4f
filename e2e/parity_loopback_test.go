package e2e

import (
	"net"
	"os/exec"
	osuser "os/user"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Parity with today's Istio (issue 16.1, 16.2, 16.4), in the kernel and
// with real connections.

// TestLoopbackCIDRInclude: a loopback CIDR in -i makes Istio leave out
// the rules that return the app's traffic over lo (HasLoopBackIP in
// tools/istio-iptables/pkg/capture/run.go), in both families: the app's
// TCP to 127.1.2.3:80 goes to 15001, and so does its TCP to its own pod
// IP in IPv6 when -i lists it. Without a loopback CIDR that pod-IP call
// is returned and reaches the app.
func TestLoopbackCIDRInclude(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name, cidrs   string
		lo, podIPv6   string // where app→127.1.2.3:80 and app→[pod]:80 land
		returnsOverLo bool
	}{
		{"-i 127.1.2.3/32,fd66:1::1/128", "127.1.2.3/32,fd66:1::1/128",
			"proxy:15001 orig=127.1.2.3:80 peer=lo", "proxy:15001 orig=pod:80 peer=pod", false},
		{"-i fd66:1::1/128", "fd66:1::1/128", "app:80 peer=lo", "app:80 peer=pod", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			install(t, b, specArgs("REDIRECT", "-i", tc.cidrs)...)
			got := func(addr string) string {
				reply, err := connect(b.pod, appUser, addr, "GET")
				if err != nil {
					return "ERR " + err.Error()
				}
				return render(reply)
			}
			assert.Equal(t, tc.lo, got("127.1.2.3:80"), "app→127.1.2.3:80")
			assert.Equal(t, tc.podIPv6, got(net.JoinHostPort(addrs["pod"][ipv6], "80")), "app→[pod]:80")
			if nativeNft() {
				return
			}
			for _, save := range []string{"iptables-save", "ip6tables-save"} {
				out, err := exec.Command("ip", "netns", "exec", b.pod, save, "-t", "nat").CombinedOutput()
				require.NoError(t, err, "%s", out)
				assert.Equal(t, tc.returnsOverLo, strings.Contains(string(out), "-o lo -m owner ! --uid-owner 1337 -j RETURN"), "%s:\n%s", save, out)
			}
		})
	}
}

// TestIPv4LoopbackCIDR: Istio's ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR. By
// default (127.0.0.1/32) the proxy's TCP to 127.0.0.2:8080 is sent to the
// inbound listener like a call to its pod IP; with 127.0.0.0/8 it goes
// straight to the app, as in Istio.
func TestIPv4LoopbackCIDR(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	land := func() string {
		reply, err := connect(b.pod, proxyUser, "127.0.0.2:8080", "GET")
		if err != nil {
			return "ERR " + err.Error()
		}
		return render(reply)
	}
	install(t, b, redirect...)
	assert.Equal(t, "proxy:15006 orig=127.0.0.2:8080 peer=lo", land(), "default 127.0.0.1/32")
	cmd := toolCmd(b, redirect...)
	cmd.Env = append(cmd.Env, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=127.0.0.0/8")
	runInstall(t, cmd)
	assert.Equal(t, "app:8080 peer=lo", land(), "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=127.0.0.0/8")
}

// TestGroupNames: group names that resolve give exactly the rules their
// numbers give (issue 16.4), for -g and the owner-group lists, in the
// kernel.
func TestGroupNames(t *testing.T) {
	requireRoot(t)
	g, err := osuser.LookupGroupId("1")
	if err != nil {
		t.Skipf("no group with GID 1 here: %v", err)
	}
	byName, byNumber := newPodNS(t), newPodNS(t)
	for ns, ids := range map[string][2]string{byName: {g.Name, "users"}, byNumber: {"1", "100"}} {
		args := append(append([]string{}, ourBase...), "-g", ids[0], "--istio-outbound-owner-groups", ids[0]+","+ids[1])
		out, err := podCmd(ns, newLockFile(t), initContainer, append([]string{toolBin}, args...)...).CombinedOutput()
		require.NoError(t, err, "%s\n%s", quote(args), out)
	}
	want := nsState(t, byNumber)
	require.Regexp(t, `--gid-owner 100|skgid != 100`, want, "the owner groups reached the kernel")
	assert.Equal(t, want, nsState(t, byName))
}
