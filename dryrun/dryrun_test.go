package dryrun_test

import (
	"errors"
	"go/parser"
	"go/token"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/dryrun"
	"github.com/mesh-init/istio-iptables/plan"
)

func samplePlan() plan.Plan {
	rs := func(f plan.Family, lo string) plan.RuleSet {
		return plan.RuleSet{
			Family: f,
			Chains: []plan.TableChain{{Table: plan.TableMangle, Chain: "ISTIO_TPROXY"}, {Table: plan.TableNat, Chain: "ISTIO_OUTPUT"}},
			Rules: []plan.Rule{
				{Table: plan.TableMangle, Chain: "ISTIO_TPROXY", Args: []string{"!", "-d", lo, "-p", "tcp", "-j", "TPROXY", "--tproxy-mark", "1337/0xffffffff", "--on-port", "15006"}},
				{Table: plan.TableNat, Chain: "OUTPUT", Args: []string{"-j", "ISTIO_OUTPUT"}},
				{Table: plan.TableNat, Chain: "ISTIO_OUTPUT", Args: []string{"-d", lo, "-j", "RETURN"}},
			},
		}
	}
	return plan.Plan{
		RuleSets: []plan.RuleSet{rs(plan.IPv4, "127.0.0.1/32"), rs(plan.IPv6, "::1/128")},
		Routes: []plan.Route{
			{Family: plan.IPv4, Mark: 1337, Table: 133},
			{Family: plan.IPv6, Mark: 1337, Table: 133},
		},
		Addrs: []plan.Addr{{Dev: "lo", Prefix: netip.MustParsePrefix("::6/128")}},
	}
}

const samplePlanText = `# ipv4
*nat
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
COMMIT
*mangle
:ISTIO_TPROXY - [0:0]
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
COMMIT
# ipv6
*nat
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -d ::1/128 -j RETURN
COMMIT
*mangle
:ISTIO_TPROXY - [0:0]
-A ISTIO_TPROXY ! -d ::1/128 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
COMMIT
ip rule add fwmark 1337 lookup 133
ip route add local default dev lo table 133
ip -6 rule add fwmark 1337 lookup 133
ip -6 route add local default dev lo table 133
ip -6 addr add ::6/128 dev lo
`

// TestText: a "# family" header before each family's restore text (the
// renderer's, for a clean namespace), then the routes, then the addresses.
func TestText(t *testing.T) {
	p := samplePlan()
	require.NoError(t, p.Validate())
	assert.Equal(t, samplePlanText, dryrun.Text(p))
	for _, rs := range p.RuleSets {
		assert.Contains(t, dryrun.Text(p), "# "+string(rs.Family)+"\n"+plan.Render(rs, plan.Removal{}))
	}
}

func TestTextEmptyPlan(t *testing.T) {
	assert.Equal(t, "", dryrun.Text(plan.Plan{}))
	assert.Equal(t, "# ipv4\n", dryrun.Text(plan.Plan{RuleSets: []plan.RuleSet{{Family: plan.IPv4}}}))
}

func TestPrint(t *testing.T) {
	var b strings.Builder
	require.NoError(t, dryrun.Print(&b, samplePlan()))
	assert.Equal(t, samplePlanText, b.String())

	err := dryrun.Print(failingWriter{}, samplePlan())
	assert.ErrorIs(t, err, errWrite)
}

var errWrite = errors.New("disk full")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errWrite }

// TestNoSideEffectImports: the dry run imports nothing that runs a
// process or opens a netlink socket (STYLE: dryrun must not import
// os/exec, netlink or netns).
func TestNoSideEffectImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		n++
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range af.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			require.NoError(t, err)
			bad := path == "os/exec" || path == "syscall" || path == "net" ||
				strings.HasPrefix(path, "golang.org/x/sys") ||
				strings.Contains(path, "netlink") || strings.Contains(path, "netns")
			assert.False(t, bad, "%s imports %s", f, path)
		}
	}
	assert.Positive(t, n)
}
