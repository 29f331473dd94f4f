package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMainBinaryLinksNoPluginLibraries: the init container's binary stays
// free of client-go and the CNI library, which only the plugin needs.
func TestMainBinaryLinksNoPluginLibraries(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/mesh-init/istio-iptables/cmd/istio-iptables").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, dep := range strings.Fields(string(out)) {
		assert.False(t, strings.HasPrefix(dep, "k8s.io/"), "cmd/istio-iptables links %s", dep)
		assert.False(t, strings.HasPrefix(dep, "github.com/containernetworking/"), "cmd/istio-iptables links %s", dep)
		assert.NotEqual(t, "github.com/mesh-init/istio-iptables/cni", dep)
	}
}
