//go:build linux

package iptables

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// WriteNative writes the native table in one netlink transaction in this
// thread's namespace. A fresh namespace gets the table created (no delete
// in the batch: deleting a table, even an empty one, makes the kernel wait
// for a grace period). A table of ours gets its chains flushed and written
// anew, the chains the plan no longer has deleted, and its owner tag
// replaced. Large sets are sent in chunks, so no netlink attribute
// overflows.
func (linuxKernel) WriteNative(w NativeWrite) error {
	// A plan of hundreds of rules overflows the default socket buffers:
	// EMSGSIZE on the send, or ENOBUFS for the acks after the commit.
	c, err := nftables.New(nftables.WithSockOptions(bigBuffers)) // this thread's namespace
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Name: NftTableName, Family: nftables.TableFamilyINet})
	if w.Replace {
		for _, name := range w.Existing {
			c.FlushChain(&nftables.Chain{Name: name, Table: t})
		}
		for _, name := range w.Stale {
			c.DelChain(&nftables.Chain{Name: name, Table: t})
		}
		c.DelSet(&nftables.Set{Table: t, Name: OwnerSet})
	}
	if err := c.AddSet(&nftables.Set{Table: t, Name: OwnerSet, KeyType: nftables.TypeMark, Comment: ownerComment(w.Hash)}, nil); err != nil {
		return fmt.Errorf("nftables owner tag: %w", err)
	}
	chains := map[string]*nftables.Chain{}
	for _, ch := range w.Ruleset.Chains {
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
	for _, ch := range w.Ruleset.Chains {
		for _, r := range ch.Rules {
			exprs := r.Exprs
			if r.Set != nil {
				s := &nftables.Set{Table: t, Anonymous: r.Set.Name == "", Name: r.Set.Name, Constant: true, Interval: r.Set.Interval, KeyType: r.Set.Key}
				if s.Name != "" {
					s.Size = uint32(len(r.Set.Elems)) // else the kernel caps the set (ENFILE)
				}
				if w.Replace && s.Name != "" {
					c.DelSet(&nftables.Set{Table: t, Name: s.Name}) // its rule is flushed above
				}
				if err := addSetChunked(c, s, r.Set.Elems); err != nil {
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
	for _, name := range w.Unrecord {
		c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	}
	if w.Record != "" {
		rt := c.AddTable(&nftables.Table{Name: w.Record, Family: nftables.TableFamilyINet})
		if err := c.AddSet(&nftables.Set{Table: rt, Name: OwnerSet, KeyType: nftables.TypeMark, Comment: markerComment}, nil); err != nil {
			return fmt.Errorf("record the apply: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write table inet %s: %w", NftTableName, err)
	}
	return nil
}

// addSetChunked adds a set and its elements in messages of at most
// setChunk elements each (interval sets: never splitting a start from its
// end), in the same batch.
func addSetChunked(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	first := min(len(elems), setChunk)
	if err := c.AddSet(s, elems[:first]); err != nil {
		return err
	}
	for i := first; i < len(elems); i += setChunk {
		if err := c.SetAddElements(s, elems[i:min(len(elems), i+setChunk)]); err != nil {
			return err
		}
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
