package explain

import (
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"
)

// String describes the packet in one line:
// "outbound tcp 10.0.0.5:8080 uid=1000".
func (p Packet) String() string {
	parts := []string{string(p.Direction), p.Proto, p.Dst.String()}
	if p.Proto == "" {
		parts[1] = "tcp"
	}
	if p.Src.IsValid() {
		src := p.Src.String()
		if p.SrcPort != 0 {
			src = netip.AddrPortFrom(p.Src, p.SrcPort).String()
		}
		parts = append(parts, "from "+src)
	}
	if p.UID != nil {
		parts = append(parts, fmt.Sprintf("uid=%d", *p.UID))
	}
	if p.GID != nil && (p.UID == nil || *p.GID != *p.UID) {
		parts = append(parts, fmt.Sprintf("gid=%d", *p.GID))
	}
	if p.Iface != "" {
		parts = append(parts, "iface="+p.Iface)
	}
	if p.Mark != 0 {
		parts = append(parts, fmt.Sprintf("mark=%#x", p.Mark))
	}
	return strings.Join(parts, " ")
}

// Summary is the verdict in words: "captured, REDIRECT to 15001
// (original destination kept)".
func (r Result) Summary() string {
	switch r.Verdict {
	case Redirect:
		return fmt.Sprintf("captured, REDIRECT to %d (original destination kept)", r.Port)
	case TProxy:
		return fmt.Sprintf("captured, TPROXY to %d (client address kept)", r.Port)
	case Direct:
		return "not captured, goes directly to its destination"
	case Drop:
		return "dropped"
	default:
		return "unknown: " + r.Reason
	}
}

// Text renders the result as the explain command prints it: the packet
// and the verdict, then one line per rule that matched.
func (r Result) Text(p Packet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n", p, r.Summary())
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	for _, s := range r.Trace {
		fmt.Fprintf(tw, "  %s %s\t%d\t %s\n", s.Table, s.Chain, s.Rule, s.Text)
	}
	tw.Flush()
	if (r.Verdict == Direct || r.Verdict == Drop) && r.Reason != "" {
		fmt.Fprintf(&b, "  (%s)\n", r.Reason)
	}
	return b.String()
}
