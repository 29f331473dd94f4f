package explain

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mesh-init/istio-iptables/plan"
)

// Direction says which way a connection goes, seen from the pod.
type Direction string

// The directions.
const (
	Inbound  Direction = "inbound"
	Outbound Direction = "outbound"
)

// Verdict is where a connection's first packet goes.
type Verdict string

// The verdicts.
const (
	// Redirect: nat REDIRECT to Port; the proxy reads the original
	// destination with SO_ORIGINAL_DST.
	Redirect Verdict = "redirect"
	// TProxy: mangle TPROXY to Port; the client's address is kept (a
	// transparent listener must be there, else the kernel drops it).
	TProxy Verdict = "tproxy"
	// Direct: not captured; the packet goes on to its destination.
	Direct Verdict = "direct"
	// Drop: a DROP (or REJECT) rule or a DROP policy.
	Drop Verdict = "drop"
	// Unknown: the rules reached cannot be evaluated; Reason says why.
	Unknown Verdict = "unknown"
)

// DefaultIface is the interface assumed for traffic not over lo.
const DefaultIface = "eth0"

// Packet is the first packet of a new connection.
type Packet struct {
	Direction Direction
	// Proto is "tcp" or "udp".
	Proto string
	// Src is the source address; zero when unknown (outbound over lo it is
	// chosen as the kernel does: 127.0.0.1, ::1 or the destination itself).
	Src netip.Addr
	// SrcPort is the source port; 0 when unknown (ephemeral).
	SrcPort uint16
	Dst     netip.AddrPort
	// UID and GID own an outbound connection's socket; nil when unknown.
	// Inbound packets have no owner.
	UID, GID *uint32
	// Iface is the input interface of an inbound packet, or the output
	// interface of an outbound one to a destination that is not local;
	// empty means DefaultIface.
	Iface string
	// Local lists the pod's own addresses: an outbound connection to one
	// of them (or to 127.0.0.0/8 or ::1) leaves by lo and comes back in.
	Local []netip.Addr
	// Mark is the outbound socket's SO_MARK (0: none), as a proxy told
	// apart by --proxy-mark sets it.
	Mark uint32
}

// Family returns the packet's IP family.
func (p Packet) Family() plan.Family {
	if p.Dst.Addr().Unmap().Is4() {
		return plan.IPv4
	}
	return plan.IPv6
}

// Step is one rule that matched, in the order the packet met them.
type Step struct {
	Table string `json:"table"`
	Chain string `json:"chain"`
	// Rule is the rule's 1-based position in its chain.
	Rule int    `json:"rule"`
	Text string `json:"text"`
}

// Result is the answer: verdict, port (for redirect and tproxy), the
// rules that matched, and a sentence saying why.
type Result struct {
	Verdict Verdict `json:"verdict"`
	Port    int     `json:"port"`
	Trace   []Step  `json:"trace"`
	Reason  string  `json:"reason"`
}

// hook is a netfilter hook in a table.
type hook struct {
	table plan.Table
	chain plan.Chain
}

// outcome is how one table's builtin chain ended.
type outcome struct {
	kind   Verdict // Direct means accepted, go on
	port   int
	reason string
}

// state is the packet as it crosses the hooks.
type state struct {
	rules    *Rules
	p        Packet
	in, out  string
	mark     uint32
	ctmark   uint32
	hasOwner bool
	// srcNotLo says the unknown source is an address of an interface
	// other than lo: a connection routed out of eth0 never has a source
	// address that lives on lo.
	srcNotLo bool
	trace    []Step
}

// maxSteps bounds the rules one traversal visits (a loop of jumps).
const maxSteps = 100000

// Explain evaluates the first packet of a new connection through rules.
// rules may be nil: no rules, everything is accepted.
func Explain(rules *Rules, p Packet) Result {
	p.Dst = netip.AddrPortFrom(p.Dst.Addr().Unmap(), p.Dst.Port())
	p.Src = p.Src.Unmap()
	if rules == nil {
		rules = newRules(p.Family())
	}
	if p.Proto == "" {
		p.Proto = "tcp"
	}
	if p.Proto != "tcp" && p.Proto != "udp" {
		return Result{Verdict: Unknown, Reason: fmt.Sprintf("protocol %q: only tcp and udp are modelled", p.Proto)}
	}
	if rules.Family != p.Family() {
		return Result{Verdict: Unknown, Reason: fmt.Sprintf("the rules are %s, the destination %s is not", rules.Family, p.Dst.Addr())}
	}
	if len(rules.Hidden) > 0 {
		return Result{Verdict: Unknown, Trace: []Step{}, Reason: fmt.Sprintf("nf_tables tables that *-save does not show also see this packet: %s", strings.Join(rules.Hidden, ", "))}
	}
	iface := p.Iface
	if iface == "" {
		iface = DefaultIface
	}
	s := &state{rules: rules, p: p}
	if p.Direction == Inbound {
		s.in = iface
		return s.inbound()
	}
	s.hasOwner = true
	s.mark = p.Mark
	s.out = iface
	if p.local(p.Dst.Addr()) {
		s.out = "lo"
		if !s.p.Src.IsValid() {
			s.p.Src = loopbackSource(p.Dst.Addr())
		}
	} else {
		s.srcNotLo = true
	}
	return s.outbound()
}

// local reports whether a is an address of the pod's namespace.
func (p Packet) local(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	for _, l := range p.Local {
		if l.Unmap() == a {
			return true
		}
	}
	return false
}

// loopbackSource is the source the kernel picks for a connection to a
// local address: 127.0.0.1 within 127.0.0.0/8, otherwise the address itself.
func loopbackSource(dst netip.Addr) netip.Addr {
	if dst.Is4() && dst.IsLoopback() {
		return netip.MustParseAddr("127.0.0.1")
	}
	return dst
}

var (
	outputHooks      = []hook{{plan.TableRaw, "OUTPUT"}, {plan.TableMangle, "OUTPUT"}, {plan.TableNat, "OUTPUT"}, {"filter", "OUTPUT"}, {plan.TableMangle, "POSTROUTING"}, {plan.TableNat, "POSTROUTING"}}
	preroutingHooks  = []hook{{plan.TableRaw, "PREROUTING"}, {plan.TableMangle, "PREROUTING"}, {plan.TableNat, "PREROUTING"}}
	inputHooks       = []hook{{plan.TableMangle, "INPUT"}, {"filter", "INPUT"}, {plan.TableNat, "INPUT"}}
	loopbackInHooks  = []hook{{plan.TableRaw, "PREROUTING"}, {plan.TableMangle, "PREROUTING"}, {plan.TableMangle, "INPUT"}, {"filter", "INPUT"}}
	redirectLoopback = map[plan.Family]netip.Addr{plan.IPv4: netip.MustParseAddr("127.0.0.1"), plan.IPv6: netip.IPv6Loopback()}
)

func (s *state) outbound() Result {
	var captured *outcome
	for _, h := range outputHooks {
		o := s.run(h)
		switch o.kind {
		case Drop, Unknown:
			return s.result(o)
		case TProxy:
			return s.result(outcome{kind: Unknown, reason: "TPROXY outside mangle PREROUTING"})
		case Redirect:
			if captured != nil {
				return s.result(outcome{kind: Unknown, reason: "redirected twice"})
			}
			captured = &o
			// nat OUTPUT REDIRECT sends a local packet to the loopback address.
			s.p.Dst = netip.AddrPortFrom(redirectLoopback[s.rules.Family], uint16(o.port))
			s.out = "lo"
		}
		if h.table == plan.TableMangle && h.chain == "OUTPUT" && s.mark != s.p.Mark && s.out != "lo" {
			return s.result(outcome{kind: Unknown, reason: fmt.Sprintf("mangle OUTPUT set mark %#x: the packet is routed again by policy rules, which explain does not read", s.mark)})
		}
	}
	if s.out != "lo" {
		return s.result(outcome{kind: Direct, reason: fmt.Sprintf("no rule captured it; it leaves by %s", s.out)})
	}
	// The packet leaves by lo and comes back in: PREROUTING on lo, without
	// nat (the connection's NAT was set up in OUTPUT).
	s.in, s.out, s.hasOwner = "lo", "", false
	for _, h := range loopbackInHooks {
		o := s.run(h)
		switch o.kind {
		case Drop, Unknown:
			return s.result(o)
		case TProxy:
			if captured != nil {
				return s.result(outcome{kind: Unknown, reason: "a redirected packet meets TPROXY on lo"})
			}
			captured = &o
		case Redirect:
			return s.result(outcome{kind: Unknown, reason: "REDIRECT outside nat"})
		}
	}
	if captured != nil {
		return s.result(*captured)
	}
	return s.result(outcome{kind: Direct, reason: "no rule captured it; it goes over lo to a local address"})
}

func (s *state) inbound() Result {
	var captured *outcome
	for _, h := range preroutingHooks {
		o := s.run(h)
		switch o.kind {
		case Drop, Unknown:
			return s.result(o)
		case TProxy, Redirect:
			if captured != nil {
				return s.result(outcome{kind: Unknown, reason: fmt.Sprintf("both %s and %s apply", captured.kind, o.kind)})
			}
			captured = &o
		}
	}
	if captured == nil && len(s.p.Local) > 0 && !s.p.local(s.p.Dst.Addr()) {
		return s.result(outcome{kind: Direct, reason: fmt.Sprintf("not captured; %s is not an address of the pod, so routing forwards or drops it", s.p.Dst.Addr())})
	}
	if captured != nil && captured.kind == Redirect {
		// REDIRECT rewrites the destination to an address of the input interface.
		s.p.Dst = netip.AddrPortFrom(netip.Addr{}, uint16(captured.port))
	}
	for _, h := range inputHooks {
		if h.table == plan.TableNat && captured != nil {
			continue
		}
		o := s.run(h)
		switch o.kind {
		case Drop, Unknown:
			return s.result(o)
		case TProxy, Redirect:
			return s.result(outcome{kind: Unknown, reason: fmt.Sprintf("%s in INPUT", o.kind)})
		}
	}
	if captured != nil {
		return s.result(*captured)
	}
	return s.result(outcome{kind: Direct, reason: "no rule captured it; it is delivered to the destination port"})
}

func (s *state) result(o outcome) Result {
	r := Result{Verdict: o.kind, Trace: s.trace, Reason: o.reason}
	if r.Trace == nil {
		r.Trace = []Step{}
	}
	if o.kind == Redirect || o.kind == TProxy {
		r.Port = o.port
	}
	return r
}

type frame struct {
	chain plan.Chain
	pos   int
}

// run traverses one table's builtin chain.
func (s *state) run(h hook) outcome {
	tb, ok := s.rules.tables[h.table]
	if !ok {
		return outcome{kind: Direct}
	}
	policy := func() outcome {
		switch p := tb.policy[h.chain]; p {
		case "", "ACCEPT":
			return outcome{kind: Direct}
		case "DROP":
			return outcome{kind: Drop, reason: fmt.Sprintf("policy DROP of %s %s", h.table, h.chain)}
		default:
			return outcome{kind: Unknown, reason: fmt.Sprintf("policy %s of %s %s", p, h.table, h.chain)}
		}
	}
	stack := []frame{{chain: h.chain}}
	for steps := 0; steps < maxSteps; steps++ {
		top := &stack[len(stack)-1]
		rules := tb.chains[top.chain]
		if top.pos >= len(rules) {
			if len(stack) == 1 {
				return policy()
			}
			stack = stack[:len(stack)-1]
			continue
		}
		r := rules[top.pos]
		top.pos++
		where := fmt.Sprintf("%s %s rule %d %q", h.table, top.chain, top.pos, r.text)
		if r.err != nil {
			return outcome{kind: Unknown, reason: fmt.Sprintf("%s: cannot evaluate: %v", where, r.err)}
		}
		m, why := s.match(r.spec)
		if m == no {
			continue
		}
		if m == maybe {
			if harmless(r.spec.Jump) {
				continue
			}
			return outcome{kind: Unknown, reason: fmt.Sprintf("%s: %s", where, why)}
		}
		s.trace = append(s.trace, Step{Table: string(h.table), Chain: string(top.chain), Rule: top.pos, Text: r.text})
		switch j := r.spec.Jump; j {
		case "RETURN":
			if len(stack) == 1 {
				return policy()
			}
			stack = stack[:len(stack)-1]
		case "ACCEPT":
			return outcome{kind: Direct}
		case "DROP", "REJECT":
			return outcome{kind: Drop, reason: fmt.Sprintf("%s: %s", where, j)}
		case "REDIRECT":
			if h.table != plan.TableNat || (h.chain != "OUTPUT" && h.chain != "PREROUTING") {
				return outcome{kind: Unknown, reason: where + ": REDIRECT outside nat OUTPUT/PREROUTING"}
			}
			port := int(s.p.Dst.Port())
			if v, ok := opt(r.spec.TargetOpts, "--to-ports"); ok {
				n, err := strconv.ParseUint(v, 10, 16)
				if err != nil {
					return outcome{kind: Unknown, reason: fmt.Sprintf("%s: port range %q", where, v)}
				}
				port = int(n)
			}
			return outcome{kind: Redirect, port: port, reason: fmt.Sprintf("%s: REDIRECT to %d", where, port)}
		case "TPROXY":
			if h.table != plan.TableMangle || h.chain != "PREROUTING" {
				return outcome{kind: Unknown, reason: where + ": TPROXY outside mangle PREROUTING"}
			}
			v, _ := opt(r.spec.TargetOpts, "--on-port")
			port, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return outcome{kind: Unknown, reason: fmt.Sprintf("%s: on-port %q", where, v)}
			}
			if ip, _ := opt(r.spec.TargetOpts, "--on-ip"); ip != "0.0.0.0" && ip != "::" {
				return outcome{kind: Unknown, reason: fmt.Sprintf("%s: --on-ip %s", where, ip)}
			}
			mv, _ := opt(r.spec.TargetOpts, "--tproxy-mark")
			val, mask, _ := parseMark(mv)
			s.mark = s.mark&^mask ^ val
			return outcome{kind: TProxy, port: int(port), reason: fmt.Sprintf("%s: TPROXY to %d", where, port)}
		case "MARK":
			v, _ := opt(r.spec.TargetOpts, "--set-xmark")
			val, mask, _ := parseMark(v)
			s.mark = s.mark&^mask ^ val
		case "CONNMARK":
			nf, ct := maskOpt(r.spec.TargetOpts, "--nfmask"), maskOpt(r.spec.TargetOpts, "--ctmask")
			if _, save := opt(r.spec.TargetOpts, "--save-mark"); save {
				s.ctmark = s.ctmark&^ct ^ s.mark&nf
			} else {
				s.mark = s.mark&^nf ^ s.ctmark&ct
			}
		case "CT", "LOG", "NFLOG":
			// No effect on where the first packet goes.
		default:
			if _, ok := tb.declared[plan.Chain(j)]; !ok || plan.Builtin(h.table, plan.Chain(j)) {
				return outcome{kind: Unknown, reason: fmt.Sprintf("%s: target %s is not modelled", where, j)}
			}
			if r.spec.Goto {
				*top = frame{chain: plan.Chain(j)}
			} else {
				stack = append(stack, frame{chain: plan.Chain(j)})
			}
		}
	}
	return outcome{kind: Unknown, reason: fmt.Sprintf("%s %s: more than %d rules visited (a loop?)", h.table, h.chain, maxSteps)}
}

// harmless targets do not change where the first packet goes, so a rule
// with one can be passed even when its matches cannot be evaluated.
func harmless(target string) bool {
	return target == "CT" || target == "LOG" || target == "NFLOG"
}

func opt(opts []plan.Opt, name string) (string, bool) {
	for _, o := range opts {
		if o.Name == name {
			return o.Value, true
		}
	}
	return "", false
}

func maskOpt(opts []plan.Opt, name string) uint32 {
	v, ok := opt(opts, name)
	if !ok {
		return 0xffffffff
	}
	n, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		return 0xffffffff
	}
	return uint32(n)
}

// parseMark reads VALUE[/MASK] as ParseSpec normalizes it.
func parseMark(v string) (val, mask uint32, err error) {
	vs, ms, hasMask := strings.Cut(v, "/")
	n, err := strconv.ParseUint(vs, 0, 32)
	if err != nil {
		return 0, 0, err
	}
	m := uint64(0xffffffff)
	if hasMask {
		if m, err = strconv.ParseUint(ms, 0, 32); err != nil {
			return 0, 0, err
		}
	}
	return uint32(n), uint32(m), nil
}
