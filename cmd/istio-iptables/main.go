// Command istio-iptables writes the netfilter rules that send a pod's TCP
// traffic through the sidecar proxy. See README.md and docs/contract.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/dryrun"
	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
	"github.com/mesh-init/istio-iptables/validate"
)

// Set by the linker: -X main.version=... -X main.commit=...
var (
	version = "dev"
	commit  = "unknown"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the kernel refused, or the namespace could not be read
	exitUsage  = 2 // bad flags or values; nothing was touched
	// exitValidation: --run-validation found that interception does not
	// work (Istio's code for it).
	exitValidation = 126
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run is the whole command: parse flags and environment, validate, build
// the plan, then print it or apply it. It returns the exit code.
func run(args []string, getenv func(string) (string, bool), stdout, stderr io.Writer) int {
	args = stripSubcommand(args) // Istio's injector passes `istio-iptables` first
	if len(args) > 0 && args[0] == "explain" {
		return runExplain(args[1:], getenv, stdout, stderr)
	}
	o := options{cfg: capture.DefaultConfig(), iptablesMode: string(iptables.BackendAuto), wait: "30"}
	fs, defs := newFlags(&o)
	usageErr := func(msgs ...string) int {
		for _, m := range msgs {
			fmt.Fprintf(stderr, "istio-iptables: %s\n", oneLine(m))
		}
		fmt.Fprintln(stderr, "Run 'istio-iptables --help' for usage. Nothing was changed.")
		return exitUsage
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(flagError(err, fs))
	}
	if o.help {
		usage(stdout, defs, fs)
		return exitOK
	}
	if o.version {
		fmt.Fprintf(stdout, "istio-iptables %s (commit %s, %s)\n", version, commit, runtime.Version())
		return exitOK
	}
	uidGiven := fs.Changed("proxy-uid")
	fromEnv, envErrs := applyEnv(fs, defs, getenv)
	var errs []string
	users, usersWhere := userDatabase(o.netns) // the pod's, with --netns (identity.go)
	if _, ok := fromEnv["-u"]; !uidGiven && !ok {
		if uid, err := defaultProxyUID(getenv, users, usersWhere); err != nil {
			errs = append(errs, err.Error())
		} else {
			o.cfg.ProxyUID = uid
		}
	}
	dnsNotes := fillDNSServers(&o, fs, fromEnv)
	errs = append(errs, envErrs...)
	errs = append(errs, o.resolveIstio(fs, defs, fromEnv)...) // Istio's flags (istio.go)
	switch rest := fs.Args(); {
	case len(rest) == 0:
	case len(rest) == 1 && rest[0] == "clean":
		o.cleanupOnly = true
	default:
		errs = append(errs, positionalError(rest, fileExists))
	}
	mode := iptables.BackendMode(o.iptablesMode)
	if err := mode.Validate(); err != nil {
		errs = append(errs, withEnv(&capture.FieldError{Flag: "--iptables-mode", Msg: err.Error()}, fromEnv))
	}
	lockWait, err := parseWait(o.wait)
	if err != nil {
		errs = append(errs, withEnv(&capture.FieldError{Flag: "--wait", Msg: err.Error()}, fromEnv))
	}
	o.cfg.Lookup = users
	if err := o.cfg.Validate(); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, withEnv(e, fromEnv))
		}
	}
	// The namespace is opened once: its IPv6 detection and every change
	// of the run go through this one handle.
	ns := iptables.CurrentNamespace()
	if o.netns != "" {
		if opened, err := iptables.OpenNamespace(o.netns); err != nil {
			errs = append(errs, withEnv(&capture.FieldError{Flag: "--netns", Msg: err.Error()}, fromEnv))
		} else {
			ns = opened
			defer ns.Close()
		}
	}
	timeout, err := parseTimeout(o.timeout, lockWait)
	if err != nil {
		errs = append(errs, withEnv(&capture.FieldError{Flag: "--timeout", Msg: err.Error()}, fromEnv))
	}
	probe, err := o.cfg.Probe()
	if err == nil && probe.Run && o.netns != "" && !o.cleanupOnly {
		errs = append(errs, "--run-validation probes the namespace it runs in, as its own UID: run it inside the pod as the proxy UID "+
			"(as Istio's istio-validation container does), without --netns")
	}
	if len(errs) > 0 {
		return usageErr(errs...)
	}

	log := newLogger(o, stderr) // Istio's --log_* flags (istio.go)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if o.cleanupOnly {
		if probe.Run {
			log.Warn("--run-validation is ignored with --cleanup-only")
		}
		if o.dryRun && !o.diff {
			fmt.Fprintln(stdout, "# cleanup: removes every ISTIO_* chain and the jumps into them, both families and backends, the TPROXY routes and ::6 on lo")
			return exitOK
		}
		ex, err := iptables.NewExecutor(iptables.Options{Namespace: ns, Mode: backend(o, mode), LockWait: lockWait, Timeout: timeout, Logger: log})
		if err != nil {
			log.Error("cleanup", "err", err)
			return exitFailed
		}
		if o.dryRun {
			return printDecided(ctx, log, stdout, ex, plan.Plan{}, true)
		}
		if err := ex.Cleanup(ctx); err != nil {
			log.Error("cleanup failed; "+outcome(err), "err", privilegeHint(err))
			return exitFailed
		}
		return exitOK
	}

	if capture.IPv6Mode(strings.ToLower(strings.TrimSpace(o.cfg.IPv6))) == capture.IPv6Auto {
		has, err := ns.HasGlobalIPv6()
		if err != nil {
			log.Error("cannot tell whether the namespace has IPv6; pass --ipv6=true or --ipv6=false", "err", err)
			return exitFailed
		}
		o.cfg.HostIPv6 = has
	}
	for _, n := range dnsNotes {
		log.Log(ctx, n.level, n.msg, n.args...)
	}
	for _, w := range o.cfg.Warnings() {
		log.Warn(w)
	}
	p, err := capture.Build(o.cfg)
	if err != nil {
		log.Error("build the plan", "err", err)
		return exitFailed
	}
	logConfig(log, o, p)
	vp := validate.Probe{CapturePorts: probe.CapturePorts, Port: probe.Port, Timeout: probe.Timeout}
	_, vp.IPv6 = p.RuleSet(plan.IPv6)
	if o.dryRun && o.diff && !probe.SkipApply {
		ex, err := iptables.NewExecutor(iptables.Options{Namespace: ns, Mode: backend(o, mode), LockWait: lockWait, Timeout: timeout, Logger: log})
		if err != nil {
			log.Error("dry run", "err", err)
			return exitFailed
		}
		return printDecided(ctx, log, stdout, ex, p, false)
	}
	if o.dryRun {
		if probe.SkipApply {
			fmt.Fprintln(stdout, "# skip-rule-apply: no rule is written")
		} else if err := printPlan(o.native, stdout, p); err != nil {
			log.Error("print the plan", "err", err)
			return exitFailed
		}
		if probe.Run {
			fmt.Fprintln(stdout, "# "+validationPlan(vp))
		}
		return exitOK
	}
	if !probe.SkipApply {
		ex, err := iptables.NewExecutor(iptables.Options{Namespace: ns, Mode: backend(o, mode), LockWait: lockWait, Timeout: timeout, Logger: log})
		if err != nil {
			log.Error("apply", "err", err)
			return exitFailed
		}
		if err := ex.Apply(ctx, p); err != nil {
			err = privilegeHint(err) // EPERM without CAP_NET_ADMIN: say which capability
			log.Error("apply failed; "+outcome(err), "err", err)
			return exitFailed
		}
	}
	if probe.Run {
		log.Info(validationPlan(vp))
		if err := validate.Run(ctx, vp); err != nil {
			log.Error("validation failed: interception does not work", "err", err,
				"process", fmt.Sprintf("uid %d gid %d", os.Getuid(), os.Getgid()), "proxy", proxyIDs(o.cfg))
			return exitValidation
		}
		log.Info("validation passed")
	}
	return exitOK
}

// validationPlan says what the validation does.
func validationPlan(p validate.Probe) string {
	var ports []string
	for _, port := range p.CapturePorts {
		ports = append(ports, strconv.Itoa(int(port)))
	}
	targets := "127.0.0.6"
	if p.IPv6 {
		targets += " and [::6]"
	}
	return fmt.Sprintf("validation: listen on ports %s of lo, connect as this process to %s port %d, pass when a listener gets it with original port %d, within %s",
		strings.Join(ports, ","), targets, p.Port, p.Port, p.Timeout)
}

// proxyIDs names who the rules take for the proxy, for the message of a
// failed validation run as someone else.
func proxyIDs(c capture.Config) string {
	gid := c.ProxyGID
	if strings.Trim(gid, " ,") == "" {
		gid = c.ProxyUID
	}
	return "-u " + c.ProxyUID + " -g " + gid + " (run the validation as one of them)"
}

func logConfig(log *slog.Logger, o options, p plan.Plan) {
	c := o.cfg
	var fams []string
	for _, rs := range p.RuleSets {
		fams = append(fams, string(rs.Family))
	}
	log.Info("configuration",
		"-p", c.ProxyPort, "-z", c.InboundCapturePort, "-e", c.InboundTunnelPort,
		"-u", c.ProxyUID, "-g", c.ProxyGID, "-m", c.InboundInterceptionMode,
		"-b", c.InboundPortsInclude, "-d", c.InboundPortsExclude,
		"-i", c.OutboundIPRangesInclude, "-x", c.OutboundIPRangesExclude,
		"-q", c.OutboundPortsInclude, "-o", c.OutboundPortsExclude,
		"-k", c.KubeVirtInterfaces, "-c", c.ExcludeInterfaces,
		"-t", c.InboundTProxyMark, "-r", c.InboundTProxyRouteTable,
		"ipv6", c.IPv6, "families", strings.Join(fams, ","),
		"netns", o.netns, "iptables-mode", o.iptablesMode, "dry-run", o.dryRun,
		"redirect-dns", c.RedirectDNS, "capture-all-dns", c.CaptureAllDNS, "dns-servers", c.DNSServers,
		"drop-invalid", c.DropInvalid, "owner-groups", c.OwnerGroupsInclude, "owner-groups-exclude", c.OwnerGroupsExclude,
		"run-validation", c.RunValidation, "skip-rule-apply", c.SkipRuleApply,
		"iptables-probe-port", c.ProbePort, "probe-timeout", c.ProbeTimeout)
}

// printDecided is the dry run against a live namespace: the transaction
// the run would commit there, decided from the namespace as it is now.
func printDecided(ctx context.Context, log *slog.Logger, stdout io.Writer, ex iptables.Executor, p plan.Plan, cleanup bool) int {
	tx, err := ex.Decide(ctx, p, cleanup)
	if err != nil {
		log.Error("dry run: "+outcome(err), "err", privilegeHint(err))
		return exitFailed
	}
	fmt.Fprint(stdout, tx.String())
	return exitOK
}

// backend is the one backend choice: --native-nftables is the spelling of
// native, else --iptables-mode.
func backend(o options, mode iptables.BackendMode) iptables.BackendMode {
	if o.native {
		return iptables.BackendNative
	}
	return mode
}

// outcome words what a failed run left (iptables.Outcome), and what to do.
func outcome(err error) string {
	o := iptables.Outcome(err)
	if errors.Is(err, iptables.ErrUnchanged) || errors.Is(err, iptables.ErrRolledBack) {
		return o
	}
	return o + "; run again"
}

// parseTimeout parses --timeout, a Go duration (at most 1h); empty means
// --wait plus 10 s.
func parseTimeout(v string, wait time.Duration) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return wait + 10*time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > time.Hour {
		return 0, fmt.Errorf("%q is not a duration between 1ms and 1h (for example 40s)", v)
	}
	return d, nil
}

// printPlan prints the dry run: the `nft -f` text for the native backend,
// else the restore text.
func printPlan(native bool, w io.Writer, p plan.Plan) error {
	if native {
		script, err := iptables.NftScript(p)
		if err != nil {
			return err
		}
		return dryrun.PrintNft(w, script, p)
	}
	return dryrun.Print(w, p)
}

// parseWait parses --wait: whole seconds, 1-3600.
func parseWait(v string) (time.Duration, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil || n < 1 || n > 3600 {
		return 0, fmt.Errorf("%q is not a number of seconds in 1-3600", v)
	}
	return time.Duration(n) * time.Second, nil
}

// withEnv names the variable a bad value came from, when it did.
func withEnv(err error, fromEnv map[string]string) string {
	var fe *capture.FieldError
	if errors.As(err, &fe) {
		if env, ok := fromEnv[fe.Flag]; ok {
			return fmt.Sprintf("%s (from %s): %s", fe.Flag, env, fe.Msg)
		}
	}
	return err.Error()
}

// unjoin returns the errors inside an errors.Join.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
