//go:build linux

package iptables_test

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// Kernel tests of the native nftables backend. Each runs in namespaces of
// its own (newNS), read back with the real `nft`, which the tool itself
// never needs.

func requireNft(t *testing.T) {
	t.Helper()
	requireKernel(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("kernel test: nft not installed (the tests read the native table with it)")
	}
}

func (n testNS) nftExecutor(t *testing.T) iptables.Executor {
	t.Helper()
	ex, err := iptables.NewExecutor(iptables.Options{Namespace: n.open(t), Mode: iptables.BackendNative, Logger: testLogger(t)})
	require.NoError(t, err)
	return ex
}

// nftTable lists the native table ("" when absent).
func (n testNS) nftTable(t *testing.T) string {
	t.Helper()
	out, _, err := n.exec("", "nft", "list", "table", "inet", iptables.NftTableName)
	if err != nil {
		return ""
	}
	return out
}

// nftRuleset lists the whole nf_tables ruleset but the markers.
func (n testNS) nftRuleset(t *testing.T) string {
	t.Helper()
	out := n.run(t, "", "nft", "list", "ruleset")
	var keep []string
	skip := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "table inet "+iptables.MarkerPrefix) {
			skip = true
		}
		if !skip {
			keep = append(keep, l)
		}
		if skip && l == "}" {
			skip = false
		}
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}

func nftText(t *testing.T, p plan.Plan) string {
	t.Helper()
	text, err := iptables.NftScript(p)
	require.NoError(t, err)
	return text
}

// TestKernelNftGoldenConfigs applies every golden configuration with the
// native backend and loads the dry run's `nft -f` text with the real nft
// into another fresh namespace: both list the same table.
func TestKernelNftGoldenConfigs(t *testing.T) {
	requireNft(t)
	for _, tc := range append(goldenCases, nftExtraCases...) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := build(t, tc.opts...)
			native := newNS(t)
			require.NoError(t, native.nftExecutor(t).Apply(context.Background(), p))
			got := native.nftTable(t)
			require.NotEmpty(t, got, "no table inet %s after the apply", iptables.NftTableName)
			loaded := newNS(t)
			text := nftText(t, p)
			loaded.run(t, text, "nft", "-f", "-")
			assert.Equal(t, loaded.nftTable(t), got, "netlink apply and `nft -f` of the dry-run text differ; text:\n%s", text)
			assertRouting(t, native, p)
		})
	}
}

// nftExtraCases exercise the translation beyond the golden files: ranges,
// adjacent and overlapping CIDRs, ports merged into sets.
var nftExtraCases = []struct {
	name string
	opts []func(*capture.Config)
}{
	{"adjacent and nested CIDRs", opts(redirectDefault, set("OutboundIPRangesExclude", "10.0.0.0/25,10.0.0.128/25,10.1.0.0/16,10.1.2.0/24,192.168.7.0/24"))},
	{"-d many ports", opts(redirectDefault, set("InboundPortsExclude", "81,82,83,90,15090"))},
	{"DNS capture, drop INVALID, owner groups", opts(redirectDefault, ipv6(true), set("RedirectDNS", "true"),
		set("DNSServers", "10.96.0.10,fd00::a"), set("DropInvalid", "true"), set("OwnerGroupsExclude", "888"))},
	{"DNS capture all, TPROXY", opts(tproxyDefault, ipv6(true), set("RedirectDNS", "true"), set("CaptureAllDNS", "true"), set("DropInvalid", "true"))},
	{"-b 1000 ports (multiport runs, one set)", opts(redirectDefault, set("InboundPortsInclude", portList(20000, 1000)))},
	{"-u 400 UIDs (a big batch)", opts(redirectDefault, ipv6(true), set("ProxyUID", portList(5000, 400)))},
	{"IPv6 CIDR lists", opts(redirectDefault, ipv6(true), set("OutboundIPRangesInclude", "fd00::/16,fd01::/16,2001:db8::/32"), set("OutboundIPRangesExclude", "fd00:1::/32,::/127"))},
}

// TestKernelNftLifecycle: apply, re-apply (nothing written), switch to
// the iptables backend and back (never both), cleanup (nothing left).
func TestKernelNftLifecycle(t *testing.T) {
	requireNft(t)
	for _, tc := range []struct {
		name string
		opts []func(*capture.Config)
	}{
		{"REDIRECT dual-stack", opts(redirectDefault, ipv6(true))},
		{"TPROXY dual-stack", opts(tproxyDefault, ipv6(true))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := build(t, tc.opts...)
			n := newNS(t)
			before := n.snapshot(t)
			rulesetBefore := n.nftRuleset(t)
			ctx := context.Background()

			require.NoError(t, n.nftExecutor(t).Apply(ctx, p))
			once := n.nftRuleset(t)
			gen := n.run(t, "", "nft", "list", "tables")
			assertRouting(t, n, p)
			assert.Equal(t, strings.TrimSpace(nftListed(t, p)), strings.TrimSpace(n.nftTable(t)))

			// Re-apply: the marker is current, nothing is written (the
			// marker table, named by generation, would change otherwise).
			require.NoError(t, n.nftExecutor(t).Apply(ctx, p))
			assert.Equal(t, once, n.nftRuleset(t))
			assert.Equal(t, gen, n.run(t, "", "nft", "list", "tables"), "the re-run wrote")

			// Switch to iptables: the native table goes.
			n.apply(t, p)
			assert.Empty(t, n.nftTable(t), "native table left after the iptables apply")
			assertHolds(t, n, "nft", p)
			assertRouting(t, n, p)

			// And back: the iptables rules go, the table is as before.
			require.NoError(t, n.nftExecutor(t).Apply(ctx, p))
			assert.Equal(t, once, n.nftRuleset(t), "after switching back")
			for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
				assert.Empty(t, ownedChains(n.parsed(t, f, "nft")), "%s iptables chains left after the native apply", f)
			}
			assertRouting(t, n, p)

			// Cleanup: everything as before the first run.
			require.NoError(t, n.nftExecutor(t).Cleanup(ctx))
			assert.Equal(t, rulesetBefore, n.nftRuleset(t))
			assert.Empty(t, n.run(t, "", "nft", "list", "tables"), "tables left (markers included)")
			assertSnapshot(t, before, n.snapshot(t), "after cleanup")
		})
	}
}

// nftListed is what `nft list table` prints for the plan, by loading its
// text into a fresh namespace.
func nftListed(t *testing.T, p plan.Plan) string {
	t.Helper()
	n := newNS(t)
	n.run(t, nftText(t, p), "nft", "-f", "-")
	out := n.nftTable(t)
	n.del(t)
	return out
}

// portList is "from,from+1,...", n numbers.
func portList(from, n int) string {
	var items []string
	for i := range n {
		items = append(items, strconv.Itoa(from+i))
	}
	return strings.Join(items, ",")
}
