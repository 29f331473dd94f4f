#!/usr/bin/env bash
# runtime-images: the app and proxy images that make e2e-runtime plays the
# examples with, built offline with buildah from Debian's packages:
#
#   1. base:  debootstrap a minimal Debian bookworm into $CACHE (once) and
#             import it as localhost/ii-runtime-base:bookworm;
#   2. app:   base + nginx-light (answers "app remote=<client address>") and
#             curl, as localhost/ii-runtime-app:bookworm;
#   3. proxy: base + haproxy (HTTP on 15001 and 15006, forwarding to the
#             original destination as Envoy does, with an X-Ii-Proxy header
#             naming the listener) and curl, as
#             localhost/ii-runtime-proxy:bookworm;
#
# and writes each as an oci-archive, $CACHE/app.tar and $CACHE/proxy.tar,
# that `podman load -i` names. Everything is cached under $CACHE
# (.cache/runtime): a second run that finds both archives newer than this
# script does nothing.
#
# Needs root, debootstrap and buildah. Contacts only the Debian mirror of the
# host's apt sources (MIRROR overrides). Nothing is applied to any network
# namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${CACHE:-$PWD/.cache/runtime}
SUITE=bookworm
BASE=localhost/ii-runtime-base:$SUITE
APP=localhost/ii-runtime-app:$SUITE
PROXY=localhost/ii-runtime-proxy:$SUITE

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'runtime-images: FAIL: %s\n' "$*" >&2; exit 1; }

if [[ $CACHE/app.tar -nt $0 && $CACHE/proxy.tar -nt $0 ]]; then
	log "reusing $CACHE/app.tar and $CACHE/proxy.tar"
	exit 0
fi

# A private vfs store under $CACHE: leaves the machine's own container
# storage alone and goes away with rm -rf .cache.
bah() {
	TMPDIR=$CACHE/tmp buildah --root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs "$@"
}
ctrs=()
cleanup() {
	local c
	for c in "${ctrs[@]}"; do bah rm "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
mkdir -p "$CACHE/tmp"

# mirror prints the host's Debian mirror for $SUITE (one-line .list files
# and deb822 .sources files).
mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] && awk -v s="$SUITE" '/^deb[[:space:]]/ { sub(/\[[^]]*\]/, ""); if ($3 == s) print $2 }' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] && awk -v s="$SUITE" '
			tolower($1) == "uris:" { u = $2 }
			tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) print u }
			/^[[:space:]]*$/ { u = "" }' "$f"
	done
}

# base: debootstrap once, import once.
if ! bah inspect --type image "$BASE" >/dev/null 2>&1; then
	rootfs=$CACHE/rootfs-$SUITE
	if [[ ! -d $rootfs ]]; then
		m=${MIRROR:-$(mirror | head -1)}
		[[ -n $m ]] || fail "no Debian $SUITE mirror in /etc/apt/sources.list*; set MIRROR"
		log "debootstrap $SUITE from $m"
		rm -rf "$rootfs.tmp"
		debootstrap --variant=minbase "$SUITE" "$rootfs.tmp" "$m" >"$CACHE/debootstrap.log" 2>&1 ||
			fail "debootstrap $SUITE from $m, see $CACHE/debootstrap.log"
		echo "deb $m $SUITE main" >"$rootfs.tmp/etc/apt/sources.list"
		printf 'path-exclude /usr/share/%s/*\n' doc man info locale >"$rootfs.tmp/etc/dpkg/dpkg.cfg.d/slim"
		mv "$rootfs.tmp" "$rootfs"
	fi
	log "import $BASE"
	ctr=$(bah from --pull-never scratch)
	ctrs+=("$ctr")
	mnt=$(bah mount "$ctr")
	tar -C "$rootfs" --numeric-owner --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*' -cf - . |
		tar -C "$mnt" --numeric-owner -xpf -
	bah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
	bah commit -q "$ctr" "$BASE" >/dev/null
fi

ctx=$CACHE/context
rm -rf "$ctx"
mkdir -p "$ctx"

# The app: nginx answering every request with the address it came from, so
# a check sees whether the proxy forwarded it (from 127.0.0.6) or the client
# reached the app itself.
cat >"$ctx/app.conf" <<'EOF'
server {
	listen 80 default_server;
	location / {
		default_type text/plain;
		return 200 "app remote=$remote_addr\n";
	}
}
EOF
cat >"$ctx/Containerfile.app" <<EOF
FROM $BASE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light curl \\
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/*
COPY app.conf /etc/nginx/sites-enabled/app.conf
CMD ["nginx", "-g", "daemon off;"]
EOF

# The proxy: haproxy playing Envoy. Every listener forwards to the original
# destination (server 0.0.0.0:0: SO_ORIGINAL_DST after REDIRECT, the local
# address after TPROXY) and adds X-Ii-Proxy (its port) and X-Ii-Client (the
# source address it saw) to the request and the response. Its own upstream
# connections run as the proxy UID/GID, so the rules let them go direct.
# Inbound (15006), and a connection to the pod's own address on 15001 (the
# classic one-port call captures inbound there too), forwards from
# 127.0.0.6, as Envoy's passthrough does, which the rules never capture;
# haproxy 2.6 cannot mark an upstream socket (SO_MARK 1337, which Envoy's
# original_src uses in TPROXY mode), so it cannot connect from the client's
# own address without the rules capturing that connection again.
# redirect.cfg serves REDIRECT (and the classic one-port call); tproxy.cfg
# listens transparently on 15006, as TPROXY needs.
for mode in redirect tproxy; do
	transparent=""
	[[ $mode == tproxy ]] && transparent=" transparent"
	cat >"$ctx/$mode.cfg" <<EOF
global
	maxconn 256
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend outbound
	bind :15001
	http-request set-header X-Ii-Proxy 15001
	http-request set-header X-Ii-Client %[src]
	http-response set-header X-Ii-Proxy 15001
	http-response set-header X-Ii-Client %[src]
	use_backend passthrough if { dst_is_local }
	default_backend original_dst
frontend inbound
	bind :15006$transparent
	http-request set-header X-Ii-Proxy 15006
	http-request set-header X-Ii-Client %[src]
	http-response set-header X-Ii-Proxy 15006
	http-response set-header X-Ii-Client %[src]
	default_backend passthrough
backend original_dst
	server orig 0.0.0.0:0
backend passthrough
	source 127.0.0.6
	server orig 0.0.0.0:0
EOF
done
cat >"$ctx/Containerfile.proxy" <<EOF
FROM $BASE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy curl \\
 && rm -rf /var/lib/apt/lists/*
COPY redirect.cfg tproxy.cfg /etc/haproxy/
USER 1337:1337
CMD ["haproxy", "-db", "-f", "/etc/haproxy/redirect.cfg"]
EOF

for img in app proxy; do
	ref=$APP
	[[ $img == proxy ]] && ref=$PROXY
	log "build $ref"
	bah rmi "$ref" >/dev/null 2>&1 || true
	bah bud --isolation chroot --pull=never --quiet -t "$ref" -f "$ctx/Containerfile.$img" "$ctx" >/dev/null
	rm -f "$CACHE/$img.tar"
	bah push --quiet "$ref" "oci-archive:$CACHE/$img.tar.tmp:$ref"
	mv "$CACHE/$img.tar.tmp" "$CACHE/$img.tar"
done
log "wrote $CACHE/app.tar ($APP) and $CACHE/proxy.tar ($PROXY)"
