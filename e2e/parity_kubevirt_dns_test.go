package e2e

import (
	"net"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// DNS capture on -k interfaces (issue 16, beyond parity; Istio issue
// 44996 is open): a VM behind a kube-virt interface sends its DNS through
// the pod, and with --redirect-dns it must reach the agent like the app's.
//
//	vm ns                  pod ns (the DNS bed)
//	eth0 vm  ----------- virt0 virt            eth1 podr ---- remote (DNS server)
//	10.66.4.2            10.66.4.1
//	fd66:4::2            fd66:4::1
//
// The pod routes the VM's traffic (forwarding on). nat REDIRECT in
// PREROUTING hands a packet to the address of the interface it came in
// on, so the agent answering the VM listens there (dns-agent-virt, UID
// 1337, on virt's addresses); Istio's agent listens on localhost only,
// which docs/parity.md says.

func init() {
	addrs["vm"] = map[family]string{ipv4: "10.66.4.2", ipv6: "fd66:4::2"}
	addrs["virt"] = map[family]string{ipv4: "10.66.4.1", ipv6: "fd66:4::1"}
	extraRoles["dns-agent-virt"] = func() error {
		return serveDNS([]string{addrs["virt"][ipv4], addrs["virt"][ipv6]}, 15053, agentAnswer(nil))
	}
}

// addVM adds the vm namespace behind the pod's virt0 and returns its name.
func addVM(t *testing.T, b *bed) string {
	t.Helper()
	name := b.pod[:len(b.pod)-len("-pod")] + "-vm"
	vm := addNetns(t, name)
	pod := openNetns(t, b.pod)
	remote := openNetns(t, b.remote)
	addVeth(t, pod, "virt0", vm, "eth0")
	for _, f := range families {
		addAddr(t, pod, "virt0", addrs["virt"][f], 24, 64)
		addAddr(t, vm, "eth0", addrs["vm"][f], 24, 64)
		remoteNet := map[family]string{ipv4: "10.66.2.0/24", ipv6: "fd66:2::/64"}[f]
		vmNet := map[family]string{ipv4: "10.66.4.0/24", ipv6: "fd66:4::/64"}[f]
		addRoute(t, vm, remoteNet, addrs["virt"][f])
		addRoute(t, remote, vmNet, addrs["podr"][f])
	}
	// Forwarding on in the pod (no sysctl binary needed: /proc/sys/net is
	// the namespace's own).
	for _, knob := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		out, err := exec.Command("ip", "netns", "exec", b.pod, "sh", "-c", "echo 1 > "+knob).CombinedOutput()
		require.NoError(t, err, "enable %s: %s", knob, out)
	}
	startServer(t, b.pod, "dns-agent-virt", proxyUser)
	return name
}

// openNetns opens an existing namespace of the bed for netlink.
func openNetns(t *testing.T, name string) netnsHandle {
	t.Helper()
	ns, err := netns.GetFromName(name)
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	nl, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	t.Cleanup(nl.Close)
	return netnsHandle{ns: ns, nl: nl}
}

// TestKubeVirtDNS: a VM's DNS to the listed server, over udp and tcp in
// both families, reaches the server through the pod without rules, and
// the agent with `-k virt0 --redirect-dns`. Deleting our nat PREROUTING
// jump sends it on to the server again: the test fails without the rule.
func TestKubeVirtDNS(t *testing.T) {
	requireRoot(t)
	b := newDNSBed(t)
	vm := addVM(t, b)
	servers := addrs["remote"][ipv4] + "," + addrs["remote"][ipv6]
	args := specArgs("REDIRECT", "-i", "*", "-k", "virt0", "--redirect-dns", "--dns-servers", servers)
	ask := func(phase, want string, protos ...string) []row {
		var rows []row
		for _, f := range families {
			for _, proto := range protos {
				got := dig(t, vm, rootUser, proto, net.JoinHostPort(addrs["remote"][f], "53"), "who")["who"]
				rows = append(rows, row{family: f, conn: conn{from: source{name: "vm/" + proto + " " + phase}, to: "remote", port: 53}, want: want, got: got})
			}
		}
		return rows
	}
	// Warm up the routed path first (neighbour discovery through the pod
	// can eat the very first UDP query under load); the answers are not
	// checked.
	for _, f := range families {
		dig(t, vm, rootUser, "tcp", net.JoinHostPort(addrs["remote"][f], "53"), "warm-up")
	}
	rows := ask("no rules", "remote:53 peer=vm", "udp", "tcp")
	install(t, b, args...)
	rows = append(rows, ask("-k virt0 --redirect-dns", "agent:15053 peer=vm", "udp", "tcp")...)
	if !nativeNft() {
		for _, ipt := range []string{"iptables", "ip6tables"} {
			out, err := exec.Command("ip", "netns", "exec", b.pod, ipt, "-t", "nat", "-D", "PREROUTING", "-i", "virt0", "-j", "ISTIO_OUTPUT_DNS").CombinedOutput()
			require.NoError(t, err, "%s: %s", ipt, out)
		}
		// udp goes on to the server again (tcp would meet -k's ISTIO_REDIRECT).
		rows = append(rows, ask("without the -k DNS jump", "remote:53 peer=vm", "udp")...)
	}
	assertTable(t, config{name: "DNS on -k", runs: [][]string{args}}, rows)
}
