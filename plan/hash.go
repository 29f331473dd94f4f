package plan

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// Hash identifies a plan: its restore text per family, its routes and
// addresses, as the dry run prints them. FNV-1a (64 bits) is enough: the
// hash tells plans apart, it guards against no adversary (writing the
// marker takes NET_ADMIN in the namespace), and it keeps crypto out of the
// binary, whose start-up time every pod pays.
func Hash(p Plan) string {
	h := fnv.New64a()
	for _, rs := range p.RuleSets {
		fmt.Fprintf(h, "# %s\n%s", rs.Family, Render(rs, Removal{}))
	}
	for _, r := range p.Routes {
		fmt.Fprintln(h, strings.Join(r.Commands(), "\n"))
	}
	for _, a := range p.Addrs {
		fmt.Fprintln(h, a.Command())
	}
	return fmt.Sprintf("%016x", h.Sum64())
}
