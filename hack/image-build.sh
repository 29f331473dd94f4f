#!/usr/bin/env bash
# image-build: the FROM-scratch image, per architecture, built offline with
# buildah (no base image, no registry) and written as an OCI layout.
#
#   hack/image-build.sh ARCH...        e.g. hack/image-build.sh amd64 arm64
#
# For each ARCH, bin/linux-ARCH/istio-iptables must exist (make binaries).
# hack/image-rootfs.sh assembles .cache/image/rootfs-ARCH from Debian's
# packages; this script commits it as one layer, with a fixed timestamp, into a
# private buildah store (.cache/image/storage, vfs) as IMAGE-ARCH, and pushes
# it into the OCI layout $OCI (.cache/image/oci) under the reference ARCH.
# The first ARCH is also pushed as "latest", and as the oci-archive
# .cache/image/istio-iptables-ARCH.tar named IMAGE (see the podman note below).
# With more than one ARCH, an OCI index (manifest list) naming all of them is
# pushed as the reference "index", and kept in the store as IMAGE.
#
# Needs root, buildah, jq and what image-rootfs.sh needs.
set -euo pipefail
cd "$(dirname "$0")/.."

(($#)) || set -- amd64
CACHE=${CACHE:-$PWD/.cache/image}
OCI=${OCI:-$CACHE/oci}
IMAGE=${IMAGE:-localhost/istio-iptables:dev}
VERSION=${VERSION:-dev}
COMMIT=${COMMIT:-unknown}
export CACHE VERSION

bah() {
	TMPDIR=$CACHE/tmp buildah --root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs "$@"
}
log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'image-build: %s\n' "$*" >&2; exit 1; }

ctrs=()
cleanup() {
	local c
	for c in "${ctrs[@]}"; do bah rm "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
mkdir -p "$CACHE/tmp"

# build ARCH: rootfs, working container from scratch, commit, push.
build() {
	local arch=$1 bin=bin/linux-$1/istio-iptables ctr mnt variant=()
	[[ -x $bin ]] || fail "no $bin (make binaries ARCHES=$arch)"
	log "rootfs $arch"
	hack/image-rootfs.sh "$arch" "$bin" "$CACHE/rootfs-$arch"
	log "image $IMAGE-$arch"
	ctr=$(bah from --pull-never scratch)
	ctrs+=("$ctr")
	mnt=$(bah mount "$ctr")
	# Owned by root, whoever unpacked it; mtimes stay Debian's.
	tar -C "$CACHE/rootfs-$arch" --numeric-owner --owner=0 --group=0 -cf - . | tar -C "$mnt" --numeric-owner -xpf -
	bah umount "$ctr" >/dev/null
	[[ $arch == arm64 ]] && variant=(--variant v8)
	bah config --os linux --arch "$arch" "${variant[@]}" \
		--entrypoint '["/usr/local/bin/istio-iptables"]' --cmd '' \
		--env PATH=/usr/local/bin:/usr/sbin:/usr/bin \
		--user 0:0 --workingdir / \
		--label org.opencontainers.image.title=istio-iptables \
		--label org.opencontainers.image.description="istio-init in Go: the static binary and iptables (nft and legacy), FROM scratch" \
		--label org.opencontainers.image.version="$VERSION" \
		--label org.opencontainers.image.revision="$COMMIT" \
		--label org.opencontainers.image.base.name=scratch \
		"$ctr"
	bah rmi "$IMAGE-$arch" >/dev/null 2>&1 || true
	bah commit --quiet --timestamp 0 --omit-history --format oci --rm "$ctr" "$IMAGE-$arch" >/dev/null
	ctrs=() # committed with --rm
	bah push --quiet --compression-format gzip "$IMAGE-$arch" "oci:$OCI:$arch"
}

# A fresh layout each time: old references and blobs do not pile up.
rm -rf "$OCI"
for arch in "$@"; do
	build "$arch"
done
bah push --quiet --compression-format gzip "$IMAGE-$1" "oci:$OCI:latest"
# podman 4.3 names an image pulled from an OCI directory after its path, and
# ".cache" is no valid name component: `podman pull oci:.cache/image/oci:latest`
# fails, `cd .cache/image && podman pull oci:oci:latest` works (as
# localhost/oci:latest). An oci-archive carries its name instead:
#   podman load -i .cache/image/istio-iptables-amd64.tar   # localhost/istio-iptables:dev
bah push --quiet --compression-format gzip "$IMAGE-$1" "oci-archive:$CACHE/istio-iptables-$1.tar:$IMAGE"

if (($# > 1)); then
	log "index $IMAGE ($*)"
	bah manifest rm "$IMAGE" >/dev/null 2>&1 || bah rmi "$IMAGE" >/dev/null 2>&1 || true
	bah manifest create "$IMAGE" >/dev/null
	for arch in "$@"; do
		bah manifest add "$IMAGE" "$IMAGE-$arch" >/dev/null
	done
	bah manifest push --quiet --all --format oci "$IMAGE" "oci:$OCI:index"
	# The push also lists the per-arch manifests in index.json without a
	# name; they stay reachable through "index" and under their own names.
	jq -c '.manifests |= map(select(.annotations["org.opencontainers.image.ref.name"] != null))' \
		"$OCI/index.json" >"$OCI/index.json.new"
	mv "$OCI/index.json.new" "$OCI/index.json"
fi
log "wrote $OCI: $(jq -r '[.manifests[].annotations["org.opencontainers.image.ref.name"]] | join(", ")' "$OCI/index.json")"
