package main

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/iptables"
)

func TestPrivilegeHint(t *testing.T) {
	without := func() (bool, error) { return false, nil }
	with := func() (bool, error) { return true, nil }
	unknown := func() (bool, error) { return false, errors.New("no /proc") }
	// What the kernel says to a process without CAP_NET_ADMIN, as seen in
	// the e2e test of a pod granted NET_RAW only.
	netlinkEPERM := fmt.Errorf("list nftables tables: netlink receive: %w", syscall.EPERM)
	restore := errors.New("restore ipv4 rules: iptables-nft-restore: exit status 1: " +
		"iptables-nft-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)")
	for _, tc := range []struct {
		name     string
		err      error
		netAdmin func() (bool, error)
		hint     bool
	}{
		{name: "netlink EPERM without NET_ADMIN", err: netlinkEPERM, netAdmin: without, hint: true},
		{name: "EPERM as text only", err: errors.New("netlink receive: operation not permitted"), netAdmin: without, hint: true},
		{name: "restore Permission denied without NET_ADMIN", err: restore, netAdmin: without, hint: true},
		{name: "capabilities unknown", err: netlinkEPERM, netAdmin: unknown, hint: true},
		{name: "EPERM with NET_ADMIN held (setns needs CAP_SYS_ADMIN)", err: fmt.Errorf("enter netns /var/run/netns/x: %w", syscall.EPERM), netAdmin: with},
		{name: "another error", err: errors.New("iptables-nft-restore: binary not found"), netAdmin: without},
		{name: "no error", netAdmin: without},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := privilegeHintWith(tc.err, tc.netAdmin)
			if tc.err == nil {
				assert.NoError(t, got)
				return
			}
			require.Error(t, got)
			assert.ErrorIs(t, got, tc.err, "the cause stays reachable")
			if tc.hint {
				assert.Equal(t, tc.err.Error()+": "+netAdminHint, got.Error())
			} else {
				assert.Equal(t, tc.err, got)
			}
		})
	}
	t.Run("ErrPartial survives the hint", func(t *testing.T) {
		err := fmt.Errorf("restore ipv6 rules: %w: %w", iptables.ErrPartial, syscall.EPERM)
		assert.ErrorIs(t, privilegeHintWith(err, without), iptables.ErrPartial)
	})
}

func TestNetAdminIn(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         bool
		err          string
	}{
		{name: "NET_ADMIN and NET_RAW", status: "Name:\tx\nCapInh:\t0000000000003000\nCapEff:\t0000000000003000\n", want: true},
		{name: "NET_RAW only", status: "CapEff:\t0000000000002000\n"},
		{name: "full root", status: "CapEff:\t000001ffffffffff\n", want: true},
		{name: "none", status: "CapEff:\t0000000000000000\n"},
		{name: "no CapEff line", status: "Name:\tx\n", err: "no CapEff line"},
		{name: "garbage", status: "CapEff:\tzz\n", err: `parse CapEff "zz"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := netAdminIn(tc.status)
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
