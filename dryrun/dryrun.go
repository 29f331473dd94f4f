package dryrun

import (
	"io"
	"strings"

	"github.com/mesh-init/istio-iptables/plan"
)

// Print writes the plan as the dry run shows it.
func Print(w io.Writer, p plan.Plan) error {
	_, err := io.WriteString(w, Text(p))
	return err
}

// Text returns what Print writes.
func Text(p plan.Plan) string {
	var b strings.Builder
	for _, rs := range p.RuleSets {
		b.WriteString("# " + string(rs.Family) + "\n")
		b.WriteString(plan.Render(rs, plan.Removal{}))
	}
	for _, r := range p.Routes {
		for _, c := range r.Commands() {
			b.WriteString(c + "\n")
		}
	}
	for _, a := range p.Addrs {
		b.WriteString(a.Command() + "\n")
	}
	return b.String()
}
