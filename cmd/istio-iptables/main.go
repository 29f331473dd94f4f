// Command istio-iptables writes the netfilter rules that send a pod's TCP
// traffic through the sidecar proxy. See README.md and SPEC.md.
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
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run is the whole command: parse flags and environment, validate, build
// the plan, then print it or apply it. It returns the exit code.
func run(args []string, getenv func(string) (string, bool), stdout, stderr io.Writer) int {
	o := options{cfg: capture.DefaultConfig(), iptablesMode: string(iptables.BackendAuto), wait: "30"}
	fs, defs := newFlags(&o)
	usageErr := func(msgs ...string) int {
		for _, m := range msgs {
			fmt.Fprintf(stderr, "istio-iptables: %s\n", m)
		}
		fmt.Fprintln(stderr, "Run 'istio-iptables --help' for usage. Nothing was changed.")
		return exitUsage
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(err.Error())
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
	if _, ok := fromEnv["-u"]; !uidGiven && !ok {
		o.cfg.ProxyUID = defaultProxyUID(getenv)
	}
	var errs []string
	errs = append(errs, envErrs...)
	switch rest := fs.Args(); {
	case len(rest) == 0:
	case len(rest) == 1 && rest[0] == "clean":
		o.cleanupOnly = true
	default:
		errs = append(errs, fmt.Sprintf("unexpected argument %q (the only positional argument is 'clean')", strings.Join(rest, " ")))
	}
	mode := iptables.BackendMode(o.iptablesMode)
	if err := mode.Validate(); err != nil {
		errs = append(errs, withEnv(&capture.FieldError{Flag: "--iptables-mode", Msg: err.Error()}, fromEnv))
	}
	lockWait, err := parseWait(o.wait)
	if err != nil {
		errs = append(errs, withEnv(&capture.FieldError{Flag: "--wait", Msg: err.Error()}, fromEnv))
	}
	o.cfg.Lookup = osLookup{}
	if err := o.cfg.Validate(); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, withEnv(e, fromEnv))
		}
	}
	if o.netns != "" {
		if err := iptables.CheckNetns(o.netns); err != nil {
			errs = append(errs, withEnv(&capture.FieldError{Flag: "--netns", Msg: err.Error()}, fromEnv))
		}
	}
	if len(errs) > 0 {
		return usageErr(errs...)
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if o.cleanupOnly {
		if o.dryRun {
			fmt.Fprintln(stdout, "# cleanup: removes every ISTIO_* chain and the jumps into them, both families and backends, the TPROXY routes and ::6 on lo")
			return exitOK
		}
		ex, err := iptables.NewExecutor(iptables.Options{Netns: o.netns, Mode: mode, LockWait: lockWait, Logger: log})
		if err != nil {
			log.Error("cleanup", "err", err)
			return exitFailed
		}
		if err := ex.Cleanup(ctx); err != nil {
			log.Error("cleanup failed", "err", err)
			return exitFailed
		}
		return exitOK
	}

	if capture.IPv6Mode(strings.ToLower(strings.TrimSpace(o.cfg.IPv6))) == capture.IPv6Auto {
		has, err := iptables.HasGlobalIPv6(o.netns)
		if err != nil {
			log.Error("cannot tell whether the namespace has IPv6; pass --ipv6=true or --ipv6=false", "err", err)
			return exitFailed
		}
		o.cfg.HostIPv6 = has
	}
	for _, w := range o.cfg.Warnings() {
		log.Warn(w)
	}
	plan, err := capture.Build(o.cfg)
	if err != nil {
		log.Error("build the plan", "err", err)
		return exitFailed
	}
	logConfig(log, o, plan)
	if o.dryRun {
		if err := dryrun.Print(stdout, plan); err != nil {
			log.Error("print the plan", "err", err)
			return exitFailed
		}
		return exitOK
	}
	ex, err := iptables.NewExecutor(iptables.Options{Netns: o.netns, Mode: mode, LockWait: lockWait, Logger: log})
	if err != nil {
		log.Error("apply", "err", err)
		return exitFailed
	}
	if err := ex.Apply(ctx, plan); err != nil {
		log.Error("apply failed; the earlier state is intact", "err", err)
		return exitFailed
	}
	return exitOK
}

func logConfig(log *slog.Logger, o options, plan iptables.Plan) {
	c := o.cfg
	var fams []string
	for _, rs := range plan.RuleSets {
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
		"netns", o.netns, "iptables-mode", o.iptablesMode, "dry-run", o.dryRun)
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
