package plan_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPureDeps: the model, the policy, the dry run and explain are pure.
// None of them links a process launcher, netlink or nftables: only
// iptables/ (and the commands) touch the kernel.
func TestPureDeps(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH")
	}
	for _, pkg := range []string{"plan", "capture", "dryrun", "explain"} {
		out, err := exec.Command("go", "list", "-deps", "github.com/mesh-init/istio-iptables/"+pkg).CombinedOutput()
		require.NoError(t, err, "%s", out)
		for _, dep := range strings.Fields(string(out)) {
			for _, banned := range []string{"os/exec", "netlink", "nftables", "github.com/mesh-init/istio-iptables/iptables"} {
				assert.NotContains(t, dep, banned, "%s depends on %s", pkg, dep)
			}
		}
	}
}
