package capture_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/plan"
)

// TestDefaultConfig: the defaults of docs/contract.md §1.
func TestDefaultConfig(t *testing.T) {
	c := capture.DefaultConfig()
	assert.Equal(t, "15001", c.ProxyPort)
	assert.Equal(t, "", c.InboundCapturePort, "-z default depends on -b (docs/contract.md §3.1)")
	assert.Equal(t, "15008", c.InboundTunnelPort)
	assert.Equal(t, "1337", c.ProxyUID)
	assert.Equal(t, "", c.ProxyGID)
	assert.Equal(t, "REDIRECT", c.InboundInterceptionMode)
	assert.Equal(t, "", c.InboundPortsInclude)
	assert.Equal(t, "", c.OutboundIPRangesInclude)
	assert.Equal(t, "1337", c.InboundTProxyMark)
	assert.Equal(t, "133", c.InboundTProxyRouteTable)
	assert.Equal(t, "auto", c.IPv6)
	require.NoError(t, c.Validate())
}

// fieldErrors returns "flag: msg" of every *FieldError in err.
func fieldErrors(t *testing.T, err error) []*capture.FieldError {
	t.Helper()
	var out []*capture.FieldError
	j, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "Validate joins its errors: %v", err)
	for _, e := range j.Unwrap() {
		var fe *capture.FieldError
		require.True(t, errors.As(e, &fe), "%v is not a *FieldError", e)
		out = append(out, fe)
	}
	return out
}

// TestValidateAllAtOnce: every bad field is reported, each a *FieldError
// naming its flag.
func TestValidateAllAtOnce(t *testing.T) {
	c := capture.DefaultConfig()
	c.ProxyPort = "0"
	c.InboundCapturePort = "x"
	c.InboundTunnelPort = "65536"
	c.ProxyUID = "bob"
	c.ProxyGID = "4294967295"
	c.InboundInterceptionMode = "tproxy"
	c.InboundPortsInclude = "80,*"
	c.InboundPortsExclude = "*"
	c.OutboundIPRangesInclude = "10.0.0.0/33"
	c.OutboundIPRangesExclude = "*"
	c.OutboundPortsInclude = "-1"
	c.OutboundPortsExclude = "1-2"
	c.KubeVirtInterfaces = "-j"
	c.ExcludeInterfaces = "a b"
	c.InboundTProxyMark = "0"
	c.InboundTProxyRouteTable = "253"
	c.IPv6 = "yes"
	err := c.Validate()
	require.Error(t, err)
	var flags []string
	for _, fe := range fieldErrors(t, err) {
		flags = append(flags, fe.Flag)
		assert.Equal(t, fe.Flag+": "+fe.Msg, fe.Error())
	}
	assert.ElementsMatch(t, []string{"-p", "-z", "-e", "-u", "-g", "-m", "-b", "-d", "-i", "-x", "-q", "-o", "-k", "-c", "-t", "-r", "--ipv6"}, flags)
	_, err = capture.Build(c)
	assert.Equal(t, c.Validate().Error(), err.Error(), "Build refuses what Validate refuses")
}

// fakeLookup resolves a fixed user and group database.
type fakeLookup struct{}

func (fakeLookup) UserID(name string) (uint32, error) {
	if name == "istio-proxy" {
		return 1337, nil
	}
	return 0, fmt.Errorf("unknown user %s", name)
}

func (fakeLookup) GroupID(name string) (uint32, error) {
	if name == "mesh" {
		return 2000, nil
	}
	return 0, fmt.Errorf("unknown group %s", name)
}

// TestIDNames: -u and -g take names through the Lookup; without one only
// numbers; -g defaults to the -u ids.
func TestIDNames(t *testing.T) {
	c := redirectDefault()
	c.ProxyUID = "istio-proxy, 7"
	c.ProxyGID = "mesh"
	c.Lookup = fakeLookup{}
	rs := ruleSet(t, c, plan.IPv4)
	text := strings.Join(chainLines(rs, plan.TableNat, "ISTIO_OUTPUT"), "\n")
	assert.Contains(t, text, "--uid-owner 1337 ")
	assert.Contains(t, text, "--uid-owner 7 ")
	assert.Contains(t, text, "--gid-owner 2000 ")
	assert.NotContains(t, text, "--gid-owner 1337 ")

	c.ProxyGID = ""
	text = strings.Join(chainLines(ruleSet(t, c, plan.IPv4), plan.TableNat, "ISTIO_OUTPUT"), "\n")
	assert.Contains(t, text, "--gid-owner 1337 ")
	assert.Contains(t, text, "--gid-owner 7 ")

	c.ProxyUID = "nobody-here"
	err := c.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `-u: unknown name "nobody-here"`)

	c.ProxyUID = "istio-proxy"
	c.Lookup = nil
	err = c.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `-u: "istio-proxy" is not a numeric id`)
}

// TestValuesNormalized: docs/contract.md §2 lists: blanks and empty items ignored,
// duplicates dropped, host bits cleared, bare addresses are /32 and /128.
func TestValuesNormalized(t *testing.T) {
	c := redirectDefault()
	c.InboundPortsInclude = " 80 , ,8080,80,"
	c.OutboundIPRangesInclude = " 10.1.2.3/8 ,10.0.0.0/8, fd00::1 ,,"
	c.OutboundPortsExclude = "025"
	c.IPv6 = "TRUE"
	p, err := capture.Build(c)
	require.NoError(t, err)
	require.Len(t, p.RuleSets, 2)
	v4 := chainLines(p.RuleSets[0], plan.TableNat, "ISTIO_INBOUND")
	assert.Equal(t, []string{
		"-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
		"-A ISTIO_INBOUND -p tcp --dport 80 -j ISTIO_IN_REDIRECT",
		"-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
	}, v4)
	out4 := strings.Join(chainLines(p.RuleSets[0], plan.TableNat, "ISTIO_OUTPUT"), "\n")
	assert.Equal(t, 1, strings.Count(out4, "-d 10.0.0.0/8 -j ISTIO_REDIRECT"))
	assert.Contains(t, out4, "-p tcp --dport 25 -j RETURN")
	out6 := strings.Join(chainLines(p.RuleSets[1], plan.TableNat, "ISTIO_OUTPUT"), "\n")
	assert.Contains(t, out6, "-d fd00::1/128 -j ISTIO_REDIRECT")
	assert.NotContains(t, out6, "10.0.0.0")
}

// TestRejectedValues: values docs/contract.md §2 refuses, at the Config level.
func TestRejectedValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(c *capture.Config)
		flag string
		bug  string
	}{
		{"interface with a colon", func(c *capture.Config) { c.ExcludeInterfaces = "eth0:1" }, "-c", ""},
		{"interface wildcard only", func(c *capture.Config) { c.KubeVirtInterfaces = "+" }, "-k", ""},
		{"interface ..", func(c *capture.Config) { c.KubeVirtInterfaces = ".." }, "-k", ""},
		{"interface of 16 chars with +", func(c *capture.Config) { c.ExcludeInterfaces = "abcdefghijklmno+" }, "-c", ""},
		{"IPv4-mapped address", func(c *capture.Config) { c.OutboundIPRangesInclude = "::ffff:10.0.0.0/104" }, "-i", ""},
		{"tab inside a value", func(c *capture.Config) { c.OutboundIPRangesExclude = "10.0.0.0/8\t-j" }, "-x", ""},
		{"DEL character", func(c *capture.Config) { c.InboundPortsInclude = "80\x7f" }, "-b", ""},
		{"quote in an interface", func(c *capture.Config) { c.ExcludeInterfaces = `eth"0` }, "-c", ""},
		{"IPv6 zone", func(c *capture.Config) { c.OutboundIPRangesExclude = "fe80::1%eth0" }, "-x", ""},
		{"IPv6 zone with a prefix", func(c *capture.Config) { c.OutboundIPRangesInclude = "fe80::%eth0/64" }, "-i", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bug != "" {
				t.Skip(tc.bug)
			}
			c := redirectDefault()
			tc.set(&c)
			err := c.Validate()
			require.Error(t, err)
			fes := fieldErrors(t, err)
			require.Len(t, fes, 1)
			assert.Equal(t, tc.flag, fes[0].Flag)
		})
	}
	t.Run("interface of 15 chars with +", func(t *testing.T) {
		c := redirectDefault()
		c.ExcludeInterfaces = "abcdefghijklmn+"
		assert.NoError(t, c.Validate())
	})
}

// TestWarnings: valid values with no effect are named.
func TestWarnings(t *testing.T) {
	c := redirectDefault()
	assert.Empty(t, c.Warnings())
	c.InboundPortsInclude = "80"
	assert.Equal(t, []string{"-d is only used with -b '*'; ignored"}, c.Warnings())
	c = redirectDefault()
	c.OutboundIPRangesInclude = ""
	c.KubeVirtInterfaces = "eth1"
	assert.Equal(t, []string{"-k interfaces get no capture rule while -i is empty"}, c.Warnings())
}
