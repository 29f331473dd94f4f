//go:build !linux

package iptables

import (
	"errors"
	"runtime"

	"github.com/mesh-init/istio-iptables/plan"
)

// ErrUnsupported is returned by every kernel operation off Linux.
var ErrUnsupported = errors.New("netfilter changes are only supported on Linux (running on " + runtime.GOOS + ")")

type otherKernel struct{}

func newKernel() kernel { return otherKernel{} }

func (otherKernel) Do(string, func() error) error                        { return ErrUnsupported }
func (otherKernel) LegacyTables(plan.Family) ([]string, error)           { return nil, ErrUnsupported }
func (otherKernel) NftTables() (map[plan.Family][]string, error)         { return nil, ErrUnsupported }
func (otherKernel) DeleteEmptyNftTables(plan.Family, []plan.Table) error { return ErrUnsupported }
func (otherKernel) SyncRoutes([]plan.Route, []plan.Addr) error           { return ErrUnsupported }

func (otherKernel) NftMarkers() ([]string, uint32, error) { return nil, 0, ErrUnsupported }
func (otherKernel) SetNftMarker(string) error             { return ErrUnsupported }

// CheckNetns is not supported off Linux.
func CheckNetns(string) error { return ErrUnsupported }

// HasGlobalIPv6 is not supported off Linux.
func HasGlobalIPv6(string) (bool, error) { return false, ErrUnsupported }
