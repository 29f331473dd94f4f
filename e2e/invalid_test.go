package e2e

// --drop-invalid with a real INVALID packet: from the client namespace, a
// raw socket sends a lone SYN-ACK to the app's port 80 on the pod. No
// connection is open, so conntrack finds the packet INVALID (a SYN-ACK
// cannot start one) and does not NAT it; the pod's TCP stack answers it
// with a reset. With --drop-invalid the packet is dropped in mangle
// PREROUTING before it gets there, and no reset comes back. The helper
// role:
//
//	invalid-probe  sends the SYN-ACK from E2E_SRC to E2E_ADDR and prints
//	               "rst" when a reset for it comes back within a second,
//	               else "none".

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const envSrc = "E2E_SRC" // invalid-probe: source address

func init() {
	extraRoles["invalid-probe"] = func() error {
		got, err := invalidProbe(os.Getenv(envSrc), os.Getenv(envAddr))
		if err != nil {
			return err
		}
		fmt.Println(got)
		return nil
	}
}

// tcpFlags of the probe and of the reset it may draw.
const (
	flagRST    = 0x04
	flagSYNACK = 0x12
)

// invalidProbe sends one SYN-ACK from src to dst (ip:port) on a raw
// socket and waits a second for a reset from dst to it.
func invalidProbe(src, dst string) (string, error) {
	s, err := netip.ParseAddr(src)
	if err != nil {
		return "", err
	}
	d, err := netip.ParseAddrPort(dst)
	if err != nil {
		return "", err
	}
	af := unix.AF_INET
	if s.Is6() {
		af = unix.AF_INET6
	}
	fd, err := unix.Socket(af, unix.SOCK_RAW, unix.IPPROTO_TCP)
	if err != nil {
		return "", fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
		return "", err
	}
	var rnd [10]byte
	_, _ = rand.Read(rnd[:])
	sport := 40000 + binary.BigEndian.Uint16(rnd[:2])%20000
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], d.Port())
	copy(seg[4:12], rnd[2:10]) // random sequence and acknowledgment numbers
	seg[12] = 5 << 4           // data offset: 20 bytes
	seg[13] = flagSYNACK
	binary.BigEndian.PutUint16(seg[14:], 65535)
	binary.BigEndian.PutUint16(seg[16:], tcpChecksum(s, d.Addr(), seg))
	var to unix.Sockaddr
	if af == unix.AF_INET {
		to = &unix.SockaddrInet4{Addr: d.Addr().As4()}
	} else {
		to = &unix.SockaddrInet6{Addr: d.Addr().As16()}
	}
	if err := unix.Sendto(fd, seg, 0, to); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("receive: %w", err)
		}
		tcp := buf[:n]
		if af == unix.AF_INET { // IPv4 raw sockets see the IP header
			if n < 20 {
				continue
			}
			tcp = buf[int(buf[0]&0x0f)*4 : n]
		}
		if len(tcp) >= 14 && binary.BigEndian.Uint16(tcp[0:]) == d.Port() &&
			binary.BigEndian.Uint16(tcp[2:]) == sport && tcp[13]&flagRST != 0 {
			return "rst", nil
		}
	}
	return "none", nil
}

// tcpChecksum is the TCP checksum of seg from src to dst (pseudo header
// included).
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var p []byte
	p = append(p, src.AsSlice()...)
	p = append(p, dst.AsSlice()...)
	if src.Is4() {
		p = append(p, 0, unix.IPPROTO_TCP)
		p = binary.BigEndian.AppendUint16(p, uint16(len(seg)))
	} else {
		p = binary.BigEndian.AppendUint32(p, uint32(len(seg)))
		p = append(p, 0, 0, 0, unix.IPPROTO_TCP)
	}
	p = append(p, seg...)
	if len(p)%2 == 1 {
		p = append(p, 0)
	}
	var sum uint32
	for i := 0; i < len(p); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// probeInvalid runs invalid-probe from the client to the pod's port 80.
func probeInvalid(t *testing.T, b *bed, f family) string {
	t.Helper()
	cmd := helperCmd("invalid-probe", rootUser, envSrc+"="+addrs["client"][f],
		envAddr+"="+net.JoinHostPort(addrs["pod"][f], "80"))
	var out strings.Builder
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.WaitDelay = 5 * time.Second
	require.NoError(t, startIn(b.client, cmd))
	require.NoError(t, cmd.Wait(), "invalid-probe: %s", stderr.String())
	return strings.TrimSpace(out.String())
}

// dropCounter reads how many packets mangle ISTIO_DROP dropped in family f.
func dropCounter(t *testing.T, b *bed, f family) int {
	t.Helper()
	save := "iptables-nft-save"
	if f == ipv6 {
		save = "ip6tables-nft-save"
	}
	out, err := exec.Command("ip", "netns", "exec", b.pod, save, "-c", "-t", "mangle").CombinedOutput()
	require.NoError(t, err, "%s", out)
	m := regexp.MustCompile(`(?m)^\[(\d+):\d+\] -A ISTIO_DROP -j DROP$`).FindSubmatch(out)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	return n
}

// TestDropInvalid: the INVALID SYN-ACK draws a reset without the rules and
// with the rules but without --drop-invalid; with --drop-invalid (REDIRECT
// and TPROXY) it is dropped and counted, while ordinary connections land
// as before. Cleanup removes ISTIO_DROP and the reset is back.
func TestDropInvalid(t *testing.T) {
	requireRoot(t)
	inbound := conn{from: fromClient, to: "pod", port: 80}
	for _, tc := range []struct {
		name    string
		args    []string
		want    string // what the probe sees
		landing string // where client→pod:80 lands
	}{
		{"no rules", nil, "rst", "app:80 peer=client"},
		{"REDIRECT", redirect, "rst", "proxy:15006 orig=pod:80 peer=client"},
		{"REDIRECT --drop-invalid", append(append([]string{}, redirect...), "--drop-invalid"), "none", "proxy:15006 orig=pod:80 peer=client"},
		{"TPROXY --drop-invalid", append(append([]string{}, tproxy...), "--drop-invalid"), "none", "proxy:15006 orig=pod:80 peer=client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			if tc.args != nil {
				install(t, b, tc.args...)
			}
			for _, f := range families {
				assert.Equal(t, tc.want, probeInvalid(t, b, f), "%s: INVALID SYN-ACK to pod:80", f)
				if tc.want == "none" && !nativeNft() { // native rules carry no counter
					assert.Positive(t, dropCounter(t, b, f), "%s: ISTIO_DROP counted it", f)
				}
				assert.Equal(t, tc.landing, land(b, inbound, f), "%s: %s", f, inbound.name())
			}
			if tc.want == "none" {
				install(t, b, "--cleanup-only")
				for _, f := range families {
					assert.Equal(t, -1, dropCounter(t, b, f), "%s: ISTIO_DROP removed", f)
					assert.Equal(t, "rst", probeInvalid(t, b, f), "%s: after cleanup", f)
				}
			}
		})
	}
}
