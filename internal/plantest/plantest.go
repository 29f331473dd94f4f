// Package plantest holds test helpers shared by the tests of several
// packages. It is imported by tests only.
package plantest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/plan"
)

// ParseDryRun reads dry-run text ("# ipv4" / "# ipv6" headers, restore
// blocks, then ip commands) back into rule sets.
func ParseDryRun(t testing.TB, text string) []plan.RuleSet {
	t.Helper()
	var out []plan.RuleSet
	var cur *plan.RuleSet
	var table plan.Table
	for _, line := range strings.Split(text, "\n") {
		switch {
		case line == "# ipv4" || line == "# ipv6":
			out = append(out, plan.RuleSet{Family: plan.Family(strings.TrimPrefix(line, "# "))})
			cur = &out[len(out)-1]
		case line == "" || line == "COMMIT" || strings.HasPrefix(line, "ip "):
		case strings.HasPrefix(line, "*"):
			table = plan.Table(line[1:])
		case strings.HasPrefix(line, ":"):
			require.NotNil(t, cur)
			cur.Chains = append(cur.Chains, plan.TableChain{Table: table, Chain: plan.Chain(strings.Fields(line[1:])[0])})
		case strings.HasPrefix(line, "-A ") || strings.HasPrefix(line, "-I "):
			require.NotNil(t, cur)
			args, err := plan.SplitArgs(line)
			require.NoError(t, err)
			r := plan.Rule{Table: table, Chain: plan.Chain(args[1]), Insert: args[0] == "-I", Args: args[2:]}
			if r.Insert {
				require.Equal(t, "1", args[2], "line %q", line)
				r.Args = args[3:]
			}
			cur.Rules = append(cur.Rules, r)
		default:
			t.Fatalf("unexpected dry-run line %q", line)
		}
	}
	return out
}
