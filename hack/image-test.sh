#!/usr/bin/env bash
# image-test: build the image offline with buildah and check it in a
# throwaway network namespace, the way a pod runs istio-init.
#
#   1. base:    debootstrap a minimal Debian bookworm (cached in .cache/) and
#               import it as a local image;
#   2. builder: that base plus the host's Go toolchain;
#   3. image:   the repo's Dockerfile with both as build args (the host's Go
#               module and build caches are mounted in; apt uses the host's
#               Debian mirror);
#   4. check:   in a new network namespace, with the image's root filesystem
#               read-only and a writable /run/xtables (the pod's emptyDir), run
#               the image's istio-iptables with the classic istio-init args and
#               read the rules back with the image's iptables-save.
#
# Needs root, buildah and debootstrap. Only the Go module proxy and the Debian
# mirror are contacted. Nothing is applied outside the namespace it creates.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH=$PATH:/usr/local/go/bin
CACHE=${CACHE:-$PWD/.cache/image-test}
IMAGE=${IMAGE:-localhost/istio-iptables:image-test}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
SUITE=bookworm
BASE=localhost/ii-debian:$SUITE
BUILDER=localhost/ii-golang:$(go env GOVERSION)-$SUITE

# A private vfs store under .cache (TMPDIR holds buildah's RUN --mount=type=cache
# directories): works without overlayfs, leaves the machine's own container
# storage alone, and goes away with rm -rf .cache.
bah() {
	TMPDIR=$CACHE/tmp buildah --root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs "$@"
}

ns=""
containers=()
timings=()
cleanup() {
	local c
	for c in "${containers[@]}"; do
		bah umount "$c" >/dev/null 2>&1 || true
		bah rm "$c" >/dev/null 2>&1 || true
	done
	if [[ -n $ns ]]; then ip netns del "$ns" 2>/dev/null || true; fi
}
trap cleanup EXIT

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'image-test: FAIL: %s\n' "$*" >&2; exit 1; }

# step NAME CMD...: runs CMD and records how long it took.
step() {
	local name=$1 t0=$EPOCHREALTIME
	shift
	log "$name"
	"$@"
	timings+=("$(awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%-34s %7.1f s", n, b - a }')")
}

# new_container IMAGE: sets ctr to a new working container of IMAGE, removed
# on exit (a global, not printed: a $(...) subshell would lose the tracking).
new_container() {
	ctr=$(bah from --pull-never "$1")
	containers+=("$ctr")
}

# apt_sources prints "URI SUITE" for every enabled deb source of the host's apt
# configuration (one-line .list files and deb822 .sources files).
apt_sources() {
	local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
	local existing=() f
	for f in "${files[@]}"; do [[ -f $f ]] && existing+=("$f"); done
	((${#existing[@]})) || return 0
	awk '
		function flush(  i, n, s) {
			if (types ~ /(^| )deb( |$)/ && uris != "" && !off) {
				n = split(suites, s, " ")
				for (i = 1; i <= n; i++) print uris, s[i]
			}
			types = uris = suites = ""; off = 0
		}
		FNR == 1 { flush() }
		FILENAME ~ /\.sources$/ {
			if ($0 ~ /^[[:space:]]*$/) { flush(); next }
			key = tolower($1); $1 = ""; sub(/^ +/, "")
			if (key == "types:") types = $0
			else if (key == "uris:") { uris = $0; sub(/ .*/, "", uris) }
			else if (key == "suites:") suites = $0
			else if (key == "enabled:" && tolower($0) == "no") off = 1
			next
		}
		/^deb[[:space:]]/ { sub(/\[[^]]*\]/, ""); print $2, $3 }
		END { flush() }
	' "${existing[@]}"
}

# base_rootfs debootstraps the Debian base into the cache, once.
base_rootfs() {
	local rootfs=$CACHE/rootfs-$SUITE mirror
	if [[ -d $rootfs ]]; then
		log "reusing $rootfs"
		return
	fi
	mirror=${MIRROR:-$(apt_sources | awk -v s="$SUITE" '$2 == s { print $1; exit }')}
	[[ -n $mirror ]] || fail "no Debian $SUITE mirror in /etc/apt/sources.list*; set MIRROR"
	rm -rf "$rootfs.tmp"
	mkdir -p "$CACHE"
	debootstrap --variant=minbase "$SUITE" "$rootfs.tmp" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
		fail "debootstrap $SUITE from $mirror, see $CACHE/debootstrap.log"
	# The image's apt uses the same sources as the host: the suite, its
	# updates and security suites where the host has them.
	apt_sources | awk -v s="$SUITE" '$2 ~ "^" s "(-|$)" { print "deb", $1, $2, "main" }' \
		>"$rootfs.tmp/etc/apt/sources.list"
	# Slim like debian:*-slim: no docs (but copyrights), man pages or locales,
	# now or from later installs; apt caches cleared after each install.
	printf 'path-exclude /usr/share/%s/*\n' doc man info locale >"$rootfs.tmp/etc/dpkg/dpkg.cfg.d/slim"
	echo 'path-include /usr/share/doc/*/copyright' >>"$rootfs.tmp/etc/dpkg/dpkg.cfg.d/slim"
	rm -rf "$rootfs.tmp"/usr/share/{man,info,locale}/*
	find "$rootfs.tmp/usr/share/doc" -type f ! -name copyright -delete
	echo 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
		>"$rootfs.tmp/etc/apt/apt.conf.d/slim-clean"
	mv "$rootfs.tmp" "$rootfs"
}

# base_image imports the cached rootfs as $BASE, once.
base_image() {
	if bah inspect --type image "$BASE" >/dev/null 2>&1; then
		log "reusing $BASE"
		return
	fi
	local mnt
	new_container scratch
	mnt=$(bah mount "$ctr")
	tar -C "$CACHE/rootfs-$SUITE" --numeric-owner \
		--exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*' -cf - . |
		tar -C "$mnt" --numeric-owner -xpf -
	bah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
	bah commit -q "$ctr" "$BASE" >/dev/null
}

# builder_image adds the host's Go toolchain (and CA bundle, for the Go module
# proxy) to the base, once per Go version.
builder_image() {
	if bah inspect --type image "$BUILDER" >/dev/null 2>&1; then
		log "reusing $BUILDER"
		return
	fi
	local mnt goroot
	goroot=$(go env GOROOT)
	new_container "$BASE"
	mnt=$(bah mount "$ctr")
	mkdir -p "$mnt/usr/local/go" "$mnt/go" "$mnt/etc/ssl/certs"
	cp -a "$goroot/." "$mnt/usr/local/go/"
	cp /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/"
	bah config --env GOPATH=/go \
		--env PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--workingdir /go "$ctr"
	bah commit -q "$ctr" "$BUILDER" >/dev/null
}

build_image() {
	bah rmi "$IMAGE" >/dev/null 2>&1 || true
	bah bud --isolation chroot --pull=never --quiet \
		--build-arg BUILDER_IMAGE="$BUILDER" --build-arg RUNTIME_IMAGE="$BASE" \
		--build-arg VERSION="$VERSION" --build-arg COMMIT="$COMMIT" \
		-t "$IMAGE" -f Dockerfile . >/dev/null
}

# in_pod CMD...: runs CMD from the image as an initContainer would: in the test
# namespace, the image's root filesystem read-only, a fresh writable
# /run/xtables (the pod's emptyDir) and XTABLES_LOCKFILE pointing into it.
# LOCKFILE= (empty) leaves XTABLES_LOCKFILE unset.
in_pod() {
	ip netns exec "$ns" unshare --mount --propagation private -- /bin/sh -euc '
		root=$1 lock=$2; shift 2
		mount --bind "$root" "$root"
		mount -o remount,bind,ro "$root"
		mount -t proc proc "$root/proc"
		mount -t tmpfs -o mode=0700 xtables "$root/run/xtables"
		unset XTABLES_LOCKFILE
		if [ -n "$lock" ]; then export XTABLES_LOCKFILE=$lock; fi
		exec chroot "$root" "$@"
	' in_pod "$rootfs" "${LOCKFILE-/run/xtables/xtables.lock}" "$@"
}

# expect_line TEXT LINE: fails unless TEXT has LINE as a whole line.
expect_line() {
	grep -qxF -- "$2" <<<"$1" || fail "missing rule: $2"
}

check_image() {
	new_container "$IMAGE"
	rootfs=$(bah mount "$ctr")
	# The mountpoint of the emptyDir, made by the runtime in a pod.
	mkdir -p "$rootfs/run/xtables"
	ns=ii-img-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
	ip netns add "$ns"
	ip -n "$ns" link set lo up

	in_pod /usr/local/bin/istio-iptables --version

	local args=(-p 15001 -u 1337 -m REDIRECT -i '*' -x "" -b 80, -d "")
	in_pod /usr/local/bin/istio-iptables "${args[@]}"

	local saved
	saved=$(in_pod /usr/sbin/iptables-save -t nat)
	printf '%s\n' "$saved"
	expect_line "$saved" '-A PREROUTING -p tcp -j ISTIO_INBOUND'
	expect_line "$saved" '-A ISTIO_INBOUND -p tcp -m tcp --dport 80 -j ISTIO_IN_REDIRECT'
	expect_line "$saved" '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15001'
	expect_line "$saved" '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001'

	# The xtables lock on a read-only root. iptables-nft takes no lock file:
	# the same call without XTABLES_LOCKFILE succeeds (a no-op re-run).
	LOCKFILE='' in_pod /usr/local/bin/istio-iptables "${args[@]}"
	# Legacy iptables locks /run/xtables.lock unless XTABLES_LOCKFILE says
	# otherwise: on a read-only root it fails without the variable and works
	# with the lock file in the emptyDir.
	local out
	if out=$(LOCKFILE='' in_pod /usr/local/bin/istio-iptables "${args[@]}" --iptables-mode legacy 2>&1); then
		fail "legacy apply without XTABLES_LOCKFILE succeeded on a read-only root"
	fi
	grep -q 'xtables.lock' <<<"$out" || fail "legacy apply failed, but not on the lock: $out"
	log "as expected, without XTABLES_LOCKFILE: $(grep -m1 'xtables.lock' <<<"$out")"
	in_pod /usr/local/bin/istio-iptables "${args[@]}" --iptables-mode legacy
	saved=$(in_pod /usr/sbin/iptables-legacy-save -t nat)
	expect_line "$saved" '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001'
}

mkdir -p "$CACHE/tmp"
step "base rootfs (debootstrap)" base_rootfs
step "base image (import)" base_image
step "builder image (+ Go toolchain)" builder_image
step "image build (Dockerfile)" build_image
step "check in a network namespace" check_image

size=$(bah images --format '{{.Size}}' "$IMAGE")
printf '\nimage-test: PASS  %s  (%s, version %s, commit %s)\n' "$IMAGE" "$size" "$VERSION" "$COMMIT"
printf '  %s\n' "${timings[@]}"
printf 'store: buildah --root %s --runroot %s --storage-driver vfs images\n' "$CACHE/storage" "$CACHE/runroot"
