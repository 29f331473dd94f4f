package e2e

import (
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTPROXYOriginalSource forwards an inbound TPROXY connection the way
// Envoy's original_src listener filter does in TPROXY mode: from the
// client's own address, on a transparent socket marked 1337. The app must
// see the client's address, in both families. Istio's rules send this
// upstream back to 15006: the nat owner rule
// `-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT`
// takes it first (IPv6 loops, IPv4 times out). Ours starts nat
// ISTIO_OUTPUT with `-m mark --mark 1337 -j RETURN` in TPROXY mode (issue
// 16); the test then deletes that one rule and checks that the same
// connection no longer lands, so it fails without the rule.
func TestTPROXYOriginalSource(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	install(t, b, tproxy...)
	c := conn{from: fromClient, to: "pod", port: 8080, src: true}
	want := "proxy:15006 orig=pod:8080 peer=client > app:8080 peer=client"
	for _, f := range families {
		assert.Equal(t, want, land(b, c, f), "%s %s", f, c.name())
	}
	if nativeNft() {
		t.Log("native nftables backend: the rule is in table inet istio-iptables; the removal check runs on the iptables backends")
		return
	}
	for _, save := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command("ip", "netns", "exec", b.pod, save, "-t", "nat", "-D", "ISTIO_OUTPUT",
			"-m", "mark", "--mark", "1337", "-j", "RETURN").CombinedOutput()
		require.NoError(t, err, "%s -D the TPROXY mark RETURN: %s", save, out)
	}
	for _, f := range families {
		assert.NotEqual(t, want, land(b, c, f), "%s %s still lands without the rule", f, c.name())
	}
}
