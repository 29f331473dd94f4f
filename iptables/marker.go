package iptables

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// MarkerPrefix starts the name of the empty nf_tables table (family inet,
// which iptables-nft never reads or prints) that records the last apply:
// istio_iptables_<plan hash>_<generation>. The generation is the nf_tables
// ruleset generation of the namespace right after that apply; the kernel
// bumps it on every change by anyone. While it has not moved and the plan
// hash matches, the namespace provably holds the plan and a re-run needs
// neither *-save nor *-restore.
const MarkerPrefix = "istio_iptables_"

// PlanHash identifies a plan: its restore text per family, its routes and
// addresses, as the dry run prints them. FNV-1a (64 bits) is enough: the
// hash tells plans apart, it guards against no adversary (writing the
// marker takes NET_ADMIN in the namespace), and it keeps crypto out of the
// binary, whose start-up time every pod pays.
func PlanHash(p Plan) string {
	h := fnv.New64a()
	for _, rs := range p.RuleSets {
		fmt.Fprintf(h, "# %s\n%s", rs.Family, Render(rs, Removal{}))
	}
	for _, r := range p.Routes {
		fmt.Fprintln(h, strings.Join(r.Commands(), "\n"))
	}
	for _, a := range p.Addrs {
		fmt.Fprintln(h, a.Command())
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// MarkerName is the marker table's name for a plan hash and generation.
func MarkerName(hash string, gen uint32) string {
	return MarkerPrefix + hash + "_" + strconv.FormatUint(uint64(gen), 10)
}

// markerCurrent reports whether one of the marker tables found records
// this plan at the current generation.
func markerCurrent(markers []string, hash string, gen uint32) bool {
	for _, m := range markers {
		if m == MarkerName(hash, gen) {
			return true
		}
	}
	return false
}
