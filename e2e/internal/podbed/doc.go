// Package podbed is the podman harness that the container-runtime tests
// share (e2e/runtime, e2e/cni): a network namespace made for the test,
// podman run inside it with a private store and configuration
// (../shared/RUNTIME.md), the offline images loaded, an HTTP server playing
// the pods' remote destination, and HTTP probes made from the namespace.
//
// Its contract:
//   - It is imported only by tests. Its functions take a testing.TB and fail
//     it through require; nothing here is meant for the project's commands.
//   - Nothing it starts runs in the machine's own network namespace: podman
//     runs through nsenter --net into the namespace NewNetns made, sockets
//     are opened on a thread switched into it (InNetns), and every namespace,
//     store, pod and server goes in the Cleanup of the test that owns it.
//   - It asserts nothing about the project: each test keeps its own checks.
//
// It needs root, podman and runc; the callers skip unless their make target
// (e2e-runtime, e2e-cni) runs them.
package podbed
