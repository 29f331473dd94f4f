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

// capNetAdmin is CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const capNetAdmin = 12

// privilegeHint returns err with netAdminHint added when the kernel refused
// for want of privilege (EPERM from netlink, "Permission denied" from a
// *-restore) and the process does not hold CAP_NET_ADMIN; otherwise err
// itself. A refusal with CAP_NET_ADMIN held has another cause (setns into
// another namespace needs CAP_SYS_ADMIN, say), which the hint would hide.
func privilegeHint(err error) error {
	return privilegeHintWith(err, hasNetAdmin)
}

// privilegeHintWith is privilegeHint with the capability check injected.
func privilegeHintWith(err error, netAdmin func() (bool, error)) error {
	if err == nil || !refused(err) {
		return err
	}
	if held, cerr := netAdmin(); cerr == nil && held {
		return err
	}
	return fmt.Errorf("%w: %s", err, netAdminHint)
}

// refused tells whether err is the kernel saying "not allowed".
func refused(err error) bool {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "operation not permitted") || strings.Contains(msg, "permission denied")
}

// hasNetAdmin reports whether CAP_NET_ADMIN is in this process's effective
// set, from the CapEff line of /proc/self/status.
func hasNetAdmin() (bool, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, fmt.Errorf("read capabilities: %w", err)
	}
	return netAdminIn(string(status))
}

// netAdminIn reads the CapEff line of a /proc/PID/status text.
func netAdminIn(status string) (bool, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
			}
			return set&(1<<capNetAdmin) != 0, nil
		}
	}
	return false, errors.New("parse capabilities: no CapEff line in /proc/self/status")
}
