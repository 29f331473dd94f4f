package iptables

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/plan"
)

// The decide step is pure: State in, Transaction out, no fake at all.

func mustPlan(t *testing.T, mode string, ipv6 bool, edit ...func(*capture.Config)) plan.Plan {
	t.Helper()
	c := capture.DefaultConfig()
	c.ProxyPort, c.InboundCapturePort, c.ProxyUID = "15001", "15006", "1337"
	c.InboundInterceptionMode = mode
	c.OutboundIPRangesInclude, c.InboundPortsInclude, c.InboundPortsExclude = "*", "*", "15090,15021,15020"
	c.IPv6 = "false"
	if ipv6 {
		c.IPv6 = "true"
	}
	for _, e := range edit {
		e(&c)
	}
	p, err := capture.Build(c)
	require.NoError(t, err)
	return p
}

var everyBinary = func() map[string]string {
	m := map[string]string{}
	for _, b := range binaryNames() {
		m[b] = "/usr/sbin/" + b
	}
	return m
}()

// freshState is a new pod's namespace: lo up, nothing else.
func freshState() State {
	return State{
		Binaries: everyBinary,
		Iptables: map[Flavour]map[plan.Family]FlavourState{FlavourNft: {}, FlavourLegacy: {}},
		Loopback: Loopback{Up: true, IPv4: true, IPv6: true},
	}
}

// applied is the state an apply of p on fl leaves: what *-save shows and
// the probe counts, routing included.
func applied(t *testing.T, st State, fl Flavour, p plan.Plan) State {
	t.Helper()
	for _, rs := range p.RuleSets {
		var s plan.Saved
		for _, tab := range rs.Tables() {
			stb := plan.SavedTable{Name: tab}
			for _, c := range plan.BuiltinChains(tab) {
				stb.Chains = append(stb.Chains, plan.SavedChain{Name: c, Policy: "ACCEPT"})
			}
			for _, tc := range rs.Chains {
				if tc.Table == tab {
					stb.Chains = append(stb.Chains, plan.SavedChain{Name: tc.Chain, Policy: "-"})
				}
			}
			for _, c := range append(plan.BuiltinChains(tab), chainNames(rs, tab)...) {
				for _, r := range rs.ChainRules(tab, c) {
					sp, err := plan.ParseSpec(rs.Family, r.Args)
					require.NoError(t, err)
					stb.Rules = append(stb.Rules, plan.SavedRule{Table: tab, Chain: c, Args: sp.Args()})
				}
			}
			s.Tables = append(s.Tables, stb)
		}
		fs := FlavourState{Saved: s, Read: true, Counts: map[plan.TableChain]int{}}
		for _, stb := range s.Tables {
			fs.Tables = append(fs.Tables, string(stb.Name))
			fs.AcceptOnly = append(fs.AcceptOnly, stb.Name)
			for _, c := range stb.Chains {
				tc := plan.TableChain{Table: stb.Name, Chain: c.Name}
				fs.Counts[tc] = len(stb.ChainRules(c.Name))
				if c.Name.Owned() {
					fs.OwnedChains = append(fs.OwnedChains, tc)
				}
			}
		}
		st.Iptables[fl][rs.Family] = fs
	}
	st.Routing = Routing{Routes: p.Routes, Addrs: p.Addrs}
	for _, r := range p.Routes {
		st.Routing.Tables = append(st.Routing.Tables, RouteTable{Family: r.Family, Table: r.Table})
	}
	return st
}

func chainNames(rs plan.RuleSet, t plan.Table) []plan.Chain {
	var out []plan.Chain
	for _, tc := range rs.Chains {
		if tc.Table == t {
			out = append(out, tc.Chain)
		}
	}
	return out
}

// kinds summarises a transaction as "phase:kind[:flavour/family]" per step.
func kinds(tx Transaction) []string {
	var out []string
	for _, s := range tx.Steps {
		k := []string{"route-add", "write", "remove", "tidy"}[s.Phase] + ":" + string(s.Kind)
		if s.Kind == StepRestore {
			k += ":" + string(s.Flavour) + "/" + string(s.Family)
		}
		out = append(out, k)
	}
	return out
}

func TestDecide(t *testing.T) {
	redirect := mustPlan(t, "REDIRECT", false)
	redirect46 := mustPlan(t, "REDIRECT", true)
	tproxy46 := mustPlan(t, "TPROXY", true)
	for _, tc := range []struct {
		name    string
		plan    plan.Plan
		state   func() State
		opts    decideOptions
		want    []string
		backend string
		marker  MarkerAction
	}{{
		name: "fresh namespace: one restore per family, recorded",
		plan: redirect46, state: freshState,
		want: []string{"route-add:routing", "write:restore:nft/ipv4", "write:restore:nft/ipv6"}, backend: "nft", marker: MarkerRecord,
	}, {
		name: "fresh namespace, TPROXY: the routing before the rules that need it",
		plan: tproxy46, state: freshState,
		want: []string{"route-add:routing", "write:restore:nft/ipv4", "write:restore:nft/ipv6"}, backend: "nft", marker: MarkerRecord,
	}, {
		name: "no-op: the same plan in place",
		plan: tproxy46, state: func() State { return applied(t, freshState(), FlavourNft, tproxy46) },
		want: nil, backend: "nft", marker: MarkerRecord,
	}, {
		name: "swap TPROXY to REDIRECT: rules rewritten, stale routing removed last",
		plan: redirect46, state: func() State { return applied(t, freshState(), FlavourNft, tproxy46) },
		want: []string{"write:restore:nft/ipv4", "write:restore:nft/ipv6", "tidy:routing", "tidy:delete-tables"}, backend: "nft", marker: MarkerRecord,
	}, {
		name: "backend switch nft to legacy: legacy written before nft is removed",
		plan: redirect, opts: decideOptions{Mode: BackendLegacy},
		state: func() State { return applied(t, freshState(), FlavourNft, redirect) },
		want:  []string{"write:restore:legacy/ipv4", "remove:restore:nft/ipv4", "tidy:delete-tables"}, backend: "legacy",
	}, {
		name: "to native: the table first, then the iptables rules go",
		plan: redirect, opts: decideOptions{Mode: BackendNative},
		state: func() State { return applied(t, freshState(), FlavourNft, redirect) },
		want:  []string{"write:native", "remove:restore:nft/ipv4", "tidy:delete-tables"}, backend: "native", marker: MarkerRecord,
	}, {
		name: "from native: the rules first, then the native table goes",
		plan: redirect,
		state: func() State {
			st := freshState()
			st.Native = NativeState{Present: true, Ours: true, Hash: "x", Chains: []string{"nat-OUTPUT"}}
			return st
		},
		want: []string{"write:restore:nft/ipv4", "remove:delete-tables"}, backend: "nft", marker: MarkerRecord,
	}, {
		name: "cleanup: the empty plan removes every flavour's rules, the routing, the record",
		opts: decideOptions{Cleanup: true},
		state: func() State {
			st := applied(t, freshState(), FlavourLegacy, redirect)
			st = applied(t, st, FlavourNft, tproxy46) // its routing
			st.Markers = []string{MarkerName("h", 3)}
			return st
		},
		want:   []string{"remove:restore:nft/ipv4", "remove:restore:nft/ipv6", "remove:restore:legacy/ipv4", "tidy:routing", "tidy:delete-tables"},
		marker: MarkerRemove,
	}, {
		name: "cleanup of a clean namespace: nothing",
		opts: decideOptions{Cleanup: true}, state: freshState,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := decide(tc.plan, tc.state(), tc.opts)
			require.NoError(t, err)
			assert.Equal(t, tc.want, kinds(tx), "%s", tx)
			assert.Equal(t, tc.backend, tx.Backend)
			assert.Equal(t, tc.marker, tx.Marker)
		})
	}
}

func TestDecideRefuses(t *testing.T) {
	redirect := mustPlan(t, "REDIRECT", false)
	for _, tc := range []struct {
		name  string
		plan  plan.Plan
		opts  decideOptions
		state func() State
		is    error
		says  string
	}{{
		name: "REDIRECT with lo down",
		plan: redirect,
		state: func() State {
			st := freshState()
			st.Loopback.Up = false
			return st
		},
		is: ErrLoopback, says: "ip link set lo up",
	}, {
		name: "REDIRECT of IPv6 without ::1",
		plan: mustPlan(t, "REDIRECT", true),
		state: func() State {
			st := freshState()
			st.Loopback.IPv6 = false
			return st
		},
		is: ErrLoopback, says: "::1",
	}, {
		name: "a foreign table named like the native one",
		plan: redirect, opts: decideOptions{Mode: BackendNative},
		state: func() State {
			st := freshState()
			st.Native = NativeState{Present: true, Foreign: []string{"inet " + NftTableName}}
			return st
		},
		is: ErrForeign, says: "owner tag",
	}, {
		name: "our chains there and no *-save to read them",
		plan: redirect,
		state: func() State {
			st := applied(t, freshState(), FlavourNft, redirect)
			fs := st.Iptables[FlavourNft][plan.IPv4]
			fs.Read, fs.Saved = false, plan.Saved{}
			st.Iptables[FlavourNft][plan.IPv4] = fs
			st.Binaries = map[string]string{"iptables-nft-restore": "/usr/sbin/iptables-nft-restore"}
			return st
		},
		is: ErrUnreadable, says: "iptables-nft-save is not installed",
	}, {
		name: "legacy tables and no legacy binaries, native apply",
		plan: redirect, opts: decideOptions{Mode: BackendNative},
		state: func() State {
			st := freshState()
			st.Binaries = nil
			st.Iptables[FlavourLegacy][plan.IPv4] = FlavourState{Tables: []string{"nat"}}
			return st
		},
		is: ErrUnreadable, says: "iptables-legacy-save",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decide(tc.plan, tc.state(), tc.opts)
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.says)
		})
	}
}

// Foreign routing is never in a transaction: only rules and routes
// carrying our tag reach State.Routing, and decide removes only those.
func TestDecideRoutingOnlyOurs(t *testing.T) {
	tproxy := mustPlan(t, "TPROXY", false)
	st := applied(t, freshState(), FlavourNft, tproxy)
	st.Routing.Routes = append(st.Routing.Routes, plan.Route{Family: plan.IPv4, Mark: 77, Table: 77}) // an earlier run of ours, other flags
	tx, err := decide(tproxy, st, decideOptions{})
	require.NoError(t, err)
	require.Len(t, tx.Steps, 1)
	assert.Equal(t, []plan.Route{{Family: plan.IPv4, Mark: 77, Table: 77}}, tx.Steps[0].Routing.DelRoutes)
	assert.Empty(t, tx.Steps[0].Routing.DelTables, "table 133 still serves the plan")
}

// Within a restore, the table that gains capture commits first.
func TestDecideTableOrder(t *testing.T) {
	redirect, tproxy := mustPlan(t, "REDIRECT", false), mustPlan(t, "TPROXY", false)
	blocks := func(tx Transaction) []string {
		var out []string
		for _, l := range strings.Split(tx.Steps[slices.IndexFunc(tx.Steps, func(s Step) bool { return s.Kind == StepRestore })].Input, "\n") {
			if strings.HasPrefix(l, "*") {
				out = append(out, l)
			}
		}
		return out
	}
	tx, err := decide(tproxy, applied(t, freshState(), FlavourNft, redirect), decideOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{"*mangle", "*nat"}, blocks(tx))
	tx, err = decide(redirect, applied(t, freshState(), FlavourNft, tproxy), decideOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{"*nat", "*mangle"}, blocks(tx))
}

// The shortcut answers only for a record at the current generation, never
// with legacy tables about.
func TestDecideShortcut(t *testing.T) {
	p := mustPlan(t, "REDIRECT", false)
	st := freshState()
	st.Generation = 9
	st.Markers = []string{MarkerName(plan.Hash(p), 9)}
	tx, ok := decideShortcut(p, st, decideOptions{})
	assert.True(t, ok)
	assert.True(t, tx.Empty())

	st.Generation = 10
	_, ok = decideShortcut(p, st, decideOptions{})
	assert.False(t, ok, "the generation moved: the record does not vouch")

	st.Generation = 9
	st.Iptables[FlavourLegacy][plan.IPv4] = FlavourState{Tables: []string{"nat"}}
	_, ok = decideShortcut(p, st, decideOptions{})
	assert.False(t, ok, "legacy tables are not covered by the generation")

	_, ok = decideShortcut(p, freshState(), decideOptions{Mode: BackendNative})
	assert.False(t, ok)
	_, ok = decideShortcut(p, st, decideOptions{Cleanup: true})
	assert.False(t, ok)
}
