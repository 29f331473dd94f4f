package iptables

// Test seams for the external test package (iptables_test). The executor
// and kernel tests live there because they build their plans with
// capture.Build, and capture imports this package: an internal test file
// importing capture would be an import cycle.

// Execer is the executor's process seam.
type Execer = execer

// Kernel is the executor's kernel seam.
type Kernel = kernel

// NewExecutorWith returns the real executor with the given seams, as
// newExecutor does: the fakes of executor_test.go, or the real ones with
// a recording execer.
func NewExecutorWith(o Options, run Execer, lookPath func(string) (string, error), k Kernel) Executor {
	return newExecutor(o, run, lookPath, k)
}

// OSExecer returns the real process seam.
func OSExecer() Execer { return osExecer{} }

// LinuxKernel returns the real kernel seam of this platform.
func LinuxKernel() Kernel { return newKernel() }
