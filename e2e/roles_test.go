package e2e

// The helper roles. TestMain runs one of them instead of the tests when
// E2E_HELPER is set; spawn_test.go starts them inside a namespace under a
// chosen UID and GID. Every connection carries one request line from the
// client ("GET" or "FWD") and one reply line per hop from the servers:
//
//	<name> port=<listening port> local=<ip:port> peer=<ip:port>           (server)
//	proxy port=<listener port> orig=<ip:port> peer=<ip:port> [> upstream]  (proxy)

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Helper environment: which ports to serve, what to call oneself, where to
// connect and what to send.
const (
	envName        = "E2E_NAME"        // server: the name in its reply lines
	envPorts       = "E2E_PORTS"       // server, proxy: comma list of ports
	envTransparent = "E2E_TRANSPARENT" // proxy: ports listening with IP_TRANSPARENT
	envAddr        = "E2E_ADDR"        // client: ip:port to connect to
	envSend        = "E2E_SEND"        // client: request line, GET or FWD
)

// soOriginalDst is SO_ORIGINAL_DST (SOL_IP) and IP6T_SO_ORIGINAL_DST
// (SOL_IPV6): the destination a connection had before nat REDIRECT.
const soOriginalDst = 80

const ioTimeout = 2 * time.Second

func runHelper(role string) int {
	var err error
	switch role {
	case "server":
		err = serve(os.Getenv(envName), ports(envPorts), nil, serverReply)
	case "proxy":
		err = serve("proxy", ports(envPorts), ports(envTransparent), proxyReply)
	case "client":
		err = client(os.Getenv(envAddr), os.Getenv(envSend))
	default:
		if run, ok := extraRoles[role]; ok {
			err = run()
		} else {
			err = fmt.Errorf("unknown role %q", role)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	return 0
}

// extraRoles are the roles other test files add (dns_test.go,
// invalid_test.go), by name.
var extraRoles = map[string]func() error{}

func ports(env string) map[int]bool {
	set := map[int]bool{}
	for _, p := range strings.Split(os.Getenv(env), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(p)); err == nil {
			set[n] = true
		}
	}
	return set
}

// replyFunc answers one accepted connection after its request line was read.
type replyFunc func(name string, port int, c *net.TCPConn, request string) string

// serve listens on every port on both families, prints "ready" once all
// listen, then answers each connection with one reply and closes it.
func serve(name string, portSet, transparent map[int]bool, reply replyFunc) error {
	for port := range portSet {
		for _, network := range []string{"tcp4", "tcp6"} {
			lc := net.ListenConfig{}
			if transparent[port] {
				lc.Control = setTransparent
			}
			ln, err := lc.Listen(context.Background(), network, fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			go accept(ln, name, port, reply)
		}
	}
	fmt.Println("ready")
	select {} // until killed
}

func accept(ln net.Listener, name string, port int, reply replyFunc) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			return
		}
		go func() {
			defer c.Close()
			tc := c.(*net.TCPConn)
			_ = tc.SetDeadline(time.Now().Add(2 * ioTimeout))
			request, _ := bufio.NewReader(tc).ReadString('\n')
			_, _ = io.WriteString(tc, reply(name, port, tc, strings.TrimSpace(request))+"\n")
		}()
	}
}

// setTransparent sets IP_TRANSPARENT or IPV6_TRANSPARENT, which TPROXY needs
// to hand a listener connections for addresses it does not listen on.
func setTransparent(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
	})
	return errors.Join(err, serr)
}

func serverReply(name string, port int, c *net.TCPConn, _ string) string {
	return fmt.Sprintf("%s port=%d local=%s peer=%s", name, port, c.LocalAddr(), c.RemoteAddr())
}

// proxyReply plays Envoy: it reports the listener and the original
// destination, and on FWD connects to that destination itself, from
// 127.0.0.6 or ::6 when it is the pod's own address (inbound passthrough),
// and appends the upstream's reply.
func proxyReply(_ string, port int, c *net.TCPConn, request string) string {
	orig := originalDst(c)
	line := fmt.Sprintf("proxy port=%d orig=%s peer=%s", port, orig, c.RemoteAddr())
	var up string
	var err error
	switch request {
	case "FWD":
		up, err = forward(orig)
	case "SRC":
		up, err = forwardAs(orig, c.RemoteAddr().(*net.TCPAddr).IP)
	default:
		return line
	}
	if err != nil {
		return line + " > error " + err.Error()
	}
	return line + " > " + up
}

// originalDst is the destination before nat REDIRECT (SO_ORIGINAL_DST); a
// TPROXY connection keeps it as its local address, the fallback.
func originalDst(c *net.TCPConn) *net.TCPAddr {
	local := c.LocalAddr().(*net.TCPAddr)
	level, size := unix.SOL_IP, unix.SizeofSockaddrInet4
	if local.IP.To4() == nil {
		level, size = unix.SOL_IPV6, unix.SizeofSockaddrInet6
	}
	buf := make([]byte, size)
	rc, err := c.SyscallConn()
	if err != nil {
		return local
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = getsockopt(fd, level, soOriginalDst, buf) }); err != nil || serr != nil {
		return local
	}
	// struct sockaddr_in / sockaddr_in6: family, port (big endian), [flowinfo,] address.
	port := int(binary.BigEndian.Uint16(buf[2:4]))
	if level == unix.SOL_IP {
		return &net.TCPAddr{IP: net.IP(buf[4:8]), Port: port}
	}
	return &net.TCPAddr{IP: net.IP(buf[8:24]), Port: port}
}

func getsockopt(fd uintptr, level, opt int, buf []byte) error {
	size := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// forward connects to dst as the proxy would and returns the upstream's reply.
func forward(dst *net.TCPAddr) (string, error) {
	d := net.Dialer{Timeout: ioTimeout / 2}
	if isLocal(dst.IP) {
		src := "127.0.0.6"
		if dst.IP.To4() == nil {
			src = "::6"
		}
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	reply, err := request(d, dst.String(), "GET")
	return strings.TrimSpace(reply), err
}

// forwardAs connects to dst from the client's own address, as Envoy's
// original_src filter does in TPROXY mode: a transparent socket with mark 1337.
func forwardAs(dst *net.TCPAddr, src net.IP) (string, error) {
	d := net.Dialer{Timeout: ioTimeout / 2, LocalAddr: &net.TCPAddr{IP: src}}
	d.Control = func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, 1337)
		})
		return errors.Join(err, serr, setTransparent(network, address, rc))
	}
	reply, err := request(d, dst.String(), "GET")
	return strings.TrimSpace(reply), err
}

// isLocal reports whether ip is an address of this namespace, other than
// loopback: the pod's own address.
func isLocal(ip net.IP) bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) && !ip.IsLoopback() {
			return true
		}
	}
	return false
}

// client connects to addr, sends one request line and prints the reply.
func client(addr, send string) error {
	reply, err := request(net.Dialer{Timeout: ioTimeout}, addr, send)
	if err != nil {
		return err
	}
	fmt.Print(reply)
	return nil
}

// request sends one line on a new connection and reads everything back.
func request(d net.Dialer, addr, send string) (string, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", classify(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * ioTimeout))
	if _, err := io.WriteString(c, send+"\n"); err != nil {
		return "", classify(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil {
		return "", classify(err)
	}
	if len(reply) == 0 {
		return "", errors.New("empty reply")
	}
	return string(reply), nil
}

// classify shortens the errors a matrix cell shows.
func classify(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("refused")
	case errors.Is(err, syscall.ECONNRESET):
		return errors.New("reset")
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return errors.New("unreachable")
	case errors.As(err, &ne) && ne.Timeout():
		return errors.New("timeout")
	}
	return err
}
