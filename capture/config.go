package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mesh-init/istio-iptables/plan"
)

// Mode is the inbound interception mode (-m).
type Mode string

// The inbound interception modes.
const (
	ModeRedirect Mode = "REDIRECT"
	ModeTProxy   Mode = "TPROXY"
)

// IPv6Mode says when IPv6 rules are written (--ipv6).
type IPv6Mode string

// The --ipv6 values.
const (
	IPv6Auto IPv6Mode = "auto"
	IPv6On   IPv6Mode = "true"
	IPv6Off  IPv6Mode = "false"
)

// Wildcard stands for "all" in -b and -i.
const Wildcard = "*"

// Config holds the capture flags exactly as the user gave them (one field
// per flag, strings as typed), so that Validate can report every bad value
// at once, naming the flag. DefaultConfig gives the defaults.
type Config struct {
	// ProxyPort: -p, --envoy-port, ENVOY_PORT; default 15001.
	ProxyPort string
	// InboundCapturePort: -z, --inbound-capture-port, INBOUND_CAPTURE_PORT;
	// default "": 15006 with -b '*', the -p port with a -b list (docs/contract.md §3.1).
	InboundCapturePort string
	// InboundTunnelPort: -e, --inbound-tunnel-port, INBOUND_TUNNEL_PORT; default 15008.
	InboundTunnelPort string
	// ProxyUID: -u, --proxy-uid, PROXY_UID; comma list of UIDs or user
	// names; default 1337 (the command line resolves $ENVOY_USER first).
	ProxyUID string
	// ProxyGID: -g, --proxy-gid, PROXY_GID; comma list of GIDs or group
	// names; default "": the UIDs of ProxyUID.
	ProxyGID string
	// InboundInterceptionMode: -m, --istio-inbound-interception-mode,
	// ISTIO_INBOUND_INTERCEPTION_MODE; REDIRECT (default) or TPROXY.
	InboundInterceptionMode string
	// InboundPortsInclude: -b, --istio-inbound-ports, ISTIO_INBOUND_PORTS;
	// ports, "*" or "" (default: no inbound capture).
	InboundPortsInclude string
	// InboundPortsExclude: -d, --istio-local-exclude-ports,
	// ISTIO_LOCAL_EXCLUDE_PORTS; ports, used with -b '*'; default "".
	InboundPortsExclude string
	// OutboundIPRangesInclude: -i, --istio-service-cidr, ISTIO_SERVICE_CIDR;
	// CIDRs, "*" or "" (default: no outbound capture).
	OutboundIPRangesInclude string
	// OutboundIPRangesExclude: -x, --istio-service-exclude-cidr,
	// ISTIO_SERVICE_EXCLUDE_CIDR; CIDRs; default "".
	OutboundIPRangesExclude string
	// OutboundPortsInclude: -q, --istio-outbound-ports, ISTIO_OUTBOUND_PORTS;
	// ports always captured; default "".
	OutboundPortsInclude string
	// OutboundPortsExclude: -o, --istio-local-outbound-ports-exclude,
	// ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE; ports never captured; default "".
	OutboundPortsExclude string
	// KubeVirtInterfaces: -k, --kube-virt-interfaces, KUBE_VIRT_INTERFACES;
	// interfaces whose inbound traffic is treated as outbound; default "".
	KubeVirtInterfaces string
	// ExcludeInterfaces: -c, --istio-exclude-interfaces,
	// ISTIO_EXCLUDE_INTERFACES; interfaces never captured; default "".
	ExcludeInterfaces string
	// InboundTProxyMark: -t, --istio-inbound-tproxy-mark,
	// ISTIO_INBOUND_TPROXY_MARK; default 1337.
	InboundTProxyMark string
	// InboundTProxyRouteTable: -r, --istio-inbound-tproxy-route-table,
	// ISTIO_INBOUND_TPROXY_ROUTE_TABLE; default 133.
	InboundTProxyRouteTable string
	// IPv6: --ipv6, ISTIO_IPV6; auto (default), true or false.
	IPv6 string
	// HostIPv6 tells, for IPv6=auto, whether the namespace has a global
	// IPv6 address. The caller reads it; Build does no I/O.
	HostIPv6 bool
	// RedirectDNS: --redirect-dns, REDIRECT_DNS; true or false (default):
	// send the app's DNS (udp and tcp port 53) to the agent on 15053.
	RedirectDNS string
	// CaptureAllDNS: --capture-all-dns, CAPTURE_ALL_DNS; true or false
	// (default): with RedirectDNS, capture DNS to every server, not only
	// to DNSServers.
	CaptureAllDNS string
	// DNSServers: --dns-servers, DNS_SERVERS; comma list of IPv4 and IPv6
	// addresses whose DNS traffic is captured (split per family). The
	// command line fills it from the namespace's resolv.conf when neither
	// the flag nor the variable is given; Build does no I/O.
	DNSServers string
	// DNSServersFromResolvConf tells that DNSServers was read from
	// resolv.conf; it only shapes the warning when no server is known.
	DNSServersFromResolvConf bool
	// DropInvalid: --drop-invalid, DROP_INVALID; true or false (default):
	// drop inbound packets conntrack classifies INVALID.
	DropInvalid string
	// OwnerGroupsInclude: --istio-outbound-owner-groups,
	// ISTIO_OUTBOUND_OWNER_GROUPS; GIDs or group names whose outbound
	// traffic is captured; default "*" (every group; "" means the same).
	OwnerGroupsInclude string
	// OwnerGroupsExclude: --istio-outbound-owner-groups-exclude,
	// ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE; GIDs or group names whose
	// outbound traffic is not captured, used with OwnerGroupsInclude "*";
	// default "".
	OwnerGroupsExclude string
	// RunValidation: --run-validation, RUN_VALIDATION; true or false
	// (default): after applying, probe that interception works.
	RunValidation string
	// SkipRuleApply: --skip-rule-apply, SKIP_RULE_APPLY; true or false
	// (default): write no rule (with RunValidation: only probe).
	SkipRuleApply string
	// ProbePort: --iptables-probe-port, IPTABLES_PROBE_PORT; the original
	// destination port of the validation probe; default 15002.
	ProbePort string
	// ProbeTimeout: --probe-timeout, PROBE_TIMEOUT; how long the
	// validation probe may take, a Go duration; default 5s.
	ProbeTimeout string
	// HostIPv4LoopbackCIDR: --istio-outbound-ipv4-loopback-cidr,
	// ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR (Istio's variable); the IPv4
	// loopback range the app uses to reach itself, never captured and
	// never sent to the inbound listener; default 127.0.0.1/32. A prefix
	// of 127.0.0.0/8, /8 to /32.
	HostIPv4LoopbackCIDR string
	// ProxyMark: --proxy-mark, PROXY_MARK; a socket mark (SO_MARK) the
	// proxy sets on its sockets: packets carrying it are never captured,
	// like the -u/-g owners (with -u '' it is the only exemption);
	// default "": none. 1-0xffffffff, decimal or 0x hex.
	ProxyMark string
	// Lookup resolves user and group names in -u and -g. Nil: only numeric
	// IDs are accepted.
	Lookup Lookup
}

// Lookup resolves user and group names to numeric IDs.
type Lookup interface {
	UserID(name string) (uint32, error)
	GroupID(name string) (uint32, error)
}

// DefaultConfig returns the configuration with every default of docs/contract.md §1.
func DefaultConfig() Config {
	return Config{
		ProxyPort:               "15001",
		InboundTunnelPort:       "15008",
		ProxyUID:                "1337",
		InboundInterceptionMode: string(ModeRedirect),
		InboundTProxyMark:       "1337",
		InboundTProxyRouteTable: "133",
		IPv6:                    string(IPv6Auto),
		RedirectDNS:             "false",
		CaptureAllDNS:           "false",
		DropInvalid:             "false",
		OwnerGroupsInclude:      Wildcard,
		RunValidation:           "false",
		SkipRuleApply:           "false",
		ProbePort:               DefaultProbePort,
		ProbeTimeout:            DefaultProbeTimeout.String(),
		HostIPv4LoopbackCIDR:    DefaultIPv4LoopbackCIDR,
	}
}

// The validation probe's defaults (Istio's).
const (
	DefaultProbePort    = "15002"
	DefaultProbeTimeout = 5 * time.Second
)

// DefaultIPv4LoopbackCIDR is Istio's default for
// ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR.
const DefaultIPv4LoopbackCIDR = "127.0.0.1/32"

// DNSAgentPort is where the agent's DNS proxy listens (udp and tcp).
const DNSAgentPort = "15053"

// maxOwnerGroups bounds the owner group lists, as Istio does: each group
// is one owner match in a rule.
const maxOwnerGroups = 64

// FieldError is a bad value, with the flag it came from.
type FieldError struct {
	// Flag is the flag as the user knows it: "-b" or "--ipv6".
	Flag string
	Msg  string
}

func (e *FieldError) Error() string { return e.Flag + ": " + e.Msg }

// settings is a validated Config in the types the builder needs.
type settings struct {
	proxyPort, inboundPort, tunnelPort string
	uids, gids                         []string
	mode                               Mode
	inboundAll                         bool
	inboundPorts, inboundExclude       []string
	outboundAll                        bool
	outboundCIDRs, excludeCIDRs        map[plan.Family][]netip.Prefix
	outboundPorts, outboundExclude     []string
	kubeVirt, excludeIfaces            []string
	mark                               uint32
	routeTable                         int
	ipv6                               bool
	redirectDNS, captureAllDNS         bool
	dnsServers                         map[plan.Family][]netip.Addr
	dropInvalid                        bool
	// ownerGroups: with ownerGroupsExcept the groups never captured,
	// otherwise the only groups captured; none and except: every group.
	ownerGroups       []string
	ownerGroupsExcept bool
	probe             Probe
	// loopback4 is the IPv4 loopback range (ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR).
	loopback4 string
	// loopbackInclude: -i lists a loopback CIDR (either family), so the
	// app's traffic over lo is not returned (Istio's HasLoopBackIP).
	loopbackInclude bool
	// proxyMark is --proxy-mark in decimal; "" when not set.
	proxyMark string
}

// Probe is the validation probe's part of a Config, resolved.
type Probe struct {
	// Run: --run-validation.
	Run bool
	// SkipApply: --skip-rule-apply.
	SkipApply bool
	// Port is the original destination port the probe connects to.
	Port uint16
	// Timeout bounds the whole probe.
	Timeout time.Duration
	// CapturePorts are the ports the rules redirect to, where the probe
	// listens: the outbound port (-p), then the inbound port (-z or its
	// default), without duplicates.
	CapturePorts []uint16
}

// Probe returns the validation settings, or the errors Validate reports.
func (c Config) Probe() (Probe, error) {
	s, err := c.settings()
	if err != nil {
		return Probe{}, err
	}
	return s.probe, nil
}

// dnsOn reports whether DNS capture rules are written: --redirect-dns
// with --capture-all-dns or at least one server.
func (s settings) dnsOn() bool {
	return s.redirectDNS && (s.captureAllDNS || len(s.dnsServers[plan.IPv4])+len(s.dnsServers[plan.IPv6]) > 0)
}

// Validate checks every value and returns all problems at once, each a
// *FieldError naming the flag and the value (errors.Join).
func (c Config) Validate() error {
	_, err := c.settings()
	return err
}

// Warnings lists values that are valid but have no effect.
func (c Config) Warnings() []string {
	var w []string
	b := strings.TrimSpace(c.InboundPortsInclude)
	if strings.Trim(c.InboundPortsExclude, " ,") != "" && b != Wildcard {
		w = append(w, "-d is only used with -b '*'; ignored")
	}
	if strings.Trim(c.KubeVirtInterfaces, " ,") != "" && strings.Trim(c.OutboundIPRangesInclude, " ,") == "" {
		w = append(w, "-k interfaces get no capture rule while -i is empty")
	}
	servers := strings.Trim(c.DNSServers, " ,") != ""
	switch {
	case truthy(c.RedirectDNS) && !truthy(c.CaptureAllDNS) && !servers && c.DNSServersFromResolvConf:
		w = append(w, "DNS capture is off: --redirect-dns is set, but --capture-all-dns is false and resolv.conf names no DNS server (pass --dns-servers)")
	case truthy(c.RedirectDNS) && !truthy(c.CaptureAllDNS) && !servers:
		w = append(w, "DNS capture is off: --redirect-dns is set, but --capture-all-dns is false and --dns-servers is empty")
	case !truthy(c.RedirectDNS) && (truthy(c.CaptureAllDNS) || servers):
		w = append(w, "--capture-all-dns and --dns-servers only act with --redirect-dns; ignored")
	}
	if g := strings.Trim(c.OwnerGroupsInclude, " ,"); g != "" && g != Wildcard && strings.Trim(c.OwnerGroupsExclude, " ,") != "" {
		w = append(w, "--istio-outbound-owner-groups-exclude is only used with --istio-outbound-owner-groups '*'; ignored")
	}
	if truthy(c.SkipRuleApply) && !truthy(c.RunValidation) {
		w = append(w, "--skip-rule-apply without --run-validation: nothing to do")
	}
	// A CIDR with host bits set is used with them cleared; say so.
	for _, l := range []struct{ flag, v string }{{"-i", c.OutboundIPRangesInclude}, {"-x", c.OutboundIPRangesExclude}} {
		for _, it := range strings.Split(l.v, ",") {
			if pfx, err := netip.ParsePrefix(strings.TrimSpace(it)); err == nil && pfx != pfx.Masked() {
				w = append(w, fmt.Sprintf("%s: %q has host bits set; it is used as %s", l.flag, pfx.String(), pfx.Masked()))
			}
		}
	}
	if strings.Trim(c.ProxyUID, " ,") == "" && strings.Trim(c.ProxyGID, " ,") == "" && strings.TrimSpace(c.ProxyMark) != "" {
		w = append(w, "-u and -g are empty: only sockets carrying --proxy-mark are exempt from capture")
	}
	return w
}

// truthy reads a boolean value leniently, for warnings only: Validate is
// the strict reader.
func truthy(v string) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	return err == nil && b
}

type parser struct{ errs []error }

func (p *parser) fail(flag, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Flag: flag, Msg: fmt.Sprintf(format, args...)})
}

// items splits a comma list, ignoring blanks around items and empty items.
// It refuses control characters anywhere in the value.
func (p *parser) items(flag, v string) ([]string, bool) {
	for _, c := range v {
		if c < 0x20 && c != '\t' || c == 0x7f {
			p.fail(flag, "value %q holds a control character", v)
			return nil, false
		}
	}
	var out []string
	for _, it := range strings.Split(v, ",") {
		if it = strings.Trim(it, " \t"); it != "" {
			out = append(out, it)
		}
	}
	return out, true
}

func (p *parser) port(flag, v string) (string, bool) {
	n, err := strconv.ParseUint(v, 10, 64)
	switch {
	case err != nil && strings.Trim(v, "0123456789") == "" && v != "":
		p.fail(flag, "port %q out of range 1-65535", v)
	case err != nil:
		p.fail(flag, "port %q is not a number", v)
	case n < 1 || n > 65535:
		p.fail(flag, "port %q out of range 1-65535", v)
	default:
		return strconv.FormatUint(n, 10), true
	}
	return "", false
}

// singlePort parses a flag that takes exactly one port.
func (p *parser) singlePort(flag, v string) string {
	it, ok := p.items(flag, v)
	if !ok {
		return ""
	}
	if len(it) != 1 {
		p.fail(flag, "want one port, got %q", v)
		return ""
	}
	port, _ := p.port(flag, it[0])
	return port
}

// wildcard checks a "*" found among n items: refused where not allowed,
// and it must stand alone.
func (p *parser) wildcard(flag, v string, n int, allowed bool) {
	if !allowed {
		p.fail(flag, "%q: '*' is not allowed here", v)
	} else if n > 1 {
		p.fail(flag, "%q: '*' must stand alone", v)
	}
}

// ports parses a port list; with wildcard allowed, "*" alone means all.
func (p *parser) ports(flag, v string, wildcard bool) (all bool, out []string) {
	it, ok := p.items(flag, v)
	if !ok {
		return false, nil
	}
	for _, s := range it {
		if s == Wildcard {
			p.wildcard(flag, v, len(it), wildcard)
			all = true
			continue
		}
		if port, ok := p.port(flag, s); ok {
			out = append(out, port)
		}
	}
	if all {
		return true, nil
	}
	return false, dedupe(out)
}

// cidrs parses a CIDR list split per family; a bare address is a /32 or
// /128; host bits are cleared.
func (p *parser) cidrs(flag, v string, wildcard bool) (all bool, out map[plan.Family][]netip.Prefix) {
	out = map[plan.Family][]netip.Prefix{}
	it, ok := p.items(flag, v)
	if !ok {
		return false, out
	}
	for _, s := range it {
		if s == Wildcard {
			p.wildcard(flag, v, len(it), wildcard)
			all = true
			continue
		}
		var pfx netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			pfx, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				if a.Zone() != "" {
					err = fmt.Errorf("zone %q", a.Zone())
				}
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			p.fail(flag, "%q is not a CIDR or IP address", s)
			continue
		}
		f := plan.IPv4
		if pfx.Addr().Is6() {
			if pfx.Addr().Is4In6() {
				p.fail(flag, "%q: IPv4-mapped IPv6 addresses are not supported; give the IPv4 form", s)
				continue
			}
			f = plan.IPv6
		}
		pfx = pfx.Masked()
		if !containsPrefix(out[f], pfx) {
			out[f] = append(out[f], pfx)
		}
	}
	if all {
		return true, map[plan.Family][]netip.Prefix{}
	}
	return false, out
}

// ifaces parses an interface list: Linux names (at most 15 bytes, no '/',
// ':' or blank), optionally ending in iptables' '+' wildcard, never
// starting with '-' or '!' (they would read as options).
func (p *parser) ifaces(flag, v string) []string {
	it, _ := p.items(flag, v)
	var out []string
	for _, s := range it {
		name := strings.TrimSuffix(s, "+")
		ok := len(s) <= 15 && name != "" && name != "." && name != ".." && s[0] != '-' && s[0] != '!'
		for _, c := range name {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '@') {
				ok = false
			}
		}
		if !ok && len(s) > 15 {
			p.fail(flag, "%q is %d bytes long: Linux interface names are at most 15 bytes", s, len(s))
			continue
		}
		if !ok {
			p.fail(flag, "%q is not a valid interface name", s)
			continue
		}
		out = append(out, s)
	}
	return dedupe(out)
}

// ids parses a UID or GID list: numbers, or names through the lookup.
func (p *parser) ids(flag, v string, resolve func(string) (uint32, error)) []string {
	before := len(p.errs)
	it, ok := p.items(flag, v)
	if !ok {
		return nil
	}
	var out []string
	for _, s := range it {
		n, err := strconv.ParseUint(s, 10, 32)
		switch {
		case err == nil && n == 0xffffffff:
			p.fail(flag, "id %q is reserved", s)
		case err == nil:
			out = append(out, strconv.FormatUint(n, 10))
		case strings.Trim(s, "0123456789") == "":
			p.fail(flag, "id %q out of range", s)
		case resolve == nil:
			p.fail(flag, "%q is not a numeric id", s)
		default:
			id, err := resolve(s)
			if err != nil {
				p.fail(flag, "unknown name %q: %v", s, err)
				continue
			}
			out = append(out, strconv.FormatUint(uint64(id), 10))
		}
	}
	if len(out) == 0 && len(p.errs) == before {
		p.fail(flag, "at least one id is needed, got %q", v)
	}
	return dedupe(out)
}

func (p *parser) number(flag, v string, lo, hi uint64) uint64 {
	it, ok := p.items(flag, v)
	if !ok {
		return 0
	}
	if len(it) != 1 {
		p.fail(flag, "want one number, got %q", v)
		return 0
	}
	n, err := strconv.ParseUint(it[0], 10, 32)
	if err != nil || n < lo || n > hi {
		p.fail(flag, "%q is not a number in %d-%d", v, lo, hi)
		return 0
	}
	return n
}

// boolean parses true or false (any strconv.ParseBool spelling, blanks
// around it ignored); "" is false.
func (p *parser) boolean(flag, v string) bool {
	it, ok := p.items(flag, v)
	if !ok || len(it) == 0 {
		return false
	}
	b, err := strconv.ParseBool(it[0])
	if err != nil || len(it) > 1 {
		p.fail(flag, "%q is not true or false", v)
		return false
	}
	return b
}

// duration parses a positive Go duration of at most an hour; "" is def.
func (p *parser) duration(flag, v string, def time.Duration) time.Duration {
	it, ok := p.items(flag, v)
	if !ok {
		return 0
	}
	if len(it) == 0 {
		return def
	}
	d, err := time.ParseDuration(it[0])
	if err != nil || len(it) > 1 || d <= 0 || d > time.Hour {
		p.fail(flag, "%q is not a duration between 1ns and 1h (for example 5s)", v)
		return 0
	}
	return d
}

// addrs parses a list of IP addresses (no prefixes, zones, IPv4-mapped or
// unspecified addresses) split per family, without duplicates.
func (p *parser) addrs(flag, v string) map[plan.Family][]netip.Addr {
	out := map[plan.Family][]netip.Addr{}
	it, _ := p.items(flag, v)
	for _, s := range it {
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			p.fail(flag, "%q is not an IP address", s)
			continue
		case a.Zone() != "":
			p.fail(flag, "%q: addresses with a zone cannot be matched by iptables", s)
			continue
		case a.Is4In6():
			p.fail(flag, "%q: IPv4-mapped IPv6 addresses are not supported; give the IPv4 form", s)
			continue
		case a.IsUnspecified():
			p.fail(flag, "%q is not a server address", s)
			continue
		}
		f := plan.IPv4
		if a.Is6() {
			f = plan.IPv6
		}
		if !slices.Contains(out[f], a) {
			out[f] = append(out[f], a)
		}
	}
	return out
}

// ownerGroups parses --istio-outbound-owner-groups (include: "*" or ""
// for every group, else GIDs or names) and the exclude list, which only
// counts with "*" (both are checked either way). It returns the groups
// and whether they are excepted.
func (p *parser) ownerGroups(include, exclude string, resolve func(string) (uint32, error)) (groups []string, except bool) {
	const inFlag, exFlag = "--istio-outbound-owner-groups", "--istio-outbound-owner-groups-exclude"
	var exGroups []string
	switch ex, ok := p.items(exFlag, exclude); {
	case !ok || len(ex) == 0:
	case slices.Contains(ex, Wildcard):
		p.fail(exFlag, "%q: '*' is not allowed here", exclude)
	default:
		exGroups = p.ids(exFlag, exclude, resolve)
	}
	in, ok := p.items(inFlag, include)
	switch {
	case !ok:
		return nil, true
	case len(in) == 0 || len(in) == 1 && in[0] == Wildcard:
		groups, except = exGroups, true
		if len(groups) > maxOwnerGroups {
			p.fail(exFlag, "%d groups: at most %d are supported", len(groups), maxOwnerGroups)
		}
	case slices.Contains(in, Wildcard):
		p.fail(inFlag, "%q: '*' must stand alone", include)
		return nil, true
	default:
		groups = p.ids(inFlag, include, resolve)
		if len(groups) > maxOwnerGroups {
			p.fail(inFlag, "%d groups: at most %d are supported", len(groups), maxOwnerGroups)
		}
	}
	return groups, except
}

func (c Config) settings() (settings, error) {
	var p parser
	var s settings
	s.proxyPort = p.singlePort("-p", c.ProxyPort)
	s.tunnelPort = p.singlePort("-e", c.InboundTunnelPort)
	s.inboundAll, s.inboundPorts = p.ports("-b", c.InboundPortsInclude, true)
	_, s.inboundExclude = p.ports("-d", c.InboundPortsExclude, false)
	switch strings.TrimSpace(c.InboundCapturePort) {
	case "":
		// docs/contract.md §3.1: 15006 with -b '*', the -p port otherwise.
		s.inboundPort = s.proxyPort
		if s.inboundAll {
			s.inboundPort = "15006"
		}
	default:
		s.inboundPort = p.singlePort("-z", c.InboundCapturePort)
	}
	var userID, groupID func(string) (uint32, error)
	if c.Lookup != nil {
		userID, groupID = c.Lookup.UserID, c.Lookup.GroupID
	}
	// With --proxy-mark, -u '' is allowed: the mark is then the proxy's
	// only exemption.
	if strings.Trim(c.ProxyUID, " ,") != "" || strings.TrimSpace(c.ProxyMark) == "" {
		s.uids = p.ids("-u", c.ProxyUID, userID)
	}
	if strings.Trim(c.ProxyGID, " ,") == "" {
		s.gids = s.uids
	} else {
		s.gids = p.ids("-g", c.ProxyGID, groupID)
	}
	switch m := Mode(c.InboundInterceptionMode); m {
	case ModeRedirect, ModeTProxy:
		s.mode = m
	default:
		p.fail("-m", "mode %q is not REDIRECT or TPROXY", c.InboundInterceptionMode)
	}
	s.outboundAll, s.outboundCIDRs = p.cidrs("-i", c.OutboundIPRangesInclude, true)
	_, s.excludeCIDRs = p.cidrs("-x", c.OutboundIPRangesExclude, false)
	_, s.outboundPorts = p.ports("-q", c.OutboundPortsInclude, false)
	_, s.outboundExclude = p.ports("-o", c.OutboundPortsExclude, false)
	s.kubeVirt = p.ifaces("-k", c.KubeVirtInterfaces)
	s.excludeIfaces = p.ifaces("-c", c.ExcludeInterfaces)
	// The mark and mark+1 (the proxy-to-app mark) must both fit.
	s.mark = uint32(p.number("-t", c.InboundTProxyMark, 1, 0xfffffffe))
	// 253-255 are the kernel's default, main and local tables.
	if rt := p.number("-r", c.InboundTProxyRouteTable, 1, 0xffffffff); rt >= 253 && rt <= 255 {
		p.fail("-r", "table %q is reserved by the kernel (253 default, 254 main, 255 local)", c.InboundTProxyRouteTable)
	} else {
		s.routeTable = int(rt)
	}
	switch IPv6Mode(strings.ToLower(strings.TrimSpace(c.IPv6))) {
	case IPv6On:
		s.ipv6 = true
	case IPv6Off:
	case IPv6Auto:
		s.ipv6 = c.HostIPv6
	default:
		p.fail("--ipv6", "%q is not auto, true or false", c.IPv6)
	}
	s.redirectDNS = p.boolean("--redirect-dns", c.RedirectDNS)
	s.captureAllDNS = p.boolean("--capture-all-dns", c.CaptureAllDNS)
	s.dnsServers = p.addrs("--dns-servers", c.DNSServers)
	s.dropInvalid = p.boolean("--drop-invalid", c.DropInvalid)
	s.ownerGroups, s.ownerGroupsExcept = p.ownerGroups(c.OwnerGroupsInclude, c.OwnerGroupsExclude, groupID)
	s.probe.Run = p.boolean("--run-validation", c.RunValidation)
	s.probe.SkipApply = p.boolean("--skip-rule-apply", c.SkipRuleApply)
	if strings.Trim(c.ProbePort, " ,") == "" {
		c.ProbePort = DefaultProbePort
	}
	if port := p.singlePort("--iptables-probe-port", c.ProbePort); port != "" {
		n, _ := strconv.ParseUint(port, 10, 16)
		s.probe.Port = uint16(n)
	}
	s.probe.Timeout = p.duration("--probe-timeout", c.ProbeTimeout, DefaultProbeTimeout)
	for _, port := range dedupe([]string{s.proxyPort, s.inboundPort}) {
		if n, err := strconv.ParseUint(port, 10, 16); err == nil {
			s.probe.CapturePorts = append(s.probe.CapturePorts, uint16(n))
		}
	}
	s.loopback4 = p.loopbackCIDR("--istio-outbound-ipv4-loopback-cidr", c.HostIPv4LoopbackCIDR)
	for _, f := range []plan.Family{plan.IPv4, plan.IPv6} {
		for _, c := range s.outboundCIDRs[f] {
			s.loopbackInclude = s.loopbackInclude || c.Addr().IsLoopback()
		}
	}
	s.proxyMark = p.proxyMark("--proxy-mark", c.ProxyMark, s)
	return s, errors.Join(p.errs...)
}

// loopbackCIDR parses ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR as Istio checks
// it: an IPv4 prefix inside 127.0.0.0/8, /8 to /32; "" is the default.
func (p *parser) loopbackCIDR(flag, v string) string {
	it, ok := p.items(flag, v)
	switch {
	case !ok:
		return ""
	case len(it) == 0:
		return DefaultIPv4LoopbackCIDR
	case len(it) > 1:
		p.fail(flag, "want one CIDR, got %q", v)
		return ""
	}
	pfx, err := netip.ParsePrefix(it[0])
	switch {
	case err != nil || !pfx.Addr().Is4():
		p.fail(flag, "%q is not an IPv4 CIDR", it[0])
	case pfx.Bits() < 8:
		p.fail(flag, "%q: the prefix length must be 8 to 32", it[0])
	case !netip.MustParsePrefix("127.0.0.0/8").Contains(pfx.Addr()):
		p.fail(flag, "%q is not inside the loopback range 127.0.0.0/8", it[0])
	default:
		return pfx.Masked().String()
	}
	return ""
}

// proxyMark parses --proxy-mark: one number 1-0xffffffff (decimal or
// 0x hex), returned in decimal. In TPROXY mode it may not be the TPROXY
// mark (-t) or mark+1, which mean something else to the rules.
func (p *parser) proxyMark(flag, v string, s settings) string {
	it, ok := p.items(flag, v)
	if !ok || len(it) == 0 {
		return ""
	}
	n, err := strconv.ParseUint(it[0], 0, 32)
	if err != nil || len(it) > 1 || n == 0 {
		p.fail(flag, "%q is not a mark in 1-0xffffffff", v)
		return ""
	}
	if s.mode == ModeTProxy && s.mark != 0 && (n == uint64(s.mark) || n == uint64(s.mark)+1) {
		p.fail(flag, "%q is the TPROXY mark (-t) or mark+1, which the TPROXY rules use; pick another", v)
		return ""
	}
	return strconv.FormatUint(n, 10)
}

func dedupe(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func containsPrefix(list []netip.Prefix, p netip.Prefix) bool {
	for _, q := range list {
		if q == p {
			return true
		}
	}
	return false
}
