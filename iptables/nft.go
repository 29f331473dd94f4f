//go:build linux

package iptables

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mesh-init/istio-iptables/plan"
	"golang.org/x/sys/unix"
)

// The native nftables backend (--native-nftables) writes the same plan as
// one inet table of its own, NftTableName, instead of iptables rules:
//
//	table inet istio-iptables
//	  nat-PREROUTING     type nat    hook prerouting priority dstnat (-100)  = iptables nat PREROUTING
//	  nat-OUTPUT         type nat    hook output     priority -100           = iptables nat OUTPUT
//	  mangle-PREROUTING  type filter hook prerouting priority mangle (-150)  = iptables mangle PREROUTING
//	  mangle-OUTPUT      type route  hook output     priority mangle (-150)  = iptables mangle OUTPUT (a new mark re-routes)
//	  raw-PREROUTING     type filter hook prerouting priority raw (-300)     = iptables raw PREROUTING
//	  raw-OUTPUT         type filter hook output     priority raw (-300)     = iptables raw OUTPUT
//	  nat-ISTIO_INBOUND, mangle-ISTIO_DIVERT, ...: one regular chain per ISTIO_* chain
//
// Only the base chains the plan uses exist. The hooks and priorities are
// those of the iptables tables, so a packet meets the rules at the same
// point (conntrack at -200 between raw and mangle, NAT only on a
// connection's first packet). Every rule of a family starts with
// `meta nfproto ipv4` (or ipv6): the IPv4 rules of a chain come first,
// then the IPv6 ones, each in the iptables order, so a packet sees exactly
// its family's rule list. Runs of adjacent rules that differ only in one
// destination CIDR or one destination port and end in a terminal verdict
// become one rule with an anonymous set (interval flag for CIDRs), one
// lookup per packet however long the -x, -i, -d, -o or -b list.

// NftRuleset is a plan translated for the native backend: the chains of
// the table in the order they are created.
type NftRuleset struct {
	Chains []NftChain
}

// NftChain is one chain of the table; Hook is nil for a regular chain.
type NftChain struct {
	Name  string
	Hook  *NftHook
	Rules []NftRule
}

// NftHook makes a chain a base chain.
type NftHook struct {
	Type     string // nat, filter or route
	Hook     string // prerouting, output, ...
	Priority int
}

// NftRule is one rule as `nft -f` text and as the expressions written over
// netlink; they are the same rule. When Set is not nil, the rule's Lookup
// (at Exprs[SetAt]) reads that anonymous set.
type NftRule struct {
	Text  string
	Exprs []expr.Any
	Set   *NftSet
	SetAt int
}

// NftSet is a constant set: anonymous (written with its rule), or, when
// Name is set, a named set of the table. Sets of more elements than one
// netlink attribute carries are named: an anonymous set's elements must
// all come in the message that creates it, a named one's in as many
// messages as they need.
type NftSet struct {
	Key      nftables.SetDatatype
	Interval bool
	Elems    []nftables.SetElement
	// Name and Items (the elements as text) for a named set.
	Name  string
	Items string
}

// setChunk bounds the elements of one set message: a netlink attribute
// is at most 64 KiB, and an interval element takes up to about 40 bytes.
const setChunk = 1024

// nftChainName is the chain of the table that stands for an iptables chain.
func nftChainName(t plan.Table, c plan.Chain) string { return string(t) + "-" + string(c) }

// nftHooks are the base chains standing for the builtin chains.
var nftHooks = map[plan.TableChain]NftHook{
	{Table: plan.TableNat, Chain: "PREROUTING"}:     {"nat", "prerouting", -100},
	{Table: plan.TableNat, Chain: "INPUT"}:          {"nat", "input", 100},
	{Table: plan.TableNat, Chain: "OUTPUT"}:         {"nat", "output", -100},
	{Table: plan.TableNat, Chain: "POSTROUTING"}:    {"nat", "postrouting", 100},
	{Table: plan.TableMangle, Chain: "PREROUTING"}:  {"filter", "prerouting", -150},
	{Table: plan.TableMangle, Chain: "INPUT"}:       {"filter", "input", -150},
	{Table: plan.TableMangle, Chain: "FORWARD"}:     {"filter", "forward", -150},
	{Table: plan.TableMangle, Chain: "OUTPUT"}:      {"route", "output", -150},
	{Table: plan.TableMangle, Chain: "POSTROUTING"}: {"filter", "postrouting", -150},
	{Table: plan.TableRaw, Chain: "PREROUTING"}:     {"filter", "prerouting", -300},
	{Table: plan.TableRaw, Chain: "OUTPUT"}:         {"filter", "output", -300},
}

// NftTranslate translates a plan for the native backend. It is pure.
func NftTranslate(p plan.Plan) (NftRuleset, error) {
	if err := p.Validate(); err != nil {
		return NftRuleset{}, fmt.Errorf("invalid plan: %w", err)
	}
	var out NftRuleset
	var errs []error
	for _, t := range []plan.Table{plan.TableNat, plan.TableMangle, plan.TableRaw} {
		var chains []plan.Chain
		for _, c := range plan.BuiltinChains(t) {
			for _, rs := range p.RuleSets {
				if len(rs.ChainRules(t, c)) > 0 && !slices.Contains(chains, c) {
					chains = append(chains, c)
				}
			}
		}
		for _, rs := range p.RuleSets {
			for _, tc := range rs.Chains {
				if tc.Table == t && !slices.Contains(chains, tc.Chain) {
					chains = append(chains, tc.Chain)
				}
			}
		}
		for _, c := range chains {
			ch := NftChain{Name: nftChainName(t, c)}
			if plan.Builtin(t, c) {
				h := nftHooks[plan.TableChain{Table: t, Chain: c}]
				ch.Hook = &h
			}
			for _, rs := range p.RuleSets {
				rules, err := nftChainRules(rs, t, c)
				if err != nil {
					errs = append(errs, err)
				}
				ch.Rules = append(ch.Rules, rules...)
			}
			out.Chains = append(out.Chains, ch)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return NftRuleset{}, err
	}
	nameBigSets(&out)
	return out, nil
}

// nameBigSets turns the sets too big for one message into named sets of
// the table (big-0, big-1, ...): the rule reads @big-N, and the table's
// text declares the set with its elements, so the dry run and the write
// stay the same thing.
func nameBigSets(rs *NftRuleset) {
	n := 0
	for ci := range rs.Chains {
		for ri := range rs.Chains[ci].Rules {
			r := &rs.Chains[ci].Rules[ri]
			if r.Set == nil || len(r.Set.Elems) <= setChunk {
				continue
			}
			i, j := strings.Index(r.Text, "{ "), strings.LastIndex(r.Text, " }")
			if i < 0 || j < i {
				continue
			}
			set := *r.Set
			set.Name = fmt.Sprintf("big-%d", n)
			set.Items = r.Text[i+2 : j]
			r.Set = &set
			r.Text = r.Text[:i] + "@" + set.Name + r.Text[j+2:]
			n++
		}
	}
}

// specRule is a rule of a chain in its parsed form.
type specRule struct {
	r plan.Rule
	s plan.Spec
}

// nftChainRules translates one family's rules of one chain, merging runs
// of rules that differ only in one value into a set lookup.
func nftChainRules(rs plan.RuleSet, t plan.Table, c plan.Chain) ([]NftRule, error) {
	var srs []specRule
	for _, r := range rs.ChainRules(t, c) {
		s, err := plan.ParseSpec(rs.Family, r.Args)
		if err != nil {
			return nil, fmt.Errorf("%s %s: rule %q: %w", rs.Family, plan.TableChain{Table: t, Chain: c}, r, err)
		}
		srs = append(srs, specRule{r, s})
	}
	var out []NftRule
	for i := 0; i < len(srs); {
		kind, key, ok := mergeKey(srs[i].s)
		j := i + 1
		if ok && terminal(rs, t, srs[i].s) {
			for j < len(srs) {
				k2, key2, ok2 := mergeKey(srs[j].s)
				if !ok2 || k2 != kind || key2 != key {
					break
				}
				j++
			}
		}
		var rules []NftRule
		var err error
		if j-i > 1 || kind == "dport" && srs[i].s.Matches[dportMatch(srs[i].s)].Name == "multiport" {
			var vals []string
			for _, sr := range srs[i:j] {
				vals = append(vals, strings.Split(mergeValue(kind, sr.s), ",")...)
			}
			rules, err = nftRule(rs.Family, t, srs[i].s, kind, vals)
		} else {
			rules, err = nftRule(rs.Family, t, srs[i].s, "", nil)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: rule %q: %w", rs.Family, plan.TableChain{Table: t, Chain: c}, srs[i].r, err)
		}
		out = append(out, rules...)
		i = j
	}
	return out, nil
}

// mergeKey says whether a rule can join a set: by its destination prefix
// ("daddr") or its single destination port ("dport"), and what the rest of
// the rule is.
func mergeKey(s plan.Spec) (kind, key string, ok bool) {
	if s.Dst.Prefix.IsValid() && !s.Dst.Neg && s.Dst.Prefix.Bits() > 0 {
		rest := s
		rest.Dst = plan.AddrMatch{}
		return "daddr", rest.String(), true
	}
	if i := dportMatch(s); i >= 0 {
		rest := s
		rest.Matches = slices.Delete(slices.Clone(s.Matches), i, i+1)
		return "dport", rest.String(), true
	}
	return "", "", false
}

// dportMatch finds a tcp or udp match with only a single --dport, or a
// multiport match with only --dports (a list, iptables' 15 ports a rule).
func dportMatch(s plan.Spec) int {
	if (s.Proto.Name != "tcp" && s.Proto.Name != "udp") || s.Proto.Neg {
		return -1
	}
	for i, m := range s.Matches {
		if len(m.Opts) != 1 || m.Opts[0].Neg {
			continue
		}
		o := m.Opts[0]
		if m.Name == s.Proto.Name && o.Name == "--dport" && !strings.ContainsAny(o.Value, ",:") ||
			m.Name == "multiport" && o.Name == "--dports" {
			return i
		}
	}
	return -1
}

func mergeValue(kind string, s plan.Spec) string {
	if kind == "daddr" {
		return s.Dst.Prefix.String()
	}
	return s.Matches[dportMatch(s)].Opts[0].Value
}

// terminalTargets end a packet's walk through the chain when they match,
// or (REDIRECT, TPROXY) leave it nothing to do a second time.
var terminalTargets = []string{"RETURN", "ACCEPT", "DROP", "REDIRECT", "TPROXY"}

// terminal reports whether matching two rules of a run in a row would act
// as matching one: a terminal target, or a jump to a chain that only holds
// terminal targets. Only such runs become sets.
func terminal(rs plan.RuleSet, t plan.Table, s plan.Spec) bool {
	if slices.Contains(terminalTargets, s.Jump) {
		return true
	}
	if !plan.Chain(s.Jump).Owned() {
		return false
	}
	for _, r := range rs.ChainRules(t, plan.Chain(s.Jump)) {
		if !slices.Contains(terminalTargets, r.Target()) {
			return false
		}
	}
	return true
}

// piece is one statement of a rule: its text and its expressions.
type piece struct {
	text  string
	exprs []expr.Any
	set   *NftSet
}

func cmp(op expr.CmpOp, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: op, Register: 1, Data: data}
}

func eqOp(neg bool) (expr.CmpOp, string) {
	if neg {
		return expr.CmpOpNeq, "!= "
	}
	return expr.CmpOpEq, ""
}

func loadMeta(k expr.MetaKey) *expr.Meta { return &expr.Meta{Key: k, Register: 1} }

func u32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func be16(v uint16) []byte { return binaryutil.BigEndian.PutUint16(v) }

// nfproto is the family guard every rule starts with.
func nfproto(f plan.Family) piece {
	v, name := byte(unix.NFPROTO_IPV4), "ipv4"
	if f == plan.IPv6 {
		v, name = unix.NFPROTO_IPV6, "ipv6"
	}
	return piece{text: "meta nfproto " + name, exprs: []expr.Any{loadMeta(expr.MetaKeyNFPROTO), cmp(expr.CmpOpEq, []byte{v})}}
}

// addrPiece matches `[!] -s|-d PREFIX`, loading only the prefix's whole
// bytes when it ends on a byte, as nft does.
func addrPiece(f plan.Family, dst bool, m plan.AddrMatch) (piece, error) {
	p := m.Prefix
	ipName, off, n := "ip", uint32(12), uint32(4)
	if f == plan.IPv6 {
		ipName, off, n = "ip6", 8, 16
	}
	dir := "saddr"
	if dst {
		dir = "daddr"
		off += n
	}
	if p.Bits() == 0 {
		if m.Neg {
			return piece{}, fmt.Errorf("%s matches nothing", p)
		}
		return piece{}, nil
	}
	op, neg := eqOp(m.Neg)
	text := fmt.Sprintf("%s %s %s%s", ipName, dir, neg, prefixText(p))
	addr := p.Addr().AsSlice()
	var ex []expr.Any
	switch {
	case p.Bits() == p.Addr().BitLen():
		ex = []expr.Any{payloadNet(off, n), cmp(op, addr)}
	case p.Bits()%8 == 0:
		ex = []expr.Any{payloadNet(off, uint32(p.Bits()/8)), cmp(op, addr[:p.Bits()/8])}
	default:
		mask := netMask(p)
		ex = []expr.Any{payloadNet(off, n),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
			cmp(op, addr)}
	}
	return piece{text: text, exprs: ex}, nil
}

func payloadNet(off, n uint32) *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
}

func netMask(p netip.Prefix) []byte {
	n := p.Addr().BitLen() / 8
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return mask
}

// prefixText prints a prefix as nft does: a whole address without /N.
func prefixText(p netip.Prefix) string {
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

// ifacePiece matches `[!] -i|-o NAME`; NAME+ is a prefix, as in nft's NAME*.
func ifacePiece(out bool, m plan.NameMatch) (piece, error) {
	key, kw := expr.MetaKeyIIFNAME, "iifname"
	if out {
		key, kw = expr.MetaKeyOIFNAME, "oifname"
	}
	name := m.Name
	var data []byte
	text := name
	if strings.HasSuffix(name, "+") {
		name = strings.TrimSuffix(name, "+")
		data = []byte(name)
		text = name + "*"
	} else {
		data = make([]byte, unix.IFNAMSIZ)
		copy(data, name)
	}
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "\"*\\ ") {
		return piece{}, fmt.Errorf("interface %q cannot be matched", m.Name)
	}
	op, neg := eqOp(m.Neg)
	return piece{text: fmt.Sprintf("%s %s%q", kw, neg, text), exprs: []expr.Any{loadMeta(key), cmp(op, data)}}, nil
}

var l4protos = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP}

func protoPiece(m plan.NameMatch) (piece, error) {
	v, ok := l4protos[m.Name]
	if !ok {
		return piece{}, fmt.Errorf("protocol %q is not tcp or udp", m.Name)
	}
	op, neg := eqOp(m.Neg)
	return piece{text: "meta l4proto " + neg + m.Name, exprs: []expr.Any{loadMeta(expr.MetaKeyL4PROTO), cmp(op, []byte{v})}}, nil
}

// portRange parses "N" or "A:B".
func portRange(v string) (uint16, uint16, error) {
	a, b, isRange := strings.Cut(v, ":")
	lo, err := strconv.ParseUint(a, 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("bad port %q", v)
	}
	hi := lo
	if isRange {
		if hi, err = strconv.ParseUint(b, 10, 16); err != nil || hi < lo {
			return 0, 0, fmt.Errorf("bad port range %q", v)
		}
	}
	return uint16(lo), uint16(hi), nil
}

func payloadPort(dport bool) *expr.Payload {
	off := uint32(0)
	if dport {
		off = 2
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}
}

// portPiece matches one port or range: `tcp dport 80`, `tcp dport 8080-8090`.
func portPiece(proto string, dport bool, neg bool, v string) (piece, error) {
	lo, hi, err := portRange(v)
	if err != nil {
		return piece{}, err
	}
	dir := "sport"
	if dport {
		dir = "dport"
	}
	_, negText := eqOp(neg)
	text := fmt.Sprintf("%s %s %s%d", proto, dir, negText, lo)
	ex := []expr.Any{payloadPort(dport)}
	switch {
	case lo == hi:
		op, _ := eqOp(neg)
		ex = append(ex, cmp(op, be16(lo)))
	case neg:
		text += fmt.Sprintf("-%d", hi)
		ex = append(ex, &expr.Range{Op: expr.CmpOpNeq, Register: 1, FromData: be16(lo), ToData: be16(hi)})
	default:
		text += fmt.Sprintf("-%d", hi)
		ex = append(ex, cmp(expr.CmpOpGte, be16(lo)), cmp(expr.CmpOpLte, be16(hi)))
	}
	return piece{text: text, exprs: ex}, nil
}

// setPiece matches a value against an anonymous set: `tcp dport { 80, 443 }`
// or `ip daddr { 10.0.0.0/8, 192.168.0.0/16 }`.
func setPiece(lhs string, load expr.Any, neg bool, s *NftSet, items []string) piece {
	_, negText := eqOp(neg)
	return piece{
		text:  fmt.Sprintf("%s %s{ %s }", lhs, negText, strings.Join(items, ", ")),
		exprs: []expr.Any{load, &expr.Lookup{SourceRegister: 1, Invert: neg}},
		set:   s,
	}
}

// portSet builds the set of a port list ("80,443,8080:8090").
func portSet(vals []string) (*NftSet, []string, error) {
	type rng struct{ lo, hi uint16 }
	var rs []rng
	for _, v := range vals {
		lo, hi, err := portRange(v)
		if err != nil {
			return nil, nil, err
		}
		rs = append(rs, rng{lo, hi})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].lo < rs[j].lo })
	isInterval := slices.ContainsFunc(rs, func(r rng) bool { return r.lo != r.hi })
	var merged []rng
	for _, r := range rs {
		if n := len(merged); n > 0 && uint32(r.lo) <= uint32(merged[n-1].hi)+1 && (isInterval || r.lo == merged[n-1].hi) {
			if r.hi > merged[n-1].hi {
				merged[n-1].hi = r.hi
			}
			continue
		}
		merged = append(merged, r)
	}
	s := &NftSet{Key: nftables.TypeInetService, Interval: isInterval}
	var items []string
	for _, r := range merged {
		if !isInterval {
			s.Elems = append(s.Elems, nftables.SetElement{Key: be16(r.lo)})
			items = append(items, strconv.Itoa(int(r.lo)))
			continue
		}
		items = append(items, portText(r.lo, r.hi))
	}
	if isInterval {
		var ivs []interval
		for _, r := range merged {
			ivs = append(ivs, interval{big.NewInt(int64(r.lo)), big.NewInt(int64(r.hi))})
		}
		s.Elems = intervalElems(ivs, 2)
	}
	return s, items, nil
}

func portText(lo, hi uint16) string {
	if lo == hi {
		return strconv.Itoa(int(lo))
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

// interval is a closed range of keys.
type interval struct{ lo, hi *big.Int }

// intervalElems encodes sorted, disjoint, non-adjacent intervals as nft
// does: a start element per interval, an end element (flagged) one past
// its end unless it ends at the top, and an end element at 0 when the
// first interval does not start there.
func intervalElems(ivs []interval, n int) []nftables.SetElement {
	key := func(v *big.Int) []byte { return v.FillBytes(make([]byte, n)) }
	top := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(8*n)), big.NewInt(1))
	var out []nftables.SetElement
	if len(ivs) > 0 && ivs[0].lo.Sign() > 0 {
		out = append(out, nftables.SetElement{Key: make([]byte, n), IntervalEnd: true})
	}
	for _, iv := range ivs {
		out = append(out, nftables.SetElement{Key: key(iv.lo)})
		if iv.hi.Cmp(top) < 0 {
			out = append(out, nftables.SetElement{Key: key(new(big.Int).Add(iv.hi, big.NewInt(1))), IntervalEnd: true})
		}
	}
	return out
}

// cidrSet builds the interval set of CIDRs of one family: overlapping and
// adjacent prefixes joined, each interval printed as nft lists it (a
// prefix when it is one, else a range).
func cidrSet(f plan.Family, vals []string) (*NftSet, []string, error) {
	n := 4
	key := nftables.TypeIPAddr
	if f == plan.IPv6 {
		n, key = 16, nftables.TypeIP6Addr
	}
	var ivs []interval
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, nil, err
		}
		lo := new(big.Int).SetBytes(p.Masked().Addr().AsSlice())
		size := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
		ivs = append(ivs, interval{lo, new(big.Int).Sub(new(big.Int).Add(lo, size), big.NewInt(1))})
	}
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].lo.Cmp(ivs[j].lo) < 0 })
	var merged []interval
	for _, iv := range ivs {
		if k := len(merged); k > 0 && iv.lo.Cmp(new(big.Int).Add(merged[k-1].hi, big.NewInt(1))) <= 0 {
			if iv.hi.Cmp(merged[k-1].hi) > 0 {
				merged[k-1].hi = iv.hi
			}
			continue
		}
		merged = append(merged, iv)
	}
	var items []string
	for _, iv := range merged {
		items = append(items, intervalText(iv, n))
	}
	return &NftSet{Key: key, Interval: true, Elems: intervalElems(merged, n)}, items, nil
}

// intervalText prints an address interval as a prefix when it is one.
func intervalText(iv interval, n int) string {
	addr := func(v *big.Int) netip.Addr {
		a, _ := netip.AddrFromSlice(v.FillBytes(make([]byte, n)))
		return a
	}
	size := new(big.Int).Add(new(big.Int).Sub(iv.hi, iv.lo), big.NewInt(1))
	if size.BitLen() > 0 && new(big.Int).And(size, new(big.Int).Sub(size, big.NewInt(1))).Sign() == 0 {
		bits := n*8 - (size.BitLen() - 1)
		if p := netip.PrefixFrom(addr(iv.lo), bits); p.Masked().Addr() == addr(iv.lo) {
			return prefixText(p)
		}
	}
	return addr(iv.lo).String() + "-" + addr(iv.hi).String()
}

// markPieces matches `-m mark|connmark [!] --mark V[/M]`.
func markPiece(ct bool, o plan.Opt) (piece, error) {
	val, mask, err := parseMark(o.Value)
	if err != nil {
		return piece{}, err
	}
	load, kw := expr.Any(loadMeta(expr.MetaKeyMARK)), "meta mark"
	if ct {
		load, kw = &expr.Ct{Register: 1, Key: expr.CtKeyMARK}, "ct mark"
	}
	op, neg := eqOp(o.Neg)
	if mask == 0xffffffff {
		return piece{text: fmt.Sprintf("%s %s0x%08x", kw, neg, val), exprs: []expr.Any{load, cmp(op, u32(val))}}, nil
	}
	if neg == "" {
		neg = "== "
	}
	return piece{
		text:  fmt.Sprintf("%s & 0x%08x %s0x%08x", kw, mask, neg, val),
		exprs: []expr.Any{load, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(mask), Xor: u32(0)}, cmp(op, u32(val&mask))},
	}, nil
}

func parseMark(v string) (uint32, uint32, error) {
	val, mask, hasMask := strings.Cut(v, "/")
	n, err := strconv.ParseUint(val, 0, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("bad mark %q", v)
	}
	m := uint64(0xffffffff)
	if hasMask {
		if m, err = strconv.ParseUint(mask, 0, 32); err != nil {
			return 0, 0, fmt.Errorf("bad mask %q", v)
		}
	}
	return uint32(n), uint32(m), nil
}

// ctStateBits are the conntrack states nft knows, in the order it prints them.
var ctStateBits = []struct {
	name, nft string
	bit       uint32
}{
	{"INVALID", "invalid", expr.CtStateBitINVALID},
	{"ESTABLISHED", "established", expr.CtStateBitESTABLISHED},
	{"RELATED", "related", expr.CtStateBitRELATED},
	{"NEW", "new", expr.CtStateBitNEW},
	{"UNTRACKED", "untracked", expr.CtStateBitUNTRACKED},
}

func ctStatePiece(o plan.Opt) (piece, error) {
	if o.Neg {
		return piece{}, errors.New("! --ctstate is not supported")
	}
	var bits uint32
	var names []string
	states := strings.Split(o.Value, ",")
	for _, st := range ctStateBits {
		if slices.Contains(states, st.name) {
			bits |= st.bit
			names = append(names, st.nft)
		}
	}
	if len(names) != len(states) {
		return piece{}, fmt.Errorf("ctstate %q: only INVALID, ESTABLISHED, RELATED, NEW and UNTRACKED", o.Value)
	}
	return piece{text: "ct state " + strings.Join(names, ","), exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(bits), Xor: u32(0)},
		cmp(expr.CmpOpNeq, u32(0)),
	}}, nil
}

// matchPieces translates one -m match.
func matchPieces(proto string, m plan.Match) ([]piece, error) {
	var out []piece
	for _, o := range m.Opts {
		var p piece
		var err error
		switch m.Name + " " + o.Name {
		case "tcp --dport", "tcp --sport", "udp --dport", "udp --sport":
			p, err = portPiece(m.Name, o.Name == "--dport", o.Neg, o.Value)
		case "multiport --dports", "multiport --sports":
			if proto != "tcp" && proto != "udp" {
				return nil, errors.New("multiport needs -p tcp or udp")
			}
			var s *NftSet
			var items []string
			if s, items, err = portSet(strings.Split(o.Value, ",")); err == nil {
				dir := "sport"
				if o.Name == "--dports" {
					dir = "dport"
				}
				p = setPiece(proto+" "+dir, payloadPort(dir == "dport"), o.Neg, s, items)
			}
		case "owner --uid-owner", "owner --gid-owner":
			key, kw := expr.MetaKeySKUID, "meta skuid"
			if o.Name == "--gid-owner" {
				key, kw = expr.MetaKeySKGID, "meta skgid"
			}
			var id uint64
			if id, err = strconv.ParseUint(o.Value, 10, 32); err == nil {
				op, neg := eqOp(o.Neg)
				p = piece{text: fmt.Sprintf("%s %s%d", kw, neg, id), exprs: []expr.Any{loadMeta(key), cmp(op, u32(uint32(id)))}}
			}
		case "mark --mark", "connmark --mark":
			p, err = markPiece(m.Name == "connmark", o)
		case "conntrack --ctstate":
			p, err = ctStatePiece(o)
		default:
			err = fmt.Errorf("-m %s %s is not supported", m.Name, o.Name)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// setMark is `meta mark set V` (or, with a mask M, the iptables
// `--set-xmark V/M`: mark = mark & ^M ^ V).
func setMark(val, mask uint32) piece {
	set := &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}
	if mask == 0xffffffff {
		return piece{text: fmt.Sprintf("meta mark set 0x%08x", val), exprs: []expr.Any{&expr.Immediate{Register: 1, Data: u32(val)}, set}}
	}
	return piece{
		text: fmt.Sprintf("meta mark set meta mark & 0x%08x ^ 0x%08x", ^mask, val),
		exprs: []expr.Any{loadMeta(expr.MetaKeyMARK),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(^mask), Xor: u32(val)}, set},
	}
}

func verdict(k expr.VerdictKind, text string) piece {
	return piece{text: text, exprs: []expr.Any{&expr.Verdict{Kind: k}}}
}

// targetPieces translates the target; a TPROXY gives a second rule's
// statement too (drop), as the TPROXY target drops what finds no socket.
func targetPieces(f plan.Family, t plan.Table, s plan.Spec) ([]piece, []piece, error) {
	opt := func(name string) string {
		for _, o := range s.TargetOpts {
			if o.Name == name {
				return o.Value
			}
		}
		return ""
	}
	switch s.Jump {
	case "RETURN":
		return []piece{verdict(expr.VerdictReturn, "return")}, nil, nil
	case "ACCEPT":
		return []piece{verdict(expr.VerdictAccept, "accept")}, nil, nil
	case "DROP":
		return []piece{verdict(expr.VerdictDrop, "drop")}, nil, nil
	case "REDIRECT":
		v := opt("--to-ports")
		if v == "" {
			return []piece{{text: "redirect", exprs: []expr.Any{&expr.Redir{}}}}, nil, nil
		}
		port, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return nil, nil, fmt.Errorf("--to-ports %q: only one port is supported", v)
		}
		return []piece{{text: fmt.Sprintf("redirect to :%d", port), exprs: []expr.Any{
			&expr.Immediate{Register: 1, Data: be16(uint16(port))},
			&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
		}}}, nil, nil
	case "TPROXY":
		port, err := strconv.ParseUint(opt("--on-port"), 10, 16)
		if err != nil {
			return nil, nil, fmt.Errorf("--on-port %q", opt("--on-port"))
		}
		if ip, err := netip.ParseAddr(opt("--on-ip")); err != nil || !ip.IsUnspecified() {
			return nil, nil, fmt.Errorf("--on-ip %s: only the packet's own address is supported", opt("--on-ip"))
		}
		fam, kw := byte(unix.NFPROTO_IPV4), "ip"
		if f == plan.IPv6 {
			fam, kw = unix.NFPROTO_IPV6, "ip6"
		}
		out := []piece{{text: fmt.Sprintf("tproxy %s to :%d", kw, port), exprs: []expr.Any{
			&expr.Immediate{Register: 1, Data: be16(uint16(port))},
			&expr.TProxy{Family: fam, TableFamily: unix.NFPROTO_INET, RegPort: 1},
		}}}
		val, mask, err := parseMark(opt("--tproxy-mark"))
		if err != nil {
			return nil, nil, err
		}
		if mask != 0 {
			out = append(out, setMark(val, mask))
		}
		return append(out, verdict(expr.VerdictAccept, "accept")), []piece{verdict(expr.VerdictDrop, "drop")}, nil
	case "MARK":
		val, mask, err := parseMark(opt("--set-xmark"))
		if err != nil {
			return nil, nil, err
		}
		return []piece{setMark(val, mask)}, nil, nil
	case "CONNMARK":
		if opt("--nfmask") != "0xffffffff" || opt("--ctmask") != "0xffffffff" {
			return nil, nil, errors.New("CONNMARK masks are not supported")
		}
		if s.TargetOpts[0].Name == "--save-mark" {
			return []piece{{text: "ct mark set meta mark", exprs: []expr.Any{loadMeta(expr.MetaKeyMARK), &expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: 1}}}}, nil, nil
		}
		return []piece{{text: "meta mark set ct mark", exprs: []expr.Any{&expr.Ct{Key: expr.CtKeyMARK, Register: 1}, &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}}}}, nil, nil
	case "CT":
		zone, err := strconv.ParseUint(opt("--zone"), 0, 16)
		if err != nil {
			return nil, nil, fmt.Errorf("--zone %q", opt("--zone"))
		}
		return []piece{{text: fmt.Sprintf("ct zone set %d", zone), exprs: []expr.Any{
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(uint16(zone))},
			&expr.Ct{Key: expr.CtKeyZONE, SourceRegister: true, Register: 1},
		}}}, nil, nil
	}
	if plan.Chain(s.Jump).Owned() {
		k, kw := expr.VerdictJump, "jump"
		if s.Goto {
			k, kw = expr.VerdictGoto, "goto"
		}
		name := nftChainName(t, plan.Chain(s.Jump))
		return []piece{{text: kw + " " + name, exprs: []expr.Any{&expr.Verdict{Kind: k, Chain: name}}}}, nil, nil
	}
	return nil, nil, fmt.Errorf("target %s is not supported", s.Jump)
}

// nftRule translates one rule (or, with kind, a run of rules whose
// destination addresses or ports are vals) into one rule, two for TPROXY.
func nftRule(f plan.Family, t plan.Table, s plan.Spec, kind string, vals []string) ([]NftRule, error) {
	pieces := []piece{nfproto(f)}
	add := func(p piece, err error) error {
		if err == nil && (p.text != "" || len(p.exprs) > 0) {
			pieces = append(pieces, p)
		}
		return err
	}
	if s.Src.Prefix.IsValid() {
		if err := add(addrPiece(f, false, s.Src)); err != nil {
			return nil, err
		}
	}
	if kind == "daddr" {
		set, items, err := cidrSet(f, vals)
		if err != nil {
			return nil, err
		}
		ipName, off, n := "ip", uint32(16), uint32(4)
		if f == plan.IPv6 {
			ipName, off, n = "ip6", 24, 16
		}
		pieces = append(pieces, setPiece(ipName+" daddr", payloadNet(off, n), false, set, items))
	} else if s.Dst.Prefix.IsValid() {
		if err := add(addrPiece(f, true, s.Dst)); err != nil {
			return nil, err
		}
	}
	if s.In.Name != "" {
		if err := add(ifacePiece(false, s.In)); err != nil {
			return nil, err
		}
	}
	if s.Out.Name != "" {
		if err := add(ifacePiece(true, s.Out)); err != nil {
			return nil, err
		}
	}
	if s.Proto.Name != "" {
		if err := add(protoPiece(s.Proto)); err != nil {
			return nil, err
		}
	}
	skip := -1
	if kind == "dport" {
		skip = dportMatch(s)
		set, items, err := portSet(vals)
		if err != nil {
			return nil, err
		}
		pieces = append(pieces, setPiece(s.Proto.Name+" dport", payloadPort(true), false, set, items))
	}
	for i, m := range s.Matches {
		if i == skip || m.Name == "comment" {
			continue
		}
		ps, err := matchPieces(s.Proto.Name, m)
		if err != nil {
			return nil, err
		}
		pieces = append(pieces, ps...)
	}
	target, second, err := targetPieces(f, t, s)
	if err != nil {
		return nil, err
	}
	out := []NftRule{assemble(append(slices.Clone(pieces), target...))}
	if second != nil {
		out = append(out, assemble(append(slices.Clone(pieces), second...)))
	}
	return out, nil
}

func assemble(pieces []piece) NftRule {
	r := NftRule{SetAt: -1}
	var texts []string
	for _, p := range pieces {
		texts = append(texts, p.text)
		if p.set != nil {
			r.Set = p.set
			r.SetAt = len(r.Exprs) + len(p.exprs) - 1
		}
		r.Exprs = append(r.Exprs, p.exprs...)
	}
	r.Text = strings.Join(texts, " ")
	return r
}

// Text renders the ruleset as `nft -f` input that creates the table, or
// replaces it when it exists, in one transaction. It is what NftHash
// reads; Script adds the owner tag a real write carries.
func (r NftRuleset) Text() string { return nftPrelude + r.Body("") }

const nftPrelude = "table inet " + NftTableName + "\ndelete table inet " + NftTableName + "\n"

// NftScript is the `nft -f` text of what the native backend writes for p
// into a namespace that has no table of ours: the table with its owner tag.
func NftScript(p plan.Plan) (string, error) {
	rs, err := NftTranslate(p)
	if err != nil {
		return "", err
	}
	return rs.Body(NftHash(rs, p)), nil
}

// OwnerSet is the named set whose comment tags a table as this tool's,
// with the hash of the plan it holds.
const OwnerSet = "istio-iptables-owner"

// ownerComment is the owner set's comment for a plan hash.
func ownerComment(hash string) string { return "istio-iptables owner; plan " + hash }

// Body renders the table block; with a hash, the owner set is in it.
func (r NftRuleset) Body(hash string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", NftTableName)
	if hash != "" {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype mark\n\t\tcomment %q\n\t}\n\n", OwnerSet, ownerComment(hash))
	}
	for _, c := range r.Chains {
		for _, rule := range c.Rules {
			if s := rule.Set; s != nil && s.Name != "" {
				flags := "constant"
				if s.Interval {
					flags += ",interval"
				}
				fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n\t\tflags %s\n\t\telements = { %s }\n\t}\n\n", s.Name, s.Key.Name, flags, s.Items)
			}
		}
	}
	for i, c := range r.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Hook != nil {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy accept;\n", c.Hook.Type, c.Hook.Hook, c.Hook.Priority)
		}
		for _, rule := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", rule.Text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// NftHash identifies a native plan for the marker of its apply: its text,
// routes and addresses. Its input differs from PlanHash's, so the marker
// of one backend's apply never vouches for the other's.
func NftHash(r NftRuleset, p plan.Plan) string {
	h := fnv.New64a() // see plan.Hash
	fmt.Fprintf(h, "# native nftables\n%s", r.Text())
	for _, rt := range p.Routes {
		fmt.Fprintln(h, strings.Join(rt.Commands(), "\n"))
	}
	for _, a := range p.Addrs {
		fmt.Fprintln(h, a.Command())
	}
	return fmt.Sprintf("%016x", h.Sum64())
}
