package plan

import (
	"errors"
	"fmt"
	"strings"
)

// Saved is the parsed output of `iptables-save` / `ip6tables-save`.
type Saved struct {
	Tables []SavedTable
}

// SavedTable is one `*table ... COMMIT` block.
type SavedTable struct {
	Name   Table
	Chains []SavedChain
	Rules  []SavedRule
}

// SavedChain is one `:CHAIN POLICY [packets:bytes]` line; user chains have
// policy "-".
type SavedChain struct {
	Name   Chain
	Policy string
}

// SavedRule is one `-A CHAIN args...` line.
type SavedRule struct {
	Table Table
	Chain Chain
	Args  []string
}

// Target returns the rule's -j/-g target.
func (r SavedRule) Target() string { return Rule{Args: r.Args}.Target() }

// String renders the rule as `-A CHAIN args`, as *-save printed it.
func (r SavedRule) String() string { return Rule{Chain: r.Chain, Args: r.Args}.String() }

func (r SavedRule) deleteLine() string { return "-D" + strings.TrimPrefix(r.String(), "-A") }

// Table returns the named table.
func (s Saved) Table(t Table) (SavedTable, bool) {
	for _, st := range s.Tables {
		if st.Name == t {
			return st, true
		}
	}
	return SavedTable{}, false
}

// HasRules reports whether any table holds a rule.
func (s Saved) HasRules() bool {
	for _, t := range s.Tables {
		if len(t.Rules) > 0 {
			return true
		}
	}
	return false
}

// ChainRules returns the rules of one chain in order.
func (t SavedTable) ChainRules(c Chain) []SavedRule {
	var out []SavedRule
	for _, r := range t.Rules {
		if r.Chain == c {
			out = append(out, r)
		}
	}
	return out
}

// ParseSave parses iptables-save output. Comment lines and blank lines are
// skipped; anything else outside the format is an error naming the line.
func ParseSave(text string) (Saved, error) {
	var s Saved
	var cur *SavedTable
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fail := func(msg string) (Saved, error) {
			return Saved{}, fmt.Errorf("save line %d %q: %s", n+1, line, msg)
		}
		switch {
		case strings.HasPrefix(line, "*"):
			if cur != nil {
				return fail("table not committed")
			}
			s.Tables = append(s.Tables, SavedTable{Name: Table(line[1:])})
			cur = &s.Tables[len(s.Tables)-1]
		case line == "COMMIT":
			if cur == nil {
				return fail("COMMIT outside a table")
			}
			cur = nil
		case strings.HasPrefix(line, ":"):
			if cur == nil {
				return fail("chain outside a table")
			}
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return fail("malformed chain line")
			}
			cur.Chains = append(cur.Chains, SavedChain{Name: Chain(f[0]), Policy: f[1]})
		case strings.HasPrefix(line, "-A "):
			if cur == nil {
				return fail("rule outside a table")
			}
			args, err := SplitArgs(line[3:])
			if err != nil {
				return fail(err.Error())
			}
			if len(args) == 0 {
				return fail("rule without a chain")
			}
			cur.Rules = append(cur.Rules, SavedRule{Table: cur.Name, Chain: Chain(args[0]), Args: args[1:]})
		default:
			return fail("unexpected line")
		}
	}
	if cur != nil {
		return Saved{}, fmt.Errorf("table %s not committed", cur.Name)
	}
	return s, nil
}

// SplitArgs splits a restore or save line into arguments the way
// iptables-restore does: blanks separate, double quotes group, a backslash
// inside quotes escapes the next character.
func SplitArgs(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted = !quoted
			inArg = true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				out = append(out, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if inArg {
		out = append(out, cur.String())
	}
	return out, nil
}
