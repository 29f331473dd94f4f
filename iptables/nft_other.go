//go:build !linux

package iptables

import (
	"errors"

	"github.com/mesh-init/istio-iptables/plan"
)

// The native nftables backend needs github.com/google/nftables, which
// builds only on Linux; elsewhere these stubs keep the callers building.

var errNftNotSupported = errors.New("native nftables: not supported on this platform")

// NftRuleset is the native backend's translation of a plan (nft.go).
type NftRuleset struct {
	Chains []NftChain
}

// NftChain is one chain of the table.
type NftChain struct {
	Name  string
	Hook  *NftHook
	Rules []NftRule
}

// NftHook makes a chain a base chain.
type NftHook struct {
	Type     string
	Hook     string
	Priority int
}

// NftRule is one rule as `nft -f` text.
type NftRule struct {
	Text string
}

// NftTranslate is not supported outside Linux.
func NftTranslate(plan.Plan) (NftRuleset, error) { return NftRuleset{}, errNftNotSupported }

// Text is empty outside Linux.
func (NftRuleset) Text() string { return "" }

// Body is empty outside Linux.
func (NftRuleset) Body(string) string { return "" }

// NftHash is empty outside Linux.
func NftHash(NftRuleset, plan.Plan) string { return "" }

// NftScript is not supported outside Linux.
func NftScript(plan.Plan) (string, error) { return "", errNftNotSupported }
