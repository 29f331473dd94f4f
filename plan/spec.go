package plan

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Spec is a rule's arguments parsed into parts and put in the normal form
// iptables-save prints: `-s -d -i -o -p`, then the matches in order (the
// implicit `-m tcp`/`-m udp` made explicit), then the target with its
// options spelled out (`--set-mark 1338` becomes
// `--set-xmark 0x53a/0xffffffff`). Two argument lists that the kernel
// stores alike parse to equal Specs, whether they were written by this
// tool or read back from `*-save`. Only the vocabulary this tool writes is
// understood; anything else is an error, never a guess.
type Spec struct {
	Src, Dst   AddrMatch
	In, Out    NameMatch
	Proto      NameMatch
	Matches    []Match
	Jump       string
	Goto       bool
	TargetOpts []Opt
}

// AddrMatch is `[!] -s|-d PREFIX`; the zero value matches any address.
type AddrMatch struct {
	Neg    bool
	Prefix netip.Prefix
}

// NameMatch is `[!] -i|-o|-p NAME`; the zero value matches anything.
type NameMatch struct {
	Neg  bool
	Name string
}

// Match is one `-m NAME` with its options.
type Match struct {
	Name string
	Opts []Opt
}

// Opt is one `[!] --name [value]` option of a match or a target.
type Opt struct {
	Neg   bool
	Name  string
	Value string
}

// Opt returns the first option called name of the match.
func (m Match) Opt(name string) (Opt, bool) {
	for _, o := range m.Opts {
		if o.Name == name {
			return o, true
		}
	}
	return Opt{}, false
}

// matchOptions lists, per match, the options understood and their aliases.
var matchOptions = map[string]map[string]string{
	"tcp":       {"--dport": "--dport", "--destination-port": "--dport", "--sport": "--sport", "--source-port": "--sport"},
	"udp":       {"--dport": "--dport", "--destination-port": "--dport", "--sport": "--sport", "--source-port": "--sport"},
	"multiport": {"--dports": "--dports", "--destination-ports": "--dports", "--sports": "--sports", "--source-ports": "--sports", "--ports": "--ports"},
	"owner":     {"--uid-owner": "--uid-owner", "--gid-owner": "--gid-owner"},
	"mark":      {"--mark": "--mark"},
	"connmark":  {"--mark": "--mark"},
	"conntrack": {"--ctstate": "--ctstate"},
	"comment":   {"--comment": "--comment"},
}

// ParseSpec parses a rule's arguments (after `-A CHAIN`) written for family f.
func ParseSpec(f Family, args []string) (Spec, error) {
	var s Spec
	neg := false
	var cur *Match
	value := func(i int) (string, error) {
		if i+1 >= len(args) {
			return "", fmt.Errorf("option %s needs a value", args[i])
		}
		return args[i+1], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "!" {
			if neg {
				return Spec{}, errors.New(`two "!" in a row`)
			}
			neg = true
			continue
		}
		switch a {
		case "-s", "--source", "-d", "--destination":
			v, err := value(i)
			if err != nil {
				return Spec{}, err
			}
			p, err := parsePrefix(f, v)
			if err != nil {
				return Spec{}, err
			}
			m := AddrMatch{Neg: neg, Prefix: p}
			if a == "-s" || a == "--source" {
				s.Src = m
			} else {
				s.Dst = m
			}
			i++
		case "-i", "--in-interface", "-o", "--out-interface", "-p", "--protocol":
			v, err := value(i)
			if err != nil {
				return Spec{}, err
			}
			m := NameMatch{Neg: neg, Name: v}
			switch a {
			case "-i", "--in-interface":
				s.In = m
			case "-o", "--out-interface":
				s.Out = m
			default:
				m.Name = strings.ToLower(v)
				s.Proto = m
			}
			i++
		case "-m", "--match":
			if neg {
				return Spec{}, errors.New(`"!" before -m`)
			}
			v, err := value(i)
			if err != nil {
				return Spec{}, err
			}
			if _, ok := matchOptions[v]; !ok {
				return Spec{}, fmt.Errorf("unsupported match %q", v)
			}
			s.Matches = append(s.Matches, Match{Name: v})
			cur = &s.Matches[len(s.Matches)-1]
			i++
		case "-j", "--jump", "-g", "--goto":
			if neg {
				return Spec{}, errors.New(`"!" before -j`)
			}
			v, err := value(i)
			if err != nil {
				return Spec{}, err
			}
			s.Jump = v
			s.Goto = a == "-g" || a == "--goto"
			opts, err := parseTarget(f, v, args[i+2:])
			if err != nil {
				return Spec{}, fmt.Errorf("target %s: %w", v, err)
			}
			s.TargetOpts = opts
			return s, nil
		default:
			if !strings.HasPrefix(a, "--") {
				return Spec{}, fmt.Errorf("unsupported argument %q", a)
			}
			// An option belongs to the latest match that knows it; tcp and
			// udp options with no such match load the protocol's match, as
			// iptables does.
			if cur == nil || matchOptions[cur.Name][a] == "" {
				p := s.Proto.Name
				if (p != "tcp" && p != "udp") || matchOptions[p][a] == "" {
					return Spec{}, fmt.Errorf("unsupported option %q", a)
				}
				s.Matches = append(s.Matches, Match{Name: p})
				cur = &s.Matches[len(s.Matches)-1]
			}
			v, err := value(i)
			if err != nil {
				return Spec{}, err
			}
			nv, err := normalizeMatchValue(cur.Name, matchOptions[cur.Name][a], v)
			if err != nil {
				return Spec{}, fmt.Errorf("%s %s: %w", a, v, err)
			}
			cur.Opts = append(cur.Opts, Opt{Neg: neg, Name: matchOptions[cur.Name][a], Value: nv})
			i++
		}
		neg = false
	}
	if neg {
		return Spec{}, errors.New(`dangling "!"`)
	}
	return Spec{}, errors.New("no target")
}

func parsePrefix(f Family, v string) (netip.Prefix, error) {
	var p netip.Prefix
	var err error
	if strings.Contains(v, "/") {
		p, err = netip.ParsePrefix(v)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(v)
		if err == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		return netip.Prefix{}, err
	}
	if (f == IPv4) != p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("address %s is not %s", v, f)
	}
	return p.Masked(), nil
}

// ctStates is the order in which iptables-save prints conntrack states.
var ctStates = []string{"INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"}

func normalizeMatchValue(match, opt, v string) (string, error) {
	switch {
	case match == "mark" || match == "connmark":
		return markValue(v, false)
	case match == "conntrack":
		states := strings.Split(strings.ToUpper(v), ",")
		for _, st := range states {
			if !slices.Contains(ctStates, st) {
				return "", fmt.Errorf("unknown state %q", st)
			}
		}
		var out []string
		for _, st := range ctStates {
			if slices.Contains(states, st) {
				out = append(out, st)
			}
		}
		return strings.Join(out, ","), nil
	case match == "tcp" || match == "udp" || match == "multiport":
		var out []string
		for _, part := range strings.Split(v, ",") {
			var ends []string
			for _, e := range strings.SplitN(part, ":", 2) {
				n, err := strconv.ParseUint(e, 10, 16)
				if err != nil {
					return "", fmt.Errorf("bad port %q", e)
				}
				ends = append(ends, strconv.FormatUint(n, 10))
			}
			out = append(out, strings.Join(ends, ":"))
		}
		return strings.Join(out, ","), nil
	case match == "owner":
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return "", fmt.Errorf("not a numeric id")
		}
		return strconv.FormatUint(n, 10), nil
	}
	return v, nil
}

// markValue parses `VALUE[/MASK]` (decimal or 0x hex) and prints it as
// iptables-save does: hex, the mask only when it is not all ones (or always,
// with fullMask).
func markValue(v string, fullMask bool) (string, error) {
	val, mask, hasMask := strings.Cut(v, "/")
	n, err := strconv.ParseUint(val, 0, 32)
	if err != nil {
		return "", fmt.Errorf("bad mark %q", v)
	}
	m := uint64(0xffffffff)
	if hasMask {
		if m, err = strconv.ParseUint(mask, 0, 32); err != nil {
			return "", fmt.Errorf("bad mask %q", v)
		}
	}
	if m == 0xffffffff && !fullMask {
		return fmt.Sprintf("0x%x", n), nil
	}
	return fmt.Sprintf("0x%x/0x%x", n, m), nil
}

// parseTarget normalizes a target's options to the form iptables-save prints.
func parseTarget(f Family, target string, args []string) ([]Opt, error) {
	opts := map[string]string{}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "--") {
			return nil, fmt.Errorf("unsupported argument %q", args[i])
		}
		switch args[i] {
		case "--save-mark", "--restore-mark":
			opts[args[i]] = ""
			continue
		}
		if i+1 >= len(args) || args[i+1] == "" {
			return nil, fmt.Errorf("option %s needs a value", args[i])
		}
		opts[args[i]] = args[i+1]
		i++
	}
	take := func(names ...string) error {
		for k := range opts {
			if !slices.Contains(names, k) {
				return fmt.Errorf("unsupported option %s", k)
			}
		}
		return nil
	}
	switch target {
	case "REDIRECT":
		if err := take("--to-ports"); err != nil {
			return nil, err
		}
		if p, ok := opts["--to-ports"]; ok {
			return []Opt{{Name: "--to-ports", Value: p}}, nil
		}
		return nil, nil
	case "TPROXY":
		if err := take("--on-port", "--on-ip", "--tproxy-mark"); err != nil {
			return nil, err
		}
		if opts["--on-port"] == "" {
			return nil, errors.New("--on-port is required")
		}
		ip := opts["--on-ip"]
		if ip == "" {
			ip = map[Family]string{IPv4: "0.0.0.0", IPv6: "::"}[f]
		}
		mark := opts["--tproxy-mark"]
		if mark == "" {
			mark = "0/0"
		}
		mv, err := markValue(mark, true)
		if err != nil {
			return nil, err
		}
		return []Opt{{Name: "--on-port", Value: opts["--on-port"]}, {Name: "--on-ip", Value: ip}, {Name: "--tproxy-mark", Value: mv}}, nil
	case "MARK":
		if err := take("--set-mark", "--set-xmark"); err != nil {
			return nil, err
		}
		v, ok := opts["--set-xmark"]
		if !ok {
			v = opts["--set-mark"]
		}
		mv, err := markValue(v, true)
		if err != nil {
			return nil, err
		}
		return []Opt{{Name: "--set-xmark", Value: mv}}, nil
	case "CONNMARK":
		if err := take("--save-mark", "--restore-mark", "--nfmask", "--ctmask"); err != nil {
			return nil, err
		}
		verb := "--save-mark"
		if _, ok := opts["--restore-mark"]; ok {
			verb = "--restore-mark"
		}
		out := []Opt{{Name: verb}}
		for _, k := range []string{"--nfmask", "--ctmask"} {
			v := opts[k]
			if v == "" {
				v = "0xffffffff"
			}
			n, err := strconv.ParseUint(v, 0, 32)
			if err != nil {
				return nil, fmt.Errorf("bad mask %q", v)
			}
			out = append(out, Opt{Name: k, Value: fmt.Sprintf("0x%x", n)})
		}
		return out, nil
	case "CT":
		if err := take("--zone"); err != nil {
			return nil, err
		}
		if opts["--zone"] == "" {
			return nil, errors.New("--zone is required")
		}
		return []Opt{{Name: "--zone", Value: opts["--zone"]}}, nil
	default:
		if err := take(); err != nil {
			return nil, err
		}
		return nil, nil
	}
}

// Args renders the spec as the argument list iptables-save prints.
func (s Spec) Args() []string {
	var out []string
	neg := func(n bool) {
		if n {
			out = append(out, "!")
		}
	}
	if s.Src.Prefix.IsValid() {
		neg(s.Src.Neg)
		out = append(out, "-s", s.Src.Prefix.String())
	}
	if s.Dst.Prefix.IsValid() {
		neg(s.Dst.Neg)
		out = append(out, "-d", s.Dst.Prefix.String())
	}
	for _, nm := range []struct {
		flag string
		m    NameMatch
	}{{"-i", s.In}, {"-o", s.Out}, {"-p", s.Proto}} {
		if nm.m.Name != "" {
			neg(nm.m.Neg)
			out = append(out, nm.flag, nm.m.Name)
		}
	}
	for _, m := range s.Matches {
		out = append(out, "-m", m.Name)
		for _, o := range m.Opts {
			neg(o.Neg)
			out = append(out, o.Name, o.Value)
		}
	}
	if s.Goto {
		out = append(out, "-g", s.Jump)
	} else {
		out = append(out, "-j", s.Jump)
	}
	for _, o := range s.TargetOpts {
		out = append(out, o.Name)
		if o.Value != "" {
			out = append(out, o.Value)
		}
	}
	return out
}

// String renders the spec as iptables-save prints it after `-A CHAIN`.
func (s Spec) String() string {
	args := s.Args()
	for i, a := range args {
		args[i] = quote(a)
	}
	return strings.Join(args, " ")
}

// Canonical returns the iptables-save form of a rule's arguments.
func Canonical(f Family, args []string) (string, error) {
	s, err := ParseSpec(f, args)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", strings.Join(args, " "), err)
	}
	return s.String(), nil
}
