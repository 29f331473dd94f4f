package explain

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/plan"
)

// tri is a three-valued truth: a match holds, does not hold, or cannot be
// told from what the caller gave.
type tri int

const (
	no tri = iota
	yes
	maybe
)

func of(b bool) tri {
	if b {
		return yes
	}
	return no
}

// neg applies a "!" to a known result.
func neg(t tri, n bool) tri {
	if t == maybe || !n {
		return t
	}
	if t == yes {
		return no
	}
	return yes
}

// match evaluates every part of a rule: no as soon as one part fails,
// maybe (with the first reason) when none fails but one cannot be told.
func (s *state) match(sp plan.Spec) (tri, string) {
	result, why := yes, ""
	add := func(t tri, reason string) bool {
		switch t {
		case no:
			result = no
			return false
		case maybe:
			if result == yes {
				result, why = maybe, reason
			}
		}
		return true
	}
	if !add(s.addr(sp.Src, s.p.Src, "source address (pass --src)")) ||
		!add(s.addr(sp.Dst, s.p.Dst.Addr(), "destination address")) ||
		!add(iface(sp.In, s.in)) ||
		!add(iface(sp.Out, s.out)) ||
		!add(s.proto(sp.Proto)) {
		return no, ""
	}
	for _, m := range sp.Matches {
		if !add(s.matchOne(m)) {
			return no, ""
		}
	}
	return result, why
}

func (s *state) addr(m plan.AddrMatch, a netip.Addr, what string) (tri, string) {
	if !m.Prefix.IsValid() {
		return yes, ""
	}
	if !a.IsValid() {
		if s.srcNotLo && onLo(m.Prefix) {
			return neg(no, m.Neg), ""
		}
		return maybe, "the " + what + " is unknown"
	}
	return neg(of(m.Prefix.Contains(a)), m.Neg), ""
}

// onLo reports whether every address of p lives on lo: 127.0.0.0/8, ::1,
// and ::6, which the plan puts on lo for the proxy's passthrough.
func onLo(p netip.Prefix) bool {
	if p.Addr().Is4() {
		return p.Bits() >= 8 && p.Addr().IsLoopback()
	}
	return p.Bits() == 128 && (p.Addr().IsLoopback() || p == capture.PassthroughIPv6)
}

// iface matches -i/-o NAME, NAME+ a prefix; "" (no interface: -i in
// OUTPUT, -o in PREROUTING) matches nothing but a negation.
func iface(m plan.NameMatch, name string) (tri, string) {
	if m.Name == "" {
		return yes, ""
	}
	var ok bool
	if p, wild := strings.CutSuffix(m.Name, "+"); wild {
		ok = name != "" && strings.HasPrefix(name, p)
	} else {
		ok = name == m.Name
	}
	return neg(of(ok), m.Neg), ""
}

var protoNames = map[string]string{"6": "tcp", "17": "udp"}

func (s *state) proto(m plan.NameMatch) (tri, string) {
	switch name := m.Name; name {
	case "", "all", "0":
		if m.Neg && name != "" {
			return no, ""
		}
		return yes, ""
	default:
		if n, ok := protoNames[name]; ok {
			name = n
		}
		return neg(of(name == s.p.Proto), m.Neg), ""
	}
}

func (s *state) matchOne(m plan.Match) (tri, string) {
	result, why := yes, ""
	for _, o := range m.Opts {
		t, reason := s.option(m.Name, o)
		t = neg(t, o.Neg)
		switch t {
		case no:
			return no, ""
		case maybe:
			if result == yes {
				result, why = maybe, reason
			}
		}
	}
	if (m.Name == "tcp" || m.Name == "udp") && m.Name != s.p.Proto {
		return no, ""
	}
	return result, why
}

// option evaluates one option, before its "!".
func (s *state) option(match string, o plan.Opt) (tri, string) {
	switch match {
	case "tcp", "udp", "multiport":
		dport := int(s.p.Dst.Port())
		sport := int(s.p.SrcPort)
		switch o.Name {
		case "--dport", "--dports":
			return of(inPorts(o.Value, dport)), ""
		case "--sport", "--sports":
			if sport == 0 {
				return maybe, "the source port is unknown (pass --src IP:PORT)"
			}
			return of(inPorts(o.Value, sport)), ""
		case "--ports":
			if inPorts(o.Value, dport) {
				return yes, ""
			}
			if sport == 0 {
				return maybe, "the source port is unknown (pass --src IP:PORT)"
			}
			return of(inPorts(o.Value, sport)), ""
		}
	case "owner":
		if !s.hasOwner {
			// No socket: xt_owner fails every option, so a negated one holds.
			return no, ""
		}
		id := s.p.UID
		what := "uid (pass --uid)"
		if o.Name == "--gid-owner" {
			id, what = s.p.GID, "gid (pass --gid)"
		}
		if id == nil {
			return maybe, "the connection's owner " + what + " is unknown"
		}
		n, err := strconv.ParseUint(o.Value, 10, 32)
		if err != nil {
			return maybe, fmt.Sprintf("owner %q", o.Value)
		}
		return of(uint32(n) == *id), ""
	case "mark", "connmark":
		val, mask, err := parseMark(o.Value)
		if err != nil {
			return maybe, fmt.Sprintf("mark %q", o.Value)
		}
		cur := s.mark
		if match == "connmark" {
			cur = s.ctmark
		}
		return of(cur&mask == val), ""
	case "conntrack":
		// The first packet of a new connection.
		for _, st := range strings.Split(o.Value, ",") {
			if st == "NEW" {
				return yes, ""
			}
		}
		return no, ""
	case "comment":
		return yes, ""
	}
	return maybe, fmt.Sprintf("match %s option %s is not modelled", match, o.Name)
}

// inPorts reports whether port is in a list of ports and ranges (a:b).
func inPorts(list string, port int) bool {
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		if port >= a && port <= b {
			return true
		}
	}
	return false
}
