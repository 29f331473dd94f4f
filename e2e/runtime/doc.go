// Package runtime is the container-runtime test of make e2e-runtime: podman
// plays each of examples/kubernetes/*.yaml with the project's image as
// istio-init, an nginx app and an haproxy proxy playing Envoy, all inside a
// network namespace made for the test, and real connections check where
// traffic goes. It has no code outside its tests.
//
// What it needs, made by make e2e-runtime: the project's image as an
// oci-archive (make image-oci: .cache/image/istio-iptables-amd64.tar), and
// the app and proxy images (hack/runtime-images.sh: .cache/runtime/app.tar
// and proxy.tar). It runs only with E2E_RUNTIME=1, as root, and prints as
// its last line "e2e-runtime: N passed, M failed", one count per check.
//
// Each example runs unchanged except for two edits to a temporary copy: the
// app and sidecar images become the local ones, and the pod gets
// restartPolicy: OnFailure, because podman 4.3 restarts a finished init
// container under the default Always (Kubernetes never does), which leaves
// the pod degraded and kube play failing.
package runtime
