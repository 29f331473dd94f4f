#!/usr/bin/env bash
# Builds a real kube-apiserver for the CNI plugin's lookup test (issue 17),
# once per machine, outside the repository: from a scratch module that
# requires k8s.io/kubernetes at KUBE_VERSION with each of its staging modules
# (the go.mod lines pointing at ./staging/...) replaced by the same path at
# the matching v0.x release. Prints the binary's path on stdout.
#   KUBE_APISERVER_CACHE (default /var/cache/istio-iptables-test)
set -euo pipefail
export PATH=$PATH:/usr/local/go/bin
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
CACHE=${KUBE_APISERVER_CACHE:-/var/cache/istio-iptables-test}
BIN=$CACHE/kube-apiserver-$KUBE_VERSION
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
MOD=$CACHE/kube-apiserver-$KUBE_VERSION.src
mkdir -p "$MOD"
cd "$MOD"
GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
KMOD=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
{
	echo "module kubeapiserverbuild"
	echo
	grep '^go ' "$KMOD"
	echo
	echo "require k8s.io/kubernetes $KUBE_VERSION"
	echo
	echo "replace ("
	grep -E '=> \./staging/' "$KMOD" | awk -v v="$STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}'
	echo ")"
} >go.mod
n=$(grep -c " => .* $STAGING_VERSION" go.mod)
[ "$n" -gt 0 ] || { echo "kube-apiserver.sh: no staging module found in $KMOD" >&2; exit 1; }
echo 'package main' >tools.go
echo 'import _ "k8s.io/kubernetes/cmd/kube-apiserver"' >>tools.go
start=$(date +%s)
GOFLAGS=-mod=mod CGO_ENABLED=0 nice go build -trimpath -ldflags '-s -w' -o "$BIN.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
mv "$BIN.tmp" "$BIN"
echo "kube-apiserver.sh: built $BIN ($n staging replaces) in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
