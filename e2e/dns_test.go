package e2e

// DNS capture (--redirect-dns) with real DNS queries, over UDP and TCP, in
// both families: where each query lands, the proxy's own queries, the
// app's DNS over lo, and 100 concurrent queries each answered on its own
// socket. Three more helper roles serve it:
//
//	dns-server  a DNS server answering every query with one TXT record,
//	            "<name>:53 q=<query name> local=<ip:port> peer=<ip:port>",
//	            on each address of E2E_LISTEN (udp and tcp port 53);
//	dns-agent   the agent's DNS proxy (UID 1337) on 127.0.0.1:15053 and
//	            [::1]:15053: it answers "agent port=15053 q=... peer=...",
//	            and for a name starting "fwd-" asks the upstream
//	            (E2E_UPSTREAM, one address per family) itself and appends
//	            " > " and the upstream's answer;
//	dns-client  sends the names of E2E_NAMES to E2E_ADDR over E2E_PROTO,
//	            all at once, each from its own socket, and prints one line
//	            per name: the TXT answer, or "ERR ...". An answer whose id
//	            or question is not the socket's own is an error.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Helper environment of the DNS roles.
const (
	envListen   = "E2E_LISTEN"   // dns-server: comma list of addresses
	envUpstream = "E2E_UPSTREAM" // dns-agent: upstream server per family
	envProto    = "E2E_PROTO"    // dns-client: udp or tcp
	envNames    = "E2E_NAMES"    // dns-client: comma list of query names
	envSport    = "E2E_SPORT"    // dns-client: source port (one name at a time)
)

func init() {
	extraRoles["dns-server"] = func() error {
		return serveDNS(strings.Split(os.Getenv(envListen), ","), 53, dnsServerAnswer(os.Getenv(envName)))
	}
	extraRoles["dns-agent"] = func() error {
		return serveDNS([]string{"127.0.0.1", "::1"}, 15053, agentAnswer(strings.Split(os.Getenv(envUpstream), ",")))
	}
	extraRoles["dns-client"] = func() error {
		sport, _ := strconv.Atoi(os.Getenv(envSport))
		return dnsClient(os.Getenv(envAddr), os.Getenv(envProto), sport, strings.Split(os.Getenv(envNames), ","))
	}
	addrs["dnslo"] = dnsloAddrs
}

// dnsloAddrs is where a DNS server listens on the pod's lo, for the app's
// DNS over lo (address book key "dnslo"; fd66:53::53 is added to lo).
var dnsloAddrs = map[family]string{ipv4: "127.0.0.53", ipv6: "fd66:53::53"}

// --- DNS messages: one question, at most one TXT answer. ---

const (
	typeTXT = 16
	classIN = 1
)

func encodeName(name string) []byte {
	var b []byte
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

// dnsQuery builds a TXT query for name with id.
func dnsQuery(id uint16, name string) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0) // RD; one question
	b = append(b, encodeName(name)...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, typeTXT), classIN)
}

// dnsMsg is what the helpers read of a message.
type dnsMsg struct {
	id    uint16
	name  string
	txt   string
	qlen  int // length of header and question
	reply bool
}

func parseDNS(b []byte) (dnsMsg, error) {
	if len(b) < 12 {
		return dnsMsg{}, errors.New("short message")
	}
	m := dnsMsg{id: binary.BigEndian.Uint16(b), reply: b[2]&0x80 != 0}
	if binary.BigEndian.Uint16(b[4:]) != 1 {
		return dnsMsg{}, errors.New("not one question")
	}
	i := 12
	var labels []string
	for i < len(b) && b[i] != 0 {
		n := int(b[i])
		if n > 63 || i+1+n > len(b) {
			return dnsMsg{}, errors.New("bad name")
		}
		labels = append(labels, string(b[i+1:i+1+n]))
		i += 1 + n
	}
	i += 5 // the root label, type, class
	if i > len(b) {
		return dnsMsg{}, errors.New("short question")
	}
	m.name, m.qlen = strings.Join(labels, "."), i
	if binary.BigEndian.Uint16(b[6:]) == 1 {
		// name pointer (2), type, class, ttl, rdlength, then one string
		if i+13 > len(b) {
			return dnsMsg{}, errors.New("short answer")
		}
		n := int(b[i+12])
		if i+13+n > len(b) {
			return dnsMsg{}, errors.New("short TXT")
		}
		m.txt = string(b[i+13 : i+13+n])
	}
	return m, nil
}

// dnsReply answers query q with one TXT record holding text.
func dnsReply(q []byte, m dnsMsg, text string) []byte {
	if len(text) > 255 {
		text = text[:255]
	}
	b := append([]byte(nil), q[:m.qlen]...)
	b[2], b[3] = 0x81, 0x80                                     // response, RD, RA
	b[6], b[7] = 0, 1                                           // one answer
	b = append(b, 0xc0, 12, 0, typeTXT, 0, classIN, 0, 0, 0, 0) // name pointer, type, class, ttl 0
	b = binary.BigEndian.AppendUint16(b, uint16(len(text)+1))
	b = append(b, byte(len(text)))
	return append(b, text...)
}

// --- roles ---

// answerFunc answers a query that arrived at local from peer.
type answerFunc func(m dnsMsg, proto string, local, peer net.Addr) string

func dnsServerAnswer(name string) answerFunc {
	return func(m dnsMsg, _ string, local, peer net.Addr) string {
		return fmt.Sprintf("%s port=53 q=%s local=%s peer=%s", name, m.name, local, peer)
	}
}

// agentAnswer answers itself, or for "fwd-" names asks the upstream of the
// query's family over the same protocol, from the pod, as the agent does.
func agentAnswer(upstreams []string) answerFunc {
	return func(m dnsMsg, proto string, _, peer net.Addr) string {
		line := fmt.Sprintf("agent port=15053 q=%s peer=%s", m.name, peer)
		if !strings.HasPrefix(m.name, "fwd-") {
			return line
		}
		v6 := strings.Contains(peer.String(), "[")
		for _, u := range upstreams {
			if strings.Contains(u, ":") == v6 {
				txt, err := queryOnce(proto, net.JoinHostPort(u, "53"), 0, m.name)
				if err != nil {
					return line + " > error " + err.Error()
				}
				return line + " > " + txt
			}
		}
		return line + " > error no upstream"
	}
}

// serveDNS answers on udp and tcp at port of every address, prints
// "ready" once all listen, and runs until killed.
func serveDNS(listen []string, port int, answer answerFunc) error {
	for _, a := range listen {
		addr := net.JoinHostPort(strings.TrimSpace(a), strconv.Itoa(port))
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		go serveUDP(pc, answer)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go serveTCP(ln, answer)
	}
	fmt.Println("ready")
	select {}
}

func serveUDP(pc net.PacketConn, answer answerFunc) {
	for {
		buf := make([]byte, 512)
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "udp:", err)
			return
		}
		go func(q []byte) {
			m, err := parseDNS(q)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(dnsReply(q, m, answer(m, "udp", pc.LocalAddr(), peer)), peer)
		}(buf[:n])
	}
}

func serveTCP(ln net.Listener, answer answerFunc) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcp:", err)
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * ioTimeout))
			q, err := readFrame(c)
			if err != nil {
				return
			}
			m, err := parseDNS(q)
			if err != nil {
				return
			}
			_ = writeFrame(c, dnsReply(q, m, answer(m, "tcp", c.LocalAddr(), c.RemoteAddr())))
		}()
	}
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(n[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

func writeFrame(w io.Writer, b []byte) error {
	_, err := w.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
	return err
}

// queryOnce sends one query for name (from source port sport, when not 0)
// and returns the TXT answer. It fails on an answer that is not for this
// socket's query (id and question).
func queryOnce(proto, addr string, sport int, name string) (string, error) {
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	q := dnsQuery(id, name)
	d := net.Dialer{Timeout: ioTimeout}
	if sport != 0 {
		d.LocalAddr = &net.UDPAddr{Port: sport}
		if proto == "tcp" {
			d.LocalAddr = &net.TCPAddr{Port: sport}
		}
	}
	c, err := d.Dial(proto, addr)
	if err != nil {
		return "", classify(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * ioTimeout))
	var reply []byte
	if proto == "tcp" {
		if err := writeFrame(c, q); err != nil {
			return "", classify(err)
		}
		if reply, err = readFrame(c); err != nil {
			return "", classify(err)
		}
	} else {
		if _, err := c.Write(q); err != nil {
			return "", classify(err)
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return "", classify(err)
		}
		reply = buf[:n]
	}
	m, err := parseDNS(reply)
	switch {
	case err != nil:
		return "", err
	case !m.reply || m.id != id || m.name != name:
		return "", fmt.Errorf("mix-up: asked id %d q=%s, got id %d q=%s", id, name, m.id, m.name)
	case m.txt == "":
		return "", errors.New("no answer")
	}
	return m.txt, nil
}

// dnsClient asks every name at once, each from its own socket, and prints
// the answers in the order of names.
func dnsClient(addr, proto string, sport int, names []string) error {
	out := make([]string, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			txt, err := queryOnce(proto, addr, sport, n)
			if err != nil {
				txt = "ERR " + err.Error()
			}
			out[i] = n + "\t" + txt
		}()
	}
	wg.Wait()
	fmt.Println(strings.Join(out, "\n"))
	return nil
}

// --- test side ---

// dnsBed is a bed with a DNS server in the remote namespace (on remote and
// remote2), one on the pod's lo (dnslo), and the agent in the pod.
func newDNSBed(t *testing.T) *bed {
	t.Helper()
	b := newBed(t)
	ns, err := netns.GetFromName(b.pod)
	require.NoError(t, err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	defer h.Close()
	addAddr(t, netnsHandle{ns: ns, nl: h}, "lo", addrs["dnslo"][ipv6], 32, 128)

	var remote []string
	for _, f := range families {
		remote = append(remote, addrs["remote"][f], addrs["remote2"][f])
	}
	startServer(t, b.remote, "dns-server", rootUser, envName+"=remote", envListen+"="+strings.Join(remote, ","))
	startServer(t, b.pod, "dns-server", rootUser, envName+"=dnslo", envListen+"="+addrs["dnslo"][ipv4]+","+addrs["dnslo"][ipv6])
	startServer(t, b.pod, "dns-agent", proxyUser, envUpstream+"="+addrs["remote"][ipv4]+","+addrs["remote"][ipv6])
	return b
}

// dig runs one dns-client as u in the namespace and returns its lines by
// name, each rendered as a landing (see renderDNS).
func dig(t *testing.T, nsName string, u user, proto, addr string, names ...string) map[string]string {
	t.Helper()
	return digFrom(t, nsName, u, proto, addr, 0, names...)
}

// digFrom is dig from source port sport (0: any).
func digFrom(t *testing.T, nsName string, u user, proto, addr string, sport int, names ...string) map[string]string {
	t.Helper()
	cmd := helperCmd("dns-client", u, envAddr+"="+addr, envProto+"="+proto, envNames+"="+strings.Join(names, ","),
		envSport+"="+strconv.Itoa(sport))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	require.NoError(t, startIn(nsName, cmd))
	require.NoError(t, cmd.Wait(), "dns-client: %s", stderr.String())
	out := map[string]string{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		name, txt, ok := strings.Cut(sc.Text(), "\t")
		require.True(t, ok, "dns-client line %q", sc.Text())
		out[name] = renderDNS(name, txt)
	}
	return out
}

// renderDNS turns an answer into a landing: "<who>:<port> peer=<key>" per
// hop. A hop answering another question than name is marked.
func renderDNS(name, txt string) string {
	if strings.HasPrefix(txt, "ERR ") {
		return txt
	}
	var hops []string
	for _, hop := range strings.Split(txt, " > ") {
		f := strings.Fields(hop)
		if len(f) == 0 || f[0] == "error" {
			hops = append(hops, hop)
			continue
		}
		kv := map[string]string{}
		for _, x := range f[1:] {
			k, v, _ := strings.Cut(x, "=")
			kv[k] = v
		}
		who := f[0]
		if l, ok := kv["local"]; ok && who != "agent" {
			who = host(l) // the server, named by the address it was reached at
		}
		s := fmt.Sprintf("%s:%s peer=%s", who, kv["port"], host(kv["peer"]))
		if kv["q"] != name {
			s += " q=" + kv["q"] + "(!)"
		}
		hops = append(hops, s)
	}
	return strings.Join(hops, " > ")
}

// dnsCase is one query of TestDNSCapture and where it lands. "%lo" in a
// landing stands for the source the app and the proxy use towards the
// server on lo: 127.0.0.1 ("lo") in IPv4, the server's own address
// ("dnslo") in IPv6.
type dnsCase struct {
	from   source
	to     string // address book key of the server
	fwd    bool   // ask the agent to forward it
	direct string // where it lands without capture
	want   string // where it lands with the rules
}

// loSource fills in "%lo" for family f.
func loSource(landing string, f family) string {
	if f == ipv4 {
		return strings.ReplaceAll(landing, "%lo", "lo")
	}
	return strings.ReplaceAll(landing, "%lo", "dnslo")
}

var (
	dnsServers = addrs["remote"][ipv4] + "," + addrs["remote"][ipv6] + "," + dnsloAddrs[ipv4] + "," + dnsloAddrs[ipv6]
	// -x remote2: TCP to the unlisted server remote2 is not taken by the
	// outbound capture either, so it shows where DNS capture alone sends it.
	dnsArgs       = specArgs("REDIRECT", "-i", "*", "-x", remote2, "--redirect-dns", "--dns-servers", dnsServers)
	dnsCaptureAll = specArgs("REDIRECT", "-i", "*", "-x", remote2, "--redirect-dns", "--capture-all-dns")
	viaAgent      = "agent:15053 peer=podr"
)

var dnsCases = []dnsCase{
	// The app's DNS to a listed server lands on the agent; so does root's
	// (root is never exempt).
	{from: fromApp, to: "remote", direct: "remote:53 peer=podr", want: viaAgent},
	{from: fromRoot, to: "remote", direct: "remote:53 peer=podr", want: viaAgent},
	// The agent answers from the real server, asking it as the proxy.
	{from: fromApp, to: "remote", fwd: true, direct: "remote:53 peer=podr", want: viaAgent + " > remote:53 peer=podr"},
	// The proxy's own queries, by UID or by GID alone, reach the server.
	{from: fromProxy, to: "remote", direct: "remote:53 peer=podr", want: "remote:53 peer=podr"},
	{from: fromUID, to: "remote", direct: "remote:53 peer=podr", want: "remote:53 peer=podr"},
	{from: fromGID, to: "remote", direct: "remote:53 peer=podr", want: "remote:53 peer=podr"},
	// A server not listed is not captured.
	{from: fromApp, to: "remote2", direct: "remote2:53 peer=podr", want: "remote2:53 peer=podr"},
	// DNS over lo: the owner rules skip port 53, so the app's query to a
	// server on lo is captured, and the proxy's reaches that server.
	{from: fromApp, to: "dnslo", direct: "dnslo:53 peer=%lo", want: "agent:15053 peer=%lo"},
	{from: fromProxy, to: "dnslo", direct: "dnslo:53 peer=%lo", want: "dnslo:53 peer=%lo"},
}

// TestDNSCapture: every query of dnsCases over UDP and TCP in both
// families, without rules, with --redirect-dns --dns-servers, and with
// --capture-all-dns (which also captures the unlisted server, even though
// it is in -x: the DNS rules come first).
func TestDNSCapture(t *testing.T) {
	requireRoot(t)
	b := newDNSBed(t)
	for _, phase := range []struct {
		name string
		args []string
		want func(c dnsCase) string
	}{
		{"no rules", nil, func(c dnsCase) string { return c.direct }},
		{"--redirect-dns --dns-servers", dnsArgs, func(c dnsCase) string { return c.want }},
		{"--redirect-dns --capture-all-dns", dnsCaptureAll,
			func(c dnsCase) string {
				if c.to == "remote2" {
					return viaAgent
				}
				return c.want
			}},
	} {
		if phase.args != nil {
			install(t, b, phase.args...)
		}
		t.Run(phase.name, func(t *testing.T) {
			var rows []row
			for _, f := range families {
				for _, proto := range []string{"udp", "tcp"} {
					for _, c := range dnsCases {
						q := "who"
						if c.fwd {
							q = "fwd-who"
						}
						addr := net.JoinHostPort(addrs[c.to][f], "53")
						got := dig(t, c.from.ns(b), c.from.as, proto, addr, q)[q]
						label := conn{from: source{name: c.from.name + "/" + proto}, to: c.to, port: 53, fwd: c.fwd}
						rows = append(rows, row{family: f, conn: label, want: loSource(phase.want(c), f), got: got})
					}
				}
			}
			assertTable(t, config{name: phase.name, runs: [][]string{phase.args}}, rows)
		})
	}
}

// TestDNSNoMixUp: 100 queries of the app (answered by the agent, which
// asks the real server) and 100 of the proxy (straight to the server), all
// at once over UDP, in each family: every answer is for its own socket's
// question and came the expected way. The raw table's conntrack zones keep
// the agent's upstream queries apart from the app's redirected ones.
func TestDNSNoMixUp(t *testing.T) {
	requireRoot(t)
	b := newDNSBed(t)
	install(t, b, dnsArgs...)
	const n = 100
	for _, f := range families {
		t.Run(string(f), func(t *testing.T) {
			var app, proxy []string
			for i := range n {
				app = append(app, fmt.Sprintf("fwd-%s-app-%d", f, i))
				proxy = append(proxy, fmt.Sprintf("%s-proxy-%d", f, i))
			}
			addr := net.JoinHostPort(addrs["remote"][f], "53")
			var appGot, proxyGot map[string]string
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); appGot = dig(t, b.pod, appUser, "udp", addr, app...) }()
			go func() { defer wg.Done(); proxyGot = dig(t, b.pod, proxyUser, "udp", addr, proxy...) }()
			wg.Wait()
			bad := 0
			for _, q := range app {
				if !assert.Equal(t, viaAgent+" > remote:53 peer=podr", appGot[q], "app %s", q) {
					bad++
				}
			}
			for _, q := range proxy {
				if !assert.Equal(t, "remote:53 peer=podr", proxyGot[q], "proxy %s", q) {
					bad++
				}
			}
			assert.Zero(t, bad, "%d of %d answers wrong", bad, 2*n)
		})
	}
}

// TestDNSConntrackZones: what the raw table's zones are for. A UDP flow
// leaves a conntrack entry behind for a while; when the app and the proxy
// use the same source port towards the same server one after the other,
// the second flow matches the first one's entry unless the zones keep them
// apart: the app's query would then escape capture (after the proxy's),
// or the proxy's query would be redirected to the agent itself (after the
// app's) instead of reaching the server. Without the raw rules both orders
// fail (checked by hand when this test was written).
func TestDNSConntrackZones(t *testing.T) {
	requireRoot(t)
	b := newDNSBed(t)
	install(t, b, dnsArgs...)
	type step struct {
		as   user
		want string
	}
	proxyStep := step{proxyUser, "remote:53 peer=podr"}
	appStep := step{appUser, viaAgent}
	port := 40053
	for _, f := range families {
		for _, order := range []struct {
			name  string
			steps []step
		}{
			{"proxy then app", []step{proxyStep, appStep}},
			{"app then proxy", []step{appStep, proxyStep}},
		} {
			t.Run(string(f)+" "+order.name, func(t *testing.T) {
				port++
				addr := net.JoinHostPort(addrs["remote"][f], "53")
				for i, s := range order.steps {
					q := fmt.Sprintf("zone-%d", i)
					assert.Equal(t, s.want, digFrom(t, b.pod, s.as, "udp", addr, port, q)[q], "query %d from port %d as %s", i+1, port, s.as.name)
				}
			})
		}
	}
}

// TestDNSCleanupAndRerun: the DNS, --drop-invalid and owner-group rules
// (nat, mangle and raw, both families) are in place after a re-run that
// writes nothing, and --cleanup-only leaves the kernel as it was.
func TestDNSCleanupAndRerun(t *testing.T) {
	requireRoot(t)
	b := newBed(t)
	before := kernelState(t, b)
	args := append(specArgs("TPROXY", "-i", "*", "-x", ""), "--redirect-dns", "--capture-all-dns", "--drop-invalid",
		"--istio-outbound-owner-groups-exclude", "888")
	install(t, b, args...)
	saved := kernelState(t, b)
	wants := []string{":ISTIO_OUTPUT_DNS", "-A OUTPUT -j ISTIO_OUTPUT_DNS", "-A PREROUTING -j ISTIO_INBOUND",
		"CT --zone 1", "-j ISTIO_DROP", "--gid-owner 888 -j RETURN"}
	if nativeNft() { // the same rules in the native table (nft_test.go)
		wants = []string{"chain raw-ISTIO_OUTPUT_DNS", "jump raw-ISTIO_OUTPUT_DNS", "jump raw-ISTIO_INBOUND",
			"ct zone set 1", "jump mangle-ISTIO_DROP", "meta skgid 888 return"}
	}
	for _, want := range wants {
		assert.Contains(t, saved, want)
	}
	out, err := toolCmd(b, args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "already in place")
	assert.NotContains(t, string(out), "rules written", "a re-run writes nothing")
	assert.Equal(t, saved, kernelState(t, b))
	install(t, b, "--cleanup-only")
	assert.Equal(t, before, kernelState(t, b))
}

// TestOwnerGroupsLanding: ISTIO_OUTBOUND_OWNER_GROUPS captures only the
// groups listed, ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE all but those.
func TestOwnerGroupsLanding(t *testing.T) {
	requireRoot(t)
	app := conn{from: fromApp, to: "remote", port: 8080}   // gid 1000
	root := conn{from: fromRoot, to: "remote", port: 8080} // gid 0
	captured, direct := "proxy:15001 orig=remote:8080 peer=podr", "remote:8080 peer=podr"
	for _, tc := range []struct {
		name            string
		env             string
		appWant, rootWt string
	}{
		{"include 1000", "ISTIO_OUTBOUND_OWNER_GROUPS=1000", captured, direct},
		{"exclude 1000", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=1000", direct, captured},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			cmd := toolCmd(b, redirect...)
			cmd.Env = append(cmd.Env, tc.env)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			for _, f := range families {
				assert.Equal(t, tc.appWant, land(b, app, f), "%s app", f)
				assert.Equal(t, tc.rootWt, land(b, root, f), "%s root", f)
			}
		})
	}
}
