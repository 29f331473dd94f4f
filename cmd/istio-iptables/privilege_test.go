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
	caps := func(set uint64) func() (uint64, error) { return func() (uint64, error) { return set, nil } }
	none, rawOnly, adminOnly, both := caps(0), caps(1<<capNetRaw), caps(1<<capNetAdmin), caps(1<<capNetAdmin|1<<capNetRaw)
	unknown := func() (uint64, error) { return 0, errors.New("no /proc") }
	// What the kernel says to a process without the capability, as seen in
	// the e2e tests of a pod granted NET_RAW only (TestWithoutNetAdmin) or
	// NET_ADMIN only (TestWithoutNetRaw).
	netlinkEPERM := fmt.Errorf("list nftables tables: netlink receive: %w", syscall.EPERM)
	restore := errors.New("restore ipv4 rules: iptables-nft-restore: exit status 1: " +
		"iptables-nft-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)")
	legacy := errors.New(`restore ipv4 rules: /usr/sbin/iptables-legacy-restore refused line 1 "*nat": ` +
		`iptables-restore v1.8.9 (legacy): iptables-restore: unable to initialize table 'nat' Error occurred at line: 1`)
	noModule := errors.New(`restore ipv4 rules: iptables-nft-restore refused line 9 "*mangle": ` +
		`iptables-nft-restore v1.8.9 (nf_tables): unable to initialize table 'mangle'`)
	for _, tc := range []struct {
		name string
		err  error
		caps func() (uint64, error)
		hint string // "" none
	}{
		{name: "netlink EPERM without NET_ADMIN", err: netlinkEPERM, caps: rawOnly, hint: netAdminHint},
		{name: "EPERM as text only", err: errors.New("netlink receive: operation not permitted"), caps: none, hint: netAdminHint},
		{name: "restore Permission denied without NET_ADMIN", err: restore, caps: rawOnly, hint: netAdminHint},
		{name: "capabilities unknown", err: netlinkEPERM, caps: unknown, hint: netAdminHint},
		{name: "EPERM with NET_ADMIN held (setns needs CAP_SYS_ADMIN)", err: fmt.Errorf("enter netns /var/run/netns/x: %w", syscall.EPERM), caps: both},
		{name: "legacy table refused without NET_RAW", err: legacy, caps: adminOnly, hint: netRawHint},
		{name: "legacy table refused with NET_RAW held", err: legacy, caps: both},
		{name: "legacy table refused, capabilities unknown", err: legacy, caps: unknown},
		{name: "nft table refused without NET_RAW (a missing module)", err: noModule, caps: adminOnly},
		{name: "another error", err: errors.New("iptables-nft-restore: binary not found"), caps: none},
		{name: "no error", caps: none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := privilegeHintWith(tc.err, tc.caps)
			if tc.err == nil {
				assert.NoError(t, got)
				return
			}
			require.Error(t, got)
			assert.ErrorIs(t, got, tc.err, "the cause stays reachable")
			if tc.hint != "" {
				assert.Equal(t, tc.err.Error()+": "+tc.hint, got.Error())
			} else {
				assert.Equal(t, tc.err, got)
			}
		})
	}
	t.Run("ErrPartial survives the hint", func(t *testing.T) {
		err := fmt.Errorf("restore ipv6 rules: %w: %w", iptables.ErrPartial, syscall.EPERM)
		assert.ErrorIs(t, privilegeHintWith(err, none), iptables.ErrPartial)
	})
}

func TestCapEff(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         uint64
		err          string
	}{
		{name: "NET_ADMIN and NET_RAW", status: "Name:\tx\nCapInh:\t0000000000003000\nCapEff:\t0000000000003000\n", want: 1<<capNetAdmin | 1<<capNetRaw},
		{name: "NET_RAW only", status: "CapEff:\t0000000000002000\n", want: 1 << capNetRaw},
		{name: "full root", status: "CapEff:\t000001ffffffffff\n", want: 0x1ffffffffff},
		{name: "none", status: "CapEff:\t0000000000000000\n"},
		{name: "no CapEff line", status: "Name:\tx\n", err: "no CapEff line"},
		{name: "garbage", status: "CapEff:\tzz\n", err: `parse CapEff "zz"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := capEff(tc.status)
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
