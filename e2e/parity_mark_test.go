package e2e

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// --proxy-mark (issue 16): the proxy is told apart by the socket mark it
// sets (SO_MARK), not by its UID. The markproxy role plays such a proxy:
// it runs as the app's own UID 1000 (with CAP_NET_ADMIN, which SO_MARK
// needs), listens on 15001 and 15006, and for a request "MARK <mark>
// <hops>" forwards to the original destination on a socket marked <mark>
// (none for 0), sending "MARK <mark> <hops+1>", and plain "GET" once
// hops reaches markHops: a connection that loops back to the proxy shows
// as a chain of proxy hops.

const markHops = 4

// markProxyUser is the marked proxy: the app's UID and GID.
var markProxyUser = user{name: "markproxy", uid: 1000, gid: 1000, caps: []uintptr{unix.CAP_NET_ADMIN}}

func init() {
	extraRoles["markproxy"] = func() error {
		return serve("proxy", ports(envPorts), nil, markProxyReply)
	}
}

func markProxyReply(_ string, port int, c *net.TCPConn, req string) string {
	orig := originalDst(c)
	line := fmt.Sprintf("proxy port=%d orig=%s peer=%s", port, orig, c.RemoteAddr())
	f := strings.Fields(req)
	if len(f) != 3 || f[0] != "MARK" {
		return line
	}
	mark, err1 := strconv.Atoi(f[1])
	hops, err2 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2); err != nil {
		return line + " > error " + err.Error()
	}
	next := fmt.Sprintf("MARK %d %d", mark, hops+1)
	if hops+1 >= markHops {
		next = "GET"
	}
	d := net.Dialer{Timeout: ioTimeout / 2}
	if isLocal(orig.IP) { // inbound passthrough, as the test proxy does
		src := "127.0.0.6"
		if orig.IP.To4() == nil {
			src = "::6"
		}
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	if mark != 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark) })
			return errors.Join(err, serr)
		}
	}
	up, err := request(d, orig.String(), next)
	if err != nil {
		return line + " > error " + classify(err).Error()
	}
	return line + " > " + strings.TrimSpace(up)
}

// newMarkBed is newBed with the marked proxy (UID 1000) in place of the
// test proxy (UID 1337).
func newMarkBed(t *testing.T) *bed {
	t.Helper()
	prefix := "ii-mark-" + parityID(t)
	b := &bed{pod: prefix + "-pod", client: prefix + "-cli", remote: prefix + "-rem", lockFile: newLockFile(t)}
	pod, client, remote := addNetns(t, b.pod), addNetns(t, b.client), addNetns(t, b.remote)
	addVeth(t, pod, "eth0", client, "eth0")
	addVeth(t, pod, "eth1", remote, "eth0")
	for _, f := range families {
		addAddr(t, pod, "eth0", addrs["pod"][f], 24, 64)
		addAddr(t, client, "eth0", addrs["client"][f], 24, 64)
		addAddr(t, pod, "eth1", addrs["podr"][f], 24, 64)
		addAddr(t, remote, "eth0", addrs["remote"][f], 24, 64)
	}
	startServer(t, b.pod, "server", appServer, envName+"=app", envPorts+"="+appPorts)
	startServer(t, b.pod, "markproxy", markProxyUser, envPorts+"="+proxyPorts)
	startServer(t, b.remote, "server", rootUser, envName+"=remote", envPorts+"="+remotePorts)
	return b
}

// TestProxyMark: with `-u ” --proxy-mark 4242` the mark is the only
// exemption, so the app, though it shares the proxy's UID, is captured
// (outbound and over lo as the contract says), while the proxy's marked
// upstream goes direct, outbound and inbound, in both families. The same
// proxy without the mark loops back into itself: the test shows it.
func TestProxyMark(t *testing.T) {
	requireRoot(t)
	b := newMarkBed(t)
	args := []string{"-p", "15001", "-z", "15006", "-u", "", "-m", "REDIRECT", "-i", "*", "-b", "*",
		"-d", "15090,15021,15020", "--proxy-mark", "4242"}
	install(t, b, args...)
	loop := strings.Repeat("proxy:15001 orig=remote:8080 peer=podr > ", markHops) + "proxy:15001 orig=remote:8080 peer=podr"
	var rows []row
	for _, f := range families {
		for _, c := range []struct {
			from       source
			to         string
			port       int
			send, want string
		}{
			{from: fromApp, to: "remote", port: 8080, send: "GET", want: "proxy:15001 orig=remote:8080 peer=podr"},
			{from: fromApp, to: "lo", port: 80, send: "GET", want: "app:80 peer=lo"},
			{from: fromApp, to: "remote", port: 8080, send: "MARK 4242 0",
				want: "proxy:15001 orig=remote:8080 peer=podr > remote:8080 peer=podr"},
			{from: fromClient, to: "pod", port: 80, send: "MARK 4242 0",
				want: "proxy:15006 orig=pod:80 peer=client > app:80 peer=pass"},
			{from: fromApp, to: "remote", port: 8080, send: "MARK 0 0", want: loop},
		} {
			addr := net.JoinHostPort(addrs[c.to][f], strconv.Itoa(c.port))
			reply, err := connect(c.from.ns(b), c.from.as, addr, c.send)
			got := render(reply)
			if err != nil {
				got = "ERR " + err.Error()
			}
			label := conn{from: source{name: c.from.name + " " + strconv.Quote(c.send)}, to: c.to, port: c.port}
			rows = append(rows, row{family: f, conn: label, want: c.want, got: got})
		}
	}
	assertTable(t, config{name: "--proxy-mark", runs: [][]string{args}}, rows)
	if t.Failed() {
		out, _ := exec.Command("ip", "netns", "exec", b.pod, "iptables-save", "-t", "nat").CombinedOutput()
		t.Logf("nat:\n%s", out)
	}
}

// TestProxyMarkCleanup: every rule --proxy-mark adds (nat, mangle in
// TPROXY mode, raw with DNS capture) is found and removed by a re-run
// without it and by --cleanup-only: the namespace ends as it began.
func TestProxyMarkCleanup(t *testing.T) {
	requireRoot(t)
	ns := newPodNS(t)
	before := nsState(t, ns)
	run := func(args ...string) {
		t.Helper()
		out, err := podCmd(ns, newLockFile(t), initContainer, append([]string{toolBin}, args...)...).CombinedOutput()
		require.NoError(t, err, "%s\n%s", quote(args), out)
	}
	marked := append(append([]string{}, ourBase...), "-m", "TPROXY", "--proxy-mark", "4242", "--redirect-dns", "--dns-servers", "10.66.2.2,fd66:2::2")
	run(marked...)
	require.Regexp(t, `mark 0x0*1092\b`, nsState(t, ns), "the mark rules are in the kernel")
	run(append(append([]string{}, ourBase...), "-m", "TPROXY")...)
	assert.NotRegexp(t, `0x0*1092\b`, nsState(t, ns), "a re-run without --proxy-mark removes its rules")
	run(marked...)
	run("--cleanup-only")
	assert.Equal(t, before, nsState(t, ns))
}
