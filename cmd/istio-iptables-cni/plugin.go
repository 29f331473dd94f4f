package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/cni"
	"github.com/mesh-init/istio-iptables/iptables"
	"github.com/mesh-init/istio-iptables/plan"
)

// Our CNI error codes (the spec leaves 100 and up to plugins); the
// others are the spec's.
const (
	// ErrCodeDrift: CHECK found the namespace differs from the plan.
	ErrCodeDrift uint = 100
	// ErrCodeBadAnnotation: the pod's Istio annotations are invalid.
	ErrCodeBadAnnotation uint = 101
)

// podArgs are the keys of CNI_ARGS the plugin reads.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive // CNI_ARGS key
}

// plugin holds what the commands share: the log's writer and the seams
// tests replace.
type plugin struct {
	stderr io.Writer
	// lookup reads a pod (cni.Lookup through a kubeconfig).
	lookup func(ctx context.Context, s cni.Settings, namespace, name string) (cni.Pod, error)
}

func newPlugin(stderr io.Writer) *plugin {
	return &plugin{stderr: stderr, lookup: apiLookup}
}

func apiLookup(ctx context.Context, s cni.Settings, namespace, name string) (cni.Pod, error) {
	l, err := cni.NewLookup(s.Kubeconfig, s.APITimeout)
	if err != nil {
		return cni.Pod{}, err
	}
	return l.Pod(ctx, namespace, name)
}

// call is one invocation: its parsed configuration and logger.
type call struct {
	args *skel.CmdArgs
	conf *cni.NetConf
	set  cni.Settings
	pod  podArgs
	log  *slog.Logger
}

func (p *plugin) begin(args *skel.CmdArgs, command string) (*call, *types.Error) {
	conf, set, err := cni.ParseConf(args.StdinData)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid istio-iptables-cni entry in the network configuration: "+err.Error(), "fix the entry of type "+cni.PluginType+" in the node's conflist (docs/cni.md)")
	}
	c := &call{args: args, conf: conf, set: set}
	if err := types.LoadArgs(args.Args, &c.pod); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "parse CNI_ARGS: "+err.Error(), "")
	}
	c.log = slog.New(slog.NewTextHandler(p.stderr, &slog.HandlerOptions{Level: set.LogLevel})).With(
		"plugin", cni.PluginType, "command", command, "container", args.ContainerID,
		"pod", string(c.pod.K8S_POD_NAMESPACE)+"/"+string(c.pod.K8S_POD_NAME), "netns", args.Netns)
	return c, nil
}

// decide reads the pod when a kubeconfig is configured and decides.
func (p *plugin) decide(ctx context.Context, c *call) (cni.Decision, *types.Error) {
	ns, name := string(c.pod.K8S_POD_NAMESPACE), string(c.pod.K8S_POD_NAME)
	pod := cni.Pod{Namespace: ns, Name: name}
	if c.set.Kubeconfig != "" && !c.set.Excluded(ns) {
		if ns == "" || name == "" {
			return cni.Decision{}, types.NewError(types.ErrInvalidEnvironmentVariables,
				"CNI_ARGS names no K8S_POD_NAMESPACE and K8S_POD_NAME, so the pod cannot be looked up",
				"the runtime must pass the pod's namespace and name (kubelet's CRI runtimes do); or remove kubernetes.kubeconfig to capture every pod")
		}
		var err error
		if pod, err = p.lookup(ctx, c.set, ns, name); err != nil {
			return cni.Decision{}, types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("cannot read pod %s/%s from the API server, so it is not started uncaptured: %v", ns, name, err),
				"check the API server and the kubeconfig "+c.set.Kubeconfig+" (the plugin needs get on pods); the runtime retries the pod")
		}
	}
	d, err := c.set.Decide(pod)
	if err != nil {
		return cni.Decision{}, types.NewError(ErrCodeBadAnnotation, err.Error(), "fix the pod's annotations")
	}
	return d, nil
}

// executor opens the namespace and makes the executor.
func (c *call) executor(cfg *capture.Config) (*iptables.Namespace, iptables.Executor, *types.Error) {
	ns, err := iptables.OpenNamespace(c.args.Netns)
	if err != nil {
		return nil, nil, types.NewError(types.ErrInvalidNetNS, "open the pod's network namespace: "+err.Error(), "")
	}
	if cfg != nil && capture.IPv6Mode(cfg.IPv6) == capture.IPv6Auto {
		v6, err := ns.HasGlobalIPv6()
		if err != nil {
			ns.Close()
			return nil, nil, types.NewError(types.ErrIOFailure, "read the addresses of "+c.args.Netns+": "+err.Error(), "")
		}
		cfg.HostIPv6 = v6
	}
	ex, err := iptables.NewExecutor(iptables.Options{Namespace: ns, Mode: c.set.Backend, LockWait: c.set.LockWait, Timeout: c.set.Timeout, Logger: c.log})
	if err != nil {
		ns.Close()
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig, "make the executor: "+err.Error(), "")
	}
	return ns, ex, nil
}

func buildPlan(cfg capture.Config) (plan.Plan, *types.Error) {
	pl, err := capture.Build(cfg)
	if err != nil {
		return plan.Plan{}, types.NewError(types.ErrInvalidNetworkConfig, "build the capture plan: "+err.Error(), "")
	}
	return pl, nil
}

// add implements ADD: decide, apply (idempotent), print prevResult as it
// came.
func (p *plugin) add(args *skel.CmdArgs) error {
	start := time.Now()
	c, terr := p.begin(args, "ADD")
	if terr != nil {
		return terr
	}
	if err := version.ParsePrevResult(&c.conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "parse prevResult: "+err.Error(), "")
	}
	if c.conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "no prevResult: "+cni.PluginType+" is a chained plugin and must follow the plugin that sets up the pod's interface", "put the entry after the main plugin in the conflist's plugins")
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.set.Timeout+c.set.APITimeout)
	defer cancel()
	d, terr := p.decide(ctx, c)
	if terr != nil {
		c.log.Error("ADD failed", "err", terr.Msg)
		return terr
	}
	if d.Capture {
		cfg := d.Config
		ns, ex, terr := c.executor(&cfg)
		if terr != nil {
			return terr
		}
		defer ns.Close()
		pl, terr := buildPlan(cfg)
		if terr != nil {
			return terr
		}
		if err := ex.Apply(ctx, pl); err != nil {
			c.log.Error("ADD failed", "err", err)
			return types.NewError(types.ErrInternal, "write the capture rules into "+args.Netns+": "+err.Error(), outcome(err))
		}
		c.log.Info("captured", "why", d.Reason, "took", time.Since(start).Round(time.Microsecond))
	} else {
		c.log.Info("not captured", "why", d.Reason)
	}
	return types.PrintResult(c.conf.PrevResult, c.conf.CNIVersion)
}

// outcome is the node operator's reading of a failed apply: what the
// executor proved it left (iptables.Outcome), and that the runtime retries.
func outcome(err error) string {
	return iptables.Outcome(err) + "; the runtime retries the pod"
}

// del implements DEL: remove everything of ours; a namespace that is gone
// (or was never given) is success.
func (p *plugin) del(args *skel.CmdArgs) error {
	c, terr := p.begin(args, "DEL")
	if terr != nil {
		// DEL must not fail on a configuration that cannot be read, or
		// the pod could never be removed: clean with the defaults.
		c = &call{args: args, set: cni.Settings{Backend: iptables.BackendAuto, LockWait: cni.DefaultLockWait, Timeout: cni.DefaultTimeout}}
		c.log = slog.New(slog.NewTextHandler(p.stderr, nil)).With("plugin", cni.PluginType, "command", "DEL", "netns", args.Netns)
		c.log.Warn("DEL with the default settings", "err", terr.Msg)
	}
	if gone(args.Netns) {
		c.log.Info("namespace gone: nothing to remove")
		return nil
	}
	ns, ex, terr := c.executor(nil)
	if terr != nil {
		if gone(args.Netns) {
			return nil
		}
		return terr
	}
	defer ns.Close()
	ctx, cancel := context.WithTimeout(context.Background(), c.set.Timeout)
	defer cancel()
	if err := ex.Cleanup(ctx); err != nil {
		return types.NewError(types.ErrInternal, "remove the capture rules from "+args.Netns+": "+err.Error(), outcome(err))
	}
	c.log.Info("removed")
	return nil
}

// gone reports whether the namespace path is empty, missing, or no longer
// a namespace (the bind mount was removed).
func gone(path string) bool {
	if path == "" {
		return true
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return errors.Is(err, unix.ENOENT)
	}
	return st.Type != unix.NSFS_MAGIC
}

// check implements CHECK: the namespace holds exactly the pod's plan (or
// nothing of ours, for a pod that is not captured).
func (p *plugin) check(args *skel.CmdArgs) error {
	c, terr := p.begin(args, "CHECK")
	if terr != nil {
		return terr
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.set.Timeout+c.set.APITimeout)
	defer cancel()
	d, terr := p.decide(ctx, c)
	if terr != nil {
		return terr
	}
	cfg := d.Config
	ns, ex, terr := c.executor(&cfg)
	if terr != nil {
		return terr
	}
	defer ns.Close()
	var pl plan.Plan
	if d.Capture {
		if pl, terr = buildPlan(cfg); terr != nil {
			return terr
		}
	}
	if err := ex.Check(ctx, pl); err != nil {
		if errors.Is(err, iptables.ErrDrift) {
			what := "the pod is captured (" + d.Reason + ")"
			if !d.Capture {
				what = "the pod is not captured (" + d.Reason + "), but its namespace holds rules of ours"
			}
			msg := fmt.Sprintf("%s: %s: %v", args.Netns, what, err)
			if tx, derr := ex.Decide(ctx, pl, false); derr == nil {
				if drift := cni.Drift(tx); len(drift) > 0 {
					msg += "; drift: " + strings.Join(drift, "; ")
				}
			}
			return types.NewError(ErrCodeDrift, msg, "DEL and ADD the pod again (or restart it) to rewrite the rules")
		}
		return types.NewError(types.ErrInternal, "check the capture rules in "+args.Netns+": "+err.Error(), "")
	}
	return nil
}

// status implements STATUS (CNI 1.1): ready when the binaries the backend
// needs are installed and the kubeconfig, when configured, is readable.
func (p *plugin) status(args *skel.CmdArgs) error {
	_, set, err := cni.ParseConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid istio-iptables-cni entry: "+err.Error(), "")
	}
	if set.Backend != iptables.BackendNative {
		var missing []string
		for _, bin := range statusBinaries(set.Backend) {
			if _, err := exec.LookPath(bin); err != nil {
				missing = append(missing, bin)
			}
		}
		if len(missing) > 0 && (set.Backend != iptables.BackendAuto || len(missing) == len(statusBinaries(set.Backend))) {
			return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("not ready: %v not found on PATH", missing), "install iptables on the node (or set capture.native-nftables)")
		}
	}
	if set.Kubeconfig != "" {
		if _, err := os.Stat(set.Kubeconfig); err != nil {
			return types.NewError(types.ErrPluginNotAvailable, "not ready: the kubeconfig is not readable: "+err.Error(), "run istio-iptables-cni install, which writes it")
		}
	}
	return nil
}

// statusBinaries are the restore binaries a backend mode needs: with auto,
// either flavour will do.
func statusBinaries(m iptables.BackendMode) []string {
	switch m {
	case iptables.BackendNft:
		return []string{"iptables-nft-restore", "iptables-nft-save"}
	case iptables.BackendLegacy:
		return []string{"iptables-legacy-restore", "iptables-legacy-save"}
	}
	return []string{"iptables-nft-restore", "iptables-legacy-restore"}
}

// gc implements GC (CNI 1.1). Everything the plugin writes lives inside
// the pod's namespace and goes with it; there is nothing on the node to
// collect, whatever cni.dev/valid-attachments lists.
func (p *plugin) gc(args *skel.CmdArgs) error {
	if _, _, err := cni.ParseConf(args.StdinData); err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid istio-iptables-cni entry: "+err.Error(), "")
	}
	return nil
}
