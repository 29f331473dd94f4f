package podfs

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSymlinks is the kernel's own limit on symlinks in one resolution.
const maxSymlinks = 40

// resolver opens name inside the directory rootFD as if it were "/", and
// returns an O_PATH descriptor of what it names.
type resolver func(rootFD int, name string) (int, error)

// ReadFile returns the content of name resolved inside root (see the
// package comment), or an error naming root/name and the reason. limit is
// the cap in bytes; a larger file is refused, never truncated.
func ReadFile(root, name string, limit int64) ([]byte, error) {
	return readFile(root, name, limit, resolveInRoot)
}

func readFile(root, name string, limit int64, resolve resolver) ([]byte, error) {
	path := filepath.Join(root, name)
	if name == "" {
		name = "." // openat2 has no AT_EMPTY_PATH
	}
	fail := func(err error) ([]byte, error) { return nil, fmt.Errorf("read %s: %w", path, err) }
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open the root %s: %w", root, err))
	}
	defer unix.Close(rootFD)
	pathFD, err := resolve(rootFD, name)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(pathFD)
	// O_PATH opened nothing: a FIFO, a device or a socket is only
	// looked at, never opened, so it can neither block nor act.
	var st unix.Stat_t
	if err := unix.Fstat(pathFD, &st); err != nil {
		return fail(fmt.Errorf("fstat: %w", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fail(fmt.Errorf("%w (%s)", ErrNotRegular, kind(st.Mode)))
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(pathFD, &sfs); err != nil {
		return fail(fmt.Errorf("fstatfs: %w", err))
	}
	if fs, bad := pseudoFS[uint32(sfs.Type)]; bad {
		return fail(fmt.Errorf("%w (%s)", ErrPseudoFS, fs))
	}
	if st.Size > limit {
		return fail(fmt.Errorf("%w (%d bytes, the limit is %d)", ErrTooLarge, st.Size, limit))
	}
	// Open that very inode for reading: a name resolved again could
	// lead somewhere else by now.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pathFD), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("reopen for reading: %w", err))
	}
	defer unix.Close(fd)
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil {
		return fail(fmt.Errorf("fstat: %w", err))
	}
	if st2.Dev != st.Dev || st2.Ino != st.Ino {
		return fail(ErrChanged)
	}
	b, err := readCapped(fd, st.Size, limit)
	if err != nil {
		return fail(err)
	}
	return b, nil
}

// readCapped reads fd to its end, at most limit+1 bytes: one byte more
// than limit tells that the file grew past the cap.
func readCapped(fd int, size, limit int64) ([]byte, error) {
	buf := make([]byte, 0, min(max(size, 512), limit)+1)
	for int64(len(buf)) <= limit {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit+1))
			copy(grown, buf)
			buf = grown
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, fmt.Errorf("read: %w", err)
		case n == 0:
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
	return nil, fmt.Errorf("%w (more than %d bytes)", ErrTooLarge, limit)
}

// resolveInRoot resolves with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS),
// or with resolveWalk where openat2 is missing or filtered.
func resolveInRoot(rootFD int, name string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 16 {
		fd, err := unix.Openat2(rootFD, name, &how)
		switch err {
		case nil:
			return fd, nil
		case unix.EAGAIN: // a rename raced with ".." resolution: try again
			continue
		case unix.ENOSYS, unix.EPERM: // before Linux 5.6, or a seccomp filter
			return resolveWalk(rootFD, name)
		default:
			return -1, err
		}
	}
	return -1, fmt.Errorf("openat2: %w (the tree keeps changing)", unix.EAGAIN)
}

// resolveWalk resolves name one component at a time, each opened O_PATH
// with O_NOFOLLOW: a symlink is read, never followed by the kernel, and
// its text resolved here, inside the root (an absolute target restarts
// at the root, ".." never climbs above it). Symlinks on procfs are
// refused, as openat2 refuses magic links.
func resolveWalk(rootFD int, name string) (int, error) {
	stack := []int{rootFD} // the directories from the root down; stack[0] is not ours to close
	defer func() {
		for _, fd := range stack[1:] {
			unix.Close(fd)
		}
	}()
	pop := func(keep int) {
		for len(stack) > keep {
			unix.Close(stack[len(stack)-1])
			stack = stack[:len(stack)-1]
		}
	}
	rest := components(name)
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		if c == ".." {
			pop(max(len(stack)-1, 1))
			continue
		}
		fd, err := unix.Openat(stack[len(stack)-1], c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, err := readSymlink(fd, &links)
			unix.Close(fd)
			if err != nil {
				return -1, err
			}
			if strings.HasPrefix(target, "/") {
				pop(1)
			}
			rest = append(components(target), rest...)
		case unix.S_IFDIR:
			if len(rest) == 0 {
				return fd, nil
			}
			stack = append(stack, fd)
		default:
			if len(rest) > 0 {
				unix.Close(fd)
				return -1, unix.ENOTDIR
			}
			return fd, nil
		}
	}
	// The name ends on a directory already opened (the root, or after "..").
	return unix.FcntlInt(uintptr(stack[len(stack)-1]), unix.F_DUPFD_CLOEXEC, 0)
}

// readSymlink returns the text of the symlink open at fd, counting it.
func readSymlink(fd int, links *int) (string, error) {
	if *links++; *links > maxSymlinks {
		return "", unix.ELOOP
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return "", err
	}
	if uint32(sfs.Type) == uint32(unix.PROC_SUPER_MAGIC) {
		return "", fmt.Errorf("symlink on procfs: %w", unix.ELOOP)
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	if n == len(buf) {
		return "", unix.ENAMETOOLONG
	}
	return string(buf[:n]), nil
}

// components splits a path into its names and "..", dropping "" and ".".
func components(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// kind names a file type for the error.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symlink"
	default:
		return "mode " + strconv.FormatUint(uint64(mode&unix.S_IFMT), 8)
	}
}

// pseudoFS are the file systems whose "regular" files are not data at
// rest: a read can block (/proc/kmsg, FUSE), never end, or act.
var pseudoFS = map[uint32]string{
	uint32(unix.PROC_SUPER_MAGIC):    "procfs",
	uint32(unix.SYSFS_MAGIC):         "sysfs",
	uint32(unix.DEBUGFS_MAGIC):       "debugfs",
	uint32(unix.TRACEFS_MAGIC):       "tracefs",
	uint32(unix.SECURITYFS_MAGIC):    "securityfs",
	uint32(unix.CGROUP_SUPER_MAGIC):  "cgroup",
	uint32(unix.CGROUP2_SUPER_MAGIC): "cgroup2",
	uint32(unix.BPF_FS_MAGIC):        "bpf",
	uint32(unix.DEVPTS_SUPER_MAGIC):  "devpts",
	uint32(unix.PSTOREFS_MAGIC):      "pstore",
	uint32(unix.EFIVARFS_MAGIC):      "efivarfs",
	uint32(unix.FUSE_SUPER_MAGIC):    "fuse",
	uint32(unix.SELINUX_MAGIC):       "selinuxfs",
	uint32(unix.SMACK_MAGIC):         "smackfs",
	uint32(unix.BINFMTFS_MAGIC):      "binfmt_misc",
	uint32(unix.NSFS_MAGIC):          "nsfs",
	0x62656570:                       "configfs", // CONFIGFS_MAGIC
}
