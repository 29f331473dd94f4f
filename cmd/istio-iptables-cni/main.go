// Command istio-iptables-cni is the chained CNI plugin of issue 17: it
// programs a pod's network namespace from the node, so that the pod needs
// no NET_ADMIN. It speaks CNI 0.4.0, 1.0.0 and 1.1.0 (ADD, DEL, CHECK,
// STATUS, GC, VERSION) when the runtime runs it with CNI_COMMAND set, and
// has two subcommands of its own: install and uninstall (docs/cni.md).
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/mesh-init/istio-iptables/cni"
)

// Set by the linker: -X main.version=... -X main.commit=...
var (
	buildVersion = "dev"
	buildCommit  = "unknown"
)

// specVersions are the CNI spec versions the plugin speaks.
var specVersions = version.PluginSupports(cni.SpecVersions...)

func main() {
	if os.Getenv("CNI_COMMAND") == "" && len(os.Args) > 1 {
		os.Exit(runSubcommand(os.Args[1:], os.Stdout, os.Stderr))
	}
	p := newPlugin(os.Stderr)
	skel.PluginMainFuncs(skel.CNIFuncs{Add: p.add, Del: p.del, Check: p.check, Status: p.status, GC: p.gc}, specVersions, about())
}

func about() string {
	return fmt.Sprintf("istio-iptables-cni %s (commit %s, %s): chained CNI plugin that writes the istio-iptables capture rules into each pod's namespace; subcommands: install, uninstall, version", buildVersion, buildCommit, runtime.Version())
}

// runSubcommand runs install, uninstall or version; it returns the exit
// code.
func runSubcommand(args []string, stdout, stderr io.Writer) int {
	switch args[0] {
	case "install":
		return runInstall(args[1:], stdout, stderr)
	case "uninstall":
		return runUninstall(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, about())
		return 0
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, about())
		fmt.Fprintln(stdout, "usage: istio-iptables-cni install|uninstall --cni-bin-dir DIR --cni-conf-dir DIR [flags] (install --help lists them)")
		return 0
	}
	fmt.Fprintf(stderr, "istio-iptables-cni: unknown subcommand %q (install, uninstall, version); as a CNI plugin it is run with CNI_COMMAND set\n", args[0])
	return 2
}
