// Package podfs reads a small file that belongs to a pod (or to any other
// root the caller does not trust) on behalf of the node, so that nothing
// in that file tree can steer the read.
//
// ReadFile(root, name, limit) resolves name as if root were "/":
//   - every symlink, absolute or relative, and every "..", stays inside
//     root (openat2 RESOLVE_IN_ROOT; "/etc/x -> /tmp/y" means root/tmp/y);
//   - procfs magic links (/proc/PID/root, /proc/self/fd/N) are refused
//     (RESOLVE_NO_MAGICLINKS);
//   - where openat2 is missing (ENOSYS, Linux before 5.6) or blocked by a
//     seccomp filter (EPERM), an equivalent walk opens one component at a
//     time with O_NOFOLLOW and resolves each symlink's text itself, in
//     root; it refuses every symlink on procfs, which is a little stricter.
//
// The file is first opened O_PATH, which has no side effect whatever it
// is, and refused unless it is a regular file (ErrNotRegular: a FIFO, a
// device such as /dev/zero, a directory, a socket) on an ordinary file
// system (ErrPseudoFS: procfs, sysfs, FUSE and the like, whose "regular"
// files can block or never end, /proc/kmsg for one). Only then is that
// same inode opened for reading (O_NONBLOCK|O_NOCTTY, through
// /proc/self/fd), and read up to limit bytes.
//
// A file larger than limit is refused whole (ErrTooLarge), never truncated:
// a cut line could turn an address into another one (10.96.0.100 into
// 10.96.0.10). At most limit+1 bytes are ever read, so memory stays bounded
// whatever the file claims.
//
// Errors name the path and the reason, never the file's content. The
// package has no parser: callers parse what it returns, strictly.
package podfs
