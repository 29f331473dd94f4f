//go:build linux

package iptables

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/mesh-init/istio-iptables/plan"
	"golang.org/x/sys/unix"
)

// NewNftExecutor returns the native nftables executor (--native-nftables):
// the plan as one inet table written over netlink, no process started. Its
// apply also removes the rules an iptables-backend run left, and its
// cleanup removes both backends' state.
func NewNftExecutor(o Options) (Executor, error) {
	return &nftExecutor{ipt: newExecutor(o, osExecer{}, exec.LookPath, newKernel()), write: writeNftRuleset}, nil
}

// nftExecutor applies a plan natively; ipt is the iptables executor whose
// cleanup removes what an iptables-backend run wrote.
type nftExecutor struct {
	ipt   *executor
	write func(NftRuleset) error
}

// Apply implements Executor: one netlink transaction replaces the table
// (`table; delete table; table {...}`, as the dry run's text does), then
// the iptables rules of an earlier run are removed, the TPROXY routing is
// synced and the apply is recorded. A re-run of the same plan, with the
// record current, writes nothing.
func (e *nftExecutor) Apply(ctx context.Context, p plan.Plan) error {
	rs, err := NftTranslate(p)
	if err != nil {
		return err
	}
	hash := NftHash(rs, p)
	return e.ipt.k.Do(e.ipt.o.Netns, func() error {
		log := e.ipt.log
		if markers, gen, err := e.ipt.k.NftMarkers(); err == nil && markerCurrent(markers, hash, gen) && e.noLegacy() {
			log.Info("rules already in place, nothing read or written", "backend", "native nftables", "generation", gen, "marker", MarkerName(hash, gen))
			if len(p.Routes) > 0 || len(p.Addrs) > 0 {
				if err := e.ipt.k.SyncRoutes(p.Routes, p.Addrs); err != nil {
					return fmt.Errorf("policy routing: %w", err)
				}
			}
			return nil
		}
		if err := e.write(rs); err != nil {
			return err
		}
		n := 0
		for _, c := range rs.Chains {
			n += len(c.Rules)
		}
		log.Info("rules written", "backend", "native nftables", "table", "inet "+NftTableName, "chains", len(rs.Chains), "rules", n)
		// The native table is in place from here on: a failure leaves it
		// there, and says so.
		if removed, err := e.ipt.removeOwnedRules(ctx); err != nil {
			return fmt.Errorf("remove the iptables rules of an earlier run: %w: %w", err, ErrPartial)
		} else if removed > 0 {
			log.Info("removed the iptables rules of an earlier run", "rules", removed)
		}
		if err := e.ipt.k.SyncRoutes(p.Routes, p.Addrs); err != nil {
			return fmt.Errorf("policy routing: %w: %w", err, ErrPartial)
		}
		e.ipt.chosen = nft // recordMarker: write the marker
		e.ipt.recordMarker(hash)
		return nil
	})
}

// noLegacy reports whether no legacy x_tables table exists, which could
// hold rules of an earlier iptables-legacy run.
func (e *nftExecutor) noLegacy() bool {
	for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
		if tables, err := e.ipt.k.LegacyTables(f); err != nil || len(tables) > 0 {
			return false
		}
	}
	return true
}

// Cleanup implements Executor: the same cleanup as the iptables backend,
// which removes the native table too.
func (e *nftExecutor) Cleanup(ctx context.Context) error { return e.ipt.Cleanup(ctx) }

// writeNftRuleset writes the ruleset in one netlink transaction in this
// thread's namespace: the table is added (so the delete cannot fail),
// deleted with everything in it, and added anew with its chains, sets and
// rules.
func writeNftRuleset(rs NftRuleset) error {
	// A plan of hundreds of rules overflows the default socket buffers:
	// EMSGSIZE on the send, or ENOBUFS for the acks after the commit.
	c, err := nftables.New(nftables.WithSockOptions(bigBuffers)) // this thread's namespace (see nftConn)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: NftTableName, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	chains := map[string]*nftables.Chain{}
	for _, ch := range rs.Chains {
		nc := &nftables.Chain{Name: ch.Name, Table: t}
		if h := ch.Hook; h != nil {
			accept := nftables.ChainPolicyAccept
			nc.Type = nftables.ChainType(h.Type)
			nc.Hooknum = nftHookNum[h.Hook]
			nc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(h.Priority))
			nc.Policy = &accept
		}
		chains[ch.Name] = c.AddChain(nc)
	}
	for _, ch := range rs.Chains {
		for _, r := range ch.Rules {
			exprs := r.Exprs
			if r.Set != nil {
				s := &nftables.Set{Table: t, Anonymous: true, Constant: true, Interval: r.Set.Interval, KeyType: r.Set.Key}
				if err := c.AddSet(s, r.Set.Elems); err != nil {
					return fmt.Errorf("nftables set of %q: %w", r.Text, err)
				}
				exprs = append([]expr.Any(nil), r.Exprs...)
				l := *r.Exprs[r.SetAt].(*expr.Lookup)
				l.SetName, l.SetID = s.Name, s.ID
				exprs[r.SetAt] = &l
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: chains[ch.Name], Exprs: exprs})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write table inet %s: %w", NftTableName, err)
	}
	return nil
}

// bigBuffers gives the netlink socket 32 MiB buffers: the batch goes in
// one sendmsg, which the send buffer must hold, and the kernel acks every
// message of it. SO_SNDBUFFORCE and SO_RCVBUFFORCE (CAP_NET_ADMIN) go
// beyond wmem_max/rmem_max; without the capability the plain options do
// what they can.
func bigBuffers(c *mdnetlink.Conn) error {
	const size = 32 << 20
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sndErr, rcvErr error
	if err := rc.Control(func(fd uintptr) {
		sndErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
		rcvErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	}); err != nil {
		return err
	}
	if sndErr != nil {
		if err := c.SetWriteBuffer(size); err != nil {
			return err
		}
	}
	if rcvErr != nil {
		return c.SetReadBuffer(size)
	}
	return nil
}

var nftHookNum = map[string]*nftables.ChainHook{
	"prerouting":  nftables.ChainHookPrerouting,
	"input":       nftables.ChainHookInput,
	"forward":     nftables.ChainHookForward,
	"output":      nftables.ChainHookOutput,
	"postrouting": nftables.ChainHookPostrouting,
}

// DeleteNftTable deletes the native backend's table when it exists.
func (linuxKernel) DeleteNftTable() (bool, error) {
	c, done, err := nftConn()
	if err != nil {
		return false, err
	}
	defer done()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables inet tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == NftTableName {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return false, fmt.Errorf("delete table inet %s: %w", NftTableName, err)
			}
			return true, nil
		}
	}
	return false, nil
}
