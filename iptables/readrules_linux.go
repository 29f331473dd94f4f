//go:build linux

package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/mesh-init/istio-iptables/plan"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ReadRules returns what `*-save` prints for family f in the namespace at
// path ("" the current one), for explain, and the nf_tables tables that
// see the family's packets but that `*-save` does not show (native
// nftables: inet and netdev tables, and ip/ip6 tables iptables does not
// know; the empty istio_iptables_* records excepted). It reads the
// flavour that holds rules: nft, or legacy when only legacy does (an
// error when both do: the kernel then runs both, in an order *-save does
// not show). Tables are listed first without a process, so nothing is
// created, and a flavour with no table is not run.
func ReadRules(path string, f plan.Family) (text string, hidden []string, err error) {
	ns, err := OpenNamespace(path)
	if err != nil {
		return "", nil, err
	}
	defer ns.Close()
	texts := map[Flavour]string{}
	err = ns.Do(func() error {
		st, err := linuxKernel{}.Probe(ProbeNft | ProbeLegacy)
		if err != nil {
			return err
		}
		if hidden, err = hiddenTables(f); err != nil {
			return err
		}
		for _, fl := range flavours {
			if len(st.Iptables[fl][f].Tables) == 0 {
				continue
			}
			name := fl.binary(f, "save")
			bin, err := lookSbin(name)
			if err != nil {
				return fmt.Errorf("%s: %w", name, ErrNoBinary)
			}
			out, err := osExecer{}.Run(context.Background(), []string{bin}, nil)
			if err != nil {
				return err
			}
			texts[fl] = string(out)
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("read %s rules in %q: %w", f, path, err)
	}
	hasRules := func(fl Flavour) bool { return strings.Contains(texts[fl], "\n-A ") }
	switch {
	case hasRules(FlavourNft) && hasRules(FlavourLegacy):
		return "", nil, fmt.Errorf("read %s rules in %q: both iptables-nft and iptables-legacy hold rules; explain cannot tell how the kernel orders them", f, path)
	case hasRules(FlavourLegacy):
		return texts[FlavourLegacy], hidden, nil
	}
	return texts[FlavourNft], hidden, nil
}

// hiddenTables lists, as "FAMILY NAME", the nf_tables tables of this
// thread's namespace that see packets of family f but that *-save does
// not print.
func hiddenTables(f plan.Family) ([]string, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	var out []string
	for _, t := range tables {
		switch {
		case t.Family == nftables.TableFamilyINet && !strings.HasPrefix(t.Name, MarkerPrefix):
			out = append(out, "inet "+t.Name)
		case t.Family == nftables.TableFamilyNetdev:
			out = append(out, "netdev "+t.Name)
		case t.Family == map[plan.Family]nftables.TableFamily{plan.IPv4: nftables.TableFamilyIPv4, plan.IPv6: nftables.TableFamilyIPv6}[f] && !slices.Contains(iptablesTables, t.Name):
			out = append(out, map[plan.Family]string{plan.IPv4: "ip ", plan.IPv6: "ip6 "}[f]+t.Name)
		}
	}
	return out, nil
}

// lookSbin finds a binary on PATH or in the sbin directories.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p, err := exec.LookPath(dir + "/" + name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoBinary
}

// LocalAddrs returns every address of every interface in the namespace
// at path ("" the current one): the destinations that are local to it.
func LocalAddrs(path string) ([]netip.Addr, error) {
	ns, err := OpenNamespace(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	var list []netlink.Addr
	err = ns.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
		list, err = retry(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}
