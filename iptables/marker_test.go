//go:build linux

package iptables_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// TestKernelMarkerFastPath: a re-run with the same plan while the
// nf_tables generation has not moved starts no process at all; any change
// by someone else moves the generation, so the next run reads the state,
// repairs it and records it again; another plan never takes the fast path;
// cleanup removes the marker table.
func TestKernelMarkerFastPath(t *testing.T) {
	requireKernel(t)
	build := func(o ...func(*capture.Config)) plan.Plan {
		c := capture.DefaultConfig()
		for _, f := range o {
			f(&c)
		}
		p, err := capture.Build(c)
		require.NoError(t, err)
		return p
	}
	p := build(tproxyDefault, ipv6(true))
	n := newNS(t)
	ctx := context.Background()
	apply := func(p plan.Plan) *recorder {
		t.Helper()
		rec := &recorder{inner: iptables.OSExecer()}
		require.NoError(t, n.executor(t, iptables.BackendAuto, rec).Apply(ctx, p))
		assertHolds(t, n, "nft", p)
		return rec
	}
	markers := func() []string {
		var out []string
		for _, l := range strings.Split(n.run(t, "", "nft", "list", "tables", "inet"), "\n") {
			if f := strings.Fields(l); len(f) == 3 && strings.HasPrefix(f[2], iptables.MarkerPrefix) {
				out = append(out, f[2])
			}
		}
		return out
	}

	first := apply(p)
	assert.Equal(t, 2, first.count("-restore"), "first apply: one restore per family")
	require.Len(t, markers(), 1)
	assert.Contains(t, markers()[0], plan.Hash(p))

	again := apply(p)
	assert.Empty(t, again.argv, "unchanged re-run: no process")

	n.run(t, "", "iptables-nft", "-t", "nat", "-D", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT")
	repaired := apply(p)
	assert.Equal(t, 1, repaired.count("iptables-nft-save"), "a change by someone else: the state is read")
	assert.Equal(t, 1, repaired.count("iptables-nft-restore"), "and the changed family rewritten")
	assert.Empty(t, apply(p).argv, "recorded again: the next re-run is free")

	other := build(tproxyDefault, ipv6(true), set("InboundPortsInclude", "80"))
	changed := apply(other)
	assert.NotEmpty(t, changed.argv, "another plan never takes the fast path")
	assert.Contains(t, markers()[0], plan.Hash(other))

	require.NoError(t, n.executor(t, iptables.BackendAuto, nil).Cleanup(ctx))
	assert.Empty(t, markers(), "cleanup removes the marker")
}
