package main

// Istio's command line (issue 13, part 4): Istio's injector starts
// istio-init as `istio-iptables -p 15001 ... --log_output_level=default:info
// [--log_as_json] [--run-validation --skip-rule-apply] [--force-apply]
// [--native-nftables]`, with the mesh's ProxyMetadata as environment
// variables. Every flag and variable of Istio's `pilot-agent istio-iptables`
// (tools/istio-iptables/pkg/cmd/root.go, pkg/constants, and pilot-agent's
// logging options) is accepted here with Istio's meaning; where ours
// already does what a flag asks for, the flag is a documented no-op.

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/mesh-init/istio-iptables/capture"
)

// istioSubcommand is the argument Istio's injector puts first: the
// pilot-agent subcommand's name.
const istioSubcommand = "istio-iptables"

// stripSubcommand drops a leading "istio-iptables" argument, as
// pilot-agent consumes it before its subcommand sees the flags.
func stripSubcommand(args []string) []string {
	if len(args) > 0 && args[0] == istioSubcommand {
		return args[1:]
	}
	return args
}

// istioDefs are the flags of Istio's command that have no flag of ours of
// the same name. Istio derives each variable from the flag's name
// (pkg/flag.BindEnv: DUAL_STACK for --dual-stack); its --log_* flags have
// none.
func istioDefs(o *options) []flagDef {
	i := &o.istio
	noop := func(why string) string { return "no-op here: " + why }
	return []flagDef{
		{long: "network-namespace", aliasOf: "netns", str: &o.netns, istio: true,
			usage: "Istio's name for --netns"},
		{long: "iptables-version", env: "IPTABLES_VERSION", str: &i.iptablesVersion, istio: true,
			usage: "nft or legacy: Istio's name for --iptables-mode (empty: auto)"},
		{long: "force-legacy-iptables", env: "FORCE_LEGACY_IPTABLES", boolean: &i.forceLegacy, istio: true,
			usage: "older Istio's switch for --iptables-mode legacy"},
		{long: "dual-stack", env: "DUAL_STACK", envAliases: []string{"ISTIO_DUAL_STACK", "ISTIO_AGENT_DUAL_STACK"}, boolean: &i.dualStack, istio: true,
			usage: noop("--ipv6=auto (the default) already writes IPv6 whenever the namespace has a global IPv6 address, whatever the address order")},
		{long: "reconcile", env: "RECONCILE", boolean: &i.reconcile, istio: true,
			usage: noop("every run replaces earlier rules in the same transaction, with no window without capture")},
		{long: "force-apply", env: "FORCE_APPLY", boolean: &i.forceApply, istio: true,
			usage: noop("a run writes unless the kernel holds exactly its rules, compared rule by rule")},
		{long: "cni-mode", env: "CNI_MODE", boolean: &i.cniMode, istio: true,
			usage: noop("the xtables lock is XTABLES_LOCKFILE's (or /run/xtables.lock), whoever runs the tool")},
		{long: "restore-format", short: "f", env: "RESTORE_FORMAT", boolean: &i.restoreFormat, istio: true,
			usage: noop("the rules are always written, and printed by --dry-run, as *-restore input")},
		{long: "host-nsenter-exec", env: "HOST_NSENTER_EXEC", boolean: &i.nsenterExec, istio: true,
			usage: noop("no process is used to enter --netns")},
		{long: "iptables-trace-logging", env: "IPTABLES_TRACE_LOGGING", boolean: &i.traceLogging, istio: true,
			usage: "older Istio's LOG rules for tracing: not supported, ignored with a warning (use 'istio-iptables explain')"},
		{long: "log_output_level", str: &i.logOutputLevel, istio: true,
			usage: "minimum level of the logs: [scope:]level,... with debug, info, warn, error, fatal or none (the most verbose one counts)"},
		{long: "log_as_json", boolean: &i.logAsJSON, istio: true, usage: "logs as JSON objects, one a line"},
		{long: "log_caller", str: &i.logCaller, istio: true, usage: "scopes whose logs carry the caller (any scope given: all logs)"},
		{long: "log_stacktrace_level", str: &i.logStacktraceLevel, istio: true, usage: noop("no stack traces are logged")},
		{long: "log_target", str: &i.logTarget, istio: true,
			usage: "stderr (or Istio's default stdout, taken as stderr: stdout carries only the plan); a file path is refused"},
		{long: "log_rotate", str: &i.logRotate, istio: true, usage: noop("logs go to stderr, nothing is rotated")},
		{long: "log_rotate_max_age", str: &i.logRotateMaxAge, istio: true, usage: noop("nothing is rotated")},
		{long: "log_rotate_max_size", str: &i.logRotateMaxSize, istio: true, usage: noop("nothing is rotated")},
		{long: "log_rotate_max_backups", str: &i.logRotateMaxBackups, istio: true, usage: noop("nothing is rotated")},
	}
}

// defaultIstioOptions are the defaults of Istio's logging flags.
func defaultIstioOptions() istioOptions {
	return istioOptions{
		logOutputLevel: "default:info", logStacktraceLevel: "default:none", logTarget: "stdout",
		logRotateMaxAge: "30", logRotateMaxSize: "104857600", logRotateMaxBackups: "1000",
	}
}

// defEnv is the variable of the flag long.
func defEnv(defs []flagDef, long string) string {
	for _, d := range defs {
		if d.long == long {
			return d.env
		}
	}
	return ""
}

// resolveIstio maps Istio's flags onto ours once flags and variables are
// read, and checks their values. It returns the usage errors.
func (o *options) resolveIstio(fs *pflag.FlagSet, defs []flagDef, fromEnv map[string]string) []string {
	i := &o.istio
	var errs []string
	modeGiven := changed(fs, defs, "iptables-mode") || fromEnv["--iptables-mode"] != ""
	var want string
	switch v := strings.ToLower(strings.TrimSpace(i.iptablesVersion)); v {
	case "":
	case "nft", "legacy":
		want = v
	default:
		errs = append(errs, withEnv(fieldErr("--iptables-version", fmt.Sprintf("%q is not nft or legacy", i.iptablesVersion)), fromEnv))
	}
	if i.forceLegacy {
		if want == "nft" {
			errs = append(errs, "--force-legacy-iptables and --iptables-version nft exclude each other")
		}
		want = "legacy"
	}
	switch {
	case want == "":
	case modeGiven && o.iptablesMode != want:
		errs = append(errs, fmt.Sprintf("--iptables-mode %s and Istio's --iptables-version/--force-legacy-iptables %s disagree; give one", o.iptablesMode, want))
	default:
		o.iptablesMode = want
	}
	if _, err := parseLogLevel(i.logOutputLevel); err != nil {
		errs = append(errs, "--log_output_level: "+err.Error())
	}
	if _, err := parseLogLevel(i.logStacktraceLevel); err != nil {
		errs = append(errs, "--log_stacktrace_level: "+err.Error())
	}
	switch i.logTarget {
	case "stdout", "stderr", "":
	default:
		errs = append(errs, fmt.Sprintf("--log_target: %q: only stderr is supported (stdout, Istio's default, is taken as stderr: stdout carries the plan)", i.logTarget))
	}
	for _, f := range []struct{ name, v string }{
		{"--log_rotate_max_age", i.logRotateMaxAge}, {"--log_rotate_max_size", i.logRotateMaxSize}, {"--log_rotate_max_backups", i.logRotateMaxBackups},
	} {
		if n, err := strconv.Atoi(strings.TrimSpace(f.v)); err != nil || n < 0 {
			errs = append(errs, fmt.Sprintf("%s: %q is not a whole number", f.name, f.v))
		}
	}
	return errs
}

// newLogger builds the slog logger Istio's logging flags ask for (level,
// JSON, caller), on stderr, and logs what Istio's no-op flags did.
func newLogger(o options, stderr io.Writer) *slog.Logger {
	i := o.istio
	level, err := parseLogLevel(i.logOutputLevel)
	if err != nil {
		level = slog.LevelInfo // resolveIstio reported it
	}
	var h slog.Handler
	ho := &slog.HandlerOptions{Level: level, AddSource: strings.TrimSpace(i.logCaller) != ""}
	switch {
	case level == levelNone:
		h = slog.NewTextHandler(io.Discard, ho)
	case i.logAsJSON:
		h = slog.NewJSONHandler(stderr, ho)
	default:
		h = slog.NewTextHandler(stderr, ho)
	}
	log := slog.New(h)
	var noops []string
	for _, f := range []struct {
		name string
		on   bool
	}{
		{"--dual-stack", i.dualStack}, {"--reconcile", i.reconcile}, {"--force-apply", i.forceApply},
		{"--cni-mode", i.cniMode}, {"--host-nsenter-exec", i.nsenterExec},
	} {
		if f.on {
			noops = append(noops, f.name)
		}
	}
	if len(noops) > 0 {
		log.Info("Istio flags accepted as no-ops: this tool already does what they ask for (see --help)", "flags", strings.Join(noops, " "))
	}
	if i.traceLogging {
		log.Warn("--iptables-trace-logging is not supported: no LOG rules are written; ask 'istio-iptables explain' where a connection goes")
	}
	return log
}

// levelNone is Istio's "none": no log at all.
const levelNone = slog.Level(100)

// parseLogLevel reads Istio's --log_output_level: "level" or
// "scope:level" items, comma separated. This tool has one scope, so the
// most verbose level named counts.
func parseLogLevel(v string) (slog.Level, error) {
	levels := map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "warning": slog.LevelWarn,
		// fatal: Istio logs only what ends the process; every error here does.
		"error": slog.LevelError, "fatal": slog.LevelError, "none": levelNone,
	}
	best, seen := levelNone, false
	for _, it := range strings.Split(v, ",") {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		if _, l, ok := strings.Cut(it, ":"); ok {
			it = l
		}
		l, ok := levels[strings.ToLower(strings.TrimSpace(it))]
		if !ok {
			return 0, fmt.Errorf("%q: the level must be debug, info, warn, error, fatal or none", v)
		}
		best, seen = min(best, l), true
	}
	if !seen {
		return slog.LevelInfo, nil
	}
	return best, nil
}

// flagError rewrites pflag's parse error for people: an unknown flag gets
// the nearest known one suggested.
func flagError(err error, fs *pflag.FlagSet) string {
	msg := err.Error()
	name, ok := strings.CutPrefix(msg, "unknown flag: --")
	if !ok {
		return msg
	}
	name, _, _ = strings.Cut(name, "=")
	best, dist := "", 4
	fs.VisitAll(func(f *pflag.Flag) {
		if d := editDistance(name, f.Name); d < dist || d == dist && best != "" && f.Name < best {
			best, dist = f.Name, d
		}
	})
	if best == "" || dist > max(2, len(name)/3) {
		return msg
	}
	return fmt.Sprintf("%s (did you mean --%s?)", msg, best)
}

// editDistance is the Levenshtein distance of a and b, with '-' and '_'
// taken as equal (Istio spells its log flags with '_').
func editDistance(a, b string) int {
	norm := func(s string) []rune { return []rune(strings.ReplaceAll(s, "_", "-")) }
	x, y := norm(a), norm(b)
	prev := make([]int, len(y)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(x); i++ {
		cur := make([]int, len(y)+1)
		cur[0] = i
		for j := 1; j <= len(y); j++ {
			cost := 1
			if x[i-1] == y[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(y)]
}

// positionalError explains arguments that are not flags. Names of files
// in the current directory are what the shell makes of an unquoted '*'
// (`-i *`), so the message says to quote it.
func positionalError(rest []string, exists func(string) bool) string {
	shown := strings.Join(rest, " ")
	if len(rest) > 3 {
		shown = fmt.Sprintf("%s ... (%d more)", strings.Join(rest[:3], " "), len(rest)-3)
	}
	msg := fmt.Sprintf("unexpected argument %q (the only positional argument is 'clean')", shown)
	if slices.ContainsFunc(rest, exists) {
		msg += "; these look like file names: the shell expands an unquoted * into the files of the current directory, so quote it: -i '*', -b '*'"
	}
	return msg
}

// fileExists reports whether name is a file or directory here.
func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// fieldErr is a bad value of flag.
func fieldErr(flag, msg string) error { return &capture.FieldError{Flag: flag, Msg: msg} }
