package e2e

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
)

// gapsEnv runs the tests of behaviour the SPEC's rules do not deliver yet.
const gapsEnv = "E2E_SPEC_GAPS"

// TestTPROXYOriginalSource forwards an inbound TPROXY connection the way
// Envoy's original_src listener filter does in TPROXY mode: from the client's
// own address, on a transparent socket marked 1337. The app should see the
// client's address. The mark-1337 rules of SPEC §3.3 (PREROUTING
// CONNMARK --save-mark, OUTPUT -o lo --mark 1337 RETURN, OUTPUT CONNMARK
// --restore-mark, ISTIO_INBOUND --mark 1337 RETURN) and the policy route
// exist for this connection, but the SPEC's nat rule
// `-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT`
// redirects it back to 15006 first (IPv6 loops, IPv4 times out). A nat
// `-A ISTIO_OUTPUT -m mark --mark 1337 -j RETURN` at the top makes it pass.
func TestTPROXYOriginalSource(t *testing.T) {
	requireRoot(t)
	if os.Getenv(gapsEnv) == "" {
		t.Skipf("SPEC §3.3 gap: the nat owner rule captures the proxy's original_src upstream; set %s=1 to run", gapsEnv)
	}
	b := newBed(t)
	install(t, b, tproxy...)
	c := conn{from: fromClient, to: "pod", port: 8080, src: true}
	for _, f := range families {
		assert.Equal(t, "proxy:15006 orig=pod:8080 peer=client > app:8080 peer=client", land(b, c, f), "%s %s", f, c.name())
	}
}
