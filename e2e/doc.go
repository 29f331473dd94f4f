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
// the way the istio-init container does: the istio-iptables binary, built
// once from ../cmd/istio-iptables, is started inside the pod's namespace as
// UID 0 with only CAP_NET_ADMIN and CAP_NET_RAW (setpriv, bounding set
// included), without --netns; the validation probe runs as UID 1337 with
// no capabilities. TestCNICaller (caps_test.go) covers the CNI plugin's way,
// root with --netns /var/run/netns/<pod>; TestWithoutNetAdmin and
// TestWithoutNetRaw a pod without one of the two capabilities;
// TestLegacyInPod the legacy backend. Nothing is
// ever changed in the host's own network namespace, and every namespace is
// removed when its test ends, failed or not.
//
// TestMatrix is the proof: every connection of conns, in both families, under
// every configuration of configs (REDIRECT, TPROXY, -b 80, -i/-x/-o/-q, the
// classic istio-init call, --ipv6=false, re-runs, --cleanup-only), compared
// with where the contract's rules send it. A failing configuration prints the
// whole table of connections, what was expected and where each one landed;
// -v prints it for passing ones too. Configurations ending in a cleanup also
// check that the kernel state is exactly what it was before.
//
// TestExplainDifferential checks `istio-iptables explain` against the
// kernel: under every configuration of the matrix and three more (-c, -k),
// it makes generated connections (every pod user to the remote inside and
// outside -i/-x, to localhost and the pod's own addresses, on captured,
// excluded and tunnel ports; the client to the pod; the proxy's upstream
// from 127.0.0.6 or ::6), in both families, and compares where each hop
// lands with explain's verdict from the install's flags and from the
// rules read back from the pod (--from-netns).
//
// E2E_NATIVE_NFTABLES=1 reruns everything with the native nftables backend
// (NATIVE_NFTABLES=true on every istio-iptables run, nft_test.go): the
// same landings are expected, and a cleanup must also leave `nft list
// ruleset` as it was.
//
// More tests are opt-in. E2E_MUTATE=1 runs TestMutations, which removes
// one rule at a time from the binary's own --dry-run plan and checks that the
// matrix notices (a few minutes); the rules no connection can observe are
// listed there with the reason. E2E_TORTURE=1 runs TestTorture, issue 14's
// torture suite (torture_*_test.go, docs/torture.md, make torture: about
// 5 minutes): swaps under a connection flood, signals, concurrent runs,
// lying binaries and foreign state.
//
// Issue 16 (parity_*_test.go): TestTPROXYOriginalSource (Envoy's
// original_src upstream lands on the app with the client's address, and
// does not once the nat mark RETURN is deleted), TestIstioTemplateArgs
// (Istio's injector's args and ProxyMetadata against our spelling, kernel
// state compared), TestProxyMark, TestKubeVirtDNS, TestIPv6OnlyPod and
// the loopback parity tests.
//
// The options of issue 8 have their own tests. TestDNSCapture sends DNS
// queries over UDP and TCP from the app, root, the proxy's UID and GID and
// to a server on lo, without rules, with --redirect-dns --dns-servers and
// with --capture-all-dns, and checks which land on the agent (a helper on
// 15053) and which reach the real server in the remote namespace.
// TestDNSNoMixUp makes 100 app queries (forwarded by the agent) and 100
// proxy queries at once per family and checks every answer reached the
// socket that asked. TestDNSConntrackZones reuses one source port for the
// proxy's and the app's queries, which only the raw table's conntrack
// zones keep apart. TestDNSCleanupAndRerun checks the no-op re-run and the
// exact cleanup with DNS, --drop-invalid and owner groups, and
// TestOwnerGroupsLanding the owner group lists. TestDropInvalid sends a
// lone SYN-ACK (INVALID to conntrack) from the client on a raw socket: it
// draws a reset without --drop-invalid and is dropped and counted with it.
// TestValidation runs the binary's --run-validation inside a namespace as
// the proxy, the app, root and the proxy's GID alone, with and without the
// rules, and checks the exit code (0 or 126) and the message.
//
// The tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN), the iptables, ip,
// nsenter and setpriv binaries and the go command (to build the binary);
// without root they skip.
// Run them with
//
//	sudo go test -count=1 -v ./e2e/...
//
// or make e2e.
package e2e
