package iptables_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// kernelSaveRedirectV4 is real iptables-nft-save output of the REDIRECT
// default, kept with the model's tests.
var kernelSaveRedirectV4 = func() string {
	b, err := os.ReadFile("../plan/testdata/kernel_redirect_ipv4.save")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// The unit tests of the executor: a fake execer records every process
// (argv, stdin, whether it ran inside the namespace) and answers from a
// scripted world; a fake kernel lists the tables that world holds and
// records namespace entries, route syncs and table deletions.

const (
	testNetns = "/var/run/netns/unit-test"
	sbin      = "/usr/sbin/"
)

// allBinaries are the iptables binaries of both flavours and families.
var allBinaries = []string{
	"iptables-nft-restore", "iptables-nft-save", "ip6tables-nft-restore", "ip6tables-nft-save",
	"iptables-legacy-restore", "iptables-legacy-save", "ip6tables-legacy-restore", "ip6tables-legacy-save",
}

// without returns allBinaries minus those containing any of the words.
func without(words ...string) []string {
	return slices.DeleteFunc(slices.Clone(allBinaries), func(b string) bool {
		return slices.ContainsFunc(words, func(w string) bool { return strings.Contains(b, w) })
	})
}

// call is one process the executor started.
type call struct {
	Bin     string // base name of argv[0]
	Argv    []string
	Stdin   string
	InNetns bool // started inside kernel.Do
}

func (c call) String() string { return strings.Join(c.Argv, " ") }

// world is a scripted system: what each *-save prints, which restores
// fail, which binaries are installed.
type world struct {
	exec   *fakeExecer
	kernel *fakeKernel
	look   func(string) (string, error)
	looked []string
}

// newWorld returns a world where the binaries listed are installed in
// /usr/sbin and saves maps a save binary's name to what it prints; the
// tables the kernel lists are those the save output holds, plus extra
// ("nft/ipv4" -> {"filter"}).
func newWorld(t *testing.T, installed []string, saves map[string]string) *world {
	t.Helper()
	w := &world{}
	w.kernel = &fakeKernel{legacy: map[plan.Family][]string{}, nft: map[plan.Family][]string{}}
	w.exec = &fakeExecer{outputs: map[string]string{}, fail: map[string][]string{}, kernel: w.kernel}
	for bin, out := range saves {
		w.exec.outputs[bin] = out
		s, err := plan.ParseSave(out)
		require.NoError(t, err, "save output for %s", bin)
		f := plan.IPv4
		if strings.HasPrefix(bin, "ip6") {
			f = plan.IPv6
		}
		tabs := w.kernel.nft
		if strings.Contains(bin, "legacy") {
			tabs = w.kernel.legacy
		}
		for _, st := range s.Tables {
			tabs[f] = append(tabs[f], string(st.Name))
		}
	}
	w.look = func(name string) (string, error) {
		w.looked = append(w.looked, name)
		if slices.Contains(installed, name) {
			return sbin + name, nil
		}
		return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
	}
	return w
}

func (w *world) executor(o iptables.Options) iptables.Executor {
	if o.Netns == "" {
		o.Netns = testNetns
	}
	return iptables.NewExecutorWith(o, w.exec, w.look, w.kernel)
}

// calls returns the recorded processes whose binary name contains word.
func (w *world) calls(word string) []call {
	var out []call
	for _, c := range w.exec.calls {
		if strings.Contains(c.Bin, word) {
			out = append(out, c)
		}
	}
	return out
}

type fakeExecer struct {
	calls   []call
	outputs map[string]string   // binary name -> stdout
	fail    map[string][]string // binary name -> stderr per successive call; "" succeeds
	kernel  *fakeKernel
}

// Start runs the process at once, in call order, like Run: the recorded
// calls keep the order in which the executor started them.
func (f *fakeExecer) Start(ctx context.Context, argv []string, stdin []byte) func() ([]byte, error) {
	out, err := f.Run(ctx, argv, stdin)
	return func() ([]byte, error) { return out, err }
}

func (f *fakeExecer) Run(_ context.Context, argv []string, stdin []byte) ([]byte, error) {
	bin := filepath.Base(argv[0])
	f.calls = append(f.calls, call{Bin: bin, Argv: slices.Clone(argv), Stdin: string(stdin), InNetns: f.kernel.depth > 0})
	if errs := f.fail[bin]; len(errs) > 0 {
		f.fail[bin] = errs[1:]
		if errs[0] != "" {
			return nil, &iptables.ExecError{Argv: argv, ExitCode: 1, Stderr: errs[0], Err: errors.New("exit status 1")}
		}
	}
	return []byte(f.outputs[bin]), nil
}

type syncCall struct {
	Routes []plan.Route
	Addrs  []plan.Addr
}

type deleteCall struct {
	Family plan.Family
	Tables []plan.Table
}

type fakeKernel struct {
	legacy, nft map[plan.Family][]string
	depth       int // > 0 inside Do
	doPaths     []string
	syncs       []syncCall
	deletes     []deleteCall
	syncErr     error
	outside     []string // kernel operations made outside Do
	markers     []string // SetNftMarker calls
}

func (k *fakeKernel) Do(path string, fn func() error) error {
	k.doPaths = append(k.doPaths, path)
	k.depth++
	defer func() { k.depth-- }()
	return fn()
}

func (k *fakeKernel) check(op string) {
	if k.depth == 0 {
		k.outside = append(k.outside, op)
	}
}

func (k *fakeKernel) LegacyTables(f plan.Family) ([]string, error) {
	k.check("LegacyTables")
	return slices.Clone(k.legacy[f]), nil
}

func (k *fakeKernel) NftTables() (map[plan.Family][]string, error) {
	k.check("NftTables")
	out := map[plan.Family][]string{}
	for f, tabs := range k.nft {
		out[f] = slices.Clone(tabs)
	}
	return out, nil
}

func (k *fakeKernel) DeleteEmptyNftTables(f plan.Family, tables []plan.Table) error {
	k.check("DeleteEmptyNftTables")
	k.deletes = append(k.deletes, deleteCall{f, tables})
	return nil
}

// NftMarkers reports no marker, so every apply takes the full path the
// tests assert; the marker path is tested against the real kernel.
func (k *fakeKernel) NftMarkers() ([]string, uint32, error) {
	k.check("NftMarkers")
	return nil, 0, nil
}

func (k *fakeKernel) SetNftMarker(name string) error {
	k.check("SetNftMarker")
	k.markers = append(k.markers, name)
	return nil
}

func (k *fakeKernel) SyncRoutes(routes []plan.Route, addrs []plan.Addr) error {
	k.check("SyncRoutes")
	k.syncs = append(k.syncs, syncCall{routes, addrs})
	return k.syncErr
}

// skipBug skips a test that shows a known bug, unless IPTABLES_BUGS=1
// (to check a fix): go test ./iptables/ -run X with IPTABLES_BUGS=1.
func skipBug(t *testing.T, bug string) {
	t.Helper()
	if bug != "" && os.Getenv("IPTABLES_BUGS") == "" {
		t.Skip("BUG: " + bug + " (IPTABLES_BUGS=1 runs it)")
	}
}

// Configurations.

// redirectDefault is SPEC §3.2's call: -p 15001 -z 15006 -u 1337 -m
// REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020.
func redirectDefault(c *capture.Config) {
	c.ProxyPort = "15001"
	c.InboundCapturePort = "15006"
	c.ProxyUID = "1337"
	c.InboundInterceptionMode = "REDIRECT"
	c.OutboundIPRangesInclude = "*"
	c.InboundPortsInclude = "*"
	c.InboundPortsExclude = "15090,15021,15020"
}

func tproxyDefault(c *capture.Config) {
	redirectDefault(c)
	c.InboundInterceptionMode = "TPROXY"
}

func ipv6(on bool) func(*capture.Config) {
	return func(c *capture.Config) { c.IPv6 = fmt.Sprint(on) }
}

// build returns the plan of the default configuration changed by the
// options, in order.
func build(t *testing.T, opts ...func(*capture.Config)) plan.Plan {
	t.Helper()
	c := capture.DefaultConfig()
	c.IPv6 = "false"
	for _, o := range opts {
		o(&c)
	}
	p, err := capture.Build(c)
	require.NoError(t, err)
	return p
}

func ruleSet(t *testing.T, p plan.Plan, f plan.Family) plan.RuleSet {
	t.Helper()
	rs, ok := p.RuleSet(f)
	require.True(t, ok, "plan has no %s rule set", f)
	return rs
}

// saveOf returns what *-save prints after rs was written into a clean
// namespace, with foreign lines (chain declarations and rules, in save
// form) added to the nat table: builtin chains with their policy, user
// chains sorted, rules of builtin chains first, each in the canonical
// form.
func saveOf(t *testing.T, rs plan.RuleSet, foreignNat ...string) string {
	t.Helper()
	builtin := map[plan.Table][]plan.Chain{
		plan.TableNat:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
		plan.TableMangle: {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	}
	var b strings.Builder
	tables := rs.Tables()
	if len(foreignNat) > 0 && !slices.Contains(tables, plan.TableNat) {
		tables = append([]plan.Table{plan.TableNat}, tables...)
	}
	for _, tab := range tables {
		fmt.Fprintf(&b, "# Generated by iptables-save v1.8.9 (nf_tables)\n*%s\n", tab)
		for _, c := range builtin[tab] {
			fmt.Fprintf(&b, ":%s ACCEPT [0:0]\n", c)
		}
		var user []string
		for _, tc := range rs.Chains {
			if tc.Table == tab {
				user = append(user, string(tc.Chain))
			}
		}
		slices.Sort(user)
		if tab == plan.TableNat {
			for _, l := range foreignNat {
				if strings.HasPrefix(l, ":") {
					b.WriteString(l + "\n")
				}
			}
		}
		for _, c := range user {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		chains := slices.Clone(builtin[tab])
		for _, c := range user {
			chains = append(chains, plan.Chain(c))
		}
		for _, c := range chains {
			for _, r := range rs.ChainRules(tab, c) {
				args, err := plan.Canonical(rs.Family, r.Args)
				require.NoError(t, err)
				fmt.Fprintf(&b, "-A %s %s\n", c, args)
			}
		}
		if tab == plan.TableNat {
			for _, l := range foreignNat {
				if strings.HasPrefix(l, "-A ") {
					b.WriteString(l + "\n")
				}
			}
		}
		b.WriteString("COMMIT\n# Completed\n")
	}
	return b.String()
}

// emptyNat is what iptables-nft-save prints for a nat table with no rule.
const emptyNat = `# Generated by iptables-save v1.8.9 (nf_tables) on Sun Nov 22 04:05:51 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
# Completed on Sun Nov 22 04:05:51 2026
`

// legacyForeign is a legacy nat table holding another tool's chain.
const legacyForeign = `# Generated by iptables-save v1.8.9 on Sun Nov 22 04:05:51 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-TEST - [0:0]
-A OUTPUT -j KUBE-TEST
-A KUBE-TEST -p tcp -m tcp --dport 99 -j RETURN
COMMIT
# Completed on Sun Nov 22 04:05:51 2026
`

// foreignNat are KUBE-TEST lines added to a saved nat table.
var foreignNat = []string{":KUBE-TEST - [0:0]", "-A OUTPUT -j KUBE-TEST", "-A KUBE-TEST -p tcp -m tcp --dport 99 -j RETURN"}

func restoreCall(bin, stdin, wait string) call {
	return call{Bin: bin, Argv: []string{sbin + bin, "--noflush", "--wait", wait}, Stdin: stdin, InNetns: true}
}

func saveCall(bin string) call {
	return call{Bin: bin, Argv: []string{sbin + bin}, InNetns: true}
}

func restoreBin(f plan.Family, flavour string) string {
	if f == plan.IPv6 {
		return "ip6tables-" + flavour + "-restore"
	}
	return "iptables-" + flavour + "-restore"
}

func saveBin(f plan.Family, flavour string) string {
	return strings.TrimSuffix(restoreBin(f, flavour), "restore") + "save"
}

func owned(t *testing.T, f plan.Family, save string) plan.Removal {
	t.Helper()
	s, err := plan.ParseSave(save)
	require.NoError(t, err)
	return plan.Owned(f, s)
}

// A fresh namespace: no table in either flavour. One restore per family,
// no *-save, the exact text the dry run shows.
func TestApplyFreshNamespace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []func(*capture.Config)
		wait     time.Duration
		wantWait string
	}{
		{name: "REDIRECT default, IPv4", opts: []func(*capture.Config){redirectDefault}, wantWait: "30"},
		{name: "REDIRECT default, dual-stack", opts: []func(*capture.Config){redirectDefault, ipv6(true)}, wantWait: "30"},
		{name: "TPROXY default, dual-stack", opts: []func(*capture.Config){tproxyDefault, ipv6(true)}, wantWait: "30"},
		{name: "lock wait 5s", opts: []func(*capture.Config){redirectDefault}, wait: 5 * time.Second, wantWait: "5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := build(t, tc.opts...)
			w := newWorld(t, allBinaries, nil)
			require.NoError(t, w.executor(iptables.Options{LockWait: tc.wait}).Apply(context.Background(), p))

			var want []call
			for _, rs := range p.RuleSets {
				want = append(want, restoreCall(restoreBin(rs.Family, "nft"), plan.Render(rs, plan.Removal{}), tc.wantWait))
			}
			assert.Equal(t, want, w.exec.calls, "exactly one iptables-nft-restore per family, no *-save")
			assert.Equal(t, []string{testNetns}, w.kernel.doPaths, "the namespace is entered once")
			assert.Empty(t, w.kernel.outside, "kernel operations outside the namespace")
			if len(p.Routes)+len(p.Addrs) > 0 {
				assert.Equal(t, []syncCall{{p.Routes, p.Addrs}}, w.kernel.syncs)
			}
			for _, s := range w.kernel.syncs {
				assert.Equal(t, p.Routes, s.Routes)
				assert.Equal(t, p.Addrs, s.Addrs)
			}
		})
	}
}

// Tables exist: state is read once per family (one *-save each, before
// any restore), then one transaction per family that changes.
func TestApplyReadsStateOnce(t *testing.T) {
	redirect4 := build(t, redirectDefault)
	redirect46 := build(t, redirectDefault, ipv6(true))
	tproxy46 := build(t, tproxyDefault, ipv6(true))
	list46 := build(t, redirectDefault, ipv6(true), func(c *capture.Config) {
		c.InboundPortsInclude = "80,8080"
		c.OutboundIPRangesInclude = "10.0.0.0/8,fd00::/8"
	})
	save4 := func(p plan.Plan, foreign ...string) string {
		return saveOf(t, ruleSet(t, p, plan.IPv4), foreign...)
	}
	save6 := func(p plan.Plan) string { return saveOf(t, ruleSet(t, p, plan.IPv6)) }

	type want struct {
		saves    []string          // save binaries, in order
		restores map[string]string // restore binary -> stdin
		order    []string          // restore binaries in order
	}
	for _, tc := range []struct {
		name  string
		saves map[string]string
		plan  plan.Plan
		want  want
	}{{
		name:  "empty nat tables",
		saves: map[string]string{"iptables-nft-save": emptyNat, "ip6tables-nft-save": emptyNat},
		plan:  redirect46,
		want: want{
			saves: []string{"iptables-nft-save", "ip6tables-nft-save"},
			order: []string{"iptables-nft-restore", "ip6tables-nft-restore"},
			restores: map[string]string{
				"iptables-nft-restore":  plan.Render(ruleSet(t, redirect46, plan.IPv4), plan.Removal{}),
				"ip6tables-nft-restore": plan.Render(ruleSet(t, redirect46, plan.IPv6), plan.Removal{}),
			},
		},
	}, {
		name:  "same plan already in place (real iptables-nft-save output): no write",
		saves: map[string]string{"iptables-nft-save": kernelSaveRedirectV4},
		plan:  redirect4,
		want:  want{saves: []string{"iptables-nft-save"}},
	}, {
		name:  "same plan already in place, dual-stack TPROXY: no write",
		saves: map[string]string{"iptables-nft-save": save4(tproxy46), "ip6tables-nft-save": save6(tproxy46)},
		plan:  tproxy46,
		want:  want{saves: []string{"iptables-nft-save", "ip6tables-nft-save"}},
	}, {
		name:  "same plan among foreign rules: no write",
		saves: map[string]string{"iptables-nft-save": save4(redirect4, foreignNat...)},
		plan:  redirect4,
		want:  want{saves: []string{"iptables-nft-save"}},
	}, {
		name:  "other flags: removal and new rules in one transaction per family",
		saves: map[string]string{"iptables-nft-save": save4(tproxy46), "ip6tables-nft-save": save6(tproxy46)},
		plan:  list46,
		want: want{
			saves: []string{"iptables-nft-save", "ip6tables-nft-save"},
			order: []string{"iptables-nft-restore", "ip6tables-nft-restore"},
			restores: map[string]string{
				"iptables-nft-restore":  plan.Render(ruleSet(t, list46, plan.IPv4), owned(t, plan.IPv4, save4(tproxy46))),
				"ip6tables-nft-restore": plan.Render(ruleSet(t, list46, plan.IPv6), owned(t, plan.IPv6, save6(tproxy46))),
			},
		},
	}, {
		name:  "IPv6 turned off: IPv4 unchanged, the IPv6 rules removed",
		saves: map[string]string{"iptables-nft-save": save4(redirect46), "ip6tables-nft-save": save6(redirect46)},
		plan:  redirect4,
		want: want{
			saves: []string{"iptables-nft-save", "ip6tables-nft-save"},
			order: []string{"ip6tables-nft-restore"},
			restores: map[string]string{
				"ip6tables-nft-restore": plan.Render(plan.RuleSet{Family: plan.IPv6}, owned(t, plan.IPv6, save6(redirect46))),
			},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, allBinaries, tc.saves)
			require.NoError(t, w.executor(iptables.Options{}).Apply(context.Background(), tc.plan))
			var saves, restores []string
			lastSave, firstRestore := -1, len(w.exec.calls)
			for i, c := range w.exec.calls {
				assert.True(t, c.InNetns, "%s ran outside the namespace", c)
				if strings.HasSuffix(c.Bin, "-save") {
					saves = append(saves, c.Bin)
					assert.Equal(t, []string{sbin + c.Bin}, c.Argv)
					lastSave = i
				} else {
					restores = append(restores, c.Bin)
					firstRestore = min(firstRestore, i)
					assert.Equal(t, []string{sbin + c.Bin, "--noflush", "--wait", "30"}, c.Argv)
					assert.Equal(t, tc.want.restores[c.Bin], c.Stdin, "stdin of %s", c.Bin)
				}
			}
			assert.Equal(t, tc.want.saves, saves, "one *-save per family holding tables")
			assert.Equal(t, tc.want.order, restores, "one restore per family that changes")
			assert.Less(t, lastSave, firstRestore, "all state is read before the first write")
			for _, c := range w.calls("restore") {
				assert.NotContains(t, c.Stdin, "KUBE-TEST", "foreign rules are never touched")
			}
		})
	}
}

// restoreFailure is what iptables-nft-restore prints when it refuses line 3.
const restoreFailure = "ip6tables-nft-restore v1.8.9 (nf_tables): invalid port\nError occurred at line: 3\nTry `ip6tables-nft-restore -h' or 'ip6tables-nft-restore --help' for more information.\n"

// removes checks that a rollback text takes out every chain and every
// builtin-chain rule of rs and writes nothing.
func removes(t *testing.T, text string, rs plan.RuleSet) {
	t.Helper()
	lines := strings.Split(text, "\n")
	for _, l := range lines {
		assert.False(t, strings.HasPrefix(l, "-A ") || strings.HasPrefix(l, "-I "), "rollback of a fresh namespace writes %q", l)
	}
	for _, tc := range rs.Chains {
		assert.Contains(t, lines, "-X "+string(tc.Chain), "rollback keeps chain %s", tc)
	}
	for _, r := range rs.Rules {
		if !plan.Builtin(r.Table, r.Chain) {
			continue
		}
		args, err := plan.Canonical(rs.Family, r.Args)
		require.NoError(t, err)
		assert.Contains(t, lines, "-D "+string(r.Chain)+" "+args, "rollback keeps a jump")
	}
}

func TestApplyRestoreFailure(t *testing.T) {
	p := build(t, redirectDefault, ipv6(true))
	rs4, rs6 := ruleSet(t, p, plan.IPv4), ruleSet(t, p, plan.IPv6)
	input6 := plan.Render(rs6, plan.Removal{})
	line3 := strings.Split(input6, "\n")[2]

	t.Run("second family refused: error names the line, first family rolled back", func(t *testing.T) {
		w := newWorld(t, allBinaries, nil)
		w.exec.fail["ip6tables-nft-restore"] = []string{restoreFailure}
		err := w.executor(iptables.Options{}).Apply(context.Background(), p)
		require.Error(t, err)
		assert.Contains(t, err.Error(), line3, "the failing line's text")
		assert.Contains(t, err.Error(), "invalid port", "the binary's message")
		assert.NotContains(t, err.Error(), "Try `", "the usage hint is noise")
		var re *iptables.RestoreError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, plan.IPv6, re.Family)
		assert.Equal(t, 3, re.Line)
		assert.Equal(t, line3, re.Text)
		var ee *iptables.ExecError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, sbin+"ip6tables-nft-restore", ee.Argv[0])

		require.Len(t, w.exec.calls, 3, "restore ipv4, restore ipv6 (refused), rollback ipv4: %v", w.exec.calls)
		assert.Equal(t, "iptables-nft-restore", w.exec.calls[0].Bin)
		assert.Equal(t, "ip6tables-nft-restore", w.exec.calls[1].Bin)
		rb := w.exec.calls[2]
		assert.Equal(t, []string{sbin + "iptables-nft-restore", "--noflush", "--wait", "30"}, rb.Argv)
		removes(t, rb.Stdin, rs4)
		assert.Contains(t, w.kernel.deletes, deleteCall{plan.IPv4, rs4.Tables()}, "the rolled-back first apply leaves no empty table")
		assert.Empty(t, w.kernel.syncs, "no routing change after a refused restore")
	})

	t.Run("first family refused: the other, written at the same time, is rolled back", func(t *testing.T) {
		w := newWorld(t, allBinaries, nil)
		w.exec.fail["iptables-nft-restore"] = []string{strings.ReplaceAll(restoreFailure, "ip6", "ip")}
		err := w.executor(iptables.Options{}).Apply(context.Background(), p)
		var re *iptables.RestoreError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, plan.IPv4, re.Family)
		assert.Equal(t, strings.Split(plan.Render(rs4, plan.Removal{}), "\n")[2], re.Text)
		// Both families' restores are started together; the IPv6 one
		// succeeded and is undone.
		require.Len(t, w.exec.calls, 3, "restore ipv4 (refused), restore ipv6, rollback ipv6: %v", w.exec.calls)
		assert.Equal(t, "ip6tables-nft-restore", w.exec.calls[2].Bin)
		removes(t, w.exec.calls[2].Stdin, ruleSet(t, p, plan.IPv6))
		assert.Empty(t, w.kernel.syncs)
	})

	t.Run("refused over an earlier run: the rollback writes the earlier rules back", func(t *testing.T) {
		old := build(t, redirectDefault, ipv6(true), func(c *capture.Config) { c.InboundPortsInclude = "80" })
		oldSave4 := saveOf(t, ruleSet(t, old, plan.IPv4), foreignNat...)
		w := newWorld(t, allBinaries, map[string]string{
			"iptables-nft-save":  oldSave4,
			"ip6tables-nft-save": saveOf(t, ruleSet(t, old, plan.IPv6)),
		})
		w.exec.fail["ip6tables-nft-restore"] = []string{restoreFailure}
		err := w.executor(iptables.Options{}).Apply(context.Background(), p)
		require.ErrorAs(t, err, new(*iptables.RestoreError))
		restores := w.calls("restore")
		require.Len(t, restores, 3, "%v", restores)
		rb := restores[2]
		assert.Equal(t, "iptables-nft-restore", rb.Bin)
		lines := strings.Split(rb.Stdin, "\n")
		for _, l := range strings.Split(oldSave4, "\n") {
			if !strings.HasPrefix(l, "-A ") || strings.Contains(l, "KUBE-TEST") {
				continue
			}
			// Jumps that were on top of a builtin chain go back on top.
			chain, args, _ := strings.Cut(strings.TrimPrefix(l, "-A "), " ")
			inserted := "-I " + chain + " 1 " + args
			assert.True(t, slices.Contains(lines, l) || slices.Contains(lines, inserted), "the rollback writes %q back", l)
		}
		assert.NotContains(t, rb.Stdin, "KUBE-TEST", "foreign rules are never touched")
	})

	t.Run("routing refused: both families rolled back, last first", func(t *testing.T) {
		tp := build(t, tproxyDefault, ipv6(true))
		w := newWorld(t, allBinaries, nil)
		w.kernel.syncErr = errors.New("network is down")
		err := w.executor(iptables.Options{}).Apply(context.Background(), tp)
		require.Error(t, err)
		assert.ErrorIs(t, err, w.kernel.syncErr)
		var bins []string
		for _, c := range w.exec.calls {
			bins = append(bins, c.Bin)
		}
		assert.Equal(t, []string{"iptables-nft-restore", "ip6tables-nft-restore", "ip6tables-nft-restore", "iptables-nft-restore"}, bins)
		removes(t, w.exec.calls[2].Stdin, ruleSet(t, tp, plan.IPv6))
		removes(t, w.exec.calls[3].Stdin, ruleSet(t, tp, plan.IPv4))
	})

	t.Run("rollback refused too: both errors reported", func(t *testing.T) {
		w := newWorld(t, allBinaries, nil)
		w.exec.fail["ip6tables-nft-restore"] = []string{restoreFailure}
		w.exec.fail["iptables-nft-restore"] = []string{"", "iptables-nft-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Invalid argument\n"}
		err := w.executor(iptables.Options{}).Apply(context.Background(), p)
		require.Error(t, err)
		assert.Contains(t, err.Error(), line3)
		assert.Contains(t, err.Error(), "rolling back")
		assert.Contains(t, err.Error(), "generation id")
		require.ErrorAs(t, err, new(*iptables.RestoreError))
	})

	t.Run("no line named: exit status and message", func(t *testing.T) {
		w := newWorld(t, allBinaries, nil)
		w.exec.fail["iptables-nft-restore"] = []string{"iptables-nft-restore v1.8.9 (nf_tables): Another app is currently holding the xtables lock.\n"}
		err := w.executor(iptables.Options{}).Apply(context.Background(), build(t, redirectDefault))
		var re *iptables.RestoreError
		require.ErrorAs(t, err, &re)
		assert.Zero(t, re.Line)
		assert.Contains(t, err.Error(), "xtables lock")
		assert.Contains(t, err.Error(), "exit status 1")
	})
}

// legacyRules is a legacy table holding a rule that is not ours.
const legacyRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -d 192.0.2.1/32 -j ACCEPT
COMMIT
`

const legacyFilterRule = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
`

const nftFilterRule = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
`

// SPEC §4.1: which flavour's binaries write the rules.
func TestBackendChoice(t *testing.T) {
	p := build(t, redirectDefault)
	for _, tc := range []struct {
		name      string
		mode      iptables.BackendMode
		installed []string
		saves     map[string]string
		want      string // the flavour of the restore that writes the plan
		bug       string
	}{
		{name: "fresh namespace: nft", installed: allBinaries, want: "nft"},
		{name: "legacy holds rules, nft none: legacy", installed: allBinaries,
			saves: map[string]string{"iptables-legacy-save": legacyRules}, want: "legacy"},
		{name: "legacy holds only a filter rule, nft none: legacy", installed: allBinaries,
			saves: map[string]string{"iptables-legacy-save": legacyFilterRule}, want: "legacy"},
		{name: "legacy holds only empty tables: nft", installed: allBinaries,
			saves: map[string]string{"iptables-legacy-save": emptyNat}, want: "nft"},
		{name: "both hold rules: nft", installed: allBinaries,
			saves: map[string]string{"iptables-legacy-save": legacyRules, "iptables-nft-save": legacyRules}, want: "nft"},
		{name: "both hold rules, nft only in filter: nft", installed: allBinaries,
			saves: map[string]string{"iptables-legacy-save": legacyRules, "iptables-nft-save": nftFilterRule}, want: "nft"},
		{name: "legacy binaries missing: nft", installed: without("legacy"),
			saves: map[string]string{"iptables-nft-save": emptyNat}, want: "nft"},
		{name: "legacy binaries missing although legacy holds rules: nft", installed: without("legacy"),
			saves: map[string]string{"iptables-legacy-save": legacyRules}, want: "nft"},
		{name: "nft binaries missing: legacy", installed: without("nft"), want: "legacy"},
		{name: "forced nft while legacy holds rules", mode: iptables.BackendNft, installed: allBinaries,
			saves: map[string]string{"iptables-legacy-save": legacyRules}, want: "nft"},
		{name: "forced legacy in a fresh namespace", mode: iptables.BackendLegacy, installed: allBinaries, want: "legacy"},
		{name: "forced legacy while nft holds rules", mode: iptables.BackendLegacy, installed: allBinaries,
			saves: map[string]string{"iptables-nft-save": emptyNat}, want: "legacy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			skipBug(t, tc.bug)
			w := newWorld(t, tc.installed, tc.saves)
			require.NoError(t, w.executor(iptables.Options{Mode: tc.mode}).Apply(context.Background(), p))
			restores := w.calls("restore")
			require.NotEmpty(t, restores)
			assert.Equal(t, restoreBin(plan.IPv4, tc.want), restores[0].Bin)
			assert.Equal(t, plan.Render(ruleSet(t, p, plan.IPv4), plan.Removal{}), restores[0].Stdin)
			assert.Len(t, restores, 1, "%v", restores)
		})
	}

	t.Run("forced legacy removes our rules from nft in a second transaction", func(t *testing.T) {
		w := newWorld(t, allBinaries, map[string]string{"iptables-nft-save": kernelSaveRedirectV4})
		require.NoError(t, w.executor(iptables.Options{Mode: iptables.BackendLegacy}).Apply(context.Background(), p))
		restores := w.calls("restore")
		require.Len(t, restores, 2, "%v", restores)
		assert.Equal(t, "iptables-legacy-restore", restores[0].Bin)
		assert.Equal(t, plan.Render(ruleSet(t, p, plan.IPv4), plan.Removal{}), restores[0].Stdin)
		assert.Equal(t, "iptables-nft-restore", restores[1].Bin)
		assert.Equal(t, plan.Render(plan.RuleSet{Family: plan.IPv4}, owned(t, plan.IPv4, kernelSaveRedirectV4)), restores[1].Stdin)
	})

	t.Run("detection reads legacy state without creating anything", func(t *testing.T) {
		// No legacy table: the legacy flavour is judged from the kernel's
		// table list alone, no iptables-legacy-save (which is harmless) and
		// above all no iptables-legacy invocation that could create tables.
		w := newWorld(t, allBinaries, map[string]string{"iptables-nft-save": emptyNat})
		require.NoError(t, w.executor(iptables.Options{}).Apply(context.Background(), p))
		assert.Empty(t, w.calls("legacy"))
	})
}

func TestMissingBinaries(t *testing.T) {
	redirect4 := build(t, redirectDefault)
	redirect46 := build(t, redirectDefault, ipv6(true))
	for _, tc := range []struct {
		name      string
		mode      iptables.BackendMode
		installed []string
		saves     map[string]string
		plan      plan.Plan
		names     []string // binaries the error must name
	}{
		{name: "nothing installed", installed: nil, plan: redirect4, names: []string{"iptables-nft-restore"}},
		{name: "nothing installed, dual-stack", installed: nil, plan: redirect46, names: []string{"iptables-nft-restore", "ip6tables-nft-restore"}},
		{name: "forced legacy, not installed", mode: iptables.BackendLegacy, installed: without("legacy"), plan: redirect4, names: []string{"iptables-legacy-restore"}},
		{name: "forced nft, not installed", mode: iptables.BackendNft, installed: without("nft"), plan: redirect4, names: []string{"iptables-nft-restore"}},
		{name: "no ip6tables at all, dual-stack", installed: without("ip6tables"), plan: redirect46, names: []string{"ip6tables-nft-restore"}},
		{name: "restore present, save missing while tables exist", installed: without("nft-save"),
			saves: map[string]string{"iptables-nft-save": kernelSaveRedirectV4}, plan: redirect4, names: []string{"iptables-nft-save"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, tc.installed, tc.saves)
			err := w.executor(iptables.Options{Mode: tc.mode}).Apply(context.Background(), tc.plan)
			require.Error(t, err)
			assert.ErrorIs(t, err, iptables.ErrNoBinary)
			for _, n := range tc.names {
				assert.Contains(t, err.Error(), n)
			}
			assert.Empty(t, w.calls("restore"), "nothing is written when a binary is missing")
		})
	}

	t.Run("binaries are resolved once", func(t *testing.T) {
		w := newWorld(t, allBinaries, map[string]string{"iptables-nft-save": kernelSaveRedirectV4})
		ex := w.executor(iptables.Options{})
		require.NoError(t, ex.Apply(context.Background(), redirect46))
		require.NoError(t, ex.Apply(context.Background(), redirect46))
		for _, n := range allBinaries {
			assert.LessOrEqual(t, count(w.looked, n), 1, "%s looked up %d times", n, count(w.looked, n))
		}
	})
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func TestCleanup(t *testing.T) {
	tproxy46 := build(t, tproxyDefault, ipv6(true))
	redirect4 := build(t, redirectDefault)
	nft4 := saveOf(t, ruleSet(t, tproxy46, plan.IPv4), foreignNat...)
	nft6 := saveOf(t, ruleSet(t, tproxy46, plan.IPv6))
	legacy4 := saveOf(t, ruleSet(t, redirect4, plan.IPv4))

	t.Run("owned objects in both flavours and both families", func(t *testing.T) {
		w := newWorld(t, allBinaries, map[string]string{
			"iptables-nft-save": nft4, "ip6tables-nft-save": nft6,
			"iptables-legacy-save": legacy4, "ip6tables-legacy-save": legacyForeign,
		})
		require.NoError(t, w.executor(iptables.Options{}).Cleanup(context.Background()))
		want := map[string]string{
			"iptables-nft-restore":    plan.Render(plan.RuleSet{Family: plan.IPv4}, owned(t, plan.IPv4, nft4)),
			"ip6tables-nft-restore":   plan.Render(plan.RuleSet{Family: plan.IPv6}, owned(t, plan.IPv6, nft6)),
			"iptables-legacy-restore": plan.Render(plan.RuleSet{Family: plan.IPv4}, owned(t, plan.IPv4, legacy4)),
		}
		got := map[string]string{}
		for _, c := range w.calls("restore") {
			assert.True(t, c.InNetns)
			assert.Equal(t, []string{sbin + c.Bin, "--noflush", "--wait", "30"}, c.Argv)
			_, dup := got[c.Bin]
			assert.False(t, dup, "%s ran twice", c.Bin)
			got[c.Bin] = c.Stdin
			assert.NotContains(t, c.Stdin, "KUBE-TEST")
			removes(t, c.Stdin, plan.RuleSet{})
		}
		assert.Equal(t, want, got, "one removal per flavour and family holding our rules; none for the foreign-only table")
		assert.Contains(t, got["iptables-nft-restore"], "-X ISTIO_TPROXY")
		assert.Contains(t, got["iptables-legacy-restore"], "-D PREROUTING -p tcp -j ISTIO_INBOUND")
		assert.Equal(t, []syncCall{{}}, w.kernel.syncs, "SyncRoutes(nil, nil): TPROXY routing and ::6 removed")
		assert.Equal(t, []string{testNetns}, w.kernel.doPaths)
		assert.Empty(t, w.kernel.outside)
		for _, d := range w.kernel.deletes {
			assert.Subset(t, []plan.Table{plan.TableNat, plan.TableMangle}, d.Tables)
		}
	})

	t.Run("clean namespace: no process, routing still synced", func(t *testing.T) {
		w := newWorld(t, allBinaries, nil)
		require.NoError(t, w.executor(iptables.Options{}).Cleanup(context.Background()))
		assert.Empty(t, w.exec.calls)
		assert.Equal(t, []syncCall{{}}, w.kernel.syncs)
	})

	t.Run("only foreign rules: read, no restore", func(t *testing.T) {
		w := newWorld(t, allBinaries, map[string]string{"iptables-legacy-save": legacyForeign, "iptables-nft-save": emptyNat})
		require.NoError(t, w.executor(iptables.Options{}).Cleanup(context.Background()))
		assert.Empty(t, w.calls("restore"))
		assert.Len(t, w.calls("save"), 2)
	})

}
