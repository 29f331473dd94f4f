// Package e2e proves, with real TCP connections between real network
// namespaces, that the rules istio-iptables writes send every connection
// where the mesh expects it: to the inbound capture port with the original
// destination (and, in TPROXY mode, the client's own source address), to the
// outbound capture port 15001, or straight to the application when a flag
// says so. It covers REDIRECT and TPROXY, IPv4 and IPv6, the classic istio-init
// call, re-runs with other flags, and --cleanup-only.
//
// Each test builds its own bed: a "pod", a "client" and a "remote" network
// namespace joined by two veth pairs (10.66.1.0/24 and fd66:1::/64 between
// client and pod, 10.66.2.0/24, fd66:2::/64 and the routed 10.66.3.0/24,
// fd66:3::/64 between pod and remote). Inside them it starts helper processes,
// which are this test binary run again with E2E_HELPER set: an application
// server (UID 1000), a test proxy playing Envoy (UID 1337, listening on 15001
// and, transparently, 15006), a remote server, and one short-lived client per
// connection, run under the UID and GID the case names. Rules are installed
// the way a CNI plugin would: the istio-iptables binary, built once from
// ../cmd/istio-iptables, is run with --netns /var/run/netns/<pod>. Nothing is
// ever changed in the host's own network namespace, and every namespace is
// removed when its test ends, failed or not.
//
// The tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and the iptables and ip
// binaries; without root they skip. Run them with
//
//	sudo go test -count=1 -v ./e2e/...
//
// or make e2e. A failing matrix prints the whole table of connections, what
// was expected and where each one landed.
package e2e
