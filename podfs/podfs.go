package podfs

import "errors"

// MaxResolvConf is the cap for a resolv.conf: glibc reads at most three
// nameservers and six search domains, so 64 KiB is generous.
const MaxResolvConf = 64 << 10

// Why a file is refused.
var (
	// ErrNotRegular: the name resolves to a FIFO, a device, a directory,
	// a socket: anything but a regular file.
	ErrNotRegular = errors.New("not a regular file")
	// ErrPseudoFS: a regular file on procfs, sysfs, FUSE or another file
	// system whose files can block a read or never end.
	ErrPseudoFS = errors.New("on a pseudo file system")
	// ErrTooLarge: the file holds more than the cap.
	ErrTooLarge = errors.New("larger than the limit")
	// ErrChanged: the file was replaced between the check and the read.
	ErrChanged = errors.New("replaced while being opened")
	// ErrUnsupported: this operating system has no way to confine the
	// read to the root.
	ErrUnsupported = errors.New("confined reads are only supported on Linux")
)
