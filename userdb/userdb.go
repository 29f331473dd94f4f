package userdb

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mesh-init/istio-iptables/podfs"
)

// MaxSize caps each of passwd and group: far above any image's.
const MaxSize = 1 << 20

var (
	// ErrNotFound: the database has no such name.
	ErrNotFound = errors.New("no such name")
	// ErrMalformed: the file is not a text user database.
	ErrMalformed = errors.New("not a text user database")
	// ErrBadName: the name cannot appear in a database (":" or a control
	// character, or empty).
	ErrBadName = errors.New("not a valid name")
)

// DB is the user database under Root.
type DB struct {
	// Root stands for "/" of the database's owner, e.g. /proc/PID/root.
	Root string
}

// UserID returns the UID of name in Root/etc/passwd.
func (d DB) UserID(name string) (uint32, error) {
	return d.lookup("etc/passwd", name)
}

// GroupID returns the GID of name in Root/etc/group.
func (d DB) GroupID(name string) (uint32, error) {
	return d.lookup("etc/group", name)
}

func (d DB) lookup(file, name string) (uint32, error) {
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r == ':' || r < 0x20 || r == 0x7f }) {
		return 0, ErrBadName
	}
	b, err := podfs.ReadFile(d.Root, file, MaxSize)
	if err != nil {
		return 0, err
	}
	path := filepath.Join(d.Root, file)
	id, err := find(b, name)
	if err != nil {
		return 0, fmt.Errorf("look up in %s: %w", path, err)
	}
	return id, nil
}

// find returns the third field of the first line whose first field is
// name. passwd (name:pw:uid:...) and group (name:pw:gid:...) share it.
func find(b []byte, name string) (uint32, error) {
	if bytes.IndexByte(b, 0) >= 0 {
		return 0, fmt.Errorf("%w: it holds a NUL byte", ErrMalformed)
	}
	if !utf8.Valid(b) {
		return 0, fmt.Errorf("%w: it is not UTF-8", ErrMalformed)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Split(strings.TrimSuffix(line, "\r"), ":")
		if len(f) < 3 || f[0] != name {
			continue
		}
		n, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil || n == 0xffffffff || strings.Trim(f[2], "0123456789") != "" {
			return 0, fmt.Errorf("%w: the entry's id is not a decimal number below 2^32-1", ErrMalformed)
		}
		return uint32(n), nil
	}
	return 0, ErrNotFound
}
