//go:build !linux

package iptables

import "syscall"

// childAttrs puts a child in its own process group.
func childAttrs() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
