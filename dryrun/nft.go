package dryrun

import (
	"io"
	"strings"

	"github.com/mesh-init/istio-iptables/plan"
)

// PrintNft writes the native nftables backend's dry run: NftText.
func PrintNft(w io.Writer, script string, p plan.Plan) error {
	_, err := io.WriteString(w, NftText(script, p))
	return err
}

// NftText returns the native dry run of p: script, the `nft -f` text of
// the one transaction that creates the table inet istio-iptables with its
// owner tag (iptables.NftScript translates it; this package stays free of
// the kernel's libraries), loadable with `nft -f` as it is; then the
// policy routing and addresses as comments holding the `ip` commands.
func NftText(script string, p plan.Plan) string {
	var b strings.Builder
	b.WriteString(script)
	for _, r := range p.Routes {
		for _, c := range r.Commands() {
			b.WriteString("# " + c + "\n")
		}
	}
	for _, a := range p.Addrs {
		b.WriteString("# " + a.Command() + "\n")
	}
	return b.String()
}
