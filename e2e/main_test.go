package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// helperEnv names the role a re-executed test binary plays (see roles_test.go).
const helperEnv = "E2E_HELPER"

// Paths set up once by TestMain when running as root.
var (
	// helperBin is a copy of this test binary that the unprivileged helper
	// UIDs can execute (go test's own build directory is private to root).
	helperBin string
	// toolBin is the istio-iptables binary under test.
	toolBin string
	// setupErr says why helperBin or toolBin is missing.
	setupErr error
)

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role))
	}
	if os.Geteuid() != 0 {
		os.Exit(m.Run()) // every test skips via requireRoot
	}
	dir, err := os.MkdirTemp("", "ii-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	setupErr = prepareBinaries(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// prepareBinaries copies the test binary into dir for the helpers and builds
// istio-iptables there, the way a CNI plugin would ship it.
func prepareBinaries(dir string) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	helperBin = filepath.Join(dir, "e2e.test")
	if err := copyFile(self, helperBin, 0o755); err != nil {
		return fmt.Errorf("copy test binary for helpers: %w", err)
	}
	toolBin = filepath.Join(dir, "istio-iptables")
	build := exec.Command(goTool(), "build", "-o", toolBin, "./cmd/istio-iptables")
	build.Dir = ".." // the module root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		toolBin = ""
		return fmt.Errorf("go build ./cmd/istio-iptables: %w\n%s", err, out)
	}
	return nil
}

// goTool finds the go command, also under sudo where PATH may lack it.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// requireRoot skips t unless the process may create network namespaces, and
// fails it when TestMain could not prepare the binaries.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e tests need root to create network namespaces: run sudo go test ./e2e/... (or make e2e)")
	}
	if setupErr != nil {
		t.Fatalf("e2e setup: %v", setupErr)
	}
}
