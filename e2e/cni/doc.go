// Package cni holds the end-to-end tests of the CNI plugin (issue 17), run
// by make e2e-cni as root (E2E_CNI=1); they skip otherwise. Every test makes
// its own network namespaces and removes them, and checks that the machine's
// own namespace is unchanged.
//
//   - TestLifecycle: libcni runs a conflist (loopback, then our plugin)
//     against a namespace: ADD, CHECK, a drift, CHECK fails naming it, DEL,
//     and the namespace equals its snapshot; STATUS and GC; DEL of a deleted
//     namespace.
//   - TestAddLatency: the median ADD of 50 namespaces, each made by the test.
//   - TestAPIServer: a real kube-apiserver (hack/kube-apiserver.sh, cached in
//     /var/cache/istio-iptables-test) and Debian's etcd in a namespace of
//     their own; pods with and without the proxy, with annotations, and what
//     ADD writes for each; ADD fails when the API is down.
//   - TestPodman: podman with the CNI backend plays a pod whose conflist
//     chains bridge, host-local and our plugin: the rules are in place before
//     any container starts, the istio-validation init container passes, real
//     connections pass the proxy, and removing the pod runs DEL.
//
// It has no code outside its tests.
package cni
