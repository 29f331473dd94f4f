//go:build !linux

package iptables

import (
	"context"
	"errors"
	"runtime"
	"time"
)

// ErrUnsupported is returned by every kernel operation off Linux.
var ErrUnsupported = errors.New("netfilter changes are only supported on Linux (running on " + runtime.GOOS + ")")

type otherKernel struct{}

func newKernel() kernel { return otherKernel{} }

func (otherKernel) Lock(context.Context, time.Duration) (func(), error) { return nil, ErrUnsupported }
func (otherKernel) Probe(ProbeParts) (State, error)                     { return State{}, ErrUnsupported }
func (otherKernel) WriteNative(NativeWrite) error                       { return ErrUnsupported }
func (otherKernel) DeleteNftTables([]NftTableRef) error                 { return ErrUnsupported }
func (otherKernel) SetMarker([]string, string) error                    { return ErrUnsupported }
func (otherKernel) ChangeRouting(RoutingChange) error                   { return ErrUnsupported }

// Namespace is a network namespace; off Linux there is none to program.
type Namespace struct{ path string }

// CurrentNamespace is the namespace the process runs in.
func CurrentNamespace() *Namespace { return &Namespace{} }

// OpenNamespace is not supported off Linux.
func OpenNamespace(path string) (*Namespace, error) {
	if path == "" {
		return CurrentNamespace(), nil
	}
	return nil, ErrUnsupported
}

// Path is the path the namespace was opened from.
func (n *Namespace) Path() string { return n.path }

// Close does nothing off Linux.
func (n *Namespace) Close() error { return nil }

// Do is not supported off Linux.
func (n *Namespace) Do(func() error) error { return ErrUnsupported }

// HasGlobalIPv6 is not supported off Linux.
func (n *Namespace) HasGlobalIPv6() (bool, error) { return false, ErrUnsupported }

// CheckNetns is not supported off Linux.
func CheckNetns(string) error { return ErrUnsupported }

// HasGlobalIPv6 is not supported off Linux.
func HasGlobalIPv6(string) (bool, error) { return false, ErrUnsupported }
