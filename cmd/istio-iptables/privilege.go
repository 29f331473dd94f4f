package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// netAdminHint is what a refused apply or cleanup adds when the process
// lacks CAP_NET_ADMIN: the one capability that writing netfilter rules,
// policy routes and addresses needs, and how a pod grants it.
const netAdminHint = "istio-iptables needs CAP_NET_ADMIN in the pod's network namespace " +
	"(securityContext.capabilities.add: [NET_ADMIN, NET_RAW])"

// netRawHint is what a refused legacy restore adds when the process lacks
// CAP_NET_RAW: legacy iptables talks to the kernel through a raw socket.
const netRawHint = "legacy iptables needs CAP_NET_RAW as well " +
	"(securityContext.capabilities.add: [NET_ADMIN, NET_RAW])"

// Capability bits in the capability sets (linux/capability.h).
const (
	capNetAdmin = 12
	capNetRaw   = 13
)

// privilegeHint returns err with a hint added when the kernel refused for
// want of a capability the process does not hold: EPERM from netlink or
// "Permission denied" from a *-restore without CAP_NET_ADMIN, or a legacy
// restore unable to initialize a table without CAP_NET_RAW. Otherwise it
// returns err itself: a refusal with the capability held has another cause
// (setns into another namespace needs CAP_SYS_ADMIN; a table's kernel
// module may be missing), which the hint would hide.
func privilegeHint(err error) error {
	return privilegeHintWith(err, effectiveCaps)
}

// privilegeHintWith is privilegeHint with the capability read injected.
func privilegeHintWith(err error, caps func() (uint64, error)) error {
	if err == nil {
		return err
	}
	set, cerr := caps()
	held := func(c uint) bool { return cerr == nil && set&(1<<c) != 0 }
	switch {
	case refused(err) && !held(capNetAdmin):
		return fmt.Errorf("%w: %s", err, netAdminHint)
	case legacyRefused(err) && cerr == nil && !held(capNetRaw):
		return fmt.Errorf("%w: %s", err, netRawHint)
	}
	return err
}

// legacyRefused tells whether err is a legacy restore that could not open
// a table, which is what it says without CAP_NET_RAW.
func legacyRefused(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "(legacy)") && strings.Contains(msg, "unable to initialize table")
}

// refused tells whether err is the kernel saying "not allowed".
func refused(err error) bool {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "operation not permitted") || strings.Contains(msg, "permission denied")
}

// effectiveCaps is this process's effective capability set, from the
// CapEff line of /proc/self/status.
func effectiveCaps() (uint64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return capEff(string(status))
}

// capEff reads the CapEff line of a /proc/PID/status text.
func capEff(status string) (uint64, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
			}
			return set, nil
		}
	}
	return 0, errors.New("parse capabilities: no CapEff line in /proc/self/status")
}
