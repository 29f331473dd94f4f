package plan_test

// Fuzz targets for the *-save parser and the restore renderer (FuzzParseSpec,
// for rule arguments, is in spec_test.go). Their seed corpora run in every
// `go test`; `make fuzz` runs each for a bounded time, and Go keeps every
// failing input under testdata/fuzz/<Target>/.

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/mesh-init/istio-iptables/plan"
	"github.com/stretchr/testify/require"
)

// saveSeeds are save texts: real kernel output, and hostile variations.
var saveSeeds = []string{
	kernelSaveKubeVirt,
	"*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j ISTIO_INBOUND\nCOMMIT\n",
	"*nat\n:ISTIO_OUTPUT - [0:0]\n-A OUTPUT -m comment --comment \"a \\\"b\\\" c\" -j ISTIO_OUTPUT\nCOMMIT\n",
	"*nat\n-A OUTPUT -m comment --comment \"\" -j ISTIO_OUTPUT\nCOMMIT\n",
	"*nat\n-A OUTPUT -m comment --comment \"x\\\\\" -j ISTIO_OUTPUT\nCOMMIT\n",
	"*mangle\r\n:OUTPUT ACCEPT [1:2]\r\n-A OUTPUT  -o lo\t-j RETURN\r\nCOMMIT\r\n",
	"# comment\n\n*raw\nCOMMIT\n*nat\nCOMMIT\n",
	"*nat\n-A PREROUTING \"-j\" \"ISTIO_INBOUND\"\nCOMMIT\n",
	"*nat\n-A PREROUTING -j ISTIO_INBOUND\nCOMMIT\nCOMMIT\n",
	"*nat\n-A\nCOMMIT\n",
	"*nat\n-A PREROUTING \"unterminated\nCOMMIT\n",
	"*nat\n:X\nCOMMIT\n",
	"*nat\n*mangle\nCOMMIT\n",
	"-A OUTPUT -j ACCEPT\n",
	"*nat\n-A OUTPUT -j ACCEPT",
}

// FuzzParseSave: ParseSave never panics; whatever it accepts prints back
// (chains, and rules with SavedRule.String) to text that parses to the same
// state; and the `-D` line Render writes to remove a saved builtin-chain
// rule names exactly that rule, so a removal can never delete another.
func FuzzParseSave(f *testing.F) {
	for _, s := range saveSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := plan.ParseSave(text)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, st := range s.Tables {
			b.WriteString("*" + string(st.Name) + "\n")
			for _, c := range st.Chains {
				fmt.Fprintf(&b, ":%s %s [0:0]\n", c.Name, c.Policy)
			}
			for _, r := range st.Rules {
				if !plainChain(r.Chain) {
					return // chain names come from *-save, never blank or quoted
				}
				b.WriteString(r.String() + "\n")
			}
			b.WriteString("COMMIT\n")
		}
		again, err := plan.ParseSave(b.String())
		require.NoError(t, err, "printed back:\n%s", b.String())
		require.Equal(t, s, again, "printed back:\n%s", b.String())

		for _, st := range s.Tables {
			var removal plan.Removal
			for _, r := range st.Rules {
				if plan.Builtin(st.Name, r.Chain) {
					removal.Rules = append(removal.Rules, r)
				}
			}
			if len(removal.Rules) == 0 {
				continue
			}
			out := plan.Render(plan.RuleSet{Family: plan.IPv4}, removal)
			var deleted []plan.SavedRule
			for _, l := range strings.Split(out, "\n") {
				if !strings.HasPrefix(l, "-D ") {
					continue
				}
				args, err := plan.SplitArgs(l)
				require.NoError(t, err, "line %q", l)
				deleted = append(deleted, plan.SavedRule{Table: st.Name, Chain: plan.Chain(args[1]), Args: args[2:]})
			}
			require.Equal(t, removal.Rules, deleted, "-D lines:\n%s", out)
		}
	})
}

// plainChain reports whether a chain name needs no quoting.
func plainChain(c plan.Chain) bool {
	return c != "" && !strings.ContainsAny(string(c), " \t\"\\")
}

// FuzzRenderValidated: any rule set that passes Validate renders to restore
// text with exactly the expected lines (a table header, the declared
// chains, one line per rule, COMMIT, per table), each rule line splitting
// back into its own chain and arguments: no value a rule carries can add a
// line, end a table or change another rule.
func FuzzRenderValidated(f *testing.F) {
	sep := []byte{0}
	for _, s := range []struct {
		table       uint8
		chain       string
		insert      bool
		args, args2 []byte
	}{
		{0, "ISTIO_OUTPUT", false, []byte("-j\x00ISTIO_REDIRECT"), []byte("-p\x00tcp\x00-j\x00RETURN")},
		{0, "PREROUTING", true, []byte("-i\x00eth1\x00-j\x00ISTIO_OUTPUT"), []byte("-j\x00ISTIO_OUTPUT")},
		{1, "ISTIO_TPROXY", false, []byte("!\x00-d\x00127.0.0.1/32\x00-j\x00TPROXY\x00--on-port\x0015006"), nil},
		{0, "ISTIO_OUTPUT", false, []byte("-m\x00comment\x00--comment\x00a b\x00-j\x00RETURN"), []byte("-j\x00RETURN\nCOMMIT")},
		{0, "ISTIO_OUTPUT\n-A OUTPUT -j ACCEPT", false, []byte("-j\x00RETURN"), nil},
		{0, "ISTIO_X Y", false, []byte("-j\x00RETURN"), nil},
		{2, "OUTPUT", false, []byte("-j\x00ISTIO_OUTPUT"), []byte("-j\x00 ")},
	} {
		f.Add(s.table, s.chain, s.insert, s.args, s.args2)
	}
	tables := []plan.Table{plan.TableNat, plan.TableMangle, plan.TableRaw, "filter"}
	f.Fuzz(func(t *testing.T, table uint8, chain string, insert bool, args, args2 []byte) {
		tbl := tables[int(table)%len(tables)]
		rs := plan.RuleSet{Family: plan.IPv4}
		declare := func(c string) {
			tc := plan.TableChain{Table: tbl, Chain: plan.Chain(c)}
			if tc.Chain.Owned() && !containsTC(rs.Chains, tc) {
				rs.Chains = append(rs.Chains, tc)
			}
		}
		declare(chain)
		declare("ISTIO_OUTPUT")
		for i, blob := range [][]byte{args, args2} {
			if len(blob) == 0 {
				continue
			}
			var a []string
			for _, p := range bytes.Split(blob, sep) {
				a = append(a, string(p))
			}
			r := plan.Rule{Table: tbl, Chain: plan.Chain(chain), Insert: insert && i == 0, Args: a}
			if i == 1 {
				r.Chain = "ISTIO_OUTPUT"
			}
			rs.Rules = append(rs.Rules, r)
		}
		if rs.Validate() != nil {
			return
		}
		text := plan.Render(rs, plan.Removal{})
		lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		require.Len(t, lines, 2+len(rs.Chains)+len(rs.Rules), "text:\n%s", text)
		require.Equal(t, "*"+string(tbl), lines[0])
		require.Equal(t, "COMMIT", lines[len(lines)-1])
		for i, tc := range rs.Chains {
			require.Equal(t, ":"+string(tc.Chain)+" - [0:0]", lines[1+i])
		}
		var got []plan.Rule
		for _, l := range lines[1+len(rs.Chains) : len(lines)-1] {
			a, err := plan.SplitArgs(l)
			require.NoError(t, err, "line %q", l)
			require.GreaterOrEqual(t, len(a), 2, "line %q", l)
			r := plan.Rule{Table: tbl, Chain: plan.Chain(a[1]), Args: a[2:]}
			switch a[0] {
			case "-I":
				require.Equal(t, "1", a[2], "line %q", l)
				r.Insert, r.Args = true, a[3:]
			case "-A":
			default:
				t.Fatalf("line %q is not a rule", l)
			}
			got = append(got, r)
		}
		require.ElementsMatch(t, rs.Rules, got, "text:\n%s", text)
	})
}

func containsTC(list []plan.TableChain, tc plan.TableChain) bool {
	for _, x := range list {
		if x == tc {
			return true
		}
	}
	return false
}
