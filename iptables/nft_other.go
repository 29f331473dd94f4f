//go:build !linux

package iptables

import "errors"

// NewNftExecutor is not supported outside Linux.
func NewNftExecutor(Options) (Executor, error) {
	return nil, errors.New("native nftables: not supported on this platform")
}
