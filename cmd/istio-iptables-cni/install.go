package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/mesh-init/istio-iptables/cni"
)

// DefaultEntry is the entry install writes without --plugin-config:
// Istio's sidecar capture (istio-init's arguments from the injector) for
// every pod with the proxy, kube-system left alone.
const DefaultEntry = `{
  "type": "istio-iptables-cni",
  "capture": {
    "envoy-port": "15001",
    "inbound-capture-port": "15006",
    "proxy-uid": "1337",
    "istio-inbound-interception-mode": "REDIRECT",
    "istio-service-cidr": "*",
    "istio-inbound-ports": "*",
    "istio-local-exclude-ports": "15090,15021,15020"
  },
  "excludeNamespaces": ["kube-system"]
}`

type installFlags struct {
	binDir, confDir, binary, entryFile string
	hostConfDir                        string
	serviceAccount, kubeconfig         string
	wait                               bool
	refresh                            time.Duration
}

func installFlagSet(name string, f *installFlags, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("istio-iptables-cni "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.binDir, "cni-bin-dir", "/opt/cni/bin", "the runtime's CNI plugin directory")
	fs.StringVar(&f.confDir, "cni-conf-dir", "/etc/cni/net.d", "the runtime's CNI config directory")
	if name == "install" {
		fs.StringVar(&f.binary, "binary", "", "the plugin binary to copy (default: this one)")
		fs.StringVar(&f.entryFile, "plugin-config", "", "a file holding our conflist entry, a JSON object (default: Istio's sidecar capture, kube-system excluded)")
		fs.StringVar(&f.serviceAccount, "kubeconfig-from-serviceaccount", "", "a service account directory (/var/run/secrets/kubernetes.io/serviceaccount): write a kubeconfig from its token for the pod lookup, next to the conflist")
		fs.StringVar(&f.kubeconfig, "kubeconfig", "", "a kubeconfig file to copy next to the conflist for the pod lookup")
		fs.StringVar(&f.hostConfDir, "host-cni-conf-dir", "", "--cni-conf-dir as the node sees it, for the kubeconfig's path in the entry (default: --cni-conf-dir)")
		fs.BoolVar(&f.wait, "wait", false, "stay running (a DaemonSet): wait for the node's conflist, install, then rewrite the kubeconfig when the token changes; exit on SIGTERM, leaving the entry in place")
		fs.DurationVar(&f.refresh, "refresh", time.Minute, "with --wait: how often the token is read again")
	}
	return fs
}

func runInstall(args []string, stdout, stderr io.Writer) int {
	var f installFlags
	fs := installFlagSet("install", &f, stderr)
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("plugin", cni.PluginType, "command", "install")
	if f.serviceAccount != "" && f.kubeconfig != "" {
		log.Error("give --kubeconfig-from-serviceaccount or --kubeconfig, not both")
		return 2
	}
	if f.binary == "" {
		self, err := os.Executable()
		if err != nil {
			log.Error("find this binary", "err", err)
			return 1
		}
		f.binary = self
	}
	entry := []byte(DefaultEntry)
	if f.entryFile != "" {
		b, err := os.ReadFile(f.entryFile)
		if err != nil {
			log.Error("read --plugin-config", "err", err)
			return 2
		}
		entry = b
	}
	kubeconfig := func() ([]byte, error) {
		switch {
		case f.serviceAccount != "":
			return cni.ServiceAccountKubeconfig(f.serviceAccount, os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
		case f.kubeconfig != "":
			return os.ReadFile(f.kubeconfig)
		}
		return nil, nil
	}
	install := func() (cni.InstallResult, error) {
		kc, err := kubeconfig()
		if err != nil {
			return cni.InstallResult{}, err
		}
		return cni.Install(cni.InstallOptions{BinDir: f.binDir, ConfDir: f.confDir, Binary: f.binary, Entry: entry, Kubeconfig: kc, HostConfDir: f.hostConfDir})
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := install()
	for err != nil && f.wait && ctx.Err() == nil {
		log.Warn("install failed; retrying in 5s", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			res, err = install()
		}
	}
	if err != nil {
		log.Error("install failed", "err", err)
		return 1
	}
	fmt.Fprintf(stdout, "installed %s; entry in %s\n", res.Binary, res.Conflist)
	if res.Converted != "" {
		fmt.Fprintf(stdout, "turned %s into %s\n", res.Converted, res.Conflist)
	}
	if !f.wait {
		return 0
	}
	last, _ := kubeconfig()
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping; the entry and the binary stay in place (istio-iptables-cni uninstall removes them)")
			return 0
		case <-time.After(f.refresh):
		}
		kc, err := kubeconfig()
		if err != nil || string(kc) == string(last) {
			if err != nil {
				log.Warn("read the service account again", "err", err)
			}
			continue
		}
		if _, err := install(); err != nil {
			log.Warn("rewrite after a token change", "err", err)
			continue
		}
		last = kc
		log.Info("the token changed: kubeconfig and entry rewritten")
	}
}

func runUninstall(args []string, stdout, stderr io.Writer) int {
	var f installFlags
	fs := installFlagSet("uninstall", &f, stderr)
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return 0
		}
		return 2
	}
	changed, err := cni.Uninstall(f.binDir, f.confDir)
	for _, c := range changed {
		fmt.Fprintf(stdout, "removed from %s\n", c)
	}
	if err != nil {
		slog.New(slog.NewTextHandler(stderr, nil)).Error("uninstall failed", "plugin", cni.PluginType, "err", err)
		return 1
	}
	return 0
}
