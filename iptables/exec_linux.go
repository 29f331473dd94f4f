//go:build linux

package iptables

import "syscall"

// childAttrs puts a child in its own process group and kills it with the
// thread that forked it.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
