package dryrun

import (
	"io"
	"strings"

	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// PrintNft writes the plan as the native nftables backend's dry run shows
// it: NftText.
func PrintNft(w io.Writer, p plan.Plan) error {
	text, err := NftText(p)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, text)
	return err
}

// NftText returns the `nft -f` text of the plan: the one transaction that
// creates the table inet istio-iptables with its owner tag, as the native
// backend writes it into a namespace that has none, loadable with
// `nft -f` as it is; the policy routing and addresses follow as comments
// holding the `ip` commands.
func NftText(p plan.Plan) (string, error) {
	text, err := iptables.NftScript(p)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(text)
	for _, r := range p.Routes {
		for _, c := range r.Commands() {
			b.WriteString("# " + c + "\n")
		}
	}
	for _, a := range p.Addrs {
		b.WriteString("# " + a.Command() + "\n")
	}
	return b.String(), nil
}
