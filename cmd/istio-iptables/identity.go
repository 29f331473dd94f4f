package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os/user"
	"strconv"
	"strings"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/userdb"
)

// Where user and group names (-u, -g, the owner-group flags and the
// default -u from $ENVOY_USER) are resolved:
//   - no --netns: the tool runs in the pod (an init container) or on the
//     machine it programs: that system's own database, os/user;
//   - --netns /proc/PID/ns/net: the pod's, /proc/PID/root/etc/passwd and
//     group, read through podfs (confined to the pod's root), never the
//     node's: the node's istio-proxy is not the pod's;
//   - any other --netns (/var/run/netns/NAME): the pod's root is not
//     known, so a name is refused with a message asking for a number.
//
// A name the pod's database maps to 0 is refused: root is exempted only
// by an explicit number 0, never by a file the pod controls.

// errNoUserDB: the pod's user database is not known for this --netns.
var errNoUserDB = errors.New("the pod's user database is not known")

// userDatabase returns the Lookup for names in a run with --netns netns,
// and how messages name it.
func userDatabase(netns string) (capture.Lookup, string) {
	switch dir := procDir(netns); {
	case netns == "":
		return osLookup{}, "this system's user database"
	case dir != "":
		where := "the pod's user database (" + dir + "root/etc/passwd, group)"
		return noRootNames{userdb.DB{Root: dir + "root"}, where}, where
	default:
		return unknownDB{netns}, "no user database"
	}
}

// unknownDB refuses every name: with a --netns that is not
// /proc/PID/ns/net the pod's root, and so its user database, is unknown.
type unknownDB struct{ netns string }

func (u unknownDB) UserID(string) (uint32, error)  { return 0, u.err("UID") }
func (u unknownDB) GroupID(string) (uint32, error) { return 0, u.err("GID") }

func (u unknownDB) err(what string) error {
	return fmt.Errorf("%w with --netns %q (only /proc/PID/ns/net leads to the pod's root, where names are resolved); give the numeric %s",
		errNoUserDB, u.netns, what)
}

// errRootName: a name resolves to 0 in a database the pod controls.
var errRootName = errors.New("root is exempted only by an explicit 0")

// noRootNames refuses a name that db maps to 0.
type noRootNames struct {
	db    capture.Lookup
	where string
}

func (n noRootNames) UserID(name string) (uint32, error) {
	return n.check(n.db.UserID(name))
}

func (n noRootNames) GroupID(name string) (uint32, error) {
	return n.check(n.db.GroupID(name))
}

func (n noRootNames) check(id uint32, err error) (uint32, error) {
	if err == nil && id == 0 {
		return 0, fmt.Errorf("it is 0 in %s: %w, never by a name the pod's files map to 0", n.where, errRootName)
	}
	return id, err
}

// osLookup resolves names through the system's own user database. Its
// errors never repeat the name (os/user's do, unquoted): the caller
// quotes it.
type osLookup struct{}

func (osLookup) UserID(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, osLookupErr(err, "user")
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err
}

func (osLookup) GroupID(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, osLookupErr(err, "group")
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(n), err
}

func osLookupErr(err error, what string) error {
	var uu user.UnknownUserError
	var ug user.UnknownGroupError
	if errors.As(err, &uu) || errors.As(err, &ug) {
		return fmt.Errorf("no such %s in this system's user database: %w", what, userdb.ErrNotFound)
	}
	// Wrapped, not flattened: a missing /etc/passwd (an image from
	// scratch has none) must stay fs.ErrNotExist for defaultProxyUID.
	return fmt.Errorf("look up a %s in this system's user database: %w", what, err)
}

// defaultProxyUID is -u when neither -u nor PROXY_UID is given: the UID
// of $ENVOY_USER (default istio-proxy) in db, or 1337 when db has no
// such user. It is never 0: root is never exempted implicitly, only by
// an explicit -u 0. It fails (exit 2) when $ENVOY_USER is set but db is
// not known, and when the database is there but refused (a FIFO, a
// symlink loop, not text): a pod that cannot say who its proxy is gets no
// guess.
func defaultProxyUID(getenv func(string) (string, bool), db capture.Lookup, where string) (string, error) {
	name, set := getenv("ENVOY_USER")
	if !set || strings.TrimSpace(name) == "" {
		name, set = "istio-proxy", false
	}
	source := fmt.Sprintf("ENVOY_USER %q", name)
	if !set {
		source = fmt.Sprintf("user %q (ENVOY_USER's default)", name)
	}
	id, err := db.UserID(name)
	switch {
	case err == nil && id == 0, errors.Is(err, errRootName):
		return "", fmt.Errorf("-u: the default is the UID of %s, which is 0 in %s: root is never exempted implicitly; pass -u 0 to exempt it, or -u with the proxy's UID", source, where)
	case err == nil:
		return strconv.FormatUint(uint64(id), 10), nil
	case errors.Is(err, errNoUserDB) && !set:
		return "1337", nil
	case errors.Is(err, userdb.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return "1337", nil
	default:
		return "", fmt.Errorf("-u: the default is the UID of %s, which cannot be resolved: %v; pass -u with a number", source, err)
	}
}
