package iptables

import (
	"fmt"

	"github.com/mesh-init/istio-iptables/plan"
)

// BackendMode is the choice of what writes the rules: an iptables flavour
// (auto picks one, contract §4.1) or the native nftables backend.
type BackendMode string

// The backend modes. --iptables-mode takes auto, nft and legacy;
// --native-nftables is the spelling of native.
const (
	BackendAuto   BackendMode = "auto"
	BackendNft    BackendMode = "nft"
	BackendLegacy BackendMode = "legacy"
	BackendNative BackendMode = "native"
)

// Validate accepts auto, nft, legacy and native.
func (m BackendMode) Validate() error {
	switch m {
	case BackendAuto, BackendNft, BackendLegacy, BackendNative:
		return nil
	}
	return fmt.Errorf("%q is not auto, nft or legacy", string(m))
}

// Flavour is one iptables implementation: its binaries and the kernel
// tables they write.
type Flavour string

// The flavours.
const (
	FlavourNft    Flavour = "nft"
	FlavourLegacy Flavour = "legacy"
)

var flavours = []Flavour{FlavourNft, FlavourLegacy}

// binary names a flavour's tool for a family, e.g. ip6tables-nft-restore.
func (f Flavour) binary(fam plan.Family, tool string) string {
	base := "iptables"
	if fam == plan.IPv6 {
		base = "ip6tables"
	}
	return base + "-" + string(f) + "-" + tool
}

func (f Flavour) other() Flavour {
	if f == FlavourNft {
		return FlavourLegacy
	}
	return FlavourNft
}

var families = []plan.Family{plan.IPv4, plan.IPv6}

// binaryNames lists every binary a run may use.
func binaryNames() []string {
	var out []string
	for _, f := range flavours {
		for _, fam := range families {
			out = append(out, f.binary(fam, "restore"), f.binary(fam, "save"))
		}
	}
	return out
}
