package podfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// tree is a fake pod root next to a node directory holding a secret, so
// that a read escaping the root would return the secret.
type tree struct{ root, node string }

const secret = "nameserver 10.66.66.66 HOST-ONLY-SECRET-abc123\n"

func newTree(t *testing.T) tree {
	t.Helper()
	base := t.TempDir()
	tr := tree{root: filepath.Join(base, "root"), node: filepath.Join(base, "node")}
	for _, d := range []string{tr.root + "/etc", tr.root + "/run", tr.root + "/dir", tr.node} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	require.NoError(t, os.WriteFile(tr.node+"/secret", []byte(secret), 0o600))
	require.NoError(t, os.WriteFile(tr.root+"/run/real", []byte("nameserver 10.0.0.10\n"), 0o644))
	return tr
}

func (tr tree) symlink(t *testing.T, target, name string) {
	t.Helper()
	require.NoError(t, os.Symlink(target, filepath.Join(tr.root, name)))
}

func (tr tree) write(t *testing.T, name string, b []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(tr.root, name), b, 0o644))
}

// TestReadFile runs every case through openat2 and through the walk
// used where openat2 is missing: both must agree.
func TestReadFile(t *testing.T) {
	const limit = 1024
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, tr tree)
		file    string
		want    string // the content, when the read succeeds
		wantErr error  // errors.Is target, when it fails
		walkErr error  // when the walk refuses differently (stricter)
		root    func(tree) string
	}{
		{name: "regular file", file: "run/real", want: "nameserver 10.0.0.10\n"},
		{name: "empty file", setup: func(t *testing.T, tr tree) { tr.write(t, "etc/empty", nil) }, file: "etc/empty", want: ""},
		{name: "exactly the limit", setup: func(t *testing.T, tr tree) { tr.write(t, "etc/big", []byte(strings.Repeat("x", limit))) },
			file: "etc/big", want: strings.Repeat("x", limit)},
		{name: "one byte over the limit", setup: func(t *testing.T, tr tree) { tr.write(t, "etc/big", []byte(strings.Repeat("x", limit+1))) },
			file: "etc/big", wantErr: ErrTooLarge},
		{name: "absolute symlink inside the root is followed in it",
			setup: func(t *testing.T, tr tree) { tr.symlink(t, "/run/real", "etc/resolv.conf") },
			file:  "etc/resolv.conf", want: "nameserver 10.0.0.10\n"},
		{name: "relative symlink inside the root",
			setup: func(t *testing.T, tr tree) { tr.symlink(t, "../run/real", "etc/resolv.conf") },
			file:  "etc/resolv.conf", want: "nameserver 10.0.0.10\n"},
		{name: "absolute symlink out of the root",
			setup: func(t *testing.T, tr tree) { tr.symlink(t, tr.node+"/secret", "etc/resolv.conf") },
			file:  "etc/resolv.conf", wantErr: fs.ErrNotExist},
		{name: "relative symlink out of the root",
			setup: func(t *testing.T, tr tree) {
				tr.symlink(t, strings.Repeat("../", 12)+strings.TrimPrefix(tr.node, "/")+"/secret", "etc/resolv.conf")
			},
			file: "etc/resolv.conf", wantErr: fs.ErrNotExist},
		{name: "directory symlink out of the root",
			setup: func(t *testing.T, tr tree) { tr.symlink(t, tr.node, "etc/sub") },
			file:  "etc/sub/secret", wantErr: fs.ErrNotExist},
		{name: "dot-dot in the name stays in the root",
			file: "../../../../../" + "node/secret", wantErr: fs.ErrNotExist,
			root: func(tr tree) string { return tr.root }},
		{name: "dot-dot after a symlinked directory is textual",
			setup: func(t *testing.T, tr tree) { tr.symlink(t, "/dir", "etc/d") },
			file:  "etc/d/../run/real", want: "nameserver 10.0.0.10\n"},
		{name: "symlink loop",
			setup: func(t *testing.T, tr tree) { tr.symlink(t, "b", "etc/a"); tr.symlink(t, "a", "etc/b") },
			file:  "etc/a", wantErr: unix.ELOOP},
		{name: "FIFO",
			setup: func(t *testing.T, tr tree) { require.NoError(t, syscall.Mkfifo(tr.root+"/etc/resolv.conf", 0o644)) },
			file:  "etc/resolv.conf", wantErr: ErrNotRegular},
		{name: "directory", file: "dir", wantErr: ErrNotRegular},
		{name: "the root itself", file: "", wantErr: ErrNotRegular},
		{name: "a character device (/dev/zero seen from /)", file: "dev/zero", wantErr: ErrNotRegular,
			root: func(tree) string { return "/" }},
		{name: "symlink to /dev/zero resolves in the root", setup: func(t *testing.T, tr tree) { tr.symlink(t, "/dev/zero", "etc/resolv.conf") },
			file: "etc/resolv.conf", wantErr: fs.ErrNotExist},
		{name: "a regular file on procfs", file: "version", wantErr: ErrPseudoFS,
			root: func(tree) string { return "/proc" }},
		{name: "a magic link", file: "root/etc/hostname", wantErr: unix.ELOOP,
			root: func(tree) string { return "/proc/self" }},
		{name: "a procfs symlink that is not magic", file: "self/status", wantErr: ErrPseudoFS, walkErr: unix.ELOOP,
			root: func(tree) string { return "/proc" }},
		{name: "a missing root", file: "etc/resolv.conf", wantErr: fs.ErrNotExist,
			root: func(tr tree) string { return tr.root + "/no-such-dir" }},
		{name: "a file in the path", file: "run/real/x", wantErr: unix.ENOTDIR},
	} {
		for _, r := range []struct {
			name string
			res  resolver
		}{{"openat2", resolveInRoot}, {"walk", resolveWalk}} {
			t.Run(tc.name+"/"+r.name, func(t *testing.T) {
				tr := newTree(t)
				if tc.setup != nil {
					tc.setup(t, tr)
				}
				root := tr.root
				if tc.root != nil {
					root = tc.root(tr)
				}
				start := time.Now()
				b, err := readFile(root, tc.file, limit, r.res)
				assert.Less(t, time.Since(start), time.Second)
				want := tc.wantErr
				if r.name == "walk" && tc.walkErr != nil {
					want = tc.walkErr
				}
				if want == nil {
					require.NoError(t, err)
					assert.Equal(t, tc.want, string(b))
					return
				}
				require.Error(t, err)
				assert.ErrorIs(t, err, want)
				assert.Nil(t, b)
				assert.Contains(t, err.Error(), filepath.Join(root, tc.file), "the error names the path")
				assert.NotContains(t, err.Error(), "HOST-ONLY-SECRET")
			})
		}
	}
}

// TestReadFileDevZeroInRoot: a device node inside the root itself (as a
// pod's /dev/zero is) is refused without being opened, and fast. mknod
// needs CAP_MKNOD.
func TestReadFileDevZeroInRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root; run as root to cover a device inside the root")
	}
	tr := newTree(t)
	require.NoError(t, os.MkdirAll(tr.root+"/dev", 0o755))
	require.NoError(t, unix.Mknod(tr.root+"/dev/zero", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
	tr.symlink(t, "/dev/zero", "etc/resolv.conf")
	for _, r := range []resolver{resolveInRoot, resolveWalk} {
		start := time.Now()
		_, err := readFile(tr.root, "etc/resolv.conf", MaxResolvConf, r)
		assert.Less(t, time.Since(start), time.Second)
		assert.ErrorIs(t, err, ErrNotRegular)
		assert.ErrorContains(t, err, "a character device")
	}
}

// TestReadFileGrowsPastTheCap: a file whose size grows after the check
// is still cut off at the cap: readCapped never reads more than limit+1.
func TestReadCapped(t *testing.T) {
	f, err := os.Open("/dev/zero")
	require.NoError(t, err)
	defer f.Close()
	_, err = readCapped(int(f.Fd()), 0, 4096)
	assert.ErrorIs(t, err, ErrTooLarge)

	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, []byte(strings.Repeat("a", 5000)), 0o644))
	g, err := os.Open(p)
	require.NoError(t, err)
	defer g.Close()
	b, err := readCapped(int(g.Fd()), 10, 8192) // a stale, small size still reads it all
	require.NoError(t, err)
	assert.Len(t, b, 5000)
}

// TestReadFileExported: ReadFile is readFile with openat2 (and its
// fallback); errors wrap the syscall's so callers can tell ENOENT.
func TestReadFileExported(t *testing.T) {
	tr := newTree(t)
	b, err := ReadFile(tr.root, "/run/real", MaxResolvConf)
	require.NoError(t, err)
	assert.Equal(t, "nameserver 10.0.0.10\n", string(b))
	_, err = ReadFile(tr.root, "etc/none", MaxResolvConf)
	assert.True(t, errors.Is(err, fs.ErrNotExist), "%v", err)
}
