//go:build linux

package iptables_test

import (
	"context"
	"strings"
	"testing"

	goipt "github.com/coreos/go-iptables/iptables"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// TestKernelGoIptablesView reads the applied rules back through
// github.com/coreos/go-iptables, a reader independent of this package's
// save parser: per chain, `iptables -S TABLE CHAIN` must list exactly the
// plan's rules in order, Exists must find each jump into our chains, and
// after cleanup no ISTIO_* chain is left.
func TestKernelGoIptablesView(t *testing.T) {
	requireKernel(t)
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := capture.DefaultConfig()
			for _, o := range tc.opts {
				o(&c)
			}
			p, err := capture.Build(c)
			require.NoError(t, err)
			n := newNS(t)
			n.apply(t, p)
			for _, rs := range p.RuleSets {
				want := planLines(t, rs)
				got := map[string][]string{}
				var missing []string
				inNS(t, n, func() error {
					ipt, err := newGoIptables(rs.Family)
					if err != nil {
						return err
					}
					for _, tab := range []plan.Table{plan.TableNat, plan.TableMangle, plan.TableRaw} {
						if !hasTable(rs, tab) {
							continue
						}
						chains, err := ipt.ListChains(string(tab))
						if err != nil {
							return err
						}
						for _, ch := range chains {
							lines, err := ipt.List(string(tab), ch)
							if err != nil {
								return err
							}
							for _, l := range lines {
								if strings.HasPrefix(l, "-A ") {
									got[string(tab)+"/"+ch] = append(got[string(tab)+"/"+ch], l)
								}
							}
						}
					}
					for _, r := range rs.Rules {
						if plan.Chain(r.Target()).Owned() && plan.Builtin(r.Table, r.Chain) {
							ok, err := ipt.Exists(string(r.Table), string(r.Chain), r.Args...)
							if err != nil {
								return err
							}
							if !ok {
								missing = append(missing, string(r.Table)+" "+r.String())
							}
						}
					}
					return nil
				})
				assert.Empty(t, missing, "%s: jumps go-iptables does not find", rs.Family)
				assert.Equal(t, want, got, "%s: rules per chain as go-iptables lists them", rs.Family)
			}
			require.NoError(t, n.executor(t, iptables.BackendAuto, nil).Cleanup(context.Background()))
			for _, rs := range p.RuleSets {
				var left []string
				inNS(t, n, func() error {
					ipt, err := newGoIptables(rs.Family)
					if err != nil {
						return err
					}
					for _, tc := range rs.Chains {
						// iptables-nft lists no chain of a deleted table;
						// an error here means the table is gone.
						if exists, err := ipt.ChainExists(string(tc.Table), string(tc.Chain)); err == nil && exists {
							left = append(left, tc.String())
						}
					}
					return nil
				})
				assert.Empty(t, left, "%s: chains left after cleanup", rs.Family)
			}
		})
	}
}

func hasTable(rs plan.RuleSet, t plan.Table) bool {
	for _, x := range rs.Tables() {
		if x == t {
			return true
		}
	}
	return false
}

// newGoIptables returns go-iptables for the family, on the nft flavour the
// executor picks in a fresh namespace.
func newGoIptables(f plan.Family) (*goipt.IPTables, error) {
	proto, path := goipt.ProtocolIPv4, "/usr/sbin/iptables-nft"
	if f == plan.IPv6 {
		proto, path = goipt.ProtocolIPv6, "/usr/sbin/ip6tables-nft"
	}
	return goipt.New(goipt.IPFamily(proto), goipt.Path(path), goipt.Timeout(5))
}

// inNS runs fn on a thread in the namespace (go-iptables execs iptables,
// which inherits the thread's namespace). fn reports through its error,
// never through require: it runs on another goroutine.
func inNS(t *testing.T, n testNS, fn func() error) {
	t.Helper()
	require.NoError(t, n.open(t).Do(fn))
}
