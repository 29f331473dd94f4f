package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/explain"
	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// explainOptions are the flags explain adds to those of an apply.
type explainOptions struct {
	direction, dst, src, proto, uid, gid, iface, output string
	local, fromNetns, fromSave, mark                    string
}

// runExplain is `istio-iptables explain [capture flags] --direction ...
// --dst IP:PORT ...`: it builds the plan from the same flags as an apply
// (or reads the rules of a namespace or a save file) and prints where the
// connection goes. Exit codes: 0 explained, whatever the verdict; 1 the
// namespace or the save file could not be read; 2 bad usage.
func runExplain(args []string, getenv func(string) (string, bool), stdout, stderr io.Writer) int {
	o := options{cfg: capture.DefaultConfig(), iptablesMode: string(iptables.BackendAuto), wait: "30"}
	fs, defs := newFlags(&o)
	var e explainOptions
	fs.StringVar(&e.direction, "direction", "", "inbound or outbound (required)")
	fs.StringVar(&e.dst, "dst", "", "destination IP:PORT ([IPv6]:PORT) (required)")
	fs.StringVar(&e.src, "src", "", "source IP or IP:PORT; outbound over lo the kernel's choice, otherwise unknown")
	fs.StringVar(&e.proto, "proto", "tcp", "tcp or udp")
	fs.StringVar(&e.uid, "uid", "", "outbound: UID (or user name) of the connecting process")
	fs.StringVar(&e.gid, "gid", "", "outbound: GID (or group name) of the connecting process; default: the --uid value")
	fs.StringVar(&e.iface, "iface", "", "inbound: the interface it arrives on; outbound: the interface it leaves by when the destination is not local (default eth0)")
	fs.StringVar(&e.output, "output", "text", "text or json")
	fs.StringVar(&e.mark, "mark", "", "outbound: the socket's SO_MARK (as a proxy told apart by --proxy-mark sets it); decimal or 0x hex")
	fs.StringVar(&e.local, "local", "", "comma list of the pod's own IPs (outbound to them goes over lo)")
	fs.StringVar(&e.fromNetns, "from-netns", "", "explain against the rules and addresses really in this network namespace (read with *-save)")
	fs.StringVar(&e.fromSave, "from-save", "", "explain against this iptables-save (or ip6tables-save) output")
	usageErr := func(msgs ...string) int {
		for _, m := range msgs {
			fmt.Fprintf(stderr, "istio-iptables explain: %s\n", oneLine(m))
		}
		fmt.Fprintln(stderr, "Run 'istio-iptables explain --help' for usage.")
		return exitUsage
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(flagError(err, fs))
	}
	if o.help {
		explainUsage(stdout)
		return exitOK
	}
	uidGiven := fs.Changed("proxy-uid")
	fromEnv, errs := applyEnv(fs, defs, getenv)
	fromRules := e.fromNetns != "" || e.fromSave != ""
	users, usersWhere := userDatabase(o.netns) // the pod's, with --netns (identity.go)
	if _, ok := fromEnv["-u"]; !uidGiven && !ok && !fromRules {
		if uid, err := defaultProxyUID(getenv, users, usersWhere); err != nil {
			errs = append(errs, err.Error())
		} else {
			o.cfg.ProxyUID = uid
		}
	}
	if len(fs.Args()) > 0 {
		errs = append(errs, fmt.Sprintf("unexpected argument %q", strings.Join(fs.Args(), " ")))
	}
	p, perrs := e.packet()
	errs = append(errs, perrs...)
	switch {
	case e.fromNetns != "" && e.fromSave != "":
		errs = append(errs, "--from-netns and --from-save exclude each other")
	case !fromRules:
		fillDNSServers(&o, fs, fromEnv)
		o.cfg.Lookup = users
		if err := o.cfg.Validate(); err != nil {
			for _, e := range unjoin(err) {
				errs = append(errs, withEnv(e, fromEnv))
			}
		}
		if o.netns != "" {
			if err := iptables.CheckNetns(o.netns); err != nil {
				errs = append(errs, withEnv(&capture.FieldError{Flag: "--netns", Msg: err.Error()}, fromEnv))
			}
		}
	}
	if len(errs) > 0 {
		return usageErr(errs...)
	}

	var rules *explain.Rules
	switch {
	case e.fromSave != "":
		text, err := os.ReadFile(e.fromSave)
		if err != nil {
			fmt.Fprintf(stderr, "istio-iptables explain: read --from-save: %v\n", err)
			return exitFailed
		}
		if rules, err = savedRules(p.Family(), string(text)); err != nil {
			fmt.Fprintf(stderr, "istio-iptables explain: --from-save %s: %v\n", e.fromSave, err)
			return exitFailed
		}
	case e.fromNetns != "":
		err := iptables.CheckNetns(e.fromNetns)
		var text string
		var hidden []string
		if err == nil {
			text, hidden, err = iptables.ReadRules(e.fromNetns, p.Family())
		}
		if err == nil {
			rules, err = savedRules(p.Family(), text)
		}
		if err == nil {
			rules.Hidden = hidden
		}
		var local []netip.Addr
		if err == nil {
			local, err = iptables.LocalAddrs(e.fromNetns)
		}
		if err != nil {
			fmt.Fprintf(stderr, "istio-iptables explain: --from-netns %s: %v\n", e.fromNetns, err)
			return exitFailed
		}
		p.Local = append(p.Local, local...)
	default:
		if capture.IPv6Mode(strings.ToLower(strings.TrimSpace(o.cfg.IPv6))) == capture.IPv6Auto {
			// As the apply would decide in --netns; without it, a pod
			// asked about an IPv6 destination is taken to have IPv6.
			o.cfg.HostIPv6 = p.Family() == plan.IPv6
			if o.netns != "" {
				has, err := iptables.HasGlobalIPv6(o.netns)
				if err != nil {
					fmt.Fprintf(stderr, "istio-iptables explain: --netns %s: %v\n", o.netns, err)
					return exitFailed
				}
				o.cfg.HostIPv6 = has
			}
		}
		built, err := capture.Build(o.cfg)
		if err != nil {
			fmt.Fprintf(stderr, "istio-iptables explain: build the plan: %v\n", err)
			return exitFailed
		}
		if rs, ok := built.RuleSet(p.Family()); ok {
			rules = explain.FromRuleSet(rs)
		}
		for _, a := range built.Addrs {
			p.Local = append(p.Local, a.Prefix.Addr())
		}
	}
	res := explain.Explain(rules, p)
	if e.output == "json" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "istio-iptables explain: %v\n", err)
			return exitFailed
		}
		fmt.Fprintln(stdout, string(b))
		return exitOK
	}
	fmt.Fprint(stdout, res.Text(p))
	return exitOK
}

func savedRules(f plan.Family, text string) (*explain.Rules, error) {
	s, err := plan.ParseSave(text)
	if err != nil {
		return nil, err
	}
	return explain.FromSaved(f, s), nil
}

// packet checks the explain flags and returns the packet they describe.
func (e explainOptions) packet() (explain.Packet, []string) {
	var errs []string
	var p explain.Packet
	switch d := explain.Direction(e.direction); d {
	case explain.Inbound, explain.Outbound:
		p.Direction = d
	case "":
		errs = append(errs, "--direction is required: inbound or outbound")
	default:
		errs = append(errs, fmt.Sprintf("--direction: %q is not inbound or outbound", e.direction))
	}
	switch {
	case e.dst == "":
		errs = append(errs, "--dst is required: IP:PORT")
	default:
		ap, err := netip.ParseAddrPort(e.dst)
		if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			errs = append(errs, fmt.Sprintf("--dst: %q is not IP:PORT ([IPv6]:PORT, port 1-65535)", e.dst))
		}
		p.Dst = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if e.src != "" {
		if ap, err := netip.ParseAddrPort(e.src); err == nil {
			p.Src, p.SrcPort = ap.Addr().Unmap(), ap.Port()
		} else if a, err := netip.ParseAddr(e.src); err == nil && a.Zone() == "" {
			p.Src = a.Unmap()
		} else {
			errs = append(errs, fmt.Sprintf("--src: %q is not IP or IP:PORT", e.src))
		}
		if p.Src.IsValid() && p.Dst.IsValid() && p.Src.Is4() != p.Dst.Addr().Is4() {
			errs = append(errs, fmt.Sprintf("--src %s and --dst %s are not of one family", e.src, e.dst))
		}
	}
	switch e.proto {
	case "tcp", "udp":
		p.Proto = e.proto
	default:
		errs = append(errs, fmt.Sprintf("--proto: %q is not tcp or udp", e.proto))
	}
	id := func(flag, v string, lookup func(string) (uint32, error)) *uint32 {
		if v == "" {
			return nil
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			id, lerr := lookup(v)
			if lerr != nil {
				errs = append(errs, fmt.Sprintf("%s: %q is not a number or a known name", flag, v))
				return nil
			}
			n = uint64(id)
		}
		u := uint32(n)
		return &u
	}
	p.UID = id("--uid", e.uid, osLookup{}.UserID)
	p.GID = id("--gid", e.gid, osLookup{}.GroupID)
	if p.GID == nil && e.gid == "" {
		p.GID = p.UID
	}
	if p.Direction == explain.Inbound && (e.uid != "" || e.gid != "") {
		errs = append(errs, "--uid and --gid are for outbound connections: inbound packets have no owner")
	}
	if e.mark != "" {
		n, err := strconv.ParseUint(strings.TrimSpace(e.mark), 0, 32)
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("--mark: %q is not a mark in 0-0xffffffff", e.mark))
		case p.Direction == explain.Inbound:
			errs = append(errs, "--mark is for outbound connections: it is the connecting socket's SO_MARK")
		default:
			p.Mark = uint32(n)
		}
	}
	switch {
	case e.iface == "lo" && p.Direction == explain.Outbound:
		// The connection leaves over lo: the pod talking to itself, so its
		// destination is one of the pod's own addresses.
		if p.Dst.IsValid() {
			p.Local = append(p.Local, p.Dst.Addr().Unmap())
		}
	case e.iface == "lo":
		errs = append(errs, "--iface lo: an inbound connection over lo is the pod calling itself; "+
			"ask it as --direction outbound --iface lo (with the caller's --uid)")
	case e.iface != "":
		if strings.ContainsAny(e.iface, " /:+!") || len(e.iface) > 15 {
			errs = append(errs, fmt.Sprintf("--iface: %q is not an interface name (at most 15 bytes, none of ' /:+!')", e.iface))
		}
		p.Iface = e.iface
	}
	for _, s := range strings.Split(e.local, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, fmt.Sprintf("--local: %q is not an IP address", s))
			continue
		}
		p.Local = append(p.Local, a.Unmap())
	}
	if e.output != "text" && e.output != "json" {
		errs = append(errs, fmt.Sprintf("--output: %q is not text or json", e.output))
	}
	return p, errs
}

func explainUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: istio-iptables explain [capture flags] --direction inbound|outbound --dst IP:PORT [flags]

Says where a new connection goes through the rules the capture flags would
write (or, with --from-netns or --from-save, the rules really there): the
verdict (redirect, tproxy, direct, drop or unknown), the port, and the
rules that decided it. The capture flags are those of an apply (see
'istio-iptables --help'), environment variables included.

  --direction   inbound or outbound (required)
  --dst         destination IP:PORT, [IPv6]:PORT (required)
  --src         source IP or IP:PORT (default: the kernel's choice over lo, else unknown)
  --proto       tcp (default) or udp
  --uid, --gid  outbound: the connecting process's UID and GID (numbers or names; --gid defaults to --uid)
  --iface       the interface it arrives on (inbound) or leaves by (outbound); default eth0;
                outbound lo: the pod talking to itself (the destination is taken as local)
  --local       comma list of the pod's own IPs: outbound to them goes over lo
  --mark        outbound: the socket's SO_MARK (decimal or 0x hex), for --proxy-mark
  --output      text (default) or json
  --from-netns  PATH: the rules (*-save) and addresses of that network namespace
  --from-save   FILE: iptables-save or ip6tables-save output, of the destination's family

Exit codes: 0 explained (any verdict); 1 the namespace or the file could not be read; 2 bad usage.
`)
}
