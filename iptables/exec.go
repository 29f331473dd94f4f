package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mesh-init/istio-iptables/plan"
)

// execer runs one process. The real one is os/exec; tests inject a fake
// that asserts argv and stdin.
type execer interface {
	// Run runs a process to its end.
	Run(ctx context.Context, argv []string, stdin []byte) (stdout []byte, err error)
	// Start forks the process on the calling thread, so that it inherits
	// the thread's network namespace, and returns what waits for its end;
	// the wait may run on any goroutine.
	Start(ctx context.Context, argv []string, stdin []byte) (wait func() (stdout []byte, err error))
}

// ExecError is a process that failed: its argv, exit status and stderr.
type ExecError struct {
	Argv     []string
	ExitCode int
	Stderr   string
	Err      error
}

func (e *ExecError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: exit status %d: %s", strings.Join(e.Argv, " "), e.ExitCode, msg)
}

func (e *ExecError) Unwrap() error { return e.Err }

type osExecer struct{}

func (o osExecer) Run(ctx context.Context, argv []string, stdin []byte) ([]byte, error) {
	return o.Start(ctx, argv, stdin)()
}

func (osExecer) Start(ctx context.Context, argv []string, stdin []byte) func() ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Its own process group, so a signal to ours does not cut it half-way
	// (the tool finishes the step and says what it left); killed with the
	// tool (the parent-death signal of the locked thread that forked it)
	// and, with its group, when the run's deadline passes.
	cmd.SysProcAttr = childAttrs()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	fail := func(err error) ([]byte, error) {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("killed: %w", context.Cause(ctx))
		}
		return stdout.Bytes(), &ExecError{Argv: argv, ExitCode: code, Stderr: stderr.String(), Err: err}
	}
	if err := cmd.Start(); err != nil {
		return func() ([]byte, error) { return fail(err) }
	}
	return func() ([]byte, error) {
		if err := cmd.Wait(); err != nil {
			return fail(err)
		}
		return stdout.Bytes(), nil
	}
}

// failedLineNumber finds the input line *-restore names in its error:
// "Error occurred at line: 3" (nft, legacy) or "line 3 failed" (legacy).
func failedLineNumber(stderr string) int {
	for _, marker := range []string{"Error occurred at line: ", "line "} {
		for rest := stderr; ; {
			i := strings.Index(rest, marker)
			if i < 0 {
				break
			}
			rest = rest[i+len(marker):]
			j := 0
			for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
				j++
			}
			if n, err := strconv.Atoi(rest[:j]); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// RestoreError is a restore the kernel (or the restore binary) refused. The
// transaction was not committed: the earlier state is intact.
type RestoreError struct {
	Family plan.Family
	// Line is the 1-based input line the binary named, 0 when it named none.
	Line int
	// Text is that line of the input.
	Text string
	Exec *ExecError
}

func (e *RestoreError) Error() string {
	msg := strings.TrimSpace(e.Exec.Stderr)
	if i := strings.Index(msg, "\nTry `"); i >= 0 {
		msg = strings.TrimSpace(msg[:i])
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if msg == "" && e.Exec.Err != nil {
		msg = e.Exec.Err.Error() // killed at the deadline, say so
	}
	if e.Line > 0 {
		return fmt.Sprintf("restore %s rules: %s refused line %d %q: %s", e.Family, e.Exec.Argv[0], e.Line, e.Text, msg)
	}
	if e.Exec.ExitCode < 0 {
		return fmt.Sprintf("restore %s rules: %s: %s", e.Family, e.Exec.Argv[0], msg)
	}
	return fmt.Sprintf("restore %s rules: %s: exit status %d: %s", e.Family, e.Exec.Argv[0], e.Exec.ExitCode, msg)
}

func (e *RestoreError) Unwrap() error { return e.Exec }

func newRestoreError(f plan.Family, input string, ee *ExecError) *RestoreError {
	re := &RestoreError{Family: f, Exec: ee}
	if re.Line = failedLineNumber(ee.Stderr); re.Line > 0 {
		lines := strings.Split(input, "\n")
		if re.Line >= 1 && re.Line <= len(lines) {
			re.Text = lines[re.Line-1]
		}
	}
	return re
}
