package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// family is an IP family a case runs in.
type family string

const (
	ipv4 family = "ipv4"
	ipv6 family = "ipv6"
)

var families = []family{ipv4, ipv6}

// The bed's address plan. Cases and expectations name addresses by these keys,
// so one table serves both families; observed addresses are mapped back to
// them before comparing (see name).
//
//	client ns            pod ns                         remote ns
//	eth0 client ------- eth0 pod    eth1 podr ------- eth0 remote
//	10.66.1.2           10.66.1.1   10.66.2.1         10.66.2.2
//	fd66:1::2           fd66:1::1   fd66:2::1         fd66:2::2
//	(route to vip                   (route to remote2  + remote2 10.66.3.2
//	 10.66.9.9, fd66:9::9 via pod)   via remote)          fd66:3::2
var addrs = map[string]map[family]string{
	"client":  {ipv4: "10.66.1.2", ipv6: "fd66:1::2"},
	"pod":     {ipv4: "10.66.1.1", ipv6: "fd66:1::1"},
	"podr":    {ipv4: "10.66.2.1", ipv6: "fd66:2::1"},
	"remote":  {ipv4: "10.66.2.2", ipv6: "fd66:2::2"},
	"remote2": {ipv4: "10.66.3.2", ipv6: "fd66:3::2"},
	"lo":      {ipv4: "127.0.0.1", ipv6: "::1"},
	"pass":    {ipv4: "127.0.0.6", ipv6: "::6"},       // the proxy's inbound passthrough source
	"vip":     {ipv4: "10.66.9.9", ipv6: "fd66:9::9"}, // not the pod's, routed to it by the client
}

// remote2Nets is the routed network behind the remote, the CIDR used with -i and -x.
var remote2Nets = map[family]string{ipv4: "10.66.3.0/24", ipv6: "fd66:3::/64"}

// name returns the address book key of ip, or ip itself when it has none.
func name(ip string) string {
	parsed := net.ParseIP(ip)
	for key, byFamily := range addrs {
		for _, a := range byFamily {
			if parsed != nil && parsed.Equal(net.ParseIP(a)) {
				return key
			}
		}
	}
	return ip
}

// bed is one set of namespaces: the pod under test, a client outside it that
// connects in, and a remote the pod connects out to.
type bed struct {
	pod, client, remote string // names under /var/run/netns
	lockFile            string // this bed's private XTABLES_LOCKFILE
}

// podPath is what a CNI plugin passes as --netns.
func (b *bed) podPath() string { return "/var/run/netns/" + b.pod }

// newBed creates the namespaces, links, addresses and routes of the address
// plan, and removes them all when t ends.
func newBed(t *testing.T) *bed {
	t.Helper()
	id := make([]byte, 4)
	_, err := rand.Read(id)
	require.NoError(t, err)
	prefix := "ii-e2e-" + hex.EncodeToString(id)
	b := &bed{pod: prefix + "-pod", client: prefix + "-cli", remote: prefix + "-rem", lockFile: newLockFile(t)}

	pod := addNetns(t, b.pod)
	client := addNetns(t, b.client)
	remote := addNetns(t, b.remote)

	addVeth(t, pod, "eth0", client, "eth0")
	addVeth(t, pod, "eth1", remote, "eth0")
	for _, f := range families {
		addAddr(t, pod, "eth0", addrs["pod"][f], 24, 64)
		addAddr(t, client, "eth0", addrs["client"][f], 24, 64)
		addAddr(t, pod, "eth1", addrs["podr"][f], 24, 64)
		addAddr(t, remote, "eth0", addrs["remote"][f], 24, 64)
		addAddr(t, remote, "eth0", addrs["remote2"][f], 32, 128)
		addRoute(t, pod, remote2Nets[f], addrs["remote"][f])
		addRoute(t, client, hostCIDR(addrs["vip"][f]), addrs["pod"][f])
	}

	startServer(t, b.pod, "server", appServer, envName+"=app", envPorts+"="+appPorts)
	startServer(t, b.pod, "proxy", proxyUser, envPorts+"="+proxyPorts, envTransparent+"="+inboundPort)
	startServer(t, b.remote, "server", rootUser, envName+"=remote", envPorts+"="+remotePorts)
	return b
}

// What listens where. The app also serves the tunnel port and the ports the
// matrix excludes with -d, so a connection that is not captured reaches it.
const (
	appPorts    = "80,8080,15008,15090,15021,15020"
	proxyPorts  = "15001,15006"
	inboundPort = "15006" // the proxy's transparent listener, for TPROXY
	remotePorts = "8080,9090"
)

// netnsHandle is an open namespace and a netlink handle working inside it.
type netnsHandle struct {
	ns netns.NsHandle
	nl *netlink.Handle
}

// addNetns creates a named namespace with lo up, deleted in t.Cleanup.
func addNetns(t *testing.T, name string) netnsHandle {
	t.Helper()
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "ip netns add %s: %s", name, out)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	nl, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	t.Cleanup(nl.Close)
	setUp(t, nl, "lo")
	return netnsHandle{ns: ns, nl: nl}
}

// addVeth joins two namespaces with a veth pair and brings both ends up.
func addVeth(t *testing.T, a netnsHandle, name string, b netnsHandle, peerName string) {
	t.Helper()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      peerName,
		PeerNamespace: netlink.NsFd(b.ns),
	}
	require.NoError(t, a.nl.LinkAdd(veth), "add veth %s/%s", name, peerName)
	setUp(t, a.nl, name)
	setUp(t, b.nl, peerName)
}

func setUp(t *testing.T, h *netlink.Handle, name string) {
	t.Helper()
	link, err := h.LinkByName(name)
	require.NoError(t, err, "find link %s", name)
	require.NoError(t, h.LinkSetUp(link), "set %s up", name)
}

// addAddr adds ip to the link, with prefix length bits4 or bits6 by family.
// IPv6 addresses skip duplicate address detection so they work at once.
func addAddr(t *testing.T, h netnsHandle, link, ip string, bits4, bits6 int) {
	t.Helper()
	l, err := h.nl.LinkByName(link)
	require.NoError(t, err)
	parsed := net.ParseIP(ip)
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: parsed, Mask: net.CIDRMask(bits4, 32)}}
	if parsed.To4() == nil {
		addr.IPNet.Mask = net.CIDRMask(bits6, 128)
		addr.Flags = unix.IFA_F_NODAD
	}
	require.NoError(t, h.nl.AddrAdd(l, addr), "add %s to %s", addr.IPNet, link)
}

// hostCIDR is ip as a one-address prefix.
func hostCIDR(ip string) string {
	if net.ParseIP(ip).To4() != nil {
		return ip + "/32"
	}
	return ip + "/128"
}

// addRoute adds a route to cidr via gw.
func addRoute(t *testing.T, h netnsHandle, cidr, gw string) {
	t.Helper()
	_, dst, err := net.ParseCIDR(cidr)
	require.NoError(t, err)
	require.NoError(t, h.nl.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP(gw)}), "route %s via %s", cidr, gw)
}
