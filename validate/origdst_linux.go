//go:build linux

package validate

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"
)

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h).
const ip6tSoOriginalDst = 80

// originalPort reads the destination port a connection had before nat
// REDIRECT (SO_ORIGINAL_DST, or its IPv6 twin).
func originalPort(c *net.TCPConn) (uint16, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	v6 := c.LocalAddr().(*net.TCPAddr).IP.To4() == nil
	var port uint16
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v6 {
			// struct sockaddr_in6 fits in IPv6MTUInfo's address field.
			var info *unix.IPv6MTUInfo
			info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.IPPROTO_IPV6, ip6tSoOriginalDst)
			if serr == nil {
				// The port field holds network byte order in memory.
				var b [2]byte
				binary.NativeEndian.PutUint16(b[:], info.Addr.Port)
				port = binary.BigEndian.Uint16(b[:])
			}
			return
		}
		// struct sockaddr_in fits in IPv6Mreq.
		var mreq *unix.IPv6Mreq
		mreq, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
		if serr == nil {
			port = binary.BigEndian.Uint16(mreq.Multiaddr[2:4])
		}
	})
	if err != nil {
		return 0, err
	}
	return port, serr
}
