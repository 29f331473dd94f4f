package plan_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mesh-init/istio-iptables/internal/plantest"
	"github.com/mesh-init/istio-iptables/plan"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goldenPlan is one capture golden file read back into rule sets.
type goldenPlan struct {
	name     string
	ruleSets []plan.RuleSet
}

// goldenPlans reads every capture/testdata/*.golden. Those files hold
// exactly what Build writes for every golden configuration (the capture
// golden test keeps them equal to Build's output), so reading them runs
// these tests over every rule shape Build writes without a second copy of
// the configuration table.
func goldenPlans(t *testing.T) []goldenPlan {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "capture", "testdata", "*.golden"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 20, "capture golden files missing")
	var out []goldenPlan
	for _, f := range files {
		text, err := os.ReadFile(f)
		require.NoError(t, err)
		out = append(out, goldenPlan{
			name:     strings.TrimSuffix(filepath.Base(f), ".golden"),
			ruleSets: plantest.ParseDryRun(t, string(text)),
		})
	}
	return out
}

// TestCanonicalGoldenRules canonicalizes every rule Build writes: each must
// parse, and its canonical form must be a fixed point.
func TestCanonicalGoldenRules(t *testing.T) {
	n := 0
	for _, gp := range goldenPlans(t) {
		t.Run(gp.name, func(t *testing.T) {
			for _, rs := range gp.ruleSets {
				for _, r := range rs.Rules {
					n++
					c, err := plan.Canonical(rs.Family, r.Args)
					require.NoError(t, err, "%s %s/%s", rs.Family, r.Table, r)
					again, err := plan.SplitArgs(c)
					require.NoError(t, err)
					c2, err := plan.Canonical(rs.Family, again)
					require.NoError(t, err, "canonical %q does not parse", c)
					assert.Equal(t, c, c2, "canonical form of %s is not a fixed point", r)
				}
			}
		})
	}
	assert.Greater(t, n, 300, "too few rules read from the golden files")
}

// TestCanonicalKernelForms pairs what this tool writes with what
// iptables-save 1.8.9 prints after the kernel stored it.
func TestCanonicalKernelForms(t *testing.T) {
	v4, v6 := plan.IPv4, plan.IPv6
	for _, tc := range []struct {
		name string
		fam  plan.Family
		in   string
		want string
	}{
		{"tunnel port", v4, "-p tcp --dport 15008 -j RETURN", "-p tcp -m tcp --dport 15008 -j RETURN"},
		{"passthrough source", v4, "-o lo -s 127.0.0.6/32 -j RETURN", "-s 127.0.0.6/32 -o lo -j RETURN"},
		{"proxy to own pod ip",
			v4, "-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
			"! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT"},
		{"save-mark", v4, "-p tcp -m mark --mark 1337 -j CONNMARK --save-mark",
			"-p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff"},
		{"set-mark", v4, "! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338",
			"! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff"},
		{"negated mark", v4, "-p tcp -i lo -m mark ! --mark 1338 -j RETURN", "-i lo -p tcp -m mark ! --mark 0x53a -j RETURN"},
		{"tproxy ipv4", v4, "! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006",
			"! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff"},
		{"tproxy ipv6", v6, "! -d ::1/128 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006",
			"! -d ::1/128 -p tcp -j TPROXY --on-port 15006 --on-ip :: --tproxy-mark 0x539/0xffffffff"},
		{"restore-mark", v4, "-p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark",
			"-p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"},
		{"udp port", v4, "-p udp --dport 53 -j RETURN", "-p udp -m udp --dport 53 -j RETURN"},
		{"multiport", v4, "-p tcp -m multiport --dports 80,81 -j RETURN", "-p tcp -m multiport --dports 80,81 -j RETURN"},
		{"conntrack", v4, "-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
			"-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT"},
		// The following were also checked against iptables-save 1.8.9.
		{"conntrack states reordered", v4, "-p tcp -m conntrack --ctstate ESTABLISHED,RELATED -j ISTIO_DIVERT",
			"-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT"},
		{"host bits cleared", v4, "-d 10.0.0.1/8 -j RETURN", "-d 10.0.0.0/8 -j RETURN"},
		{"bare ipv6 address", v6, "-s fd00::1 -j RETURN", "-s fd00::1/128 -j RETURN"},
		{"protocol case and long option", v4, "-p TCP --destination-port 80 -j RETURN", "-p tcp -m tcp --dport 80 -j RETURN"},
		{"redirect", v4, "-p tcp -j REDIRECT --to-ports 15001", "-p tcp -j REDIRECT --to-ports 15001"},
		{"mark with mask", v4, "-p tcp -m mark --mark 0x10/0xff -j RETURN", "-p tcp -m mark --mark 0x10/0xff -j RETURN"},
		{"divert mark", v4, "-j MARK --set-mark 1337", "-j MARK --set-xmark 0x539/0xffffffff"},
		{"ipv6 gid mark", v6, "! -d ::1/128 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338",
			"! -d ::1/128 -o lo -p tcp -m owner --gid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff"},
		{"quoted comment", v4, `-m comment --comment "a b" -j RETURN`, `-m comment --comment "a b" -j RETURN`},
		{"kube-virt insert", v4, "-i eth1 -d 10.0.0.0/8 -j ISTIO_REDIRECT", "-d 10.0.0.0/8 -i eth1 -j ISTIO_REDIRECT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := plan.SplitArgs(tc.in)
			require.NoError(t, err)
			got, err := plan.Canonical(tc.fam, in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			// The saved form reads back to itself.
			saved, err := plan.SplitArgs(tc.want)
			require.NoError(t, err)
			again, err := plan.Canonical(tc.fam, saved)
			require.NoError(t, err)
			assert.Equal(t, tc.want, again)
			// Both parse to the same Spec.
			a, err := plan.ParseSpec(tc.fam, in)
			require.NoError(t, err)
			b, err := plan.ParseSpec(tc.fam, saved)
			require.NoError(t, err)
			assert.Equal(t, b, a)
		})
	}
}

// TestParseSpecErrors: anything outside the vocabulary is an error, never
// a guess.
func TestParseSpecErrors(t *testing.T) {
	v4, v6 := plan.IPv4, plan.IPv6
	for _, tc := range []struct {
		name string
		fam  plan.Family
		args []string
		want string // part of the error
	}{
		{"unknown option", v4, []string{"-p", "tcp", "--foo", "1", "-j", "RETURN"}, `unsupported option "--foo"`},
		{"unknown short option", v4, []string{"-f", "-j", "RETURN"}, `unsupported argument "-f"`},
		{"bare word", v4, []string{"tcp", "-j", "RETURN"}, `unsupported argument "tcp"`},
		{"unknown match", v4, []string{"-m", "socket", "-j", "RETURN"}, `unsupported match "socket"`},
		{"tcp option without -p tcp", v4, []string{"--dport", "80", "-j", "RETURN"}, `unsupported option "--dport"`},
		{"missing value of -s", v4, []string{"-s"}, "option -s needs a value"},
		{"missing value of -p", v4, []string{"-j", "RETURN", "-p"}, "target RETURN"},
		{"missing value of --dport", v4, []string{"-p", "tcp", "--dport"}, "option --dport needs a value"},
		{"missing value of -j", v4, []string{"-p", "tcp", "-j"}, "option -j needs a value"},
		{"missing target option value", v4, []string{"-j", "REDIRECT", "--to-ports"}, "option --to-ports needs a value"},
		{"dangling !", v4, []string{"-p", "tcp", "!"}, `dangling "!"`},
		{"two !", v4, []string{"!", "!", "-s", "1.2.3.4", "-j", "RETURN"}, `two "!" in a row`},
		{"! before -m", v4, []string{"!", "-m", "mark", "--mark", "1", "-j", "RETURN"}, `"!" before -m`},
		{"! before -j", v4, []string{"!", "-j", "RETURN"}, `"!" before -j`},
		{"no target", v4, []string{"-p", "tcp"}, "no target"},
		{"empty", v4, nil, "no target"},
		{"ipv4 address in an ipv6 rule", v6, []string{"-d", "10.0.0.0/8", "-j", "RETURN"}, "is not ipv6"},
		{"ipv6 address in an ipv4 rule", v4, []string{"-s", "::6/128", "-j", "RETURN"}, "is not ipv4"},
		{"bad address", v4, []string{"-d", "10.0.0.0/33", "-j", "RETURN"}, "10.0.0.0/33"},
		{"bad port", v4, []string{"-p", "tcp", "--dport", "http", "-j", "RETURN"}, `bad port "http"`},
		{"port out of range", v4, []string{"-p", "tcp", "--dport", "65536", "-j", "RETURN"}, `bad port "65536"`},
		{"bad ctstate", v4, []string{"-m", "conntrack", "--ctstate", "BOGUS", "-j", "RETURN"}, `unknown state "BOGUS"`},
		{"owner name", v4, []string{"-m", "owner", "--uid-owner", "root", "-j", "RETURN"}, "not a numeric id"},
		{"bad mark", v4, []string{"-m", "mark", "--mark", "x", "-j", "RETURN"}, `bad mark "x"`},
		{"unknown target option", v4, []string{"-j", "RETURN", "--foo", "1"}, "unsupported option --foo"},
		{"target option without value", v4, []string{"-j", "RETURN", "--foo"}, "option --foo needs a value"},
		{"target option not an option", v4, []string{"-j", "MARK", "x"}, `unsupported argument "x"`},
		{"redirect wrong option", v4, []string{"-j", "REDIRECT", "--on-port", "1"}, "unsupported option --on-port"},
		{"bad tproxy mark", v4, []string{"-j", "TPROXY", "--on-port", "1", "--tproxy-mark", "z"}, `bad mark "z"`},
		{"bad connmark mask", v4, []string{"-j", "CONNMARK", "--save-mark", "--nfmask", "q"}, `bad mask "q"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := plan.ParseSpec(tc.fam, tc.args)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			_, err = plan.Canonical(tc.fam, tc.args)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "parse", "Canonical names what it parsed")
		})
	}
}

// TestParseSpecFields spot-checks the parsed structure.
func TestParseSpecFields(t *testing.T) {
	s, err := plan.ParseSpec(plan.IPv4, strings.Fields(
		"-o lo ! -d 127.0.0.1 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -g ISTIO_IN_REDIRECT"))
	require.NoError(t, err)
	assert.Equal(t, plan.NameMatch{Name: "lo"}, s.Out)
	assert.True(t, s.Dst.Neg)
	assert.Equal(t, "127.0.0.1/32", s.Dst.Prefix.String())
	assert.Equal(t, "ISTIO_IN_REDIRECT", s.Jump)
	assert.True(t, s.Goto)
	require.Len(t, s.Matches, 2)
	o, ok := s.Matches[0].Opt("--dport")
	require.True(t, ok)
	assert.Equal(t, plan.Opt{Neg: true, Name: "--dport", Value: "15008"}, o)
	_, ok = s.Matches[0].Opt("--sport")
	assert.False(t, ok)
	assert.Equal(t, "! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 -g ISTIO_IN_REDIRECT", s.String())
}

// fuzzSeeds are the rules of the kernel pairs above, in both forms.
var fuzzSeeds = []string{
	"-p tcp --dport 15008 -j RETURN",
	"-o lo -s 127.0.0.6/32 -j RETURN",
	"-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
	"-p tcp -m mark --mark 1337 -j CONNMARK --save-mark",
	"-p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
	"! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338",
	"-p tcp -i lo -m mark ! --mark 1338 -j RETURN",
	"! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006",
	"! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff",
	"-p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark",
	"-p udp --dport 53 -j RETURN",
	"-p tcp -m multiport --dports 80,81 -j RETURN",
	"-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
	`-m comment --comment "a b" -j RETURN`,
	"-p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1",
	"-i eth1 -d 10.0.0.0/8 -j ISTIO_REDIRECT",
	"  -p 0 -j TPROXY", // found by the fuzzer: TPROXY without --on-port
}

// FuzzParseSpec: ParseSpec never panics, and whatever it accepts has a
// canonical form that canonicalizes to itself.
func FuzzParseSpec(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(true, s)
		f.Add(false, strings.ReplaceAll(strings.ReplaceAll(s, "127.0.0.1/32", "::1/128"), "127.0.0.6/32", "::6/128"))
	}
	f.Fuzz(func(t *testing.T, v4 bool, line string) {
		fam := plan.IPv6
		if v4 {
			fam = plan.IPv4
		}
		args, err := plan.SplitArgs(line)
		if err != nil {
			return
		}
		s, err := plan.ParseSpec(fam, args)
		if err != nil {
			return
		}
		canon := s.String()
		again, err := plan.Canonical(fam, s.Args())
		if err != nil {
			t.Fatalf("%q parses, but its canonical args %q do not: %v", line, s.Args(), err)
		}
		if again != canon {
			t.Fatalf("%q: canonical %q is not a fixed point: %q", line, canon, again)
		}
	})
}

// TestCanonicalFixedPointFound keeps what the fuzzer found: TPROXY without
// --on-port and CT without --zone printed a dangling option (fixed in
// a214693 by refusing them); an explicitly empty target value still does.
func TestCanonicalFixedPointFound(t *testing.T) {
	for _, tc := range []struct {
		args []string
		bug  string
	}{
		{[]string{"-p", "tcp", "-j", "TPROXY"}, ""},
		{[]string{"-p", "tcp", "-j", "TPROXY", "--tproxy-mark", "1"}, ""},
		{[]string{"-j", "CT"}, ""},
		{[]string{"-p", "tcp", "-j", "REDIRECT", "--to-ports", ""}, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			if tc.bug != "" {
				t.Skip(tc.bug)
			}
			s, err := plan.ParseSpec(plan.IPv4, tc.args)
			if err != nil {
				return // refused: iptables requires the option and its value
			}
			again, err := plan.Canonical(plan.IPv4, s.Args())
			require.NoError(t, err)
			assert.Equal(t, s.String(), again)
		})
	}
}
