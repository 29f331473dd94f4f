package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestFailClosed: with the rules in place, in both modes and both
// families, no process in the pod reaches a captured destination without
// passing the proxy, except the configured UID and GID (1337). The app
// (UID 1000), root and an unlisted UID connect to the remote, to a routed
// network behind it and to a port nobody serves: every connection must
// land on the proxy's outbound listener (which replies with the original
// destination it recorded), never on the remote. The proxy's UID alone and
// its GID alone reach the remote directly.
func TestFailClosed(t *testing.T) {
	requireRoot(t)
	other := user{name: "uid1338", uid: 1338, gid: 1338}
	rootApp := user{name: "root-gid1000", uid: 0, gid: 1000}
	for _, mode := range []string{"REDIRECT", "TPROXY"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			install(t, b, "-p", "15001", "-z", "15006", "-u", "1337", "-m", mode, "-i", "*", "-x", "",
				"-b", "*", "-d", "15090,15021,15020", "--ipv6=true")
			var table strings.Builder
			for _, f := range families {
				for _, tc := range []struct {
					as     user
					bypass bool
				}{
					{appUser, false}, {rootUser, false}, {rootApp, false}, {other, false},
					{uidUser, true}, {gidUser, true}, {proxyUser, true},
				} {
					for _, dst := range []struct {
						to     string
						port   int
						served bool // whether the remote listens there
					}{
						{"remote", 8080, true}, {"remote", 9090, true}, {"remote2", 8080, true}, {"remote", 7070, false},
					} {
						addr := net.JoinHostPort(addrs[dst.to][f], strconv.Itoa(dst.port))
						direct := "ERR refused" // the reply when not captured
						if dst.served {
							direct = fmt.Sprintf("remote port=%d local=%s ", dst.port, addr)
						}
						reply, err := connect(b.pod, tc.as, addr, "GET")
						got := strings.TrimSpace(reply)
						if err != nil {
							got = "ERR " + err.Error()
						}
						want := "proxy port=15001 orig=" + addr
						if tc.bypass {
							want = direct
						}
						fmt.Fprintf(&table, "%-5s %-20s → %-20s %s\n", f, fmt.Sprintf("%s(%d:%d)", tc.as.name, tc.as.uid, tc.as.gid), addr, got)
						assert.True(t, strings.HasPrefix(got, want), "%s %s as %s (uid %d gid %d) → %s: got %q, want %q…",
							mode, f, tc.as.name, tc.as.uid, tc.as.gid, addr, got, want)
						if !tc.bypass {
							assert.NotContains(t, got, "remote", "a captured connection reached the remote")
							assert.NotContains(t, got, ">", "the proxy was asked for no second hop")
						}
					}
				}
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("%s, where each connection landed:\n%s", mode, table.String())
			}
		})
	}
}
