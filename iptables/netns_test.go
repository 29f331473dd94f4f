package iptables

import "github.com/mesh-init/istio-iptables/plan"

// Test seams for the external test package (iptables_test), where the
// executor and kernel tests live.

// Execer is the executor's process seam.
type Execer = execer

// Kernel is the executor's kernel seam.
type Kernel = kernel

// NewExecutorWith returns the real executor with the given seams, as
// newExecutor does: the fakes of executor_test.go, or the real ones with
// a recording execer.
func NewExecutorWith(o Options, run Execer, lookPath func(string) (string, error), k Kernel) Executor {
	var ns enterer = o.Namespace
	if o.Namespace == nil {
		ns = CurrentNamespace()
	}
	return newExecutor(o, ns, run, lookPath, k)
}

// NewExecutorIn is NewExecutorWith with a fake namespace seam.
func NewExecutorIn(o Options, ns interface {
	Do(func() error) error
	Path() string
}, run Execer, lookPath func(string) (string, error), k Kernel) Executor {
	return newExecutor(o, ns, run, lookPath, k)
}

// OSExecer returns the real process seam.
func OSExecer() Execer { return osExecer{} }

// LinuxKernel returns the real kernel seam of this platform.
func LinuxKernel() Kernel { return newKernel() }

// TableOrder is the make-before-break order of a restore's table blocks.
func TableOrder(target, old plan.RuleSet, tables []plan.Table) []plan.Table {
	return tableOrder(target, old, tables)
}
