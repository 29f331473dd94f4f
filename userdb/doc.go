// Package userdb resolves user and group names in the user database of a
// root the caller does not trust, such as a pod's (/proc/PID/root): it
// reads ROOT/etc/passwd and ROOT/etc/group through podfs (confined to
// the root, regular files only, at most MaxSize bytes) and parses them
// strictly. It never consults the system's own database, NSS or os/user.
//
// A name matches the first line whose first field is exactly that name
// (glibc's files backend does the same); the ID must be decimal and below
// 2^32-1. A line that is not name:x:ID:... is skipped, a file holding a
// NUL byte or invalid UTF-8 is refused whole. Errors say which file and
// why, and never repeat the name or anything read from the file: callers
// quote the name themselves.
package userdb
