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
// neither *-save nor *-restore. The record is written only after the
// apply was read back and verified, and carries an owner set whose
// comment tags it as this tool's: an untagged table of that name is
// someone else's and never touched.
const MarkerPrefix = "istio_iptables_"

// RouteProtocol tags this tool's policy routing: the TPROXY `ip rule` and
// its `local default dev lo` route carry `proto 137`. Only rules and
// routes with the tag are ever changed or removed; anything else,
// however alike, is someone else's.
const RouteProtocol = 137

// MarkerName is the marker table's name for a plan hash and generation.
func MarkerName(hash string, gen uint32) string {
	return MarkerPrefix + hash + "_" + strconv.FormatUint(uint64(gen), 10)
}

// NftTableName is the inet table the native backend owns (nft.go), tagged
// by its owner set.
const NftTableName = "istio-iptables"
