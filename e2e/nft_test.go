package e2e

import "os"

// nativeNft says whether this run tests the native nftables backend:
// E2E_NATIVE_NFTABLES=1 runs every istio-iptables of the matrix with
// NATIVE_NFTABLES=true, and adds `nft list ruleset` to the kernel state a
// cleanup must restore. The landings expected are the same.
func nativeNft() bool { return os.Getenv("E2E_NATIVE_NFTABLES") == "1" }
