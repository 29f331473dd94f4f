//go:build linux

package iptables_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

func nftPlan(f plan.Family, rules ...plan.Rule) plan.Plan {
	rs := plan.RuleSet{Family: f, Rules: rules}
	for _, r := range rules {
		for _, c := range []plan.Chain{r.Chain, plan.Chain(r.Target())} {
			tc := plan.TableChain{Table: r.Table, Chain: c}
			if c.Owned() && !contains(rs.Chains, tc) {
				rs.Chains = append(rs.Chains, tc)
			}
		}
	}
	return plan.Plan{RuleSets: []plan.RuleSet{rs}}
}

func contains(tcs []plan.TableChain, tc plan.TableChain) bool {
	for _, x := range tcs {
		if x == tc {
			return true
		}
	}
	return false
}

func nat(chain string, args ...string) plan.Rule {
	return plan.Rule{Table: plan.TableNat, Chain: plan.Chain(chain), Args: args}
}

func mangle(chain string, args ...string) plan.Rule {
	return plan.Rule{Table: plan.TableMangle, Chain: plan.Chain(chain), Args: args}
}

// TestNftTranslate: each rule of the vocabulary becomes the nft statement
// it means, in its chain of the inet table, family-guarded.
func TestNftTranslate(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    plan.Family
		rule plan.Rule
		want []string
	}{
		{"redirect", plan.IPv4, nat("ISTIO_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"),
			[]string{"meta nfproto ipv4 meta l4proto tcp redirect to :15001"}},
		{"owner and lo", plan.IPv4, nat("ISTIO_OUTPUT", "-o", "lo", "!", "-d", "127.0.0.1/32", "-p", "tcp", "!", "--dport", "15008", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN"),
			[]string{`meta nfproto ipv4 ip daddr != 127.0.0.1 oifname "lo" meta l4proto tcp tcp dport != 15008 meta skuid 1337 return`}},
		{"wildcard interface", plan.IPv6, nat("PREROUTING", "-i", "eth+", "-j", "RETURN"),
			[]string{`meta nfproto ipv6 iifname "eth*" return`}},
		{"prefix", plan.IPv6, nat("ISTIO_OUTPUT", "-d", "fd00::/8", "-j", "RETURN"),
			[]string{"meta nfproto ipv6 ip6 daddr fd00::/8 return"}},
		{"multiport", plan.IPv4, nat("ISTIO_INBOUND", "-p", "tcp", "-m", "multiport", "--dports", "80,443,8080:8090", "-j", "RETURN"),
			[]string{"meta nfproto ipv4 meta l4proto tcp tcp dport { 80, 443, 8080-8090 } return"}},
		{"tproxy", plan.IPv4, mangle("ISTIO_TPROXY", "!", "-d", "127.0.0.1/32", "-p", "tcp", "-j", "TPROXY", "--tproxy-mark", "0x539/0xffffffff", "--on-port", "15006"),
			[]string{
				"meta nfproto ipv4 ip daddr != 127.0.0.1 meta l4proto tcp tproxy ip to :15006 meta mark set 0x00000539 accept",
				"meta nfproto ipv4 ip daddr != 127.0.0.1 meta l4proto tcp drop",
			}},
		{"connmark save", plan.IPv4, mangle("PREROUTING", "-p", "tcp", "-m", "mark", "--mark", "0x539", "-j", "CONNMARK", "--save-mark"),
			[]string{"meta nfproto ipv4 meta l4proto tcp meta mark 0x00000539 ct mark set meta mark"}},
		{"connmark restore", plan.IPv4, mangle("OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", "0x539", "-j", "CONNMARK", "--restore-mark"),
			[]string{"meta nfproto ipv4 meta l4proto tcp ct mark 0x00000539 meta mark set ct mark"}},
		{"ctstate", plan.IPv4, mangle("ISTIO_INBOUND", "-p", "tcp", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ISTIO_DIVERT"),
			[]string{"meta nfproto ipv4 meta l4proto tcp ct state established,related jump mangle-ISTIO_DIVERT"}},
		{"mark set", plan.IPv4, mangle("ISTIO_DIVERT", "-j", "MARK", "--set-mark", "1337"),
			[]string{"meta nfproto ipv4 meta mark set 0x00000539"}},
		{"ct zone", plan.IPv4, plan.Rule{Table: plan.TableRaw, Chain: "OUTPUT", Args: []string{"-p", "udp", "--dport", "53", "-j", "CT", "--zone", "1"}},
			[]string{"meta nfproto ipv4 meta l4proto udp udp dport 53 ct zone set 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := iptables.NftTranslate(nftPlan(tc.f, tc.rule))
			require.NoError(t, err)
			var got []string
			for _, c := range rs.Chains {
				if c.Name == string(tc.rule.Table)+"-"+string(tc.rule.Chain) {
					for _, r := range c.Rules {
						got = append(got, r.Text)
					}
				}
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestNftTranslateSets: runs of rules differing in one CIDR or port are
// one set lookup; a non-terminal target or a break in the run keeps them
// apart.
func TestNftTranslateSets(t *testing.T) {
	p := nftPlan(plan.IPv4,
		nat("ISTIO_OUTPUT", "-d", "10.0.0.0/25", "-j", "RETURN"),
		nat("ISTIO_OUTPUT", "-d", "10.0.0.128/25", "-j", "RETURN"),
		nat("ISTIO_OUTPUT", "-d", "192.168.0.0/16", "-j", "RETURN"),
		nat("ISTIO_OUTPUT", "-d", "192.168.1.0/24", "-j", "RETURN"),
		nat("ISTIO_OUTPUT", "-p", "tcp", "--dport", "81", "-j", "RETURN"),
		nat("ISTIO_OUTPUT", "-p", "tcp", "--dport", "80", "-j", "RETURN"),
		nat("ISTIO_OUTPUT", "-d", "10.1.0.0/16", "-j", "ISTIO_REDIRECT"),
		nat("ISTIO_OUTPUT", "-d", "10.3.0.0/16", "-j", "ISTIO_REDIRECT"),
		nat("OUTPUT", "-j", "ISTIO_OUTPUT"),
		nat("ISTIO_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"),
		mangle("OUTPUT", "-d", "10.1.0.0/16", "-j", "MARK", "--set-mark", "1"),
		mangle("OUTPUT", "-d", "10.2.0.0/16", "-j", "MARK", "--set-mark", "1"),
	)
	rs, err := iptables.NftTranslate(p)
	require.NoError(t, err)
	text := rs.Text()
	assert.Contains(t, text, "meta nfproto ipv4 ip daddr { 10.0.0.0/24, 192.168.0.0/16 } return\n")
	assert.Contains(t, text, "meta nfproto ipv4 meta l4proto tcp tcp dport { 80, 81 } return\n")
	assert.Contains(t, text, "meta nfproto ipv4 ip daddr { 10.1.0.0/16, 10.3.0.0/16 } jump nat-ISTIO_REDIRECT\n")
	assert.Equal(t, 2, strings.Count(text, "meta mark set 0x00000001"), "MARK rules are not merged:\n%s", text)
	assert.True(t, strings.HasPrefix(text, "table inet istio-iptables\ndelete table inet istio-iptables\ntable inet istio-iptables {\n"))
	assert.Contains(t, text, "chain nat-OUTPUT {\n\t\ttype nat hook output priority -100; policy accept;\n")
	assert.Contains(t, text, "chain mangle-OUTPUT {\n\t\ttype route hook output priority -150; policy accept;\n")
}

// TestNftTranslateRefuses: what nftables cannot say the same way is an
// error, never a guess.
func TestNftTranslateRefuses(t *testing.T) {
	for _, r := range []plan.Rule{
		mangle("ISTIO_TPROXY", "-p", "tcp", "-j", "TPROXY", "--on-port", "15006", "--on-ip", "10.0.0.1"),
		mangle("ISTIO_X", "-j", "CONNMARK", "--save-mark", "--nfmask", "0xff"),
		nat("ISTIO_X", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001-15002"),
	} {
		_, err := iptables.NftTranslate(nftPlan(plan.IPv4, r))
		assert.Error(t, err, "%s", r)
	}
}
