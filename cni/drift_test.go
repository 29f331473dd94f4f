package cni

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

func TestDrift(t *testing.T) {
	want := plan.RuleSet{Family: plan.IPv4,
		Chains: []plan.TableChain{{Table: plan.TableNat, Chain: "ISTIO_OUTPUT"}, {Table: plan.TableNat, Chain: "ISTIO_REDIRECT"}},
		Rules: []plan.Rule{
			{Table: plan.TableNat, Chain: "OUTPUT", Args: []string{"-j", "ISTIO_OUTPUT"}},
			{Table: plan.TableNat, Chain: "ISTIO_OUTPUT", Args: []string{"-p", "tcp", "--dport", "25", "-j", "RETURN"}},
			{Table: plan.TableNat, Chain: "ISTIO_OUTPUT", Args: []string{"-j", "ISTIO_REDIRECT"}},
			{Table: plan.TableNat, Chain: "ISTIO_REDIRECT", Args: []string{"-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"}},
		}}
	save := func(t *testing.T, text string) plan.Saved {
		t.Helper()
		s, err := plan.ParseSave(text)
		require.NoError(t, err)
		return s
	}
	const head = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
	for _, tc := range []struct {
		name  string
		saved string
		want  []string
	}{
		{
			name: "a rule inserted, one removed (save form with -m tcp matches the plan's)",
			saved: head + ":ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j RETURN\n" +
				"-A ISTIO_OUTPUT -p tcp -m tcp --dport 25 -j RETURN\n-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n",
			want: []string{"ipv4: missing -t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT", "ipv4: unexpected -t nat -A ISTIO_OUTPUT -j RETURN"},
		},
		{
			name:  "nothing there",
			saved: head + "COMMIT\n",
			want: []string{"ipv4: missing chain nat/ISTIO_OUTPUT", "ipv4: missing chain nat/ISTIO_REDIRECT",
				"ipv4: missing -t nat -A OUTPUT -j ISTIO_OUTPUT", "ipv4: missing -t nat -A ISTIO_OUTPUT -p tcp -m tcp --dport 25 -j RETURN",
				"ipv4: missing -t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT", "ipv4: missing -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"},
		},
		{
			name: "same rules, another order",
			saved: head + ":ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n" +
				"-A ISTIO_OUTPUT -p tcp -m tcp --dport 25 -j RETURN\n-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n",
			want: []string{"ipv4: the rules of ours in nft are the plan's, in another order or on another backend"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx := iptables.Transaction{Steps: []iptables.Step{{Kind: iptables.StepRestore, Flavour: iptables.FlavourNft, Family: plan.IPv4, Want: want, Before: save(t, tc.saved)}}}
			assert.Equal(t, tc.want, Drift(tx))
		})
	}
	t.Run("other steps and the cap", func(t *testing.T) {
		tx := iptables.Transaction{Steps: []iptables.Step{{Kind: iptables.StepRouting}, {Kind: iptables.StepDeleteTables, Delete: []iptables.NftTableRef{{Family: "inet", Name: "istio-iptables"}}}}}
		assert.Equal(t, []string{"policy routing or lo addresses differ from the plan", "nftables tables of ours that the plan does not have: inet istio-iptables"}, Drift(tx))
		var many []iptables.Step
		for range 20 {
			many = append(many, iptables.Step{Kind: iptables.StepRouting})
		}
		got := Drift(iptables.Transaction{Steps: many})
		assert.Len(t, got, maxDrift+1)
		assert.Equal(t, "and 8 more", got[maxDrift])
	})
}
