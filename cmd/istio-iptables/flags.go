package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/mesh-init/istio-iptables/capture"
)

// options is everything the command line sets.
type options struct {
	cfg          capture.Config
	dryRun       bool
	diff         bool
	cleanupOnly  bool
	netns        string
	iptablesMode string
	wait         string
	timeout      string
	native       bool
	version      bool
	help         bool
	istio        istioOptions
}

// istioOptions are the flags of Istio's `pilot-agent istio-iptables` that
// have no flag of ours with the same name (istio.go maps them).
type istioOptions struct {
	// Logging, Istio's --log_* family (pilot-agent's logging options).
	logOutputLevel, logStacktraceLevel, logCaller, logTarget          string
	logRotate, logRotateMaxAge, logRotateMaxSize, logRotateMaxBackups string
	logAsJSON                                                         bool
	// --iptables-version nft|legacy (Istio's ForceIptablesBinary) and the
	// older --force-legacy-iptables: pick the backend as --iptables-mode.
	iptablesVersion string
	forceLegacy     bool
	// No-ops: ours already does what they ask for (see istioNoops).
	dualStack, reconcile, forceApply, cniMode, restoreFormat, nsenterExec bool
	// --iptables-trace-logging (older Istio: LOG rules): not supported.
	traceLogging bool
}

// flagDef ties a flag to its environment variable. Every flag but --help
// and --version can come from its variable (those with env ""; Istio's
// --log_* flags have none); the command line wins over the variable, and
// the variable over its aliases.
type flagDef struct {
	long, short, env, usage string
	str                     *string
	boolean                 *bool
	// istio marks the flags of Istio's command that are not ours (usage
	// lists them apart).
	istio bool
	// envAliases are other variables read when env is not set: the names
	// Istio's injector sets through ProxyMetadata (ISTIO_META_DNS_CAPTURE).
	envAliases []string
	// aliasOf names the flag this one is another spelling of
	// (--network-namespace for --netns): it sets the same value, and its
	// variable is the other flag's.
	aliasOf string
}

func newFlags(o *options) (*pflag.FlagSet, []flagDef) {
	o.istio = defaultIstioOptions()
	c := &o.cfg
	defs := []flagDef{
		fd("envoy-port", "p", "ENVOY_PORT", "outbound capture port (ISTIO_REDIRECT)", &c.ProxyPort, nil),
		fd("inbound-capture-port", "z", "INBOUND_CAPTURE_PORT", "inbound capture port (ISTIO_IN_REDIRECT, TPROXY on-port); empty: 15006 with -b '*', else the -p port", &c.InboundCapturePort, nil),
		fd("inbound-tunnel-port", "e", "INBOUND_TUNNEL_PORT", "tunnel port, never captured inbound", &c.InboundTunnelPort, nil),
		fd("proxy-uid", "u", "PROXY_UID", "comma list of UIDs (or user names) never captured; default: uid of $ENVOY_USER (istio-proxy) if it exists, else 1337, never 0. Names (here, in -g and the owner-group flags) are resolved in the pod's /etc/passwd and /etc/group: /proc/PID/root/etc/... with --netns /proc/PID/ns/net, this system's without --netns; with another --netns only numbers are accepted", &c.ProxyUID, nil),
		fd("proxy-gid", "g", "PROXY_GID", "comma list of GIDs (or group names) never captured; empty: the -u UIDs", &c.ProxyGID, nil),
		fd("istio-inbound-interception-mode", "m", "ISTIO_INBOUND_INTERCEPTION_MODE", "inbound mode: REDIRECT or TPROXY", &c.InboundInterceptionMode, nil),
		fd("istio-inbound-ports", "b", "ISTIO_INBOUND_PORTS", "inbound ports to capture; '*' all; empty: none", &c.InboundPortsInclude, nil),
		fd("istio-local-exclude-ports", "d", "ISTIO_LOCAL_EXCLUDE_PORTS", "inbound ports not captured (with -b '*')", &c.InboundPortsExclude, nil),
		fd("istio-service-cidr", "i", "ISTIO_SERVICE_CIDR", "outbound CIDRs to capture; '*' all; empty: none", &c.OutboundIPRangesInclude, nil),
		fd("istio-service-exclude-cidr", "x", "ISTIO_SERVICE_EXCLUDE_CIDR", "outbound CIDRs never captured", &c.OutboundIPRangesExclude, nil),
		fd("istio-outbound-ports", "q", "ISTIO_OUTBOUND_PORTS", "outbound ports always captured", &c.OutboundPortsInclude, nil),
		fd("istio-local-outbound-ports-exclude", "o", "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", "outbound ports never captured (tcp and udp)", &c.OutboundPortsExclude, nil),
		fd("kube-virt-interfaces", "k", "KUBE_VIRT_INTERFACES", "interfaces whose inbound traffic is treated as outbound", &c.KubeVirtInterfaces, nil),
		fd("istio-exclude-interfaces", "c", "ISTIO_EXCLUDE_INTERFACES", "interfaces whose traffic is never captured", &c.ExcludeInterfaces, nil),
		fd("istio-inbound-tproxy-mark", "t", "ISTIO_INBOUND_TPROXY_MARK", "TPROXY fwmark", &c.InboundTProxyMark, nil),
		fd("istio-inbound-tproxy-route-table", "r", "ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "TPROXY routing table", &c.InboundTProxyRouteTable, nil),
		fd("dry-run", "n", "DRY_RUN", "print the plan, touch nothing", nil, &o.dryRun),
		fd("diff", "", "DRY_RUN_DIFF", "with --dry-run: read the namespace (the current one or --netns; needs NET_ADMIN there) and print the transaction the run would commit, step by step, or that there is nothing to do; nothing is changed", nil, &o.diff),
		fd("netns", "", "NETWORK_NAMESPACE", "path of the network namespace to program (/var/run/netns/x, /proc/PID/ns/net); empty: the current one", &o.netns, nil),
		fd("ipv6", "", "ISTIO_IPV6", "IPv6 rules: auto (when the namespace has a global IPv6 address), true or false", &c.IPv6, nil),
		fd("iptables-mode", "", "IPTABLES_MODE", "iptables backend: auto, nft or legacy", &o.iptablesMode, nil),
		fd("cleanup-only", "", "CLEANUP_ONLY", "remove everything this tool writes, write nothing (also: positional 'clean')", nil, &o.cleanupOnly),
		fd("wait", "", "IPTABLES_WAIT", "seconds to wait for the xtables lock (legacy iptables) before giving up with exit 1; 1-3600", &o.wait, nil),
		fd("timeout", "", "ISTIO_IPTABLES_TIMEOUT", "the whole run's deadline, a Go duration (default: --wait plus 10s); a process still running then is killed and the run says what it left", &o.timeout, nil),
		fd("native-nftables", "", "NATIVE_NFTABLES", "write the rules as one nftables inet table over netlink, no iptables binary (with --dry-run: print the nft -f text)", nil, &o.native),
		fd("redirect-dns", "", "REDIRECT_DNS", "send the app's DNS (udp and tcp port 53) to the agent's DNS proxy on 15053", &c.RedirectDNS, nil),
		fd("capture-all-dns", "", "CAPTURE_ALL_DNS", "with --redirect-dns: capture DNS to every server, not only to --dns-servers", &c.CaptureAllDNS, nil),
		fd("dns-servers", "", "DNS_SERVERS", "with --redirect-dns: comma list of DNS server addresses to capture (IPv4 and IPv6); when not given: the nameservers of the namespace's resolv.conf", &c.DNSServers, nil),
		fd("drop-invalid", "", "DROP_INVALID", "drop inbound packets conntrack finds INVALID (mangle ISTIO_DROP)", &c.DropInvalid, nil),
		fd("istio-outbound-owner-groups", "", "ISTIO_OUTBOUND_OWNER_GROUPS", "comma list of GIDs (or group names) whose outbound traffic is captured; '*' all", &c.OwnerGroupsInclude, nil),
		fd("istio-outbound-owner-groups-exclude", "", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "comma list of GIDs (or group names) whose outbound traffic is not captured (with --istio-outbound-owner-groups '*')", &c.OwnerGroupsExclude, nil),
		fd("run-validation", "", "RUN_VALIDATION", "after applying, prove that interception works; must run as the proxy UID; exit 126 when it does not", &c.RunValidation, nil),
		fd("skip-rule-apply", "", "SKIP_RULE_APPLY", "write no rule (with --run-validation: only validate)", &c.SkipRuleApply, nil),
		fd("iptables-probe-port", "", "IPTABLES_PROBE_PORT", "original destination port of the validation probe (nothing may listen on it)", &c.ProbePort, nil),
		fd("probe-timeout", "", "PROBE_TIMEOUT", "how long the validation may take (a Go duration)", &c.ProbeTimeout, nil),
		{long: "istio-outbound-ipv4-loopback-cidr", env: "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", str: &c.HostIPv4LoopbackCIDR,
			usage: "IPv4 loopback range the app uses to reach itself: not captured, not sent to the inbound listener (Istio's variable; within 127.0.0.0/8)"},
		{long: "proxy-mark", env: "PROXY_MARK", str: &c.ProxyMark,
			usage: "socket mark (SO_MARK) the proxy sets: marked traffic is never captured, like -u/-g (with -u '': the only exemption)"},
	}
	defs = append(defs, istioDefs(o)...)
	for i := range defs {
		switch defs[i].long {
		case "redirect-dns":
			defs[i].envAliases = []string{"ISTIO_META_DNS_CAPTURE"}
		case "drop-invalid":
			defs[i].envAliases = []string{"INVALID_DROP"}
		case "istio-inbound-interception-mode":
			defs[i].envAliases = []string{"INBOUND_INTERCEPTION_MODE"}
		case "istio-inbound-tproxy-mark":
			defs[i].envAliases = []string{"INBOUND_TPROXY_MARK"}
		}
	}
	fs := pflag.NewFlagSet("istio-iptables", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	for _, d := range defs {
		if d.str != nil {
			fs.StringVarP(d.str, d.long, d.short, *d.str, d.usage)
		} else {
			fs.BoolVarP(d.boolean, d.long, d.short, *d.boolean, d.usage)
		}
	}
	// Switches held as strings in capture.Config (which checks them): a
	// bare --redirect-dns means true, as with the bool flags.
	for _, name := range []string{"redirect-dns", "capture-all-dns", "drop-invalid", "run-validation", "skip-rule-apply"} {
		fs.Lookup(name).NoOptDefVal = "true"
	}
	fs.BoolVarP(&o.help, "help", "h", false, "print this help")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs, defs
}

// fd is a flagDef of ours: long, short, variable, usage and the value.
func fd(long, short, env, usage string, str *string, boolean *bool) flagDef {
	return flagDef{long: long, short: short, env: env, usage: usage, str: str, boolean: boolean}
}

// flagName is how errors name a flag: its short form when it has one.
func (d flagDef) flagName() string {
	if d.short != "" {
		return "-" + d.short
	}
	return "--" + d.long
}

// applyEnv sets every flag not given on the command line from its
// variable, when that is set and not empty.
func applyEnv(fs *pflag.FlagSet, defs []flagDef, getenv func(string) (string, bool)) (fromEnv map[string]string, errs []string) {
	fromEnv = map[string]string{}
	for _, d := range defs {
		if d.aliasOf != "" || d.env == "" || changed(fs, defs, d.long) {
			continue
		}
		env, v := "", ""
		for _, name := range append([]string{d.env}, d.envAliases...) {
			if x, ok := getenv(name); ok && x != "" {
				env, v = name, x
				break
			}
		}
		if env == "" {
			continue
		}
		if d.boolean != nil {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s (from %s): %q is not true or false", d.flagName(), env, v))
				continue
			}
			*d.boolean = b
		} else {
			*d.str = v
		}
		fromEnv[d.flagName()] = env
	}
	return fromEnv, errs
}

// changed reports whether the flag long, or a flag that is another
// spelling of it, was given on the command line.
func changed(fs *pflag.FlagSet, defs []flagDef, long string) bool {
	if fs.Changed(long) {
		return true
	}
	for _, d := range defs {
		if d.aliasOf == long && fs.Changed(d.long) {
			return true
		}
	}
	return false
}

func usage(w io.Writer, defs []flagDef, fs *pflag.FlagSet) {
	fmt.Fprint(w, `Usage: istio-iptables [istio-iptables] [flags] [clean]
       istio-iptables explain [flags] --direction inbound|outbound --dst IP:PORT ...
                 (is this connection captured, and by which rule? touches nothing;
                  see 'istio-iptables explain --help')

Writes the netfilter rules that send a pod's TCP traffic through the proxy
(outbound to -p, inbound to -z) in one iptables-restore transaction per
family. Every flag can also be set by its environment variable; the
command line wins. A leading 'istio-iptables' (Istio's pilot-agent
subcommand, as its injector passes it) is accepted and ignored, and so is
every flag of Istio's command (the last group below).

`)
	istio := false
	for _, d := range defs {
		if d.istio && !istio {
			istio = true
			fmt.Fprint(w, "\nIstio's flags (pilot-agent istio-iptables), accepted with Istio's meaning:\n")
		}
		name := "      --" + d.long
		if d.short != "" {
			name = "  -" + d.short + ", --" + d.long
		}
		def := "false"
		if d.str != nil {
			if def = fs.Lookup(d.long).DefValue; def == "" {
				def = `""`
			}
		}
		env := ""
		switch {
		case d.aliasOf != "":
			env = "$" + defEnv(defs, d.aliasOf) + ", "
		case d.env != "":
			env = "$" + strings.Join(append([]string{d.env}, d.envAliases...), " or $") + ", "
		}
		fmt.Fprintf(w, "%s\n        %s [%sdefault %s]\n", name, d.usage, env, def)
	}
	fmt.Fprint(w, `  -h, --help
        print this help
      --version
        print the version and exit

Exit codes: 0 done; 1 the kernel refused (the earlier state is intact); 2 bad usage;
126 the validation failed (--run-validation).
`)
}
