package iptables

import (
	"strconv"
)

// MarkerPrefix starts the name of the empty nf_tables table (family inet,
// which iptables-nft never reads or prints) that records the last apply:
// istio_iptables_<plan hash>_<generation>. The generation is the nf_tables
// ruleset generation of the namespace right after that apply; the kernel
// bumps it on every change by anyone. While it has not moved and the plan
// hash matches, the namespace provably holds the plan and a re-run needs
// neither *-save nor *-restore.
const MarkerPrefix = "istio_iptables_"

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
