package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/userdb"
)

// mapDB is a user database in memory.
type mapDB map[string]uint32

func (m mapDB) UserID(name string) (uint32, error) {
	if id, ok := m[name]; ok {
		return id, nil
	}
	return 0, fmt.Errorf("look up: %w", userdb.ErrNotFound)
}

func (m mapDB) GroupID(name string) (uint32, error) { return m.UserID(name) }

// brokenDB fails as a refused file does.
type brokenDB struct{}

func (brokenDB) UserID(string) (uint32, error) {
	return 0, errors.New("read x/etc/passwd: not a regular file (a FIFO)")
}
func (brokenDB) GroupID(string) (uint32, error) {
	return 0, errors.New("read x/etc/group: not a regular file (a FIFO)")
}

func TestUserDatabase(t *testing.T) {
	for _, tc := range []struct {
		name, netns, where string
		want               capture.Lookup
	}{
		{"no --netns: this system's", "", "this system's user database", osLookup{}},
		{"a process: its root's", "/proc/42/ns/net", "the pod's user database (/proc/42/root/etc/passwd, group)",
			noRootNames{userdb.DB{Root: "/proc/42/root"}, "the pod's user database (/proc/42/root/etc/passwd, group)"}},
		{"a named namespace: none", "/var/run/netns/pod", "no user database", unknownDB{"/var/run/netns/pod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, where := userDatabase(tc.netns)
			assert.Equal(t, tc.want, db)
			assert.Equal(t, tc.where, where)
		})
	}
	_, err := unknownDB{"/var/run/netns/pod"}.UserID("istio-proxy")
	require.ErrorIs(t, err, errNoUserDB)
	assert.EqualError(t, err, `the pod's user database is not known with --netns "/var/run/netns/pod" `+
		"(only /proc/PID/ns/net leads to the pod's root, where names are resolved); give the numeric UID")
}

func TestNoRootNames(t *testing.T) {
	db := noRootNames{mapDB{"istio-proxy": 0, "app": 1000}, "the pod's"}
	_, err := db.UserID("istio-proxy")
	require.ErrorIs(t, err, errRootName)
	_, err = db.GroupID("istio-proxy")
	require.ErrorIs(t, err, errRootName)
	id, err := db.UserID("app")
	require.NoError(t, err)
	assert.Equal(t, uint32(1000), id)
	_, err = db.UserID("none")
	assert.ErrorIs(t, err, userdb.ErrNotFound)
}

func TestDefaultProxyUID(t *testing.T) {
	env := func(v ...string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			if k == "ENVOY_USER" && len(v) > 0 {
				return v[0], true
			}
			return "", false
		}
	}
	pod := mapDB{"istio-proxy": 4242, "envoy": 7, "root": 0}
	for _, tc := range []struct {
		name    string
		getenv  func(string) (string, bool)
		db      capture.Lookup
		want    string
		wantErr string
	}{
		{"istio-proxy by default", env(), pod, "4242", ""},
		{"ENVOY_USER", env("envoy"), pod, "7", ""},
		{"blank ENVOY_USER is the default", env("  "), pod, "4242", ""},
		{"unknown: 1337", env("nobody"), pod, "1337", ""},
		{"no istio-proxy: 1337", env(), mapDB{}, "1337", ""},
		{"ENVOY_USER=root", env("root"), pod, "", `-u: the default is the UID of ENVOY_USER "root", which is 0 in DB: ` +
			"root is never exempted implicitly; pass -u 0 to exempt it, or -u with the proxy's UID"},
		{"istio-proxy at 0", env(), mapDB{"istio-proxy": 0}, "", `-u: the default is the UID of user "istio-proxy" (ENVOY_USER's default), which is 0 in DB`},
		{"istio-proxy at 0 in a pod's database", env(), noRootNames{mapDB{"istio-proxy": 0}, "DB"}, "", "root is never exempted implicitly"},
		{"unknown database, default: 1337", env(), unknownDB{"/var/run/netns/x"}, "1337", ""},
		{"unknown database, ENVOY_USER: refused", env("envoy"), unknownDB{"/var/run/netns/x"}, "",
			`-u: the default is the UID of ENVOY_USER "envoy", which cannot be resolved: the pod's user database is not known`},
		{"refused database", env(), brokenDB{}, "", `-u: the default is the UID of user "istio-proxy" (ENVOY_USER's default), which cannot be resolved: ` +
			"read x/etc/passwd: not a regular file (a FIFO); pass -u with a number"},
		{"a newline in ENVOY_USER is quoted", env("a\nb"), unknownDB{"/var/run/netns/x"}, "", `ENVOY_USER "a\nb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := defaultProxyUID(tc.getenv, tc.db, "DB")
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.NotContains(t, err.Error(), "\n")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
