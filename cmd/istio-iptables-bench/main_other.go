//go:build !linux

// Command istio-iptables-bench needs Linux: network namespaces, netfilter
// and the iptables binaries.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "istio-iptables-bench: needs Linux (network namespaces and netfilter)")
	os.Exit(2)
}
