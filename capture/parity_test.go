package capture_test

// Tests of the options issue 8 adds for parity with Istio's Go tool: DNS
// capture, --drop-invalid, owner groups and the validation probe's
// settings. The exact rule text of each option is in the golden files
// (dns_*, drop_invalid*, owner_groups*, all_issue8_*); these tests check
// the values, the warnings and the behaviour between the lines.

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/plan"
)

// TestParityDefaults: every new option is off by default, and the probe
// uses Istio's port 15002 and 5 s.
func TestParityDefaults(t *testing.T) {
	c := capture.DefaultConfig()
	assert.Equal(t, "false", c.RedirectDNS)
	assert.Equal(t, "false", c.CaptureAllDNS)
	assert.Equal(t, "", c.DNSServers)
	assert.Equal(t, "false", c.DropInvalid)
	assert.Equal(t, "*", c.OwnerGroupsInclude)
	assert.Equal(t, "", c.OwnerGroupsExclude)
	assert.Equal(t, "false", c.RunValidation)
	assert.Equal(t, "false", c.SkipRuleApply)
	assert.Equal(t, "15002", c.ProbePort)
	assert.Equal(t, "5s", c.ProbeTimeout)

	p, err := redirectDefault().Probe()
	require.NoError(t, err)
	assert.Equal(t, capture.Probe{Port: 15002, Timeout: 5 * time.Second, CapturePorts: []uint16{15001, 15006}}, p)

	// The new options off write exactly what the configuration wrote
	// before they existed.
	off := redirectDefault()
	off.RedirectDNS, off.CaptureAllDNS, off.DropInvalid, off.OwnerGroupsInclude = "", "", "", ""
	off.RunValidation, off.SkipRuleApply, off.ProbePort, off.ProbeTimeout = "", "", "", ""
	want, err := capture.Build(redirectDefault())
	require.NoError(t, err)
	got, err := capture.Build(off)
	require.NoError(t, err)
	assert.Equal(t, want, got, `"" means the default for every new field`)
}

// TestParityProbe: the probe listens where the rules redirect: -p, then
// the inbound port as docs/contract.md §3.1 resolves it.
func TestParityProbe(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(c *capture.Config)
		want capture.Probe
	}{
		{"-b list without -z: one port", func(c *capture.Config) {
			c.InboundCapturePort, c.InboundPortsInclude = "", "80"
		}, capture.Probe{Port: 15002, Timeout: 5 * time.Second, CapturePorts: []uint16{15001}}},
		{"explicit everything", func(c *capture.Config) {
			c.ProxyPort, c.InboundCapturePort = "16001", "16006"
			c.RunValidation, c.SkipRuleApply, c.ProbePort, c.ProbeTimeout = "true", "1", " 16002 ", "1500ms"
		}, capture.Probe{Run: true, SkipApply: true, Port: 16002, Timeout: 1500 * time.Millisecond, CapturePorts: []uint16{16001, 16006}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redirectDefault()
			tc.set(&c)
			p, err := c.Probe()
			require.NoError(t, err)
			assert.Equal(t, tc.want, p)
		})
	}
	c := redirectDefault()
	c.ProbePort = "0"
	_, err := c.Probe()
	assert.ErrorContains(t, err, `--iptables-probe-port: port "0" out of range 1-65535`)
}

// TestParityValidateAllAtOnce: every bad new value is reported with the
// others, each naming its flag.
func TestParityValidateAllAtOnce(t *testing.T) {
	c := redirectDefault()
	c.ProxyPort = "0"
	c.RedirectDNS = "yes please"
	c.CaptureAllDNS = "2"
	c.DNSServers = "10.0.0.0/8"
	c.DropInvalid = "maybe"
	c.OwnerGroupsInclude = "*,101"
	c.OwnerGroupsExclude = "*"
	c.RunValidation = "on"
	c.SkipRuleApply = "off"
	c.ProbePort = "70000"
	c.ProbeTimeout = "5"
	var flags []string
	for _, fe := range fieldErrors(t, c.Validate()) {
		flags = append(flags, fe.Flag)
		assert.Contains(t, fe.Msg, `"`, "%s: the message quotes the value", fe.Flag)
	}
	assert.ElementsMatch(t, []string{"-p", "--redirect-dns", "--capture-all-dns", "--dns-servers", "--drop-invalid",
		"--istio-outbound-owner-groups", "--istio-outbound-owner-groups-exclude", "--run-validation", "--skip-rule-apply",
		"--iptables-probe-port", "--probe-timeout"}, flags)
}

// TestParityRejected: each value the new options refuse, alone.
func TestParityRejected(t *testing.T) {
	var manyGroups []string
	for i := 1; i <= 65; i++ {
		manyGroups = append(manyGroups, strconv.Itoa(100+i))
	}
	for _, tc := range []struct {
		name, flag string
		set        func(c *capture.Config)
	}{
		{"DNS server prefix", "--dns-servers", func(c *capture.Config) { c.DNSServers = "10.96.0.0/12" }},
		{"DNS server name", "--dns-servers", func(c *capture.Config) { c.DNSServers = "kube-dns" }},
		{"DNS server with a zone", "--dns-servers", func(c *capture.Config) { c.DNSServers = "fe80::1%eth0" }},
		{"DNS server IPv4-mapped", "--dns-servers", func(c *capture.Config) { c.DNSServers = "::ffff:10.0.0.10" }},
		{"DNS server unspecified", "--dns-servers", func(c *capture.Config) { c.DNSServers = "0.0.0.0" }},
		{"DNS server with rule text", "--dns-servers", func(c *capture.Config) { c.DNSServers = "10.0.0.10 -j ACCEPT" }},
		{"DNS server newline", "--dns-servers", func(c *capture.Config) { c.DNSServers = "10.0.0.10\nCOMMIT" }},
		{"boolean yes", "--redirect-dns", func(c *capture.Config) { c.RedirectDNS = "yes" }},
		{"two booleans", "--drop-invalid", func(c *capture.Config) { c.DropInvalid = "true,false" }},
		{"unknown group", "--istio-outbound-owner-groups", func(c *capture.Config) { c.OwnerGroupsInclude = "no-such-group" }},
		{"* among groups", "--istio-outbound-owner-groups", func(c *capture.Config) { c.OwnerGroupsInclude = "101,*" }},
		{"* excluded", "--istio-outbound-owner-groups-exclude", func(c *capture.Config) { c.OwnerGroupsExclude = "*" }},
		{"65 groups included", "--istio-outbound-owner-groups", func(c *capture.Config) { c.OwnerGroupsInclude = strings.Join(manyGroups, ",") }},
		{"65 groups excluded", "--istio-outbound-owner-groups-exclude", func(c *capture.Config) { c.OwnerGroupsExclude = strings.Join(manyGroups, ",") }},
		{"reserved gid", "--istio-outbound-owner-groups-exclude", func(c *capture.Config) { c.OwnerGroupsExclude = "4294967295" }},
		{"probe port list", "--iptables-probe-port", func(c *capture.Config) { c.ProbePort = "15002,15003" }},
		{"timeout without unit", "--probe-timeout", func(c *capture.Config) { c.ProbeTimeout = "5" }},
		{"timeout zero", "--probe-timeout", func(c *capture.Config) { c.ProbeTimeout = "0s" }},
		{"timeout negative", "--probe-timeout", func(c *capture.Config) { c.ProbeTimeout = "-1s" }},
		{"timeout over an hour", "--probe-timeout", func(c *capture.Config) { c.ProbeTimeout = "61m" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redirectDefault()
			c.Lookup = fakeLookup{}
			tc.set(&c)
			fes := fieldErrors(t, c.Validate())
			require.Len(t, fes, 1, "%v", fes)
			assert.Equal(t, tc.flag, fes[0].Flag)
		})
	}
	t.Run("64 groups are fine", func(t *testing.T) {
		c := redirectDefault()
		c.OwnerGroupsExclude = strings.Join(manyGroups[:64], ",")
		assert.NoError(t, c.Validate())
	})
}

// dnsConfig is the REDIRECT default with DNS capture to the given servers.
func dnsConfig(servers string) capture.Config {
	c := redirectDefault()
	c.RedirectDNS, c.DNSServers = "true", servers
	return c
}

// TestDNSOffWithoutServer: --redirect-dns with no server and without
// --capture-all-dns writes nothing for DNS (as Istio: "DNS capture
// disabled") and says why.
func TestDNSOffWithoutServer(t *testing.T) {
	c := dnsConfig("")
	built, err := capture.Build(c)
	require.NoError(t, err)
	want, err := capture.Build(redirectDefault())
	require.NoError(t, err)
	assert.Equal(t, want, built)
	assert.Equal(t, []string{"DNS capture is off: --redirect-dns is set, but --capture-all-dns is false and --dns-servers is empty"}, c.Warnings())
	c.DNSServersFromResolvConf = true
	assert.Equal(t, []string{"DNS capture is off: --redirect-dns is set, but --capture-all-dns is false and resolv.conf names no DNS server (pass --dns-servers)"}, c.Warnings())
	c.CaptureAllDNS = "true"
	assert.Empty(t, c.Warnings())
}

// TestDNSRules: what the golden files do not show on their own.
func TestDNSRules(t *testing.T) {
	t.Run("servers are split per family and deduplicated", func(t *testing.T) {
		c := dnsConfig(" 10.96.0.10 ,fd00::a, 10.96.0.10,,10.96.0.11")
		c.IPv6 = "true"
		built, err := capture.Build(c)
		require.NoError(t, err)
		v4 := strings.Join(chainLines(built.RuleSets[0], plan.TableNat, "ISTIO_OUTPUT_DNS"), "\n")
		v6 := strings.Join(chainLines(built.RuleSets[1], plan.TableNat, "ISTIO_OUTPUT_DNS"), "\n")
		assert.Equal(t, 2, strings.Count(v4, "-p udp --dport 53 -d "), v4)
		assert.Equal(t, 2, strings.Count(v4, "-d 10.96.0.10/32 -j REDIRECT --to-ports 15053"), "tcp and udp, once: %s", v4)
		assert.Contains(t, v6, "-p tcp --dport 53 -d fd00::a/128 -j REDIRECT --to-ports 15053")
		assert.NotContains(t, v6, "10.96.")
		assert.NotContains(t, v4, "fd00")
	})
	t.Run("capture-all ignores the server list", func(t *testing.T) {
		c := dnsConfig("10.96.0.10")
		c.CaptureAllDNS = "true"
		rs := ruleSet(t, c, plan.IPv4)
		assert.Equal(t, []string{
			"-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053",
			"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-ports 15053",
		}, chainLines(rs, plan.TableNat, "ISTIO_OUTPUT_DNS"))
		assert.Equal(t, []string{"-A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1"}, chainLines(rs, plan.TableRaw, "ISTIO_INBOUND"))
	})
	t.Run("the jump comes after the owner rules and groups, before localhost", func(t *testing.T) {
		c := dnsConfig("10.96.0.10")
		c.OwnerGroupsExclude = "888"
		c.OutboundPortsExclude = "53"
		out := chainLines(ruleSet(t, c, plan.IPv4), plan.TableNat, "ISTIO_OUTPUT")
		idx := func(s string) int {
			for i, l := range out {
				if strings.HasSuffix(l, s) {
					return i
				}
			}
			t.Fatalf("no rule ending %q in\n%s", s, strings.Join(out, "\n"))
			return -1
		}
		assert.Less(t, idx("-p udp --dport 53 -j RETURN"), idx("-j ISTIO_OUTPUT_DNS"), "-o 53 still wins")
		assert.Less(t, idx("-m owner --gid-owner 1337 -j RETURN"), idx("-j ISTIO_OUTPUT_DNS"), "the proxy's DNS goes out")
		assert.Less(t, idx("-m owner --gid-owner 888 -j RETURN"), idx("-j ISTIO_OUTPUT_DNS"), "an excluded group's DNS goes out")
		assert.Equal(t, idx("-j ISTIO_OUTPUT_DNS")+1, idx("-d 127.0.0.1/32 -j RETURN"))
	})
	t.Run("a tunnel port of 53 needs no multiport", func(t *testing.T) {
		c := dnsConfig("10.96.0.10")
		c.InboundTunnelPort = "53"
		out := strings.Join(chainLines(ruleSet(t, c, plan.IPv4), plan.TableNat, "ISTIO_OUTPUT"), "\n")
		assert.NotContains(t, out, "multiport")
		assert.Contains(t, out, "-p tcp ! --dport 53 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT")
	})
	t.Run("without --redirect-dns the servers and capture-all are ignored, with a warning", func(t *testing.T) {
		c := redirectDefault()
		c.DNSServers, c.CaptureAllDNS = "10.96.0.10", "true"
		built, err := capture.Build(c)
		require.NoError(t, err)
		want, err := capture.Build(redirectDefault())
		require.NoError(t, err)
		assert.Equal(t, want, built)
		assert.Equal(t, []string{"--capture-all-dns and --dns-servers only act with --redirect-dns; ignored"}, c.Warnings())
	})
}

// TestOwnerGroups: names resolve through the Lookup; the exclude list only
// counts with the include list at '*' (as Istio), with a warning.
func TestOwnerGroups(t *testing.T) {
	for _, tc := range []struct {
		name             string
		include, exclude string
		want             []string
		warn             bool
		badFlag          string // the flag Validate names, when it refuses
	}{
		{name: "default: no rule", include: "*"},
		{name: "empty include is every group", include: ""},
		{name: "include names and numbers", include: "mesh, 7", want: []string{"-A ISTIO_OUTPUT -m owner ! --gid-owner 2000 -m owner ! --gid-owner 7 -j RETURN"}},
		{name: "exclude", include: "*", exclude: "7,mesh,7", want: []string{"-A ISTIO_OUTPUT -m owner --gid-owner 7 -j RETURN", "-A ISTIO_OUTPUT -m owner --gid-owner 2000 -j RETURN"}},
		{name: "include wins over exclude", include: "7", exclude: "8", want: []string{"-A ISTIO_OUTPUT -m owner ! --gid-owner 7 -j RETURN"}, warn: true},
		{name: "an ignored exclude list is still checked", include: "7", exclude: "no-such-group", badFlag: "--istio-outbound-owner-groups-exclude"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redirectDefault()
			c.Lookup = fakeLookup{}
			c.OwnerGroupsInclude, c.OwnerGroupsExclude = tc.include, tc.exclude
			if tc.badFlag != "" {
				fes := fieldErrors(t, c.Validate())
				require.Len(t, fes, 1)
				assert.Equal(t, tc.badFlag, fes[0].Flag)
				return
			}
			var got []string
			for _, l := range chainLines(ruleSet(t, c, plan.IPv4), plan.TableNat, "ISTIO_OUTPUT") {
				if strings.Contains(l, "--gid-owner") && !strings.Contains(l, "1337") {
					got = append(got, l)
				}
			}
			assert.Equal(t, tc.want, got)
			if tc.warn {
				assert.Equal(t, []string{"--istio-outbound-owner-groups-exclude is only used with --istio-outbound-owner-groups '*'; ignored"}, c.Warnings())
			} else {
				assert.Empty(t, c.Warnings())
			}
		})
	}
}

// TestSkipRuleApplyAloneWarns: --skip-rule-apply without --run-validation
// does nothing, and says so.
func TestSkipRuleApplyAloneWarns(t *testing.T) {
	c := redirectDefault()
	c.SkipRuleApply = "true"
	assert.Equal(t, []string{"--skip-rule-apply without --run-validation: nothing to do"}, c.Warnings())
	c.RunValidation = "true"
	assert.Empty(t, c.Warnings())
}
