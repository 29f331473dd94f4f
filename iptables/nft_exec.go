package iptables

import (
	"context"
	"fmt"

	"github.com/mesh-init/istio-iptables/plan"
)

// NftTableName is the inet table the native backend owns (nft.go).
const NftTableName = "istio-iptables"

// nftTableDeleter is the part of the kernel that removes the native
// backend's table; fakes that lack it have no such table.
type nftTableDeleter interface {
	DeleteNftTable() (bool, error)
}

// removeNative deletes the native backend's table, so an iptables apply
// after a native one leaves no duplicate capture and a cleanup covers
// both backends.
func (e *executor) removeNative() error {
	d, ok := e.k.(nftTableDeleter)
	if !ok {
		return nil
	}
	deleted, err := d.DeleteNftTable()
	if err != nil {
		return err
	}
	if deleted {
		e.log.Info("removed", "backend", "native nftables", "table", "inet "+NftTableName)
	}
	return nil
}

// removeOwnedRules removes this tool's iptables rules and chains, both
// families and flavours, leaving routing and markers alone: the native
// apply's removal of an earlier iptables run. A flavour whose binaries
// are missing, or that holds no table, costs no process.
func (e *executor) removeOwnedRules(ctx context.Context) (int, error) {
	removed := 0
	for _, b := range []backend{nft, legacy} {
		for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
			if !e.has(b.binary(f, "restore")) {
				continue
			}
			fs, err := e.save(ctx, b, f)
			if err != nil {
				return removed, err
			}
			old := plan.Owned(f, fs.saved)
			if old.Empty() {
				continue
			}
			if err := e.restore(ctx, b, f, plan.Render(plan.RuleSet{Family: f}, old)); err != nil {
				return removed, fmt.Errorf("remove %s %s rules: %w", b, f, err)
			}
			removed += len(old.Rules) + len(old.Chains)
			if b == nft {
				if err := e.k.DeleteEmptyNftTables(f, old.Tables(plan.RuleSet{})); err != nil {
					e.log.Warn("could not delete empty tables", "family", f, "err", err)
				}
			}
		}
	}
	return removed, nil
}
