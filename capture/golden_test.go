package capture_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/dryrun"
)

var update = flag.Bool("update", false, "rewrite capture/testdata/*.golden from the current output")

// goldenCase is one configuration whose dry run is kept in
// testdata/<name>.golden. Every case starts from the REDIRECT default of
// docs/contract.md §3.2 with IPv6 off and changes what its command line says.
type goldenCase struct {
	name string
	cfg  capture.Config
}

// redirectDefault is the configuration of docs/contract.md §3.2:
// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false
func redirectDefault() capture.Config {
	c := capture.DefaultConfig()
	c.ProxyPort = "15001"
	c.InboundCapturePort = "15006"
	c.ProxyUID = "1337"
	c.InboundInterceptionMode = "REDIRECT"
	c.OutboundIPRangesInclude = "*"
	c.OutboundIPRangesExclude = ""
	c.InboundPortsInclude = "*"
	c.InboundPortsExclude = "15090,15021,15020"
	c.IPv6 = "false"
	return c
}

// with returns the REDIRECT default changed by fn.
func with(fn func(c *capture.Config)) capture.Config {
	c := redirectDefault()
	fn(&c)
	return c
}

// goldenCases is the table of golden configurations. The comment above
// each gives the equivalent command line; cmd/istio-iptables/run_test.go
// runs those command lines and compares them with the same files.
func goldenCases() []goldenCase {
	return []goldenCase{
		// istio-iptables -p 15001 -u 1337 -m REDIRECT -i '*' -x "" -b 80, -d "" --ipv6=false
		{"classic_istio_init", func() capture.Config {
			c := capture.DefaultConfig()
			c.ProxyPort = "15001"
			c.ProxyUID = "1337"
			c.InboundInterceptionMode = "REDIRECT"
			c.OutboundIPRangesInclude = "*"
			c.OutboundIPRangesExclude = ""
			c.InboundPortsInclude = "80,"
			c.InboundPortsExclude = ""
			c.IPv6 = "false"
			return c
		}()},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false
		{"redirect_default", redirectDefault()},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false
		{"tproxy_default", with(func(c *capture.Config) { c.InboundInterceptionMode = "TPROXY" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b 80,8080 -d 15090,15021,15020 --ipv6=false
		{"inbound_ports_list", with(func(c *capture.Config) { c.InboundPortsInclude = "80,8080" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b "" -d 15090,15021,15020 --ipv6=false
		{"inbound_ports_empty", with(func(c *capture.Config) { c.InboundPortsInclude = "" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8,172.16.0.0/12 -x 10.96.0.0/12,10.0.0.1 -b '*' -d 15090,15021,15020 --ipv6=false
		{"service_cidr_list_exclude", with(func(c *capture.Config) {
			c.OutboundIPRangesInclude = "10.0.0.0/8,172.16.0.0/12"
			c.OutboundIPRangesExclude = "10.96.0.0/12,10.0.0.1"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i "" -x "" -b '*' -d 15090,15021,15020 --ipv6=false
		{"service_cidr_empty", with(func(c *capture.Config) { c.OutboundIPRangesInclude = "" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -q 3306,5432 --ipv6=false
		{"outbound_ports", with(func(c *capture.Config) { c.OutboundPortsInclude = "3306,5432" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -o 25,587 --ipv6=false
		{"outbound_ports_exclude", with(func(c *capture.Config) { c.OutboundPortsExclude = "25,587" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -c eth1,eth2 --ipv6=false
		{"exclude_interfaces", with(func(c *capture.Config) { c.ExcludeInterfaces = "eth1,eth2" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -k eth1,eth2 --ipv6=false
		{"kubevirt_all", with(func(c *capture.Config) { c.KubeVirtInterfaces = "eth1,eth2" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8,192.168.0.0/16 -x "" -b '*' -d 15090,15021,15020 -k eth1,eth2 --ipv6=false
		{"kubevirt_cidrs", with(func(c *capture.Config) {
			c.KubeVirtInterfaces = "eth1,eth2"
			c.OutboundIPRangesInclude = "10.0.0.0/8,192.168.0.0/16"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1,2 -g 3,4 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false
		{"uids_gids", with(func(c *capture.Config) { c.ProxyUID = "1,2"; c.ProxyGID = "3,4" })},
		// istio-iptables -p 15001 -z 15100 -u 1337 -m REDIRECT -i '*' -x "" -b 80,8080 -d "" --ipv6=false
		{"explicit_z_ports_list", with(func(c *capture.Config) {
			c.InboundCapturePort = "15100"
			c.InboundPortsInclude = "80,8080"
			c.InboundPortsExclude = ""
		})},
		// istio-iptables -p 15001 -z 15006 -e 15009 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=false
		{"tunnel_port", with(func(c *capture.Config) { c.InboundTunnelPort = "15009" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b 80,8080 -d "" --ipv6=false
		{"tproxy_ports_list", with(func(c *capture.Config) {
			c.InboundInterceptionMode = "TPROXY"
			c.InboundPortsInclude = "80,8080"
			c.InboundPortsExclude = ""
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b "" -d "" --ipv6=false
		{"tproxy_inbound_empty", with(func(c *capture.Config) {
			c.InboundInterceptionMode = "TPROXY"
			c.InboundPortsInclude = ""
			c.InboundPortsExclude = ""
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 -c eth1 --ipv6=false
		{"tproxy_exclude_interfaces", with(func(c *capture.Config) {
			c.InboundInterceptionMode = "TPROXY"
			c.ExcludeInterfaces = "eth1"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 -t 1400 -r 140 --ipv6=false
		{"tproxy_custom_marks", with(func(c *capture.Config) {
			c.InboundInterceptionMode = "TPROXY"
			c.InboundTProxyMark = "1400"
			c.InboundTProxyRouteTable = "140"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=true
		{"tproxy_ipv6", with(func(c *capture.Config) {
			c.InboundInterceptionMode = "TPROXY"
			c.IPv6 = "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8,fd00::/8 -x 10.96.0.0/12,fd00:10::/64 -b '*' -d 15090,15021,15020 --ipv6=true
		{"ipv6_mixed_cidrs", with(func(c *capture.Config) {
			c.OutboundIPRangesInclude = "10.0.0.0/8,fd00::/8"
			c.OutboundIPRangesExclude = "10.96.0.0/12,fd00:10::/64"
			c.IPv6 = "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8 -x 10.96.0.0/12 -b '*' -d 15090,15021,15020 --ipv6=true
		{"ipv6_only_ipv4_cidrs", with(func(c *capture.Config) {
			c.OutboundIPRangesInclude = "10.0.0.0/8"
			c.OutboundIPRangesExclude = "10.96.0.0/12"
			c.IPv6 = "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=auto
		// in a namespace with a global IPv6 address.
		{"ipv6_auto_host_ipv6", with(func(c *capture.Config) { c.IPv6 = "auto"; c.HostIPv6 = true })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --ipv6=auto
		// in a namespace without a global IPv6 address.
		{"ipv6_auto_no_host_ipv6", with(func(c *capture.Config) { c.IPv6 = "auto"; c.HostIPv6 = false })},

		// Issue 8: DNS capture, --drop-invalid, owner groups. Each option
		// alone, then combined; the names of Istio's golden files they
		// follow are in docs/rules.md.

		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10 --ipv6=false
		{"dns_servers", with(func(c *capture.Config) { c.RedirectDNS = "true"; c.DNSServers = "10.96.0.10" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --capture-all-dns --ipv6=false
		{"dns_capture_all", with(func(c *capture.Config) { c.RedirectDNS = "true"; c.CaptureAllDNS = "true" })},
		// istio-iptables -p 15001 -z 15006 -u 3,4 -g 1,2 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 127.0.0.53,::127.0.0.53 --ipv6=true
		{"dns_uids_gids", with(func(c *capture.Config) {
			c.ProxyUID, c.ProxyGID = "3,4", "1,2"
			c.RedirectDNS, c.DNSServers, c.IPv6 = "true", "127.0.0.53,::127.0.0.53", "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10,fd00:10::a --ipv6=true
		{"dns_ipv6", with(func(c *capture.Config) {
			c.RedirectDNS, c.DNSServers, c.IPv6 = "true", "10.96.0.10,fd00:10::a", "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10 --ipv6=true
		{"dns_ipv6_ipv4_server_only", with(func(c *capture.Config) {
			c.RedirectDNS, c.DNSServers, c.IPv6 = "true", "10.96.0.10", "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --capture-all-dns --ipv6=true
		{"dns_capture_all_ipv6", with(func(c *capture.Config) {
			c.RedirectDNS, c.CaptureAllDNS, c.IPv6 = "true", "true", "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i 9.9.0.0/16 -x 1.1.0.0/16 -b '*' -d "" -c not-istio-nic --redirect-dns --dns-servers 127.0.0.53 --ipv6=true
		{"dns_tproxy", with(func(c *capture.Config) {
			c.InboundInterceptionMode = "TPROXY"
			c.OutboundIPRangesInclude, c.OutboundIPRangesExclude = "9.9.0.0/16", "1.1.0.0/16"
			c.InboundPortsExclude, c.ExcludeInterfaces = "", "not-istio-nic"
			c.RedirectDNS, c.DNSServers, c.IPv6 = "true", "127.0.0.53", "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --drop-invalid --ipv6=false
		{"drop_invalid", with(func(c *capture.Config) { c.DropInvalid = "true" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 -c eth1 --drop-invalid --ipv6=true
		{"drop_invalid_tproxy_ipv6", with(func(c *capture.Config) {
			c.InboundInterceptionMode, c.ExcludeInterfaces = "TPROXY", "eth1"
			c.DropInvalid, c.IPv6 = "true", "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --istio-outbound-owner-groups 101,202 --ipv6=false
		{"owner_groups", with(func(c *capture.Config) { c.OwnerGroupsInclude = "101,202" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --istio-outbound-owner-groups-exclude 888,999 --ipv6=false
		{"owner_groups_exclude", with(func(c *capture.Config) { c.OwnerGroupsExclude = "888,999" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10,fd00:10::a --istio-outbound-owner-groups 101,202 --ipv6=true
		{"dns_owner_groups_ipv6", with(func(c *capture.Config) {
			c.RedirectDNS, c.DNSServers, c.IPv6 = "true", "10.96.0.10,fd00:10::a", "true"
			c.OwnerGroupsInclude = "101,202"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10,fd00:10::a --istio-outbound-owner-groups-exclude 888,999 --ipv6=true
		{"dns_owner_groups_exclude_ipv6", with(func(c *capture.Config) {
			c.RedirectDNS, c.DNSServers, c.IPv6 = "true", "10.96.0.10,fd00:10::a", "true"
			c.OwnerGroupsExclude = "888,999"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1,2 -g 3 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 -o 25 --redirect-dns --capture-all-dns --drop-invalid --istio-outbound-owner-groups-exclude 888 --ipv6=true
		{"all_issue8_options_tproxy_ipv6", with(func(c *capture.Config) {
			c.InboundInterceptionMode, c.ProxyUID, c.ProxyGID, c.OutboundPortsExclude = "TPROXY", "1,2", "3", "25"
			c.RedirectDNS, c.CaptureAllDNS, c.DropInvalid, c.IPv6 = "true", "true", "true", "true"
			c.OwnerGroupsExclude = "888"
		})},

		// Issue 16: parity with today's Istio, and beyond.

		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i 127.1.2.3/32,10.0.0.0/8,::1/128 -x "" -b '*' -d 15090,15021,15020 --ipv6=true
		{"loopback_cidr_include", with(func(c *capture.Config) {
			c.OutboundIPRangesInclude, c.IPv6 = "127.1.2.3/32,10.0.0.0/8,::1/128", "true"
		})},
		// Istio's loopback-outbound-iprange golden, same flags:
		// istio-iptables -p 15001 -z 15006 -u 3,4 -g 1,2 -m REDIRECT -i 127.1.2.3/32 -x "" -b "" -d "" --redirect-dns --dns-servers 127.0.0.53 --ipv6=false
		{"loopback_outbound_iprange", with(func(c *capture.Config) {
			c.ProxyUID, c.ProxyGID, c.OutboundIPRangesInclude = "3,4", "1,2", "127.1.2.3/32"
			c.InboundPortsInclude, c.InboundPortsExclude = "", ""
			c.RedirectDNS, c.DNSServers = "true", "127.0.0.53"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --istio-outbound-ipv4-loopback-cidr 127.0.0.0/8 --ipv6=false
		{"ipv4_loopback_cidr_tproxy", with(func(c *capture.Config) {
			c.InboundInterceptionMode, c.HostIPv4LoopbackCIDR = "TPROXY", "127.0.0.0/8"
		})},
		// istio-iptables -p 15001 -z 15006 -u '' -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --proxy-mark 4242 --ipv6=true
		{"proxy_mark_only", with(func(c *capture.Config) { c.ProxyUID, c.ProxyMark, c.IPv6 = "", "4242", "true" })},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --proxy-mark 0x1092 --redirect-dns --dns-servers 10.96.0.10 --ipv6=false
		{"proxy_mark_tproxy_dns", with(func(c *capture.Config) {
			c.InboundInterceptionMode, c.ProxyMark = "TPROXY", "0x1092"
			c.RedirectDNS, c.DNSServers = "true", "10.96.0.10"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -k eth1,eth2 --redirect-dns --dns-servers 10.96.0.10,fd00:10::a --ipv6=true
		{"kubevirt_dns", with(func(c *capture.Config) {
			c.KubeVirtInterfaces, c.RedirectDNS, c.DNSServers, c.IPv6 = "eth1,eth2", "true", "10.96.0.10,fd00:10::a", "true"
		})},
		// istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 -k eth1 --redirect-dns --capture-all-dns --ipv6=false
		{"kubevirt_dns_capture_all", with(func(c *capture.Config) {
			c.KubeVirtInterfaces, c.RedirectDNS, c.CaptureAllDNS = "eth1", "true", "true"
		})},
	}
}

func TestGolden(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			require.False(t, seen[tc.name], "duplicate case name")
			seen[tc.name] = true
			built, err := capture.Build(tc.cfg)
			require.NoError(t, err)
			got := dryrun.Text(built)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				require.NoError(t, os.MkdirAll("testdata", 0o755))
				require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
				return
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run `make update-golden` to create it")
			if string(want) != got {
				t.Errorf("%s differs from the dry run (-golden +got):\n%s\nrun `make update-golden` and review the diff if the change is intended",
					path, lineDiff(string(want), got))
			}
		})
	}
}

// TestGoldenNoStrayFiles keeps testdata in step with the table: a golden
// file without a case is a test nobody runs.
func TestGoldenNoStrayFiles(t *testing.T) {
	names := map[string]bool{}
	for _, tc := range goldenCases() {
		names[tc.name+".golden"] = true
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	require.NoError(t, err)
	for _, f := range files {
		assert.True(t, names[filepath.Base(f)], "%s has no case in goldenCases", f)
	}
}

// lineDiff returns a unified-looking line diff of a and b (longest common
// subsequence; "-" lines only in a, "+" lines only in b).
func lineDiff(a, b string) string {
	x := strings.Split(a, "\n")
	y := strings.Split(b, "\n")
	// lcs[i][j] is the LCS length of x[i:] and y[j:].
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			fmt.Fprintf(&out, "  %s\n", x[i])
			i++
			j++
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&out, "- %s\n", x[i])
			i++
		default:
			fmt.Fprintf(&out, "+ %s\n", y[j])
			j++
		}
	}
	return out.String()
}

func TestLineDiff(t *testing.T) {
	assert.Equal(t, "  a\n- b\n+ B\n  c\n", lineDiff("a\nb\nc", "a\nB\nc"))
	assert.Equal(t, "  a\n+ x\n", lineDiff("a", "a\nx"))
}
