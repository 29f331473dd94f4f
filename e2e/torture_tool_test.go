package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The configurations the suite moves between. --ipv6=true everywhere, so
// that a scratch namespace without a global IPv6 address computes the
// same expected state as the bed, which has one.
var (
	ttRedirect = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-b", "*", "-d", "15090,15021,15020", "-i", "*", "-x", "", "--ipv6=true"}
	ttTproxy   = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-b", "*", "-d", "15090,15021,15020", "-i", "*", "-x", "", "--ipv6=true"}
	ttClean    = []string{"--cleanup-only"}
)

// ttConfig is a named configuration: the flags of one run, or none at all
// for a namespace nobody programmed.
type ttConfig struct {
	name string
	args []string // nil: the clean namespace
}

var (
	cfgClean          = ttConfig{name: "clean"}
	cfgRedirect       = ttConfig{name: "REDIRECT", args: ttRedirect}
	cfgTproxy         = ttConfig{name: "TPROXY", args: ttTproxy}
	cfgNativeRedirect = ttConfig{name: "native REDIRECT", args: append([]string{"--native-nftables"}, ttRedirect...)}
	cfgNativeTproxy   = ttConfig{name: "native TPROXY", args: append([]string{"--native-nftables"}, ttTproxy...)}
)

// captures says whether the configuration captures traffic.
func (c ttConfig) captures() bool { return c.args != nil }

// The init container's privileges (issue 13): UID 0 with only NET_ADMIN
// and NET_RAW, bounding set included, already inside the pod's namespace.
var ttCaps = []string{
	"--bounding-set", "-all,+net_admin,+net_raw",
	"--inh-caps", "-all,+net_admin,+net_raw",
	"--ambient-caps", "-all,+net_admin,+net_raw",
}

// ttSystemPath is the PATH the tool gets unless a trial replaces it.
const ttSystemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ttRun is one run of the tool and what the suite does to it.
type ttRun struct {
	args  []string
	path  string   // the tool's PATH; "" ttSystemPath
	lock  string   // XTABLES_LOCKFILE; "" the bed's
	env   []string // more variables, e.g. XTABLES_LIBDIR
	sig   syscall.Signal
	group bool // send sig to the whole process group
	// cni: run as a CNI plugin does instead, from this namespace as root
	// with --netns.
	cni   bool
	after time.Duration // when to send sig
	bound time.Duration // the suite kills the group after this; 0: 20s
}

// ttResult is how a run ended.
type ttResult struct {
	code     int // exit code; -1 when a signal ended it
	signaled bool
	stderr   string
	took     time.Duration
	sent     bool // sig was sent before the run ended
	bounded  bool // the suite had to kill it at its bound
}

func (r ttResult) String() string {
	s := fmt.Sprintf("exit %d after %s", r.code, r.took.Round(time.Millisecond))
	if r.signaled {
		s = fmt.Sprintf("killed by a signal after %s", r.took.Round(time.Millisecond))
	}
	if r.bounded {
		s += " (killed by the suite at its bound)"
	}
	if msg := lastLines(r.stderr, 2); msg != "" {
		s += ": " + msg
	}
	return s
}

// lastLines is the last n non-empty lines of s, joined by " | ", each cut
// at 400 bytes (a configuration line with 4,000 UIDs is long).
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); len(l) > 400 {
			l = l[:400] + "..."
		}
		if l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// run starts the tool inside netns path (nsenter --net, then setpriv to
// the init container's capabilities; or, with r.cni, from here with
// --netns), in its own process group, sends
// r.sig at r.after, and kills the group at r.bound.
func (tt *torture) run(nsPath, lockFile string, r ttRun) ttResult {
	argv := append([]string{"--net=" + nsPath, ttSetpriv}, ttCaps...)
	argv = append(append(argv, "--", tt.bin), r.args...)
	cmd := exec.Command(ttNsenter, argv...)
	if r.cni {
		cmd = exec.Command(tt.bin, append([]string{"--netns", nsPath}, r.args...)...)
	}
	path := r.path
	if path == "" {
		path = ttSystemPath
	}
	if r.lock != "" {
		lockFile = r.lock
	}
	cmd.Env = append([]string{"PATH=" + path, "XTABLES_LOCKFILE=" + lockFile}, r.env...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return ttResult{code: -2, stderr: "start: " + err.Error()}
	}
	pid := cmd.Process.Pid
	var mu sync.Mutex
	done, res := false, ttResult{}
	signal := func(sig syscall.Signal, group bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return false
		}
		if group {
			return syscall.Kill(-pid, sig) == nil
		}
		return syscall.Kill(pid, sig) == nil
	}
	if r.sig != 0 {
		timer := time.AfterFunc(r.after, func() {
			if signal(r.sig, r.group) {
				mu.Lock()
				res.sent = true
				mu.Unlock()
			}
		})
		defer timer.Stop()
	}
	bound := r.bound
	if bound == 0 {
		bound = 20 * time.Second
	}
	killer := time.AfterFunc(bound, func() {
		if signal(syscall.SIGKILL, true) {
			mu.Lock()
			res.bounded = true
			mu.Unlock()
		}
	})
	defer killer.Stop()
	err := cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	done = true
	res.took = time.Since(start)
	res.stderr = stderr.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.signaled = true
		}
	default:
		res.code = -2
		res.stderr += "\nwait: " + err.Error()
	}
	return res
}

// Tools the suite runs by absolute path, so a trial's PATH never hides them.
var (
	ttNsenter = "/usr/bin/nsenter"
	ttSetpriv = "/usr/bin/setpriv"
)

// ttOutput runs a command in this namespace and returns its combined output.
func ttOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// ttSh runs a shell script inside netns path, as root with every
// capability (the suite's own reading and scrubbing, never the tool).
func ttSh(nsPath, script string) (string, error) {
	cmd := exec.Command(ttNsenter, "--net="+nsPath, "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=" + ttSystemPath}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// snapshotScript prints everything the tool may change: both families'
// tables on both iptables flavours, every nftables table, policy routing,
// every route and lo's addresses, each section headed "== name".
const snapshotScript = `
for s in iptables-nft-save ip6tables-nft-save iptables-legacy-save ip6tables-legacy-save; do echo "== $s"; $s 2>&1; done
echo "== nft"; nft list ruleset 2>&1
echo "== rule4"; ip -4 rule show
echo "== rule6"; ip -6 rule show
echo "== route4"; ip -4 route show table all
echo "== route6"; ip -6 route show table all
echo "== lo"; ip addr show dev lo
`

// snapshot reads the namespace's state, normalized (see normalizeState).
func snapshot(nsPath string) (string, error) {
	out, err := ttSh(nsPath, snapshotScript)
	if err != nil {
		return "", fmt.Errorf("read the state of %s: %w: %s", nsPath, err, out)
	}
	return normalizeState(out), nil
}

var (
	ttCounters   = regexp.MustCompile(`\[\d+:\d+\]`)
	ttNftCounter = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	// ttMarker is the no-op marker table (iptables/marker.go): its name
	// carries the ruleset generation, which differs between namespaces.
	// It is left out of the comparison; whether it certifies the truth is
	// judged by the run after each trial, which must program the namespace.
	ttMarker = regexp.MustCompile(`^table inet istio_iptables_[0-9a-f]{16}_\d+ \{`)
	ttTable  = regexp.MustCompile(` table (\S+)`)
	// ttXtables are the tables iptables-nft manages, shown by *-save.
	ttXtables = regexp.MustCompile(`^table ip6? (nat|mangle|raw|filter|security) \{`)
)

// normalizeState drops what differs between two namespaces holding the
// same configuration: timestamps, counters, the marker's generation, the
// routes of the main and local tables (the bed's links, not the tool's:
// the tool's ::6 shows in lo's addresses), address lifetimes. nftables
// tables are sorted by name; the iptables-nft ones are left to *-save,
// which prints them in a fixed order.
func normalizeState(raw string) string {
	var sb strings.Builder
	section := ""
	var tables []string // nft blocks
	var table strings.Builder
	flushTables := func() {
		sort.Strings(tables)
		sb.WriteString(strings.Join(tables, "") + table.String())
		tables = nil
		table.Reset()
	}
	for _, line := range strings.Split(raw, "\n") {
		if strings.HasPrefix(line, "== ") {
			if section == "nft" {
				flushTables()
			}
			section = line[3:]
			sb.WriteString(line + "\n")
			continue
		}
		switch {
		case section == "nft":
			if strings.HasPrefix(line, "# ") || strings.TrimSpace(line) == "" {
				continue // "table ip nat is managed by iptables-nft"
			}
			table.WriteString(ttNftCounter.ReplaceAllString(line, "counter") + "\n")
			if line == "}" || strings.HasPrefix(line, "table ") && strings.HasSuffix(line, "}") {
				block := table.String()
				table.Reset()
				if !ttMarker.MatchString(block) && !ttXtables.MatchString(block) {
					tables = append(tables, sortNftChains(block))
				}
			}
			continue
		case strings.HasPrefix(section, "route"):
			m := ttTable.FindStringSubmatch(line)
			if m == nil || m[1] == "local" || m[1] == "main" || m[1] == "default" {
				continue
			}
		case section == "lo":
			if strings.Contains(line, "valid_lft") {
				continue
			}
			// An address still in duplicate address detection is the same address.
			line = strings.Replace(line, " tentative", "", 1)
		default: // *-save
			if strings.HasPrefix(line, "#") {
				continue
			}
			line = ttCounters.ReplaceAllString(line, "")
		}
		if strings.TrimSpace(line) != "" {
			sb.WriteString(line + "\n")
		}
	}
	if section == "nft" {
		flushTables()
	}
	return sb.String()
}

// sortNftChains sorts the chains (and sets) of one nft table block:
// nft lists them in creation order, which a re-run may change without
// changing what any chain holds. The rules inside a chain keep their order.
func sortNftChains(block string) string {
	lines := strings.Split(strings.TrimSuffix(block, "\n"), "\n")
	if len(lines) < 2 {
		return block
	}
	var parts []string
	var cur strings.Builder
	for _, l := range lines[1 : len(lines)-1] {
		if strings.TrimSpace(l) == "" {
			continue
		}
		cur.WriteString(l + "\n")
		if l == "\t}" {
			parts = append(parts, cur.String())
			cur.Reset()
		}
	}
	if cur.Len() > 0 {
		parts = append(parts, cur.String())
	}
	sort.Strings(parts)
	return lines[0] + "\n" + strings.Join(parts, "") + lines[len(lines)-1] + "\n"
}

// scrubScript returns a namespace to nobody's configuration without the
// tool: every nftables table (the iptables-nft ones included) flushed,
// policy-routing rules other than the three defaults deleted, every route
// table other than main, local and default flushed, ::6 removed from lo.
// Legacy tables are never touched (touching them creates them); the
// trials run on the nft flavour and the snapshot shows any legacy rule.
const scrubScript = `
nft flush ruleset
for f in -4 -6; do
  for p in $(ip $f rule show | cut -d: -f1); do
    case $p in 0|32766|32767) ;; *) while ip $f rule del priority $p 2>/dev/null; do :; done ;; esac
  done
  for t in $(ip $f route show table all | sed -n 's/.* table \([^ ]*\).*/\1/p' | sort -u); do
    case $t in local|main|default) ;; *) ip $f route flush table $t ;; esac
  done
done
ip addr del ::6/128 dev lo 2>/dev/null
true
`

// scrub runs scrubScript in nsPath.
func scrub(nsPath string) error {
	if out, err := ttSh(nsPath, scrubScript); err != nil {
		return fmt.Errorf("scrub %s: %w: %s", nsPath, err, out)
	}
	return nil
}

// expectedStates holds, per configuration, the state a fresh apply leaves
// in a scratch namespace: what "the configuration whole" means. Nothing is
// hard-coded; the binary under test computes it on an empty namespace.
type expectedStates struct {
	tt     *torture
	mu     sync.Mutex
	states map[string]string
	failed map[string]error
}

// of returns the expected state of c, computing it on first use.
func (e *expectedStates) of(t *testing.T, c ttConfig) string {
	t.Helper()
	s, err := e.try(t, c)
	require.NoError(t, err)
	return s
}

// try is of for a configuration a fresh apply may refuse: the error says
// how it failed.
func (e *expectedStates) try(t *testing.T, c ttConfig) (string, error) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.states[c.name]; ok {
		return s, e.failed[c.name]
	}
	name := scratchName()
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "ip netns add %s: %s", name, out)
	defer func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	}()
	path := "/var/run/netns/" + name
	_, err = ttSh(path, "ip link set lo up")
	require.NoError(t, err)
	var failed error
	if c.captures() {
		res := e.tt.run(path, filepath.Join(t.TempDir(), "xtables.lock"), ttRun{args: c.args, bound: time.Minute})
		if res.code != 0 {
			failed = fmt.Errorf("a fresh apply of %s in scratch namespace %s failed: %s", c.name, name, res)
		}
	}
	s, err := snapshot(path)
	require.NoError(t, err)
	e.states[c.name], e.failed[c.name] = s, failed
	return s, failed
}

func scratchName() string {
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	return "ii-tt-" + hex.EncodeToString(id) + "-scratch"
}

// strays lists the processes left inside the namespace of nsPath other
// than the bed's helpers (this test binary): a child the tool left behind.
// It waits up to a second for them to go.
func strays(nsPath string) []string {
	var left []string
	for wait := 0; wait < 20; wait++ {
		if left = nsProcs(nsPath); len(left) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return left
}

// nsProcs lists, as "pid comm (exe)", the processes inside the namespace
// of nsPath other than the bed's helpers.
func nsProcs(nsPath string) []string {
	fi, err := os.Stat(nsPath)
	if err != nil {
		return []string{"stat " + nsPath + ": " + err.Error()}
	}
	want := fmt.Sprintf("net:[%d]", fi.Sys().(*syscall.Stat_t).Ino)
	var procs []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil || ns != want {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if exe == helperBin || exe == "" {
			continue // the bed's servers and proxies, or a kernel thread
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		procs = append(procs, fmt.Sprintf("%d %s (%s)", pid, strings.TrimSpace(string(comm)), exe))
	}
	return procs
}

// killStrays kills the processes strays returned (descendants of a run
// of the tool this suite started), by pid.
func killStrays(left []string) {
	for _, s := range left {
		if pid, err := strconv.Atoi(strings.Fields(s)[0]); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// stateDiff lists the lines missing from got (-) and the extra ones (+),
// at most 12, for failure messages.
func stateDiff(want, got string) string {
	var out []string
	out = append(out, lineSurplus("-", want, got)...)
	out = append(out, lineSurplus("+", got, want)...)
	if len(out) > 12 {
		out = append(out[:12], fmt.Sprintf("... %d more", len(out)-12))
	}
	if len(out) == 0 {
		return "(same lines, another order)"
	}
	return strings.Join(out, " ")
}

// lineSurplus returns the lines of a that b lacks (as a multiset), in a's
// order, each with prefix.
func lineSurplus(prefix, a, b string) []string {
	have := map[string]int{}
	for _, l := range strings.Split(b, "\n") {
		have[l]++
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if have[l] > 0 {
			have[l]--
			continue
		}
		out = append(out, prefix+strings.TrimSpace(l))
	}
	return out
}
