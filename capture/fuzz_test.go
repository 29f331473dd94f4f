package capture

// Fuzz targets for the value parsers (parser.ports, cidrs, ids, ifaces, on
// their own and through Config.Validate) and for the round trip
// Config → Build → Render → save form → ParseSave. Their seed corpora run
// in every `go test`; `make fuzz` runs each target for a bounded time. Go
// keeps every input that fails under testdata/fuzz/<Target>/, where it
// then runs as a seed.

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mesh-init/istio-iptables/plan"
	"github.com/stretchr/testify/require"
)

// hostileSeeds are values crafted to break out of a rule or a shell.
var hostileSeeds = []string{
	"1.1.1.1/32 -j ACCEPT", "80\n-A OUTPUT -j ACCEPT", "10.0.0.0/8\nCOMMIT", "COMMIT", "$(reboot)",
	"`reboot`", "80;reboot", "80 && reboot", "\"80\"", "'80'", "80\\", "80\r", "80\x00", "80\x7f",
	"eth0 -j ACCEPT", "-j", "!eth0", "\t80\t", "٨٠", "８０", "+80", "0x50", "fe80::1%eth0", "::ffff:10.0.0.1",
}

// checkFieldErrors requires every error to be a *FieldError of flag whose
// message quotes a value.
func checkFieldErrors(t *testing.T, errs []error, flag string) {
	t.Helper()
	for _, err := range errs {
		var fe *FieldError
		require.True(t, errors.As(err, &fe), "%v is not a *FieldError", err)
		require.Equal(t, flag, fe.Flag, "error %q names the wrong flag", err)
		require.Contains(t, fe.Msg, `"`, "error %q does not quote the value", err)
	}
}

// hasControl reports whether v holds a character items refuses.
func hasControl(v string) bool {
	return strings.ContainsFunc(v, func(c rune) bool { return c < 0x20 && c != '\t' || c == 0x7f })
}

// itemsOf splits v as the parsers do, without recording errors.
func itemsOf(v string) []string {
	it, _ := (&parser{}).items("-x", v)
	return it
}

// FuzzParsePorts: ports returns only canonical decimal ports 1-65535, no
// duplicates; it accepts a value only when every item is such a port (or
// a lone '*' where allowed), and names the flag in every error.
func FuzzParsePorts(f *testing.F) {
	for _, s := range append([]string{"80", "80,", " 80 , 8080 ", "*", "80,*", "*,*", "0", "1", "65535", "65536",
		"080", "-1", "1.5", "99999999999999999999", ",,,", "", "80 81", "15090,15021,15020"}, hostileSeeds...) {
		f.Add(true, s)
		f.Add(false, s)
	}
	f.Fuzz(func(t *testing.T, wildcard bool, v string) {
		var p parser
		all, out := p.ports("-b", v, wildcard)
		checkFieldErrors(t, p.errs, "-b")
		for _, port := range out {
			n, err := strconv.ParseUint(port, 10, 16)
			require.NoError(t, err, "output %q of %q", port, v)
			require.Equal(t, strconv.FormatUint(n, 10), port, "output of %q not canonical", v)
			require.NotZero(t, n)
		}
		require.Len(t, slices.Compact(slices.Sorted(slices.Values(out))), len(out), "duplicates in %q", out)
		if hasControl(v) {
			require.NotEmpty(t, p.errs, "control character in %q accepted", v)
		}
		if len(p.errs) > 0 {
			return
		}
		items := itemsOf(v)
		if all {
			require.True(t, wildcard, "'*' accepted where not allowed: %q", v)
			require.Equal(t, []string{Wildcard}, items)
			require.Empty(t, out)
			return
		}
		want := map[string]bool{}
		for _, it := range items {
			n, err := strconv.ParseUint(it, 10, 64)
			require.NoError(t, err, "item %q of %q accepted", it, v)
			require.True(t, n >= 1 && n <= 65535, "item %q of %q accepted", it, v)
			want[strconv.FormatUint(n, 10)] = true
		}
		require.Len(t, out, len(want), "%q gave %q", v, out)
	})
}

// FuzzParseCIDRs: cidrs returns masked, zone-free prefixes under their own
// family, no IPv4-mapped IPv6, no duplicates; it accepts a value only when
// every item is an address or a CIDR.
func FuzzParseCIDRs(f *testing.F) {
	for _, s := range append([]string{"10.0.0.0/8", "10.0.0.1", "10.0.0.1/8", "fd00::/8", "::1", "10.0.0.0/8,fd00::/8",
		"*", "*,10.0.0.0/8", "10.0.0.0/33", "::/0", "0.0.0.0/0", "10.0.0.0/8,10.0.0.0/8,10.1.0.0/8", "", " , ",
		"1.2.3", "1.2.3.4/", "/8", "01.2.3.4", "1.2.3.4/08"}, hostileSeeds...) {
		f.Add(true, s)
		f.Add(false, s)
	}
	f.Fuzz(func(t *testing.T, wildcard bool, v string) {
		var p parser
		all, out := p.cidrs("-x", v, wildcard)
		checkFieldErrors(t, p.errs, "-x")
		safe := regexp.MustCompile(`^[0-9a-f.:]+/[0-9]+$`)
		for fam, list := range out {
			require.Len(t, slices.CompactFunc(slices.SortedFunc(slices.Values(list), netip.Prefix.Compare), func(a, b netip.Prefix) bool { return a == b }), len(list), "duplicates in %v", list)
			for _, pfx := range list {
				require.True(t, pfx.IsValid())
				require.Equal(t, pfx.Masked(), pfx, "%v not masked", pfx)
				require.Empty(t, pfx.Addr().Zone())
				require.False(t, pfx.Addr().Is4In6(), "%v is IPv4-mapped", pfx)
				require.Equal(t, fam == plan.IPv4, pfx.Addr().Is4(), "%v filed under %s", pfx, fam)
				require.Regexp(t, safe, pfx.String())
			}
		}
		if hasControl(v) {
			require.NotEmpty(t, p.errs, "control character in %q accepted", v)
		}
		if len(p.errs) > 0 {
			return
		}
		items := itemsOf(v)
		if all {
			require.True(t, wildcard, "'*' accepted where not allowed: %q", v)
			require.Equal(t, []string{Wildcard}, items)
			require.Empty(t, out)
			return
		}
		n := 0
		for _, it := range items {
			_, perr := netip.ParsePrefix(it)
			_, aerr := netip.ParseAddr(it)
			require.True(t, perr == nil || aerr == nil, "item %q of %q accepted", it, v)
		}
		for _, list := range out {
			n += len(list)
		}
		require.LessOrEqual(t, n, len(items))
		require.Equal(t, len(items) > 0, n > 0, "%q gave %v", v, out)
	})
}

// fakeLookup resolves only istio-proxy (1337), without the OS.
type fakeLookup struct{}

func (fakeLookup) UserID(name string) (uint32, error) {
	if name == "istio-proxy" {
		return 1337, nil
	}
	return 0, fmt.Errorf("no user %q", name)
}

func (fakeLookup) GroupID(name string) (uint32, error) { return fakeLookup{}.UserID(name) }

// FuzzParseIDs: ids returns canonical decimal ids below 2^32-1, at least
// one when it accepts, no duplicates; names only through the lookup.
func FuzzParseIDs(f *testing.F) {
	for _, s := range append([]string{"1337", "0", "1,2", "1337,1337", "istio-proxy", "istio-proxy,1337", "root",
		"4294967294", "4294967295", "4294967296", ",", "", "-1", "01337", "1e3"}, hostileSeeds...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var p parser
		out := p.ids("-u", v, fakeLookup{}.UserID)
		checkFieldErrors(t, p.errs, "-u")
		for _, id := range out {
			n, err := strconv.ParseUint(id, 10, 32)
			require.NoError(t, err, "output %q of %q", id, v)
			require.Equal(t, strconv.FormatUint(n, 10), id)
			require.Less(t, n, uint64(0xffffffff))
		}
		require.Len(t, slices.Compact(slices.Sorted(slices.Values(out))), len(out), "duplicates in %q", out)
		if hasControl(v) {
			require.NotEmpty(t, p.errs, "control character in %q accepted", v)
		}
		if len(p.errs) > 0 {
			return
		}
		require.NotEmpty(t, out, "%q accepted with no id", v)
		for _, it := range itemsOf(v) {
			if it == "istio-proxy" {
				continue
			}
			_, err := strconv.ParseUint(it, 10, 32)
			require.NoError(t, err, "item %q of %q accepted", it, v)
		}
	})
}

// ifaceName is what ifaces may return: a Linux name of at most 15 bytes
// from a safe alphabet, optionally ending in '+', never an option.
var ifaceName = regexp.MustCompile(`^[A-Za-z0-9_.@][A-Za-z0-9_.@-]*\+?$`)

// FuzzParseIfaces: ifaces returns only names iptables reads as one
// interface argument, no duplicates.
func FuzzParseIfaces(f *testing.F) {
	for _, s := range append([]string{"eth0", "eth0,eth1", "eth+", "+", "veth@if3", "a.b", ".", "..", "abcdefghijklmno",
		"abcdefghijklmnop", "eth0/1", "eth:0", "eth 0", "eth0,eth0", "-", "ünï"}, hostileSeeds...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var p parser
		out := p.ifaces("-k", v)
		checkFieldErrors(t, p.errs, "-k")
		for _, name := range out {
			require.LessOrEqual(t, len(name), 15, "%q", name)
			require.Regexp(t, ifaceName, name)
			require.NotContains(t, []string{".", "..", ".+", "..+"}, name)
		}
		require.Len(t, slices.Compact(slices.Sorted(slices.Values(out))), len(out), "duplicates in %q", out)
		if hasControl(v) {
			require.NotEmpty(t, p.errs, "control character in %q accepted", v)
		}
	})
}

// fields are the Config fields FuzzValidateField sets, with their flags.
var fields = []struct {
	flag string
	set  func(*Config, string)
}{
	{"-p", func(c *Config, v string) { c.ProxyPort = v }},
	{"-z", func(c *Config, v string) { c.InboundCapturePort = v }},
	{"-e", func(c *Config, v string) { c.InboundTunnelPort = v }},
	{"-u", func(c *Config, v string) { c.ProxyUID = v }},
	{"-g", func(c *Config, v string) { c.ProxyGID = v }},
	{"-m", func(c *Config, v string) { c.InboundInterceptionMode = v }},
	{"-b", func(c *Config, v string) { c.InboundPortsInclude = v }},
	{"-d", func(c *Config, v string) { c.InboundPortsExclude = v }},
	{"-i", func(c *Config, v string) { c.OutboundIPRangesInclude = v }},
	{"-x", func(c *Config, v string) { c.OutboundIPRangesExclude = v }},
	{"-q", func(c *Config, v string) { c.OutboundPortsInclude = v }},
	{"-o", func(c *Config, v string) { c.OutboundPortsExclude = v }},
	{"-k", func(c *Config, v string) { c.KubeVirtInterfaces = v }},
	{"-c", func(c *Config, v string) { c.ExcludeInterfaces = v }},
	{"-t", func(c *Config, v string) { c.InboundTProxyMark = v }},
	{"-r", func(c *Config, v string) { c.InboundTProxyRouteTable = v }},
	{"--ipv6", func(c *Config, v string) { c.IPv6 = v }},
}

// safeArg is every argument a plan may hold: no blank, quote, shell or
// restore-format character can come from a flag.
var safeArg = regexp.MustCompile(`^[A-Za-z0-9_.:/,!+@-]+$`)

// FuzzValidateField sets one field of a capturing configuration (TPROXY
// or REDIRECT, both families) to the fuzzed value. Validate either refuses
// it, naming that flag only, or accepts it; then Build succeeds and every
// argument of every rule is made of safe characters.
func FuzzValidateField(f *testing.F) {
	for i := range fields {
		for _, s := range append([]string{"15001", "80,8080", "*", "10.0.0.0/8,fd00::/8", "1337", "eth1", "TPROXY", "true", ""}, hostileSeeds...) {
			f.Add(uint8(i), false, s)
			f.Add(uint8(i), true, s)
		}
	}
	f.Fuzz(func(t *testing.T, field uint8, tproxy bool, v string) {
		fd := fields[int(field)%len(fields)]
		c := DefaultConfig()
		c.InboundPortsInclude, c.OutboundIPRangesInclude, c.IPv6 = "*", "*", "true"
		if tproxy {
			c.InboundInterceptionMode = string(ModeTProxy)
		}
		c.Lookup = fakeLookup{}
		fd.set(&c, v)
		if err := c.Validate(); err != nil {
			var errs []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			require.NotEmpty(t, errs, "Validate does not join its errors: %v", err)
			checkFieldErrors(t, errs, fd.flag)
			return
		}
		built, err := Build(c)
		require.NoError(t, err, "%s %q passes Validate but not Build", fd.flag, v)
		for _, rs := range built.RuleSets {
			for _, r := range rs.Rules {
				for _, a := range r.Args {
					require.Regexp(t, safeArg, a, "%s %q: rule %q", fd.flag, v, r)
				}
			}
		}
	})
}

// toSave turns restore text for a clean namespace into what *-save prints
// afterwards: per table the builtin and declared chains, then each chain's
// rules in the kernel's order (-I CHAIN 1 on top), each in canonical form.
func toSave(t *testing.T, f plan.Family, text string) string {
	t.Helper()
	var out strings.Builder
	var chains []string
	rules := map[string][]string{}
	var table plan.Table
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = plan.Table(line[1:])
			chains, rules = nil, map[string][]string{}
			for _, c := range []plan.Chain{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"} {
				if plan.Builtin(table, c) {
					chains = append(chains, string(c))
				}
			}
		case strings.HasPrefix(line, ":"):
			chains = append(chains, strings.Fields(line[1:])[0])
		case line == "COMMIT":
			out.WriteString("*" + string(table) + "\n")
			for _, c := range chains {
				policy := "ACCEPT"
				if !plan.Builtin(table, plan.Chain(c)) {
					policy = "-"
				}
				fmt.Fprintf(&out, ":%s %s [0:0]\n", c, policy)
			}
			for _, c := range chains {
				for _, r := range rules[c] {
					out.WriteString("-A " + c + " " + r + "\n")
				}
			}
			out.WriteString("COMMIT\n")
		default:
			args, err := plan.SplitArgs(line)
			require.NoError(t, err, "line %q", line)
			require.GreaterOrEqual(t, len(args), 3, "line %q", line)
			chain, rest := args[1], args[2:]
			insert := args[0] == "-I"
			if insert {
				require.Equal(t, "1", rest[0], "line %q", line)
				rest = rest[1:]
			} else {
				require.Equal(t, "-A", args[0], "line %q", line)
			}
			canon, err := plan.Canonical(f, rest)
			require.NoError(t, err, "line %q: the save parser cannot read a rule the tool writes", line)
			if insert {
				rules[chain] = append([]string{canon}, rules[chain]...)
			} else {
				rules[chain] = append(rules[chain], canon)
			}
		}
	}
	return out.String()
}

// FuzzConfigRoundTrip: any configuration Validate accepts builds a plan
// whose restore text (Render with an empty Removal) reads back, once in
// save form, as exactly the plan: every line splits back into the rule's
// own arguments, every rule parses, each chain holds the plan's rules in
// the plan's order, the tool recognises every chain and builtin-chain rule
// as its own (so a later run removes them) and a re-run finds the rules in
// place (so it writes nothing).
func FuzzConfigRoundTrip(f *testing.F) {
	type seed struct {
		tproxy, ipv6                                     bool
		p, z, e, u, g, b, d, i, x, q, o, k, c, mark, tab string
	}
	for _, s := range []seed{
		{false, false, "15001", "15006", "15008", "1337", "", "*", "15090,15021,15020", "*", "", "", "", "", "", "1337", "133"},
		{true, true, "15001", "15006", "15008", "1337", "", "*", "15090,15021,15020", "*", "", "", "", "", "", "1337", "133"},
		{false, false, "15001", "", "15008", "1337", "", "80,", "", "*", "", "", "", "", "", "1337", "133"},
		{true, true, "15001", "15006", "15009", "1,2", "3,4", "80,8080", "", "10.0.0.0/8,fd00::/8", "10.96.0.0/12,fd00:10::/64", "3306", "25", "eth1,eth2", "eth3", "1400", "140"},
		{false, true, "15001", "15006", "15008", "1337", "", "", "", "10.0.0.0/8", "10.0.0.1", "", "", "eth1+", "veth@if3", "1", "1"},
		{true, false, "15001", "15006", "15008", "istio-proxy", "istio-proxy", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", "", "", "", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "", "", "", "4294967294", "4294967295"},
		{false, true, "1", "65535", "2", "0", "4294967294", "*", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "*", "::/0,0.0.0.0/0", "", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "", "", "1337", "133"},
	} {
		f.Add(s.tproxy, s.ipv6, s.p, s.z, s.e, s.u, s.g, s.b, s.d, s.i, s.x, s.q, s.o, s.k, s.c, s.mark, s.tab)
	}
	f.Fuzz(func(t *testing.T, tproxy, ipv6 bool, p, z, e, u, g, b, d, i, x, q, o, k, c, mark, tab string) {
		cfg := Config{
			ProxyPort: p, InboundCapturePort: z, InboundTunnelPort: e, ProxyUID: u, ProxyGID: g,
			InboundInterceptionMode: string(ModeRedirect), InboundPortsInclude: b, InboundPortsExclude: d,
			OutboundIPRangesInclude: i, OutboundIPRangesExclude: x, OutboundPortsInclude: q, OutboundPortsExclude: o,
			KubeVirtInterfaces: k, ExcludeInterfaces: c, InboundTProxyMark: mark, InboundTProxyRouteTable: tab,
			IPv6: strconv.FormatBool(ipv6), Lookup: fakeLookup{},
		}
		if tproxy {
			cfg.InboundInterceptionMode = string(ModeTProxy)
		}
		if cfg.Validate() != nil {
			return
		}
		built, err := Build(cfg)
		require.NoError(t, err, "a valid configuration does not build")
		for _, rs := range built.RuleSets {
			text := plan.Render(rs, plan.Removal{})
			checkRoundTrip(t, rs, text)
		}
	})
}

// checkRoundTrip checks that text, the restore text of rs for a clean
// namespace, reads back as rs.
func checkRoundTrip(t *testing.T, rs plan.RuleSet, text string) {
	t.Helper()
	// Every rule line splits back into exactly the rule's arguments.
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "-A ") || strings.HasPrefix(l, "-I ") {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, len(rs.Rules), "%s: one line per rule", rs.Family)
	for _, r := range rs.Rules {
		args, err := plan.SplitArgs(r.String())
		require.NoError(t, err)
		skip := 2
		if r.Insert {
			skip = 3
		}
		require.Equal(t, r.Args, args[skip:], "rule %q does not split back into its arguments", r)
		require.Contains(t, lines, r.String())
	}

	saved, err := plan.ParseSave(toSave(t, rs.Family, text))
	require.NoError(t, err, "the save parser refuses the saved form of:\n%s", text)
	for _, table := range rs.Tables() {
		st, ok := saved.Table(table)
		require.True(t, ok, "table %s lost", table)
		var chains []plan.Chain
		for _, sc := range st.Chains {
			chains = append(chains, sc.Name)
		}
		for _, tc := range rs.Chains {
			if tc.Table == table {
				require.Contains(t, chains, tc.Chain, "chain %s lost", tc)
			}
		}
		for _, ch := range chains {
			var want, have []string
			for _, r := range rs.ChainRules(table, ch) {
				canon, err := plan.Canonical(rs.Family, r.Args)
				require.NoError(t, err)
				want = append(want, canon)
			}
			for _, r := range st.ChainRules(ch) {
				canon, err := plan.Canonical(rs.Family, r.Args)
				require.NoError(t, err, "saved rule %q does not parse", r)
				have = append(have, canon)
			}
			require.Equal(t, want, have, "%s %s/%s reads back differently", rs.Family, table, ch)
		}
	}
	owned := plan.Owned(rs.Family, saved)
	require.ElementsMatch(t, rs.Chains, owned.Chains, "%s: chains not recognised as the tool's", rs.Family)
	var builtin int
	for _, r := range rs.Rules {
		if plan.Builtin(r.Table, r.Chain) {
			builtin++
		}
	}
	require.Len(t, owned.Rules, builtin, "%s: builtin-chain rules not all recognised as the tool's: %v", rs.Family, owned.Rules)
	require.True(t, plan.InPlace(rs, saved), "%s: a re-run would not find its own rules in place", rs.Family)
}
