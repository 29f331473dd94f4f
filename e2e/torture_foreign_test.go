package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// foreignScript adds what another transparent proxy or an auditor might
// own in the pod: policy routing on mark 0x1 and table 100 in both
// families, an nftables table that merely shares the native backend's
// name (with a drop rule for an address nobody uses), and one that shares
// the marker's prefix.
const foreignScript = `
set -e
for f in -4 -6; do ip $f rule add fwmark 0x1 lookup 100; ip $f route add local default dev lo table 100; done
nft -f - <<'EOF'
table inet istio-iptables {
	chain tt_foreign_input {
		type filter hook input priority 10; policy accept;
		ip daddr 10.66.77.77 drop
	}
}
table inet istio_iptables_audit {
	chain tt_audit {
		ip daddr 10.66.77.78 counter
	}
}
EOF
`

// foreignCheckScript prints the foreign objects, each under a header.
const foreignCheckScript = `
echo "== rule4"; ip -4 rule show
echo "== rule6"; ip -6 rule show
echo "== route4"; ip -4 route show table 100
echo "== route6"; ip -6 route show table 100
echo "== nft1"; nft list chain inet istio-iptables tt_foreign_input 2>&1
echo "== nft2"; nft list chain inet istio_iptables_audit tt_audit 2>&1
echo "== jump"; iptables-nft -t nat -S TT_FOREIGN 2>&1
true
`

// foreignMissing lists the foreign objects no longer there.
func foreignMissing(b *bed, withJump bool) []string {
	out, err := ttSh(b.podPath(), foreignCheckScript)
	if err != nil {
		return []string{"read foreign objects: " + err.Error()}
	}
	sections := map[string]string{}
	cur := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "== ") {
			cur = line[3:]
			continue
		}
		sections[cur] += line + "\n"
	}
	want := []struct{ section, text, what string }{
		{"rule4", "fwmark 0x1 lookup 100", "ip -4 rule fwmark 0x1 lookup 100"},
		{"rule6", "fwmark 0x1 lookup 100", "ip -6 rule fwmark 0x1 lookup 100"},
		{"route4", "local default dev lo", "ip -4 route local default dev lo table 100"},
		{"route6", "local default dev lo", "ip -6 route local default dev lo table 100"},
		{"nft1", "ip daddr 10.66.77.77 drop", "the drop rule of the foreign table inet istio-iptables"},
		{"nft2", "ip daddr 10.66.77.78 counter", "the rule of the foreign table inet istio_iptables_audit"},
	}
	if withJump {
		want = append(want, struct{ section, text, what string }{"jump", "-A TT_FOREIGN -j ISTIO_OUTPUT", "the foreign chain TT_FOREIGN and its jump into ISTIO_OUTPUT"})
	}
	var missing []string
	for _, w := range want {
		if !strings.Contains(sections[w.section], w.text) {
			missing = append(missing, w.what)
		}
	}
	return missing
}

var ttLoMessage = regexp.MustCompile(`(?i)\blo\b|loopback|127\.0\.0\.1|::1`)

// tortureForeign is category (e): foreign routing, foreign nftables
// tables with our names, and a foreign chain jumping into ISTIO_OUTPUT
// survive every apply and cleanup; the foreign jump gives an error that
// names it; a REDIRECT apply on a lo that cannot carry it (down, without
// 127.0.0.1, without ::1) is refused with a message about lo and changes
// nothing (finding 9).
func tortureForeign(t *testing.T, tt *torture) {
	b := newTortureBed(t)
	if err := withForeign(b); err != nil {
		t.Fatal(err)
	}
	foreignOnly, err := snapshot(b.podPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range foreignCases {
		row := tt.report.row("e", c.name)
		if tt.outOfTime() {
			row.trial(false, "not run", "time budget spent")
			continue
		}
		outcome, why := tt.foreignTrial(t, b, c, foreignOnly)
		row.trial(why == "", outcome, why)
		row.check(t)
	}
	tortureLo(t, tt, b)
}

// withForeign scrubs the bed and adds the foreign objects.
func withForeign(b *bed) error {
	if err := scrub(b.podPath()); err != nil {
		return err
	}
	if out, err := ttSh(b.podPath(), foreignScript); err != nil {
		return fmt.Errorf("add the foreign objects: %w: %s", err, out)
	}
	return nil
}

// foreignCase starts from the foreign objects alone, makes its earlier
// runs (which must succeed), and is judged on its last run.
type foreignCase struct {
	name    string
	earlier [][]string
	jump    bool // add the foreign chain TT_FOREIGN jumping into ISTIO_OUTPUT before the last run
	args    []string
	// clean: afterwards the state must be exactly the foreign objects alone.
	clean bool
	// mayRefuse: a failure is fine when its message names this and nothing changed.
	mayRefuse string
	// mustFail: the run must fail with a message naming this.
	mustFail string
	// earlierMayRefuse: an earlier run may fail when its message names
	// this (the native backend refusing a foreign table with its name);
	// the last run is then judged on what is there.
	earlierMayRefuse string
}

var foreignCases = []foreignCase{
	{name: "cleanup, never programmed", args: ttClean, clean: true},
	{name: "native cleanup, never programmed", args: []string{"--native-nftables", "--cleanup-only"}, clean: true},
	{name: "REDIRECT apply with IPv6", args: ttRedirect},
	{name: "TPROXY apply", args: ttTproxy},
	{name: "REDIRECT -> TPROXY", earlier: [][]string{ttRedirect}, args: ttTproxy},
	{name: "native TPROXY apply", args: cfgNativeTproxy.args, mayRefuse: "istio-iptables"},
	{name: "cleanup after TPROXY", earlier: [][]string{ttTproxy}, args: ttClean, clean: true},
	{name: "cleanup after native TPROXY", earlier: [][]string{cfgNativeTproxy.args}, args: ttClean, clean: true, earlierMayRefuse: "istio-iptables"},
	{name: "TPROXY apply over a foreign jump into ISTIO_OUTPUT", earlier: [][]string{ttRedirect}, jump: true, args: ttTproxy, mayRefuse: "TT_FOREIGN"},
	{name: "cleanup with a foreign jump into ISTIO_OUTPUT", earlier: [][]string{ttRedirect}, jump: true, args: ttClean, mustFail: "TT_FOREIGN"},
}

// foreignTrial runs one case and returns its outcome and, on failure, why.
func (tt *torture) foreignTrial(t *testing.T, b *bed, c foreignCase, foreignOnly string) (string, string) {
	t.Helper()
	if err := withForeign(b); err != nil {
		return "setup", err.Error()
	}
	for _, args := range c.earlier {
		res := tt.run(b.podPath(), b.lockFile, ttRun{args: args})
		if res.code != 0 && (c.earlierMayRefuse == "" || !strings.Contains(res.stderr, c.earlierMayRefuse)) {
			return "setup", fmt.Sprintf("earlier run %s: %s", quote(args), res)
		}
	}
	if c.jump {
		if out, err := ttSh(b.podPath(), "iptables-nft -t nat -N TT_FOREIGN && iptables-nft -t nat -A TT_FOREIGN -j ISTIO_OUTPUT"); err != nil {
			return "setup", fmt.Sprintf("add the foreign jump: %v: %s", err, out)
		}
	}
	before, err := snapshot(b.podPath())
	if err != nil {
		return "unreadable", err.Error()
	}
	res := tt.run(b.podPath(), b.lockFile, ttRun{args: c.args})
	got, err := snapshot(b.podPath())
	if err != nil {
		return "unreadable", err.Error()
	}
	missing := foreignMissing(b, c.jump)
	refused := res.code != 0
	var outcome, why string
	switch {
	case len(missing) > 0:
		outcome, why = "DESTROYED", "foreign objects gone: "+strings.Join(missing, "; ")
	case c.mustFail != "" && (!refused || !strings.Contains(res.stderr, c.mustFail)):
		outcome, why = "unclear", fmt.Sprintf("must fail with a message naming %s", c.mustFail)
	case c.mustFail != "":
		outcome = "refused, named " + c.mustFail
	case refused && c.mayRefuse != "" && strings.Contains(res.stderr, c.mayRefuse):
		outcome = "refused, named " + c.mayRefuse
		if got != before {
			outcome, why = "changed", "refused, yet the state changed: "+stateDiff(before, got)
		}
	case refused:
		outcome, why = "failed", "the run failed"
	case c.clean && got != foreignOnly:
		outcome, why = "not clean", "the state is not the foreign objects alone: "+stateDiff(foreignOnly, got)
	case c.clean:
		outcome = "clean, foreign kept"
	default:
		if p := probe(b); !p.all(vCaptured) {
			outcome, why = "not captured", "probes: "+p.String()
		} else {
			outcome = "captured, foreign kept"
		}
	}
	if why != "" {
		why = fmt.Sprintf("run %s: %s", res, why)
	}
	return outcome, why
}

// tortureLo: a REDIRECT apply on a loopback that cannot carry it.
func tortureLo(t *testing.T, tt *torture, b *bed) {
	for _, c := range []struct {
		name, breakLo, fixLo string
	}{
		{"REDIRECT apply, lo without 127.0.0.1", "ip addr del 127.0.0.1/8 dev lo", "ip addr add 127.0.0.1/8 dev lo"},
		{"REDIRECT apply, lo without ::1", "ip addr del ::1/128 dev lo", "ip addr add ::1/128 dev lo"},
		{"REDIRECT apply, lo down", "ip link set lo down", "ip link set lo up"},
	} {
		row := tt.report.row("e", c.name)
		if err := scrub(b.podPath()); err != nil {
			row.trial(false, "setup", err.Error())
			continue
		}
		if out, err := ttSh(b.podPath(), c.breakLo); err != nil {
			row.trial(false, "setup", fmt.Sprintf("%s: %v: %s", c.breakLo, err, out))
			continue
		}
		before, _ := snapshot(b.podPath())
		res := tt.run(b.podPath(), b.lockFile, ttRun{args: ttRedirect})
		got, _ := snapshot(b.podPath())
		switch {
		case res.code == 0:
			row.trial(false, "accepted", fmt.Sprintf("run %s: a REDIRECT plan was applied on a lo that cannot carry it (outbound would be black-holed)", res))
		case !ttLoMessage.MatchString(lastLines(res.stderr, 3)):
			row.trial(false, "unclear", fmt.Sprintf("run %s: the message does not say what is wrong with lo", res))
		case got != before:
			row.trial(false, "changed", fmt.Sprintf("run %s: refused, yet the state changed: %s", res, stateDiff(before, got)))
		default:
			row.trial(true, "refused, named lo", "")
		}
		row.check(t)
		if out, err := ttSh(b.podPath(), c.fixLo); err != nil {
			t.Errorf("%s: %v: %s", c.fixLo, err, out)
		}
	}
}
