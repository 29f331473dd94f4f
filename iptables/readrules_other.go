//go:build !linux

package iptables

import (
	"net/netip"

	"github.com/mesh-init/istio-iptables/plan"
)

// ReadRules is not supported off Linux.
func ReadRules(string, plan.Family) (string, []string, error) { return "", nil, ErrUnsupported }

// LocalAddrs is not supported off Linux.
func LocalAddrs(string) ([]netip.Addr, error) { return nil, ErrUnsupported }
