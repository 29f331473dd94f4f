package cni

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const testEntry = `{"type":"istio-iptables-cni","capture":{"istio-service-cidr":"*","istio-inbound-ports":"*"},"excludeNamespaces":["kube-system"]}`

// golden compares got with testdata/conflist/name, or rewrites it.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "conflist", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden: go test ./cni -run Conflist -update")
	assert.Equal(t, string(want), string(got), "golden %s", path)
}

// plugins returns the text of each plugin of a conflist.
func plugins(t *testing.T, b []byte) []string {
	t.Helper()
	arr, err := findPlugins(b)
	require.NoError(t, err)
	out := []string{}
	for _, e := range arr.elems {
		out = append(out, string(b[e.start:e.end]))
	}
	return out
}

func TestConflistInsertRemove(t *testing.T) {
	for _, name := range []string{"bridge.conflist", "compact.conflist", "tabs.conflist", "empty.conflist"} {
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join("testdata", "conflist", name))
			require.NoError(t, err)
			out, err := InsertEntry(orig, []byte(testEntry))
			require.NoError(t, err)
			golden(t, strings.TrimSuffix(name, ".conflist")+".inserted.golden", out)
			require.True(t, json.Valid(out), "%s", out)

			before, after := plugins(t, orig), plugins(t, out)
			require.Len(t, after, len(before)+1)
			assert.Equal(t, before, after[:len(before)], "the other plugins are kept byte for byte, in order")
			assert.True(t, isOurs([]byte(after[len(before)])), "ours is last")

			again, err := InsertEntry(out, []byte(testEntry))
			require.NoError(t, err)
			assert.Equal(t, string(out), string(again), "a second insert replaces ours in place")

			removed, n, err := RemoveEntry(out)
			require.NoError(t, err)
			assert.Equal(t, 1, n)
			assert.Equal(t, string(orig), string(removed), "remove gives back the original, byte for byte")
		})
	}
}

func TestConflistOursInTheMiddle(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join("testdata", "conflist", "ours-middle.conflist"))
	require.NoError(t, err)
	out, err := InsertEntry(orig, []byte(testEntry))
	require.NoError(t, err)
	golden(t, "ours-middle.inserted.golden", out)
	p := plugins(t, out)
	require.Len(t, p, 3)
	assert.Equal(t, plugins(t, orig)[0], p[0])
	assert.Equal(t, plugins(t, orig)[2], p[2])

	removed, n, err := RemoveEntry(orig)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	golden(t, "ours-middle.removed.golden", removed)
	assert.Equal(t, []string{plugins(t, orig)[0], plugins(t, orig)[2]}, plugins(t, removed))
}

func TestConfToConflist(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join("testdata", "conflist", "single.conf"))
	require.NoError(t, err)
	list, err := ConfToConflist(orig)
	require.NoError(t, err)
	out, err := InsertEntry(list, []byte(testEntry))
	require.NoError(t, err)
	golden(t, "single.inserted.golden", out)
	p := plugins(t, out)
	require.Len(t, p, 2)
	assert.Equal(t, string(bytes.TrimSpace(orig)), p[0], "the .conf is the first plugin, verbatim")
	var head struct{ CNIVersion, Name string }
	require.NoError(t, json.Unmarshal(out, &head))
	assert.Equal(t, "0.4.0", head.CNIVersion)
	assert.Equal(t, "mynet", head.Name)
}

func TestConflistErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"not json", `{"plugins": [`, "read the conflist"},
		{"no plugins", `{"name": "x"}`, `no "plugins" array`},
		{"plugins not an array", `{"plugins": {}}`, `"plugins" is not an array`},
		{"twice", `{"plugins": [], "plugins": []}`, `"plugins" appears twice`},
		{"trailing garbage", `{"plugins": []} x`, "read the conflist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := InsertEntry([]byte(tc.text), []byte(testEntry))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := ConfToConflist([]byte(`{"name": "x"}`))
	assert.ErrorContains(t, err, `no "type"`)
}
