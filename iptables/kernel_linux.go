//go:build linux

package iptables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/mesh-init/istio-iptables/plan"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type linuxKernel struct{}

func newKernel() kernel { return linuxKernel{} }

// Do runs fn with the calling thread in the namespace at path, the way
// containernetworking's ns.Do does: on a fresh goroutine with its OS
// thread locked; the thread is unlocked only when it is back in the
// original namespace, so a failed restore cannot leak a thread in the
// wrong namespace. Processes fn starts inherit the namespace. An empty
// path runs fn where it is.
func (linuxKernel) Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("read current netns: %w", err)
			return // the thread exits locked and is discarded
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// LegacyTables reads the legacy tables of this thread's namespace. The
// file only lists tables that exist, and reading it creates none.
func (linuxKernel) LegacyTables(f plan.Family) ([]string, error) {
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

// nftConn opens an nf_tables netlink connection in this thread's
// namespace. The socket is created on the calling thread, which Do has
// already switched when a --netns was given: no namespace fd is passed,
// because opening a socket through one setns()es, which needs
// CAP_SYS_ADMIN, and an init container has only NET_ADMIN and NET_RAW.
func nftConn() (*nftables.Conn, func(), error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: %w", err)
	}
	return c, func() { c.CloseLasting() }, nil
}

func nftFamily(f plan.Family) nftables.TableFamily {
	if f == plan.IPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// NftTables lists the nf_tables tables of both IP families over netlink,
// in one dump.
func (linuxKernel) NftTables() (map[plan.Family][]string, error) {
	c, done, err := nftConn()
	if err != nil {
		return nil, err
	}
	defer done()
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	out := map[plan.Family][]string{}
	for _, t := range tables {
		switch t.Family {
		case nftables.TableFamilyIPv4:
			out[plan.IPv4] = append(out[plan.IPv4], t.Name)
		case nftables.TableFamilyIPv6:
			out[plan.IPv6] = append(out[plan.IPv6], t.Name)
		}
	}
	return out, nil
}

// NftMarkers lists the marker tables and reads the ruleset generation
// (NFT_MSG_GETGEN, which google/nftables does not offer, so it is asked
// over nfnetlink directly).
func (linuxKernel) NftMarkers() ([]string, uint32, error) {
	c, done, err := nftConn()
	if err != nil {
		return nil, 0, err
	}
	defer done()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, 0, fmt.Errorf("list nftables inet tables: %w", err)
	}
	var markers []string
	for _, t := range tables {
		if strings.HasPrefix(t.Name, MarkerPrefix) {
			markers = append(markers, t.Name)
		}
	}
	gen, err := nftGeneration()
	return markers, gen, err
}

func nftGeneration() (uint32, error) {
	// On this thread's namespace, without a namespace fd (see nftConn).
	c, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return 0, fmt.Errorf("nfnetlink: %w", err)
	}
	defer c.Close()
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

// SetNftMarker replaces the marker tables by one called name ("" none),
// in one transaction.
func (linuxKernel) SetNftMarker(name string) error {
	c, done, err := nftConn()
	if err != nil {
		return err
	}
	defer done()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("list nftables inet tables: %w", err)
	}
	changed := false
	for _, t := range tables {
		if strings.HasPrefix(t.Name, MarkerPrefix) && t.Name != name {
			c.DelTable(t)
			changed = true
		} else if t.Name == name {
			name = "" // already there
		}
	}
	if name != "" {
		c.AddTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
		changed = true
	}
	if !changed {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write the nftables marker: %w", err)
	}
	return nil
}

// DeleteEmptyNftTables deletes the named tables when they hold only base
// chains with no rule and an accept policy: removing such a table changes
// nothing for a packet, and leaves the namespace as it was before a run.
func (linuxKernel) DeleteEmptyNftTables(f plan.Family, tables []plan.Table) error {
	if len(tables) == 0 {
		return nil
	}
	c, done, err := nftConn()
	if err != nil {
		return err
	}
	defer done()
	chains, err := c.ListChainsOfTableFamily(nftFamily(f))
	if err != nil {
		return fmt.Errorf("list nftables %s chains: %w", f, err)
	}
	var del []*nftables.Table
	for _, t := range tables {
		empty, found := true, false
		for _, ch := range chains {
			if ch.Table.Name != string(t) {
				continue
			}
			found = true
			if ch.Hooknum == nil || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
				empty = false
				break
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return fmt.Errorf("list rules of %s/%s: %w", t, ch.Name, err)
			}
			if len(rules) > 0 {
				empty = false
				break
			}
		}
		if found && empty {
			del = append(del, &nftables.Table{Name: string(t), Family: nftFamily(f)})
		}
	}
	if len(del) == 0 {
		return nil
	}
	for _, t := range del {
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete empty nftables %s tables: %w", f, err)
	}
	return nil
}

func nlFamily(f plan.Family) int {
	if f == plan.IPv6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// retry repeats a netlink dump that the kernel interrupted.
func retry[T any](list func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var out []T
		if out, err = list(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

// SyncRoutes makes the TPROXY routing be exactly routes, and the addresses
// exactly addrs (only ::6/128 on lo is ever ours). A TPROXY route of an
// earlier run is recognised as a `fwmark M lookup T` rule whose table T
// holds only `local default dev lo`.
func (linuxKernel) SyncRoutes(routes []plan.Route, addrs []plan.Addr) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	// Read what is there first, so that a failure half-way puts it back:
	// the routing is changed all or nothing, like the rules.
	prevRoutes, prevAddrs, err := currentRouting(h, lo)
	if err != nil {
		return err
	}
	err = syncRouting(h, lo, routes, addrs)
	if err != nil {
		if rerr := syncRouting(h, lo, prevRoutes, prevAddrs); rerr != nil {
			return fmt.Errorf("%w; restoring the earlier routing failed too: %v", err, rerr)
		}
	}
	return err
}

func syncRouting(h *netlink.Handle, lo netlink.Link, routes []plan.Route, addrs []plan.Addr) error {
	for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
		if err := syncFamilyRoutes(h, lo, f, routes); err != nil {
			return err
		}
	}
	return syncAddrs(h, lo, addrs)
}

// currentRouting reads the TPROXY routing and owned addresses there now.
func currentRouting(h *netlink.Handle, lo netlink.Link) ([]plan.Route, []plan.Addr, error) {
	var routes []plan.Route
	for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
		rules, err := retry(func() ([]netlink.Rule, error) { return h.RuleList(nlFamily(f)) })
		if err != nil {
			return nil, nil, fmt.Errorf("list %s rules: %w", f, err)
		}
		for _, r := range rules {
			if r.Mark == 0 || r.Table <= 0 || r.Table >= 253 {
				continue
			}
			ours, err := tproxyTable(h, lo, f, r.Table)
			if err != nil {
				return nil, nil, err
			}
			if ours && !slices.Contains(routes, plan.Route{Family: f, Mark: r.Mark, Table: r.Table}) {
				routes = append(routes, plan.Route{Family: f, Mark: r.Mark, Table: r.Table})
			}
		}
	}
	have, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(lo, netlink.FAMILY_V6) })
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses of lo: %w", err)
	}
	var addrs []plan.Addr
	for _, a := range have {
		if p, ok := netip.AddrFromSlice(a.IP); ok {
			ones, _ := a.Mask.Size()
			if pfx := netip.PrefixFrom(p.Unmap(), ones); slices.Contains(ownedAddrs, pfx) {
				addrs = append(addrs, plan.Addr{Dev: "lo", Prefix: pfx})
			}
		}
	}
	return routes, addrs, nil
}

func defaultDst(f plan.Family) *net.IPNet {
	if f == plan.IPv6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

// tproxyTable reports whether table t holds only `local default dev lo`.
func tproxyTable(h *netlink.Handle, lo netlink.Link, f plan.Family, t int) (bool, error) {
	rs, err := retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(nlFamily(f), &netlink.Route{Table: t}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return false, fmt.Errorf("list routes of table %d: %w", t, err)
	}
	if len(rs) != 1 {
		return false, nil
	}
	r := rs[0]
	ones := -1
	if r.Dst != nil {
		ones, _ = r.Dst.Mask.Size()
	}
	return r.Type == unix.RTN_LOCAL && r.LinkIndex == lo.Attrs().Index && (r.Dst == nil || ones == 0), nil
}

func syncFamilyRoutes(h *netlink.Handle, lo netlink.Link, f plan.Family, routes []plan.Route) error {
	var want []plan.Route
	for _, r := range routes {
		if r.Family == f {
			want = append(want, r)
		}
	}
	rules, err := retry(func() ([]netlink.Rule, error) { return h.RuleList(nlFamily(f)) })
	if err != nil {
		return fmt.Errorf("list %s rules: %w", f, err)
	}
	wanted := func(mark uint32, table int) bool {
		return slices.ContainsFunc(want, func(r plan.Route) bool { return r.Mark == mark && r.Table == table })
	}
	have := map[[2]int]bool{}
	for _, r := range rules {
		if r.Mark == 0 || r.Table <= 0 || r.Table >= 253 {
			continue
		}
		if wanted(r.Mark, r.Table) && !have[[2]int{int(r.Mark), r.Table}] {
			have[[2]int{int(r.Mark), r.Table}] = true
			continue
		}
		ours, err := tproxyTable(h, lo, f, r.Table)
		if err != nil {
			return err
		}
		if !ours {
			continue
		}
		// A stale (or duplicate) TPROXY rule of an earlier run.
		if err := h.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete %s rule fwmark %d lookup %d: %w", f, r.Mark, r.Table, err)
		}
		if !wanted(r.Mark, r.Table) && !slices.ContainsFunc(want, func(w plan.Route) bool { return w.Table == r.Table }) {
			err := h.RouteDel(&netlink.Route{LinkIndex: lo.Attrs().Index, Table: r.Table, Type: unix.RTN_LOCAL, Dst: defaultDst(f), Scope: netlink.SCOPE_HOST})
			if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete %s local default route of table %d: %w", f, r.Table, err)
			}
		}
	}
	for _, w := range want {
		// ip route add local default dev lo table T
		err := h.RouteReplace(&netlink.Route{LinkIndex: lo.Attrs().Index, Table: w.Table, Type: unix.RTN_LOCAL, Dst: defaultDst(f), Scope: netlink.SCOPE_HOST})
		if err != nil {
			return fmt.Errorf("add %s local default route to table %d: %w", f, w.Table, err)
		}
		if have[[2]int{int(w.Mark), w.Table}] {
			continue
		}
		// ip rule add fwmark M lookup T
		rule := netlink.NewRule()
		rule.Family = nlFamily(f)
		rule.Mark = w.Mark
		rule.Table = w.Table
		if err := h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s rule fwmark %d lookup %d: %w", f, w.Mark, w.Table, err)
		}
	}
	return nil
}

// ownedAddrs are the addresses this tool may put on lo.
var ownedAddrs = []netip.Prefix{netip.MustParsePrefix("::6/128")}

func syncAddrs(h *netlink.Handle, lo netlink.Link, addrs []plan.Addr) error {
	for _, a := range addrs {
		if a.Dev != "lo" || !slices.Contains(ownedAddrs, a.Prefix) {
			return fmt.Errorf("address %s on %s is not one this tool manages", a.Prefix, a.Dev)
		}
		ipn := &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), a.Prefix.Addr().BitLen())}
		if err := h.AddrReplace(lo, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add %s to lo: %w", a.Prefix, err)
		}
	}
	have, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(lo, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of lo: %w", err)
	}
	for _, a := range have {
		p, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		pfx := netip.PrefixFrom(p.Unmap(), ones)
		if !slices.Contains(ownedAddrs, pfx) || slices.ContainsFunc(addrs, func(w plan.Addr) bool { return w.Prefix == pfx }) {
			continue
		}
		if err := h.AddrDel(lo, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from lo: %w", pfx, err)
		}
	}
	return nil
}

// CheckNetns verifies that path names a network namespace: a nsfs file of
// type CLONE_NEWNET. It only opens the file.
func CheckNetns(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%q: %w", path, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%q is a directory, not a network namespace", path)
	}
	// A namespace file is a regular nsfs file. Anything else is refused
	// before it is opened: opening a FIFO blocks forever, opening a device
	// can act on it.
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%q is not a namespace file (expected /var/run/netns/NAME or /proc/PID/ns/net)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%q: %w", path, err)
	}
	defer f.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%q: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%q is not a namespace file (expected /var/run/netns/NAME or /proc/PID/ns/net)", path)
	}
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("%q: %w", path, err)
	}
	if t != unix.CLONE_NEWNET {
		return fmt.Errorf("%q is a namespace, but not a network namespace", path)
	}
	return nil
}

// HasGlobalIPv6 reports whether the namespace at path ("" the current
// one) has a global IPv6 address on an interface other than lo. Reading
// the current namespace needs no privilege.
func HasGlobalIPv6(path string) (bool, error) {
	h, done, err := routeHandle(path)
	if err != nil {
		return false, err
	}
	defer done()
	addrs, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V6) })
	if err != nil {
		return false, fmt.Errorf("list IPv6 addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE || a.IP.IsLoopback() || a.IP.IsLinkLocalUnicast() {
			continue
		}
		if l, err := h.LinkByIndex(a.LinkIndex); err == nil && l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		return true, nil
	}
	return false, nil
}

// routeHandle opens an rtnetlink handle in the namespace at path ("" the
// current one, which needs no privilege), and what closes it.
func routeHandle(path string) (*netlink.Handle, func(), error) {
	if path == "" {
		return &netlink.Handle{}, func() {}, nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("netlink in %s: %w", path, err)
	}
	return h, h.Close, nil
}
