//go:build !linux

package iptables

import (
	"errors"
	"runtime"
)

// ErrUnsupported is returned by every kernel operation off Linux.
var ErrUnsupported = errors.New("netfilter changes are only supported on Linux (running on " + runtime.GOOS + ")")

type otherKernel struct{}

func newKernel() kernel { return otherKernel{} }

func (otherKernel) Do(string, func() error) error              { return ErrUnsupported }
func (otherKernel) LegacyTables(Family) ([]string, error)      { return nil, ErrUnsupported }
func (otherKernel) NftTables() (map[Family][]string, error)    { return nil, ErrUnsupported }
func (otherKernel) DeleteEmptyNftTables(Family, []Table) error { return ErrUnsupported }
func (otherKernel) SyncRoutes([]Route, []Addr) error           { return ErrUnsupported }

func (otherKernel) NftMarkers() ([]string, uint32, error) { return nil, 0, ErrUnsupported }
func (otherKernel) SetNftMarker(string) error             { return ErrUnsupported }

// CheckNetns is not supported off Linux.
func CheckNetns(string) error { return ErrUnsupported }

// HasGlobalIPv6 is not supported off Linux.
func HasGlobalIPv6(string) (bool, error) { return false, ErrUnsupported }
