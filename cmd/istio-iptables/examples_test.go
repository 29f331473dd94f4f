package main

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// examplePod is the part of a Pod manifest the examples test reads.
type examplePod struct {
	Kind string `json:"kind"`
	Spec struct {
		InitContainers []exampleContainer `json:"initContainers"`
	} `json:"spec"`
}

type exampleContainer struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env"`
	VolumeMounts []struct {
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
}

// TestKubernetesExamples keeps examples/kubernetes honest: every manifest
// parses and has an initContainer, and the real command accepts each
// initContainer's arguments and environment, its dry run printing a nat table
// (and a mangle table in TPROXY mode).
func TestKubernetesExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/kubernetes/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files, "no manifests in examples/kubernetes")

	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			var pod examplePod
			require.NoError(t, yaml.Unmarshal(data, &pod), "parse %s", file)
			require.Equal(t, "Pod", pod.Kind, "the examples are Pods")
			require.NotEmpty(t, pod.Spec.InitContainers, "%s has no initContainer", file)

			for _, c := range pod.Spec.InitContainers {
				t.Run(c.Name, func(t *testing.T) {
					args := c.Args
					if len(c.Command) > 0 {
						// The entrypoint replaced: it must still be the tool.
						require.Equal(t, "istio-iptables", path.Base(c.Command[0]), "command")
						args = append(slices.Clone(c.Command[1:]), args...)
					}
					env := map[string]string{}
					for _, e := range c.Env {
						env[e.Name] = e.Value
					}
					getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

					var stdout, stderr bytes.Buffer
					code := run(append(slices.Clone(args), "--dry-run", "--ipv6=false"), getenv, &stdout, &stderr)
					require.Equal(t, 0, code, "exit code; stderr:\n%s", stderr.String())
					assert.Contains(t, stdout.String(), "*nat")
					assert.Contains(t, stdout.String(), "COMMIT")
					if slices.Contains(args, "TPROXY") {
						assert.Contains(t, stdout.String(), "*mangle")
					}

					// Legacy iptables needs a writable lock file on the
					// read-only root: it must sit in a mounted volume.
					lock, ok := env["XTABLES_LOCKFILE"]
					require.True(t, ok, "XTABLES_LOCKFILE is not set")
					var mounts []string
					for _, m := range c.VolumeMounts {
						mounts = append(mounts, m.MountPath)
					}
					assert.Contains(t, mounts, path.Dir(lock), "no volume mounted for XTABLES_LOCKFILE")
				})
			}
		})
	}
}
