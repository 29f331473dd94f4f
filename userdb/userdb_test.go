package userdb

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/podfs"
)

const passwd = `root:x:0:0:root:/root:/bin/bash
# a comment line is no entry
broken line
short:x
istio-proxy:x:4242:4243::/home/istio-proxy:/sbin/nologin
istio-proxy:x:1:1::/:/bin/false
app:x:1000:1000::/app:/bin/sh
bad-id:x:-1:0::/:/bin/sh
max-id:x:4294967295:0::/:/bin/sh
crlf:x:77:77::/:/bin/sh` + "\r\n"

const group = "root:x:0:\nistio-proxy:x:4243:\nmesh:x:2000:istio-proxy\n"

func newRoot(t *testing.T, passwd, group string) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	if passwd != "" {
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644))
	}
	if group != "" {
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte(group), 0o644))
	}
	return root
}

func TestUserID(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("podfs reads only on Linux")
	}
	db := DB{Root: newRoot(t, passwd, group)}
	for _, tc := range []struct {
		name    string
		user    string
		want    uint32
		wantErr error
	}{
		{"the first entry wins", "istio-proxy", 4242, nil},
		{"root", "root", 0, nil},
		{"an app user", "app", 1000, nil},
		{"CRLF line end", "crlf", 77, nil},
		{"unknown", "nobody", 0, ErrNotFound},
		{"a prefix is no match", "istio", 0, ErrNotFound},
		{"a comment is no entry", "# a comment line is no entry", 0, ErrNotFound},
		{"negative id", "bad-id", 0, ErrMalformed},
		{"reserved id", "max-id", 0, ErrMalformed},
		{"colon in the name", "istio-proxy:x", 0, ErrBadName},
		{"newline in the name", "app\nroot", 0, ErrBadName},
		{"empty name", "", 0, ErrBadName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := db.UserID(tc.user)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				if tc.user != "" {
					assert.NotContains(t, err.Error(), tc.user, "the caller quotes the name; the error never repeats it")
				}
				assert.NotContains(t, err.Error(), "4294967295", "nothing from the file in the error")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, id)
		})
	}
	gid, err := db.GroupID("mesh")
	require.NoError(t, err)
	assert.Equal(t, uint32(2000), gid)
	gid, err = db.GroupID("istio-proxy")
	require.NoError(t, err)
	assert.Equal(t, uint32(4243), gid)
}

// TestRefusedDatabase: a database podfs refuses, or one that is not
// text, gives an error naming the file and the reason.
func TestRefusedDatabase(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("podfs reads only on Linux")
	}
	outside := filepath.Join(t.TempDir(), "passwd")
	require.NoError(t, os.WriteFile(outside, []byte("istio-proxy:x:1000:1000::/:/bin/sh\n"), 0o644))
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, root string)
		wantErr error
	}{
		{"missing", func(t *testing.T, root string) {}, os.ErrNotExist},
		{"symlink out of the root", func(t *testing.T, root string) {
			require.NoError(t, os.Symlink(outside, filepath.Join(root, "etc/passwd")))
		}, os.ErrNotExist},
		{"FIFO", func(t *testing.T, root string) {
			require.NoError(t, syscall.Mkfifo(filepath.Join(root, "etc/passwd"), 0o644))
		}, podfs.ErrNotRegular},
		{"NUL bytes", func(t *testing.T, root string) {
			require.NoError(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("istio-proxy:x:7:7::/:/bin/sh\n\x00"), 0o644))
		}, ErrMalformed},
		{"not UTF-8", func(t *testing.T, root string) {
			require.NoError(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("istio-proxy:x:7:7:\xff:/:/bin/sh\n"), 0o644))
		}, ErrMalformed},
		{"too large", func(t *testing.T, root string) {
			require.NoError(t, os.WriteFile(filepath.Join(root, "etc/passwd"), make([]byte, MaxSize+1), 0o644))
		}, podfs.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRoot(t, "", "")
			tc.setup(t, root)
			_, err := DB{Root: root}.UserID("istio-proxy")
			require.ErrorIs(t, err, tc.wantErr)
			assert.Contains(t, err.Error(), filepath.Join(root, "etc/passwd"))
		})
	}
}

func FuzzFind(f *testing.F) {
	f.Add([]byte(passwd), "istio-proxy")
	f.Add([]byte(group), "mesh")
	f.Add([]byte("a:b:c\n"), "a")
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		id, err := find(b, name)
		if err == nil {
			assert.NotEqual(t, uint32(0xffffffff), id)
		}
	})
}
