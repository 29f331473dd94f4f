package capture

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/mesh-init/istio-iptables/plan"
)

// The chain layout Build writes (REDIRECT; TPROXY moves inbound to mangle):
//
//	nat PREROUTING ──(-k ifaces: RETURN / ISTIO_REDIRECT, on top)
//	   │  -c ifaces: RETURN
//	   └─ -p tcp ─▶ ISTIO_INBOUND ── tunnel port, -d ports: RETURN
//	                   └─ (-b '*' or each -b port) ─▶ ISTIO_IN_REDIRECT ─▶ REDIRECT -z port
//	nat OUTPUT ─ -c ifaces: RETURN
//	   └──────▶ ISTIO_OUTPUT ── TPROXY mode: TPROXY mark -t: RETURN (original_src; ours)
//	                 ├─ -o ports: RETURN
//	                 ├─ lo from 127.0.0.6: RETURN (proxy passthrough)
//	                 ├─ --proxy-mark (ours), then per UID, then GID:
//	                 │     proxy to own pod IP over lo ─▶ ISTIO_IN_REDIRECT
//	                 │     app over lo: RETURN (not with a loopback CIDR in -i); proxy: RETURN
//	                 ├─ to 127.0.0.1: RETURN; -x CIDRs: RETURN
//	                 └─ -q ports, -i ('*' or CIDRs) ─▶ ISTIO_REDIRECT ─▶ REDIRECT -p port
//
//	TPROXY, mangle:
//	PREROUTING ─ -p tcp ─▶ ISTIO_INBOUND ── mark, 127.0.0.6 on lo, lo without 1338: RETURN
//	   │                      ├─ -d ports: RETURN
//	   │                      ├─ established ─▶ ISTIO_DIVERT ─▶ MARK -t, ACCEPT
//	   │                      └─ new ─▶ ISTIO_TPROXY ─▶ TPROXY -z port, mark -t
//	   └─ marked -t: CONNMARK --save-mark
//	OUTPUT ─ marked on lo: RETURN; proxy (owner or --proxy-mark) to pod IP over lo: MARK -t+1;
//	         connmark -t: CONNMARK --restore-mark
//	plus `ip rule fwmark -t lookup -r` and `local default dev lo table -r`.
//
//	--drop-invalid, mangle: PREROUTING ─ ctstate INVALID ─▶ ISTIO_DROP ─▶ DROP
//	owner groups, nat ISTIO_OUTPUT after the proxy's rules: groups not
//	captured (or not among those captured): RETURN
//	--redirect-dns (when a server is known or --capture-all-dns):
//	nat ISTIO_OUTPUT ─▶ ISTIO_OUTPUT_DNS ─ tcp, udp :53 (to the servers) ─▶ REDIRECT 15053
//	   (the proxy's lo rules skip port 53, so the app's DNS over lo reaches it)
//	raw OUTPUT ─▶ ISTIO_OUTPUT_DNS ─ proxy's :53 queries: CT zone 1; its 15053 answers: zone 2
//	                               └ app's queries (to the servers): zone 2
//	raw PREROUTING ─▶ ISTIO_INBOUND ─ answers from :53 (of the servers): CT zone 1
//	                                └ -k ifaces' queries (to the servers): CT zone 2
//	nat PREROUTING ─ -k ifaces (on top) ─▶ ISTIO_OUTPUT_DNS (DNS of a VM; ours)
//	127.0.0.1/32 above stands for ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR in IPv4.

// Chains.
const (
	chainPrerouting   plan.Chain = "PREROUTING"
	chainOutput       plan.Chain = "OUTPUT"
	chainInbound      plan.Chain = "ISTIO_INBOUND"
	chainRedirect     plan.Chain = "ISTIO_REDIRECT"
	chainInRedirect   plan.Chain = "ISTIO_IN_REDIRECT"
	chainOutputIstio  plan.Chain = "ISTIO_OUTPUT"
	chainDivert       plan.Chain = "ISTIO_DIVERT"
	chainTProxy       plan.Chain = "ISTIO_TPROXY"
	chainOutputDNS    plan.Chain = "ISTIO_OUTPUT_DNS"
	chainDrop         plan.Chain = "ISTIO_DROP"
	nat                          = plan.TableNat
	mangle                       = plan.TableMangle
	raw                          = plan.TableRaw
	dnsPort                      = "53"
	loopback                     = "lo"
	targetReturn                 = "RETURN"
	defaultInboundCap            = "15006"
)

// family holds the addresses that differ between the families.
type family struct {
	f           plan.Family
	localhost   string // the loopback address the app uses to reach itself
	passthrough string // the source of the proxy's inbound passthrough
}

var families = map[plan.Family]family{
	plan.IPv4: {plan.IPv4, "127.0.0.1/32", "127.0.0.6/32"},
	plan.IPv6: {plan.IPv6, "::1/128", "::6/128"},
}

// PassthroughIPv6 is put on lo when IPv6 rules are written, so the proxy
// can bind it for inbound passthrough (docs/contract.md §3.4).
var PassthroughIPv6 = netip.MustParsePrefix("::6/128")

// Build turns a configuration into the plan of docs/contract.md §3: a rule set for
// IPv4, one for IPv6 when enabled, and the TPROXY policy routing. It is
// pure: no I/O, no environment, no kernel.
func Build(c Config) (plan.Plan, error) {
	s, err := c.settings()
	if err != nil {
		return plan.Plan{}, err
	}
	fams := []plan.Family{plan.IPv4}
	if s.ipv6 {
		fams = append(fams, plan.IPv6)
	}
	var p plan.Plan
	for _, f := range fams {
		p.RuleSets = append(p.RuleSets, s.ruleSet(families[f]))
		if s.mode == ModeTProxy && s.inboundCaptured() {
			p.Routes = append(p.Routes, plan.Route{Family: f, Mark: s.mark, Table: s.routeTable})
		}
	}
	if s.ipv6 {
		p.Addrs = append(p.Addrs, plan.Addr{Dev: loopback, Prefix: PassthroughIPv6})
	}
	if err := p.Validate(); err != nil {
		// A bug in this package, never the user's input: values were checked.
		return plan.Plan{}, err
	}
	return p, nil
}

func (s settings) inboundCaptured() bool { return s.inboundAll || len(s.inboundPorts) > 0 }

// builder collects the rules of one family in writing order and declares
// each owned chain on first use.
type builder struct {
	rs plan.RuleSet
}

func (b *builder) add(insert bool, t plan.Table, c plan.Chain, args ...string) {
	b.declare(t, c)
	for i, a := range args {
		if (a == "-j" || a == "-g") && i+1 < len(args) {
			b.declare(t, plan.Chain(args[i+1]))
		}
	}
	b.rs.Rules = append(b.rs.Rules, plan.Rule{Table: t, Chain: c, Insert: insert, Args: args})
}

func (b *builder) declare(t plan.Table, c plan.Chain) {
	if !c.Owned() {
		return
	}
	tc := plan.TableChain{Table: t, Chain: c}
	for _, d := range b.rs.Chains {
		if d == tc {
			return
		}
	}
	b.rs.Chains = append(b.rs.Chains, tc)
}

func (b *builder) appendRule(t plan.Table, c plan.Chain, args ...string) {
	b.add(false, t, c, args...)
}

func (b *builder) insertRule(t plan.Table, c plan.Chain, args ...string) {
	b.add(true, t, c, args...)
}

func (s settings) ruleSet(fam family) plan.RuleSet {
	b := &builder{rs: plan.RuleSet{Family: fam.f}}
	if fam.f == plan.IPv4 && s.loopback4 != "" {
		// ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR (default 127.0.0.1/32) stands
		// for localhost wherever the rules name it, as in Istio.
		fam.localhost = s.loopback4
	}
	tproxy := s.mode == ModeTProxy
	mark := strconv.FormatUint(uint64(s.mark), 10)
	outboundMark := strconv.FormatUint(uint64(s.mark)+1, 10)

	// -I PREROUTING 1 -i IF -j RETURN: traffic from -k interfaces is not
	// inbound traffic (the outbound capture rules below go above these).
	for _, ifc := range s.kubeVirt {
		b.insertRule(nat, chainPrerouting, "-i", ifc, "-j", targetReturn)
	}
	// -A PREROUTING -i IF -j RETURN, -A OUTPUT -o IF -j RETURN: -c
	// interfaces are never captured; before the jumps into ISTIO chains.
	for _, ifc := range s.excludeIfaces {
		b.appendRule(nat, chainPrerouting, "-i", ifc, "-j", targetReturn)
		b.appendRule(nat, chainOutput, "-o", ifc, "-j", targetReturn)
	}
	if tproxy {
		for _, ifc := range s.excludeIfaces {
			b.appendRule(mangle, chainPrerouting, "-i", ifc, "-j", targetReturn)
			b.appendRule(mangle, chainOutput, "-o", ifc, "-j", targetReturn)
		}
	}
	if s.dropInvalid {
		s.dropInvalidPackets(b)
	}

	// -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports P: the outbound listener.
	b.appendRule(nat, chainRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", s.proxyPort)
	// -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports Z: the inbound listener.
	b.appendRule(nat, chainInRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", s.inboundPort)

	s.inbound(b, fam, mark, outboundMark)
	s.outbound(b, fam)
	if s.dnsOn() && (s.captureAllDNS || len(s.dnsServers[fam.f]) > 0) {
		// -I PREROUTING 1 -i IF -j ISTIO_OUTPUT_DNS (nat): DNS arriving on a
		// -k interface (a VM's) goes to the agent like the app's; on top,
		// above the -k RETURN and ISTIO_REDIRECT rules (ours; Istio leaves
		// it to the VM's resolver).
		for _, ifc := range s.kubeVirt {
			b.insertRule(nat, chainPrerouting, "-i", ifc, "-j", string(chainOutputDNS))
		}
	}
	if tproxy {
		s.tproxyMarks(b, fam, mark, outboundMark)
	}
	if s.dnsOn() {
		s.dnsConntrackZones(b, fam)
	}
	// Declare the chains in a fixed order, so the text reads the same
	// whatever flags brought them in.
	slices.SortStableFunc(b.rs.Chains, func(x, y plan.TableChain) int {
		return slices.Index(chainOrder, x) - slices.Index(chainOrder, y)
	})
	return b.rs
}

var chainOrder = []plan.TableChain{
	{Table: nat, Chain: chainInbound}, {Table: nat, Chain: chainRedirect},
	{Table: nat, Chain: chainInRedirect}, {Table: nat, Chain: chainOutputIstio},
	{Table: nat, Chain: chainOutputDNS},
	{Table: mangle, Chain: chainInbound}, {Table: mangle, Chain: chainDivert},
	{Table: mangle, Chain: chainTProxy}, {Table: mangle, Chain: chainDrop},
	{Table: raw, Chain: chainOutputDNS}, {Table: raw, Chain: chainInbound},
}

// dropInvalidPackets writes --drop-invalid: conntrack does not NAT a packet
// it finds INVALID (an out-of-window segment, say), so such a packet of a
// captured connection would reach the app's port unredirected and draw a
// reset that kills the connection; dropping it lets TCP retransmit.
func (s settings) dropInvalidPackets(b *builder) {
	// -A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP
	b.appendRule(mangle, chainPrerouting, "-m", "conntrack", "--ctstate", "INVALID", "-j", string(chainDrop))
	// -A ISTIO_DROP -j DROP
	b.appendRule(mangle, chainDrop, "-j", "DROP")
}

// inbound writes ISTIO_INBOUND (nat, or mangle with TPROXY) and the jump
// into it.
func (s settings) inbound(b *builder, fam family, mark, outboundMark string) {
	// -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN: the tunnel port goes
	// straight to its listener (nat, in both modes).
	b.appendRule(nat, chainInbound, "-p", "tcp", "--dport", s.tunnelPort, "-j", targetReturn)

	table := nat
	if s.mode == ModeTProxy {
		table = mangle
		// -A ISTIO_INBOUND -p tcp -m mark --mark M -j RETURN: already
		// diverted, do not divert again.
		b.appendRule(mangle, chainInbound, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", targetReturn)
		// -A ISTIO_INBOUND -p tcp -s 127.0.0.6/32 -i lo -j RETURN: the
		// proxy's passthrough to the app is not captured.
		b.appendRule(mangle, chainInbound, "-p", "tcp", "-s", fam.passthrough, "-i", loopback, "-j", targetReturn)
		// -A ISTIO_INBOUND -p tcp -i lo -m mark ! --mark M+1 -j RETURN: over
		// lo only the proxy's marked calls to its own pod IP are captured.
		b.appendRule(mangle, chainInbound, "-p", "tcp", "-i", loopback, "-m", "mark", "!", "--mark", outboundMark, "-j", targetReturn)
	}
	if !s.inboundCaptured() {
		return
	}
	if s.mode == ModeTProxy {
		// -A ISTIO_DIVERT -j MARK --set-mark M, -j ACCEPT: packets of
		// established inbound connections are routed to lo by the mark.
		b.appendRule(mangle, chainDivert, "-j", "MARK", "--set-mark", mark)
		b.appendRule(mangle, chainDivert, "-j", "ACCEPT")
		// -A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY ...: new
		// connections are handed to the inbound listener, client address kept.
		b.appendRule(mangle, chainTProxy, "!", "-d", fam.localhost, "-p", "tcp", "-j", "TPROXY",
			"--tproxy-mark", mark+"/0xffffffff", "--on-port", s.inboundPort)
	}
	// -A PREROUTING -p tcp -j ISTIO_INBOUND: all inbound TCP is examined.
	b.appendRule(table, chainPrerouting, "-p", "tcp", "-j", string(chainInbound))
	if s.inboundAll {
		// -A ISTIO_INBOUND -p tcp --dport P -j RETURN: -d ports go to the app.
		for _, ports := range portMatches(s.inboundExclude) {
			b.appendRule(table, chainInbound, join([]string{"-p", "tcp"}, ports, []string{"-j", targetReturn})...)
		}
		if s.mode == ModeTProxy {
			b.appendRule(mangle, chainInbound, "-p", "tcp", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", string(chainDivert))
			b.appendRule(mangle, chainInbound, "-p", "tcp", "-j", string(chainTProxy))
		} else {
			// -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT: the rest to the proxy.
			b.appendRule(nat, chainInbound, "-p", "tcp", "-j", string(chainInRedirect))
		}
		return
	}
	for _, ports := range portMatches(s.inboundPorts) {
		tcp := join([]string{"-p", "tcp"}, ports)
		if s.mode == ModeTProxy {
			b.appendRule(mangle, chainInbound, join(tcp, []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", string(chainDivert)})...)
			b.appendRule(mangle, chainInbound, join(tcp, []string{"-j", string(chainTProxy)})...)
		} else {
			// -A ISTIO_INBOUND -p tcp --dport P -j ISTIO_IN_REDIRECT: each -b port.
			b.appendRule(nat, chainInbound, join(tcp, []string{"-j", string(chainInRedirect)})...)
		}
	}
}

// outbound writes ISTIO_OUTPUT in the order of docs/contract.md §3.2 and the jump into it.
func (s settings) outbound(b *builder, fam family) {
	// -A OUTPUT -j ISTIO_OUTPUT: every protocol, so -o covers udp too.
	b.appendRule(nat, chainOutput, "-j", string(chainOutputIstio))
	if s.mode == ModeTProxy {
		// -A ISTIO_OUTPUT -m mark --mark M -j RETURN (ours): the proxy's
		// original_src upstreams (the client's address, TPROXY mark M) are
		// not captured again; the owner rule below would send the one to
		// the pod's own IP back to the inbound listener (Istio loops there).
		b.appendRule(nat, chainOutputIstio, "-m", "mark", "--mark", strconv.FormatUint(uint64(s.mark), 10), "-j", targetReturn)
	}
	// -A ISTIO_OUTPUT -p tcp|udp --dport P -j RETURN: -o ports never captured.
	for _, ports := range portMatches(s.outboundExclude) {
		b.appendRule(nat, chainOutputIstio, join([]string{"-p", "tcp"}, ports, []string{"-j", targetReturn})...)
		b.appendRule(nat, chainOutputIstio, join([]string{"-p", "udp"}, ports, []string{"-j", targetReturn})...)
	}
	// -A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN: the proxy's
	// passthrough is never re-captured.
	b.appendRule(nat, chainOutputIstio, "-o", loopback, "-s", fam.passthrough, "-j", targetReturn)
	dns := s.dnsOn()
	if s.proxyMark != "" {
		s.proxyMarkRules(b, fam, dns)
	}
	for _, owner := range []struct {
		flag string
		ids  []string
	}{{"--uid-owner", s.uids}, {"--gid-owner", s.gids}} {
		for _, id := range owner.ids {
			// The proxy calling its own pod IP over lo goes to the inbound
			// listener; with DNS capture, as in Istio, not the proxy UID's
			// DNS (-m multiport ! --dports 53,15008): the agent's queries
			// to a server on the pod IP go straight to it.
			notPorts := []string{"!", "--dport", s.tunnelPort}
			if dns && owner.flag == "--uid-owner" && s.tunnelPort != dnsPort {
				notPorts = []string{"-m", "multiport", "!", "--dports", dnsPort + "," + s.tunnelPort}
			}
			b.appendRule(nat, chainOutputIstio, join([]string{"-o", loopback, "!", "-d", fam.localhost, "-p", "tcp"},
				notPorts, []string{"-m", "owner", owner.flag, id, "-j", string(chainInRedirect)})...)
			switch {
			case s.loopbackInclude:
				// -i lists a loopback CIDR: the app's traffic over lo is
				// not returned here, so -i can capture it (Istio's
				// HasLoopBackIP, both families).
			case dns:
				// -A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner U -j RETURN:
				// an app talking to itself over lo is not captured, but
				// its DNS to a server on lo is (ISTIO_OUTPUT_DNS below).
				b.appendRule(nat, chainOutputIstio, "-o", loopback, "-p", "tcp", "!", "--dport", dnsPort,
					"-m", "owner", "!", owner.flag, id, "-j", targetReturn)
			default:
				// An app talking to itself over lo is not captured.
				b.appendRule(nat, chainOutputIstio, "-o", loopback, "-m", "owner", "!", owner.flag, id, "-j", targetReturn)
			}
			// Everything else the proxy sends is exempt: no loops.
			b.appendRule(nat, chainOutputIstio, "-m", "owner", owner.flag, id, "-j", targetReturn)
		}
	}
	s.ownerGroupRules(b)
	if dns && (s.captureAllDNS || len(s.dnsServers[fam.f]) > 0) {
		// -A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS: DNS is examined after the
		// proxy's own traffic left; only in a family with a server to
		// capture (or with --capture-all-dns).
		b.appendRule(nat, chainOutputIstio, "-j", string(chainOutputDNS))
		s.dnsRedirect(b, fam)
	}
	// -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN: localhost is not captured.
	b.appendRule(nat, chainOutputIstio, "-d", fam.localhost, "-j", targetReturn)
	// -A ISTIO_OUTPUT -d C -j RETURN: -x CIDRs of this family.
	for _, c := range s.excludeCIDRs[fam.f] {
		b.appendRule(nat, chainOutputIstio, "-d", c.String(), "-j", targetReturn)
	}
	// -A ISTIO_OUTPUT -p tcp --dport P -j ISTIO_REDIRECT: -q ports.
	for _, ports := range portMatches(s.outboundPorts) {
		b.appendRule(nat, chainOutputIstio, join([]string{"-p", "tcp"}, ports, []string{"-j", string(chainRedirect)})...)
	}
	if s.outboundAll {
		// -A ISTIO_OUTPUT -j ISTIO_REDIRECT: everything left.
		b.appendRule(nat, chainOutputIstio, "-j", string(chainRedirect))
		// -I PREROUTING 1 -i IF -j ISTIO_REDIRECT: -k traffic is outbound.
		for _, ifc := range s.kubeVirt {
			b.insertRule(nat, chainPrerouting, "-i", ifc, "-j", string(chainRedirect))
		}
		return
	}
	for _, c := range s.outboundCIDRs[fam.f] {
		for _, ifc := range s.kubeVirt {
			b.insertRule(nat, chainPrerouting, "-i", ifc, "-d", c.String(), "-j", string(chainRedirect))
		}
		// -A ISTIO_OUTPUT -d C -j ISTIO_REDIRECT: each -i CIDR of this family.
		b.appendRule(nat, chainOutputIstio, "-d", c.String(), "-j", string(chainRedirect))
	}
}

// proxyMarkRules writes the --proxy-mark exemption (ours), the owner
// rules' triple for a socket mark, before the owner rules: the marked
// proxy calling its own pod IP over lo goes to the inbound listener, and
// everything else it sends is never captured. With no -u/-g the mark is
// the only exemption, so the app's own traffic over lo needs its RETURN
// here (with -u/-g, the owner rules write it).
func (s settings) proxyMarkRules(b *builder, fam family, dns bool) {
	notPorts := []string{"!", "--dport", s.tunnelPort}
	if dns && s.tunnelPort != dnsPort {
		notPorts = []string{"-m", "multiport", "!", "--dports", dnsPort + "," + s.tunnelPort}
	}
	// -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m mark --mark X -j ISTIO_IN_REDIRECT
	b.appendRule(nat, chainOutputIstio, join([]string{"-o", loopback, "!", "-d", fam.localhost, "-p", "tcp"},
		notPorts, []string{"-m", "mark", "--mark", s.proxyMark, "-j", string(chainInRedirect)})...)
	if len(s.uids)+len(s.gids) == 0 && !s.loopbackInclude {
		if dns {
			// -A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m mark ! --mark X -j RETURN
			b.appendRule(nat, chainOutputIstio, "-o", loopback, "-p", "tcp", "!", "--dport", dnsPort,
				"-m", "mark", "!", "--mark", s.proxyMark, "-j", targetReturn)
		} else {
			// -A ISTIO_OUTPUT -o lo -m mark ! --mark X -j RETURN: the app over lo.
			b.appendRule(nat, chainOutputIstio, "-o", loopback, "-m", "mark", "!", "--mark", s.proxyMark, "-j", targetReturn)
		}
	}
	// -A ISTIO_OUTPUT -m mark --mark X -j RETURN: the marked proxy, no loops.
	b.appendRule(nat, chainOutputIstio, "-m", "mark", "--mark", s.proxyMark, "-j", targetReturn)
}

// ownerGroupRules writes ISTIO_OUTBOUND_OWNER_GROUPS(_EXCLUDE): outbound
// traffic of the processes outside the groups captured (or of those in
// the groups excluded) returns before any capture rule.
func (s settings) ownerGroupRules(b *builder) {
	if s.ownerGroupsExcept {
		for _, g := range s.ownerGroups {
			// -A ISTIO_OUTPUT -m owner --gid-owner G -j RETURN: group G is not captured.
			b.appendRule(nat, chainOutputIstio, "-m", "owner", "--gid-owner", g, "-j", targetReturn)
		}
		return
	}
	if len(s.ownerGroups) == 0 {
		return
	}
	// -A ISTIO_OUTPUT -m owner ! --gid-owner G1 -m owner ! --gid-owner G2 -j RETURN:
	// a process in none of the groups is not captured.
	var args []string
	for _, g := range s.ownerGroups {
		args = append(args, "-m", "owner", "!", "--gid-owner", g)
	}
	b.appendRule(nat, chainOutputIstio, append(args, "-j", targetReturn)...)
}

// dnsRedirect writes nat ISTIO_OUTPUT_DNS: the app's DNS, tcp then udp, to
// the listed servers of this family (or to any server with
// --capture-all-dns), goes to the agent's DNS proxy.
func (s settings) dnsRedirect(b *builder, fam family) {
	for _, proto := range []string{"tcp", "udp"} {
		if s.captureAllDNS {
			// -A ISTIO_OUTPUT_DNS -p tcp|udp --dport 53 -j REDIRECT --to-ports 15053
			b.appendRule(nat, chainOutputDNS, "-p", proto, "--dport", dnsPort, "-j", "REDIRECT", "--to-ports", DNSAgentPort)
			continue
		}
		for _, a := range s.dnsServers[fam.f] {
			// -A ISTIO_OUTPUT_DNS -p tcp|udp --dport 53 -d S/32 -j REDIRECT --to-ports 15053
			b.appendRule(nat, chainOutputDNS, "-p", proto, "--dport", dnsPort, "-d", hostPrefix(a),
				"-j", "REDIRECT", "--to-ports", DNSAgentPort)
		}
	}
}

// dnsConntrackZones writes the raw rules that keep two UDP flows with the
// same addresses apart: the proxy's own queries to a server (and the
// server's answers) in conntrack zone 1, the app's queries (redirected to
// the agent) and the agent's answers to them in zone 2. Without them an
// upstream query of the agent can be taken for the app's redirected one.
func (s settings) dnsConntrackZones(b *builder, fam family) {
	// -A OUTPUT -j ISTIO_OUTPUT_DNS (raw)
	b.appendRule(raw, chainOutput, "-j", string(chainOutputDNS))
	for _, owner := range []struct {
		flag string
		ids  []string
	}{{"--uid-owner", s.uids}, {"--gid-owner", s.gids}} {
		for _, id := range owner.ids {
			// -A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner U -j CT --zone 1:
			// the proxy's queries to upstream servers.
			b.appendRule(raw, chainOutputDNS, "-p", "udp", "--dport", dnsPort, "-m", "owner", owner.flag, id, "-j", "CT", "--zone", "1")
			// -A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner U -j CT --zone 2:
			// the agent's answers to the app.
			b.appendRule(raw, chainOutputDNS, "-p", "udp", "--sport", DNSAgentPort, "-m", "owner", owner.flag, id, "-j", "CT", "--zone", "2")
		}
	}
	if s.proxyMark != "" {
		// The same two for the marked proxy (--proxy-mark).
		b.appendRule(raw, chainOutputDNS, "-p", "udp", "--dport", dnsPort, "-m", "mark", "--mark", s.proxyMark, "-j", "CT", "--zone", "1")
		b.appendRule(raw, chainOutputDNS, "-p", "udp", "--sport", DNSAgentPort, "-m", "mark", "--mark", s.proxyMark, "-j", "CT", "--zone", "2")
	}
	if s.captureAllDNS {
		// -A PREROUTING -j ISTIO_INBOUND (raw)
		b.appendRule(raw, chainPrerouting, "-j", string(chainInbound))
		// -A ISTIO_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2: the app's queries.
		b.appendRule(raw, chainOutputDNS, "-p", "udp", "--dport", dnsPort, "-j", "CT", "--zone", "2")
		// -A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1: the servers' answers.
		b.appendRule(raw, chainInbound, "-p", "udp", "--sport", dnsPort, "-j", "CT", "--zone", "1")
		for _, ifc := range s.kubeVirt {
			// -A ISTIO_INBOUND -i IF -p udp --dport 53 -j CT --zone 2: a VM's
			// queries on a -k interface, redirected to the agent like the
			// app's, share the zone of the agent's answers.
			b.appendRule(raw, chainInbound, "-i", ifc, "-p", "udp", "--dport", dnsPort, "-j", "CT", "--zone", "2")
		}
		return
	}
	if len(s.dnsServers[fam.f]) == 0 {
		return
	}
	// -A PREROUTING -j ISTIO_INBOUND (raw)
	b.appendRule(raw, chainPrerouting, "-j", string(chainInbound))
	for _, a := range s.dnsServers[fam.f] {
		// -A ISTIO_OUTPUT_DNS -p udp --dport 53 -d S/32 -j CT --zone 2: the app's queries.
		b.appendRule(raw, chainOutputDNS, "-p", "udp", "--dport", dnsPort, "-d", hostPrefix(a), "-j", "CT", "--zone", "2")
		// -A ISTIO_INBOUND -p udp --sport 53 -s S/32 -j CT --zone 1: the server's answers.
		b.appendRule(raw, chainInbound, "-p", "udp", "--sport", dnsPort, "-s", hostPrefix(a), "-j", "CT", "--zone", "1")
	}
	for _, ifc := range s.kubeVirt {
		for _, a := range s.dnsServers[fam.f] {
			// -A ISTIO_INBOUND -i IF -p udp --dport 53 -d S/32 -j CT --zone 2: a
			// VM's queries on a -k interface (redirected to the agent).
			b.appendRule(raw, chainInbound, "-i", ifc, "-p", "udp", "--dport", dnsPort, "-d", hostPrefix(a), "-j", "CT", "--zone", "2")
		}
	}
}

// hostPrefix is a as a one-address prefix: 10.0.0.1/32, fd00::1/128.
func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// tproxyMarks writes the mangle rules that keep TPROXY's marks on a
// connection and route the proxy's calls to its own pod IP back in.
func (s settings) tproxyMarks(b *builder, fam family, mark, outboundMark string) {
	// -A PREROUTING -p tcp -m mark --mark M -j CONNMARK --save-mark: the
	// mark set on the way in stays with the connection.
	b.appendRule(mangle, chainPrerouting, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "CONNMARK", "--save-mark")
	// -A OUTPUT -p tcp -o lo -m mark --mark M -j RETURN: not marked twice.
	b.appendRule(mangle, chainOutput, "-p", "tcp", "-o", loopback, "-m", "mark", "--mark", mark, "-j", targetReturn)
	for _, owner := range []struct {
		flag string
		ids  []string
	}{{"--uid-owner", s.uids}, {"--gid-owner", s.gids}} {
		for _, id := range owner.ids {
			// The proxy calling its pod IP over lo: mark M+1, captured inbound.
			b.appendRule(mangle, chainOutput, "!", "-d", fam.localhost, "-p", "tcp", "-o", loopback,
				"-m", "owner", owner.flag, id, "-j", "MARK", "--set-mark", outboundMark)
		}
	}
	if s.proxyMark != "" {
		// The marked proxy (--proxy-mark) calling its pod IP over lo: mark M+1.
		b.appendRule(mangle, chainOutput, "!", "-d", fam.localhost, "-p", "tcp", "-o", loopback,
			"-m", "mark", "--mark", s.proxyMark, "-j", "MARK", "--set-mark", outboundMark)
	}
	// -A OUTPUT -p tcp -m connmark --mark M -j CONNMARK --restore-mark:
	// replies of diverted connections are routed by the policy rule.
	b.appendRule(mangle, chainOutput, "-p", "tcp", "-m", "connmark", "--mark", mark, "-j", "CONNMARK", "--restore-mark")
}

// multiportMax is the most ports one -m multiport match takes.
const multiportMax = 15

// portMatches returns the port matches for a port list, one per rule. A
// list of at most 15 ports gets one `--dport P` rule per port, exactly as
// Istio writes it; a longer list is packed 15 ports to a rule with
// `-m multiport --dports`, so 1,000 ports cost 67 rules instead of 1,000.
// Packing keeps the meaning of the rule order: the chunks are disjoint,
// so a packet matches the same rule (or pair of rules) either way.
func portMatches(ports []string) [][]string {
	var out [][]string
	if len(ports) <= multiportMax {
		for _, p := range ports {
			out = append(out, []string{"--dport", p})
		}
		return out
	}
	for len(ports) > 0 {
		n := min(len(ports), multiportMax)
		out = append(out, []string{"-m", "multiport", "--dports", strings.Join(ports[:n], ",")})
		ports = ports[n:]
	}
	return out
}

// join concatenates argument lists into a new slice.
func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
