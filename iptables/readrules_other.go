//go:build !linux

package iptables

import "net/netip"

// ReadRules is not supported off Linux.
func ReadRules(string, Family) (string, []string, error) { return "", nil, ErrUnsupported }

// LocalAddrs is not supported off Linux.
func LocalAddrs(string) ([]netip.Addr, error) { return nil, ErrUnsupported }
