package e2e

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mutateEnv turns on TestMutations, which takes a few minutes.
const mutateEnv = "E2E_MUTATE"

// TestMutations checks the strength of the matrix itself: for each
// single-run configuration it takes the plan the binary prints with
// --dry-run, removes one rule (or one policy-routing line) at a time, loads
// that into the pod namespace with iptables-restore, and expects at least one
// connection of the matrix to land elsewhere. The few rules no connection can
// observe are listed, with the reason, in unobservable; a listed rule that
// turns out to be observed fails the test too, so the list stays true.
//
// Only this test loads rules by hand; the rules are still the binary's own.
func TestMutations(t *testing.T) {
	requireRoot(t)
	if os.Getenv(mutateEnv) == "" {
		t.Skipf("set %s=1 to check that removing any single rule fails the matrix (a few minutes)", mutateEnv)
	}
	for _, cfg := range configs {
		if len(cfg.runs) != 1 || cfg.families != nil {
			continue
		}
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			b := newBed(t)
			install(t, b, cfg.runs[0]...) // also adds ::6 and the TPROXY routes
			p := dryRun(t, b, cfg.runs[0])
			var unseen, stale []string
			for _, m := range p.mutants() {
				m.apply(t, b, p)
				seen := anyMisses(b, cfg, m.family)
				m.undo(t, b, p)
				why, isExcused := excused(cfg.runs[0], m.key())
				switch {
				case !seen && !isExcused:
					unseen = append(unseen, m.String())
				case seen && isExcused:
					stale = append(stale, m.String()+": "+why)
				case !seen:
					t.Logf("unobservable, as listed: %s: %s", m, why)
				}
			}
			assert.Empty(t, unseen, "removing these rules changed no landing: add a connection that sees them, or list them in unobservable")
			assert.Empty(t, stale, "listed in unobservable, yet removing them changed a landing: drop them from the list")
		})
	}
}

// excuse names rules whose removal no connection can notice under the
// configurations it applies to, and why.
type excuse struct {
	when  func(args []string) bool
	rules []string // mutant keys
	why   string
}

var unobservable = []excuse{
	{always, []string{
		"nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
		"nat -A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
	}, "unreachable: everything leaving by lo already left ISTIO_OUTPUT at -o lo ! --uid-owner RETURN or at the --uid-owner rules"},
	{always, []string{"nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"},
		"unreachable: 127.0.0.1 is only reached by lo, handled by the -o lo owner rules above"},
	{always, []string{"nat -A ISTIO_OUTPUT -p udp --dport 9090 -j RETURN"}, "the matrix makes TCP connections only"},
	{portList, []string{"nat -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN"},
		"with -b a port list ISTIO_INBOUND only captures those ports, and 15008 is not one"},
	{tproxyMode, []string{"nat -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN"}, "TPROXY: no nat PREROUTING jump uses it"},
	{tproxyMode, []string{
		"nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
		"nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
		"nat -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
	}, "TPROXY: without them the mangle MARK 1338 path sends the same pod-IP calls to 15006 with the same original destination"},
	{tproxyMode, []string{
		"mangle -A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark",
		"mangle -A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN",
		"mangle -A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark",
		"mangle -A ISTIO_INBOUND -p tcp -m mark --mark 1337 -j RETURN",
		"nat -A ISTIO_OUTPUT -m mark --mark 1337 -j RETURN",
	}, "only an original_src upstream (mark 1337) uses them, and the matrix makes none: TestTPROXYOriginalSource does"},
	{both(tproxyMode, portList), []string{
		"mangle -A ISTIO_INBOUND -p tcp --dport 80 -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
		"mangle -A ISTIO_DIVERT -j ACCEPT",
	}, "established packets to a listed port reach the same socket through ISTIO_TPROXY; DIVERT only saves the lookup"},
	{both(tproxyMode, portList), []string{
		"mangle -A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338",
	}, "only the listed port is TPROXYed, and UID 1337's calls to it are redirected to 15006 by nat anyway"},
}

func always([]string) bool          { return true }
func tproxyMode(args []string) bool { return slices.Contains(args, "TPROXY") }
func portList(args []string) bool {
	i := slices.Index(args, "-b")
	return i >= 0 && args[i+1] != "*"
}
func both(a, b func([]string) bool) func([]string) bool {
	return func(args []string) bool { return a(args) && b(args) }
}

// excused returns why removing rule key cannot be seen under args.
func excused(args []string, key string) (string, bool) {
	for _, e := range unobservable {
		if e.when(args) && slices.Contains(e.rules, key) {
			return e.why, true
		}
	}
	return "", false
}

// anyMisses makes the matrix's connections in family f and reports whether
// one lands other than cfg expects. It stops at the first miss.
func anyMisses(b *bed, cfg config, f family) bool {
	for _, c := range conns {
		if land(b, c, f) != cfg.want(c, f) {
			return true
		}
	}
	return false
}

// dryPlan is what istio-iptables --dry-run prints: restore text per family,
// then ip commands.
type dryPlan struct {
	restore map[family][]string
	ip      []string
}

func dryRun(t *testing.T, b *bed, args []string) dryPlan {
	t.Helper()
	cmd := toolCmd(b, append([]string{"--dry-run"}, args...)...)
	out, err := cmd.Output()
	require.NoError(t, err, "%s", quote(cmd.Args))
	p := dryPlan{restore: map[family][]string{}}
	var cur family
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch {
		case line == "# ipv4":
			cur = ipv4
		case line == "# ipv6":
			cur = ipv6
		case strings.HasPrefix(line, "ip "):
			p.ip = append(p.ip, line)
		case cur != "":
			p.restore[cur] = append(p.restore[cur], line)
		}
	}
	return p
}

// mutant removes one line of a plan.
type mutant struct {
	family family
	table  string // restore mutants: the table of the rule
	rule   int    // restore mutants: index into restore[family]; -1 for ip mutants
	text   string // restore mutants: the rule, IPv6 addresses written as their IPv4 twins
	ip     string // ip mutants: the ip command whose effect is removed
}

func (p dryPlan) mutants() []mutant {
	var ms []mutant
	for _, f := range families {
		table := ""
		for i, line := range p.restore[f] {
			if strings.HasPrefix(line, "*") {
				table = line[1:]
			}
			if strings.HasPrefix(line, "-A ") {
				ms = append(ms, mutant{family: f, table: table, rule: i, text: v4Twin.Replace(line)})
			}
		}
	}
	for _, line := range p.ip {
		f := ipv4
		if strings.HasPrefix(line, "ip -6 ") {
			f = ipv6
		}
		ms = append(ms, mutant{family: f, rule: -1, ip: line})
	}
	return ms
}

// v4Twin writes the IPv6 addresses of the plans as their IPv4 twins.
var v4Twin = strings.NewReplacer("::1/128", "127.0.0.1/32", "::6/128", "127.0.0.6/32", remote2Nets[ipv6], remote2Nets[ipv4])

func (m mutant) String() string { return string(m.family) + " " + m.key() }

// key names the removed line family-independently: IPv6 addresses of the
// plan are written as their IPv4 twins.
func (m mutant) key() string {
	if m.rule < 0 {
		return strings.Replace(m.ip, "ip -6 ", "ip ", 1)
	}
	return m.table + " " + m.text
}

func (m mutant) apply(t *testing.T, b *bed, p dryPlan) {
	t.Helper()
	if m.rule < 0 {
		runIP(t, b, strings.Replace(m.ip, " add ", " del ", 1))
		return
	}
	lines := append([]string{}, p.restore[m.family][:m.rule]...)
	restoreTables(t, b, m.family, append(lines, p.restore[m.family][m.rule+1:]...))
}

func (m mutant) undo(t *testing.T, b *bed, p dryPlan) {
	t.Helper()
	if m.rule < 0 {
		runIP(t, b, m.ip)
		return
	}
	restoreTables(t, b, m.family, p.restore[m.family])
}

// restoreTables replaces the pod's tables named in lines with lines.
func restoreTables(t *testing.T, b *bed, f family, lines []string) {
	t.Helper()
	bin := "iptables-restore"
	if f == ipv6 {
		bin = "ip6tables-restore"
	}
	cmd := exec.Command("ip", "netns", "exec", b.pod, bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin", "XTABLES_LOCKFILE=" + b.lockFile}
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s: %s", bin, out)
}

// runIP runs an ip command as printed by --dry-run inside the pod namespace.
func runIP(t *testing.T, b *bed, line string) {
	t.Helper()
	args := append([]string{"-n", b.pod}, strings.Fields(line)[1:]...)
	out, err := exec.Command("ip", args...).CombinedOutput()
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
}
