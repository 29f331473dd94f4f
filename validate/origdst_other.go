//go:build !linux

package validate

import (
	"errors"
	"net"
	"runtime"
)

// originalPort needs conntrack's SO_ORIGINAL_DST, which only Linux has.
func originalPort(*net.TCPConn) (uint16, error) {
	return 0, errors.New("the original destination can only be read on Linux (running on " + runtime.GOOS + ")")
}
