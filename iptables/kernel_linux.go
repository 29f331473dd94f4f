//go:build linux

package iptables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mesh-init/istio-iptables/plan"
)

// linuxKernel is the seam around the running system. Every method runs on
// the calling thread's namespace (Namespace.Do has switched it): sockets
// are opened plainly on that thread, never through a namespace fd, which
// would need CAP_SYS_ADMIN. An init container has NET_ADMIN and NET_RAW
// only, and needs no more.
type linuxKernel struct{}

func newKernel() kernel { return linuxKernel{} }

// LockName is the abstract unix socket that is the one-writer lock of a
// namespace. Abstract sockets belong to the network namespace they are
// bound in, so every caller sees it, whatever its mount namespace (an init
// container, a CNI plugin on the node, a retrying node agent), and it goes
// away with its holder, however the holder ends.
const LockName = "@istio-iptables.lock"

// ErrLocked is a namespace whose lock another run held for the whole wait.
var ErrLocked = errors.New("another istio-iptables run holds the namespace's lock")

// Lock takes the namespace's lock, waiting up to wait (and ctx).
func (linuxKernel) Lock(ctx context.Context, wait time.Duration) (func(), error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock socket: %w", err)
	}
	deadline := time.Now().Add(wait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		err := unix.Bind(fd, &unix.SockaddrUnix{Name: LockName})
		if err == nil {
			return func() { unix.Close(fd) }, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", LockName, err)
		}
		if time.Now().After(deadline) {
			unix.Close(fd)
			return nil, fmt.Errorf("%w (%s), waited %s (--wait): %w", ErrLocked, LockName, wait, err)
		}
		select {
		case <-ctx.Done():
			unix.Close(fd)
			return nil, fmt.Errorf("waiting for the lock %s: %w", LockName, context.Cause(ctx))
		case <-time.After(delay):
		}
	}
}

// Probe reads the state the kernel shows without a process, the parts
// asked for: nf_tables (tables, chains, rule counts, our tags, the
// generation), the legacy table names, policy routing and lo. nf_tables is
// read between two reads of the generation, and again if it moved.
func (linuxKernel) Probe(parts ProbeParts) (State, error) {
	st := State{Iptables: map[Flavour]map[plan.Family]FlavourState{FlavourNft: {}, FlavourLegacy: {}}}
	if parts&ProbeNft != 0 {
		c, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return State{}, fmt.Errorf("nftables: %w", err)
		}
		defer c.CloseLasting()
		// One nfnetlink socket for the generation, the tags and the
		// rule counts (big buffers: a dump of tens of thousands of rules).
		gc, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, nil)
		if err != nil {
			return State{}, fmt.Errorf("nfnetlink: %w", err)
		}
		defer gc.Close()
		_ = bigBuffers(gc)
		for try := 0; ; try++ {
			gen, err := nftGeneration(gc)
			if err != nil {
				return State{}, err
			}
			st.Iptables[FlavourNft] = map[plan.Family]FlavourState{}
			st.Native, st.Markers = NativeState{}, nil
			if err := probeNft(c, gc, &st); err != nil {
				return State{}, err
			}
			again, err := nftGeneration(gc)
			if err != nil {
				return State{}, err
			}
			if again == gen || try == 4 {
				st.Generation = again
				break
			}
		}
	}
	if parts&ProbeLegacy != 0 {
		for _, fam := range families {
			tables, err := legacyTables(fam)
			if err != nil {
				return State{}, err
			}
			st.Iptables[FlavourLegacy][fam] = FlavourState{Tables: tables}
		}
	}
	if parts&ProbeRouting != 0 {
		if err := probeRouting(&st); err != nil {
			return State{}, err
		}
	}
	return st, nil
}

var iptablesTables = []string{"nat", "mangle", "raw", "filter", "security"}

func probeNft(c *nftables.Conn, gc *mdnetlink.Conn, st *State) error {
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("list nftables tables: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return fmt.Errorf("list nftables chains: %w", err)
	}
	// Rules are counted per chain from one raw dump per table: decoding
	// every rule's expressions (GetRules) costs seconds for tens of
	// thousands of rules, and only the counts are needed.
	counts := map[string]map[string]int{}
	count := func(t *nftables.Table, ch *nftables.Chain) (int, error) {
		k := fmt.Sprint(t.Family, "/", t.Name)
		if counts[k] == nil {
			m, err := ruleCounts(gc, byte(t.Family), t.Name)
			if err != nil {
				return 0, fmt.Errorf("list rules of %s: %w", t.Name, err)
			}
			counts[k] = m
		}
		return counts[k][ch.Name], nil
	}
	for _, t := range tables {
		var fam plan.Family
		switch t.Family {
		case nftables.TableFamilyIPv4:
			fam = plan.IPv4
		case nftables.TableFamilyIPv6:
			fam = plan.IPv6
		case nftables.TableFamilyINet:
			if err := probeInet(gc, st, t, chains, count); err != nil {
				return err
			}
			continue
		default:
			continue
		}
		fs := st.Iptables[FlavourNft][fam]
		fs.Tables = append(fs.Tables, t.Name)
		if fs.Counts == nil {
			fs.Counts = map[plan.TableChain]int{}
		}
		accept := true
		for _, ch := range chains {
			if ch.Table.Name != t.Name || ch.Table.Family != t.Family {
				continue
			}
			tc := plan.TableChain{Table: plan.Table(t.Name), Chain: plan.Chain(ch.Name)}
			n, err := count(t, ch)
			if err != nil {
				return err
			}
			fs.Counts[tc] = n
			if ch.Hooknum != nil && (ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept) {
				accept = false
			}
			if tc.Chain.Owned() && slices.Contains([]string{"nat", "mangle", "raw"}, t.Name) {
				fs.OwnedChains = append(fs.OwnedChains, tc)
			}
		}
		if accept {
			fs.AcceptOnly = append(fs.AcceptOnly, plan.Table(t.Name))
		}
		st.Iptables[FlavourNft][fam] = fs
	}
	return nil
}

// probeInet reads an inet table that has one of our names: the native
// table or a record, ours only when its owner set carries our comment.
func probeInet(gc *mdnetlink.Conn, st *State, t *nftables.Table, chains []*nftables.Chain, count func(*nftables.Table, *nftables.Chain) (int, error)) error {
	native, marker := t.Name == NftTableName, strings.HasPrefix(t.Name, MarkerPrefix)
	if !native && !marker {
		return nil
	}
	comment, err := ownerTag(gc, t.Name)
	if err != nil {
		return err
	}
	switch {
	case marker && comment == markerComment:
		st.Markers = append(st.Markers, t.Name)
	case native && strings.HasPrefix(comment, ownerComment("")):
		st.Native = NativeState{Present: true, Ours: true, Hash: strings.TrimPrefix(comment, ownerComment("")), Counts: map[string]int{}}
		for _, ch := range chains {
			if ch.Table.Name != t.Name || ch.Table.Family != t.Family {
				continue
			}
			n, err := count(t, ch)
			if err != nil {
				return err
			}
			st.Native.Chains = append(st.Native.Chains, ch.Name)
			st.Native.Counts[ch.Name] = n
		}
	default:
		if native {
			st.Native.Present = true
		}
		st.Native.Foreign = append(st.Native.Foreign, "inet "+t.Name)
	}
	return nil
}

// markerComment tags a record table.
const markerComment = "istio-iptables record of the last apply"

// ownerTag reads the comment of the owner set of an inet table ("" when it
// has none). google/nftables does not decode set comments, so the sets
// are dumped over nfnetlink directly.
func ownerTag(c *mdnetlink.Conn, table string) (string, error) {
	ae := mdnetlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_TABLE, table)
	attrs, err := ae.Encode()
	if err != nil {
		return "", err
	}
	msgs, err := c.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: mdnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSET), Flags: mdnetlink.Request | mdnetlink.Dump},
		Data:   append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "", nil // the table went away meanwhile
		}
		return "", fmt.Errorf("list the sets of inet %s: %w", table, err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := mdnetlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return "", err
		}
		ad.ByteOrder = binary.BigEndian
		var name string
		var udata []byte
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_NAME:
				name = ad.String()
			case unix.NFTA_SET_USERDATA:
				udata = ad.Bytes()
			}
		}
		if name == OwnerSet {
			comment, _ := userdata.GetString(udata, userdata.NFTNL_UDATA_SET_COMMENT)
			return comment, nil
		}
	}
	return "", nil
}

// ruleCounts counts the rules of each chain of a table, from one
// NFT_MSG_GETRULE dump.
func ruleCounts(c *mdnetlink.Conn, family byte, table string) (map[string]int, error) {
	ae := mdnetlink.NewAttributeEncoder()
	ae.String(unix.NFTA_RULE_TABLE, table)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: mdnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE), Flags: mdnetlink.Request | mdnetlink.Dump},
		Data:   append([]byte{family, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return map[string]int{}, nil
		}
		return nil, err
	}
	out := map[string]int{}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := mdnetlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, err
		}
		var tab, chain string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_TABLE:
				tab = ad.String()
			case unix.NFTA_RULE_CHAIN:
				chain = ad.String()
			}
		}
		if tab == table {
			out[chain]++
		}
	}
	return out, nil
}

// nftGeneration reads the nf_tables ruleset generation (NFT_MSG_GETGEN,
// which google/nftables does not offer).
func nftGeneration(c *mdnetlink.Conn) (uint32, error) {
	msgs, err := c.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: mdnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: mdnetlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, // nfgenmsg
	})
	if err != nil {
		return 0, fmt.Errorf("read the nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := mdnetlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("decode the nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("no generation in the nftables answer")
}

// legacyTables reads the legacy tables of this thread's namespace. The
// file only lists tables that exist, and reading it creates none.
func legacyTables(f plan.Family) ([]string, error) {
	name := "/proc/thread-self/net/ip_tables_names"
	if f == plan.IPv6 {
		name = "/proc/thread-self/net/ip6_tables_names"
	}
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // x_tables not loaded at all
	}
	if err != nil {
		return nil, fmt.Errorf("read legacy tables: %w", err)
	}
	return strings.Fields(string(b)), nil
}

func nlFamily(f plan.Family) int {
	if f == plan.IPv6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// ownedAddrs are the addresses this tool may put on lo.
var ownedAddrs = []netip.Prefix{netip.MustParsePrefix("::6/128")}

func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	p, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(p.Unmap(), ones), true
}

// probeRouting reads our policy routing (rules and routes tagged with
// RouteProtocol), our addresses on lo, and what lo can carry.
func probeRouting(st *State) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	for _, f := range families {
		rules, err := retry(func() ([]netlink.Rule, error) { return h.RuleList(nlFamily(f)) })
		if err != nil {
			return fmt.Errorf("list %s rules: %w", f, err)
		}
		for _, r := range rules {
			rt := plan.Route{Family: f, Mark: r.Mark, Table: r.Table}
			if r.Protocol == RouteProtocol && !st.Routing.hasRoute(rt) {
				st.Routing.Routes = append(st.Routing.Routes, rt)
			}
		}
		routes, err := retry(func() ([]netlink.Route, error) {
			return h.RouteListFiltered(nlFamily(f), &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: RouteProtocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return fmt.Errorf("list %s routes: %w", f, err)
		}
		for _, r := range routes {
			ones := 0
			if r.Dst != nil {
				ones, _ = r.Dst.Mask.Size()
			}
			if r.Protocol == RouteProtocol && r.Type == unix.RTN_LOCAL && ones == 0 && r.LinkIndex == lo.Attrs().Index && !st.Routing.hasTable(f, r.Table) {
				st.Routing.Tables = append(st.Routing.Tables, RouteTable{Family: f, Table: r.Table})
			}
		}
	}
	addrs, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(lo, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of lo: %w", err)
	}
	st.Loopback.Up = lo.Attrs().Flags&net.FlagUp != 0
	for _, a := range addrs {
		p, ok := prefixOf(a)
		if !ok {
			continue
		}
		switch {
		case slices.Contains(ownedAddrs, p):
			st.Routing.Addrs = append(st.Routing.Addrs, plan.Addr{Dev: "lo", Prefix: p})
		case p.Addr() == netip.MustParseAddr("127.0.0.1"):
			st.Loopback.IPv4 = true
		case p.Addr() == netip.IPv6Loopback():
			st.Loopback.IPv6 = true
		}
	}
	return nil
}

func defaultDst(f plan.Family) *net.IPNet {
	if f == plan.IPv6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

// ChangeRouting adds and removes our policy routing and lo addresses.
// Present and absent objects that are already as wanted are not errors.
func (linuxKernel) ChangeRouting(ch RoutingChange) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	localDefault := func(f plan.Family, table int) *netlink.Route {
		return &netlink.Route{LinkIndex: lo.Attrs().Index, Table: table, Type: unix.RTN_LOCAL, Dst: defaultDst(f),
			Scope: netlink.SCOPE_HOST, Protocol: RouteProtocol}
	}
	for _, r := range ch.AddRoutes {
		// ip route add local default dev lo table T proto 137
		if err := h.RouteReplace(localDefault(r.Family, r.Table)); err != nil {
			return fmt.Errorf("add %s local default route to table %d: %w", r.Family, r.Table, err)
		}
		// ip rule add fwmark M lookup T proto 137. A rule of ours that
		// this one replaces (another mark or table) gives its priority, so
		// that once it is removed the namespace is as a fresh apply leaves
		// it; otherwise the kernel picks one.
		rule := netlink.NewRule()
		rule.Family = nlFamily(r.Family)
		rule.Mark = r.Mark
		rule.Table = r.Table
		rule.Protocol = RouteProtocol
		have, err := retry(func() ([]netlink.Rule, error) { return h.RuleList(nlFamily(r.Family)) })
		if err != nil {
			return fmt.Errorf("list %s rules: %w", r.Family, err)
		}
		for _, o := range have {
			if o.Protocol == RouteProtocol && o.Priority > 0 {
				rule.Priority = o.Priority
				break
			}
		}
		if err := h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s rule fwmark %d lookup %d: %w", r.Family, r.Mark, r.Table, err)
		}
	}
	for _, a := range ch.AddAddrs {
		if a.Dev != "lo" || !slices.Contains(ownedAddrs, a.Prefix) {
			return fmt.Errorf("address %s on %s is not one this tool manages", a.Prefix, a.Dev)
		}
		ipn := &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), a.Prefix.Addr().BitLen())}
		if err := h.AddrReplace(lo, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add %s to lo: %w", a.Prefix, err)
		}
	}
	for _, r := range ch.DelRoutes {
		rules, err := retry(func() ([]netlink.Rule, error) { return h.RuleList(nlFamily(r.Family)) })
		if err != nil {
			return fmt.Errorf("list %s rules: %w", r.Family, err)
		}
		for _, have := range rules {
			if have.Protocol != RouteProtocol || have.Mark != r.Mark || have.Table != r.Table {
				continue
			}
			if err := h.RuleDel(&have); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete %s rule fwmark %d lookup %d: %w", r.Family, r.Mark, r.Table, err)
			}
		}
	}
	for _, t := range ch.DelTables {
		if err := h.RouteDel(localDefault(t.Family, t.Table)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete %s local default route of table %d: %w", t.Family, t.Table, err)
		}
	}
	for _, a := range ch.DelAddrs {
		ipn := &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), a.Prefix.Addr().BitLen())}
		if err := h.AddrDel(lo, &netlink.Addr{IPNet: ipn}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from lo: %w", a.Prefix, err)
		}
	}
	return nil
}

// DeleteNftTables deletes tables in one batch; an IfEmpty one only when,
// read again now, it holds no rule and nothing but base chains with an
// accept policy.
func (linuxKernel) DeleteNftTables(refs []NftTableRef) error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	chains, err := c.ListChains()
	if err != nil {
		return fmt.Errorf("list nftables chains: %w", err)
	}
	n := 0
	for _, r := range refs {
		fam := map[string]nftables.TableFamily{"ip": nftables.TableFamilyIPv4, "ip6": nftables.TableFamilyIPv6, "inet": nftables.TableFamilyINet}[r.Family]
		t := &nftables.Table{Name: r.Name, Family: fam}
		if r.IfEmpty {
			empty, found := true, false
			for _, ch := range chains {
				if ch.Table.Name != r.Name || ch.Table.Family != fam {
					continue
				}
				found = true
				if ch.Hooknum == nil || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
					empty = false
					break
				}
				rules, err := c.GetRules(t, ch)
				if err != nil {
					return fmt.Errorf("list rules of %s %s: %w", r, ch.Name, err)
				}
				if len(rules) > 0 {
					empty = false
					break
				}
			}
			if !found || !empty {
				continue
			}
		}
		c.DelTable(t)
		n++
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables tables: %w", err)
	}
	return nil
}

// SetMarker removes the record tables named and adds one called add ("":
// none), tagged as ours, in one transaction.
func (linuxKernel) SetMarker(remove []string, add string) error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	for _, name := range remove {
		if name != add {
			c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
		}
	}
	if add != "" && !slices.Contains(remove, add) {
		t := c.AddTable(&nftables.Table{Name: add, Family: nftables.TableFamilyINet})
		if err := c.AddSet(&nftables.Set{Table: t, Name: OwnerSet, KeyType: nftables.TypeMark, Comment: markerComment}, nil); err != nil {
			return fmt.Errorf("record the apply: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("record the apply: %w", err)
	}
	return nil
}
