#!/usr/bin/env bash
# image-rootfs: assemble the root filesystem of the FROM-scratch image for one
# architecture, from Debian's packages, without running anything of it.
#
#   hack/image-rootfs.sh ARCH BINARY DEST
#
# ARCH is a Debian architecture (amd64, arm64), BINARY our static
# istio-iptables for it, DEST the directory to fill (emptied first). Writes
# DEST.contents: one line per file of the image, "PATH<TAB>PACKAGE VERSION"
# (the listing of make image-contents).
#
# How: a private apt configuration and state (under $CACHE/apt-ARCH; the
# host's apt setup is only read, never changed) downloads iptables and its
# dependencies for ARCH; dpkg-deb -x unpacks them into a staging tree. From it
# the image takes:
#   - xtables-nft-multi and xtables-legacy-multi, with the iptables and
#     ip6tables symlinks of both flavours, and plain iptables{,-save,-restore}
#     pointing at the nft flavour (Debian's default alternative);
#   - the xtables extensions our rules load (EXTENSIONS below), no others;
#   - exactly the shared libraries those ELF files need: the DT_NEEDED
#     closure and the program interpreter, read with readelf, so the same
#     code works for any architecture;
#   - each package's copyright file and a /var/lib/dpkg/status.d entry (the
#     distroless layout), so image scanners see the Debian versions inside;
#   - /run/xtables, the mountpoint of the lock emptyDir.
# No shell, no /etc: iptables opens /etc/passwd, /etc/nsswitch.conf and
# /etc/gai.conf only for name lookups our numeric arguments never need
# (checked with strace), and tcp and udp are built into libxtables.
#
# Needs apt-get, dpkg-deb and readelf (binutils). Contacts only the Debian
# mirror of the host's apt sources (MIRROR and SECURITY_MIRROR override).
set -euo pipefail

ARCH=${1:?usage: image-rootfs.sh ARCH BINARY DEST}
BINARY=${2:?usage: image-rootfs.sh ARCH BINARY DEST}
DEST=${3:?usage: image-rootfs.sh ARCH BINARY DEST}
cd "$(dirname "$0")/.."
CACHE=${CACHE:-$PWD/.cache/image}
SUITE=${SUITE:-bookworm}
KEYRING=${KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
VERSION=${VERSION:-dev}

# EXTENSIONS: every match and target of the golden rules (grep -rhoE -- '-j
# [A-Z]+|-m [a-z]+' capture/testdata/*.golden), plus those iptables loads
# itself: standard (ACCEPT, DROP, RETURN and jumps to chains), tcp and udp
# (-p tcp --dport, -p udp --dport). image-test runs every mode on them.
EXTENSIONS=(CONNMARK CT MARK REDIRECT TPROXY connmark conntrack mark multiport owner standard tcp udp)
# ROOT_PACKAGES: iptables, with the closure of its Depends (apt-cache depends
# --recurse); files are picked from them below.
ROOT_PACKAGES=(iptables)

fail() { printf 'image-rootfs: %s\n' "$*" >&2; exit 1; }
[[ -f $BINARY ]] || fail "no binary $BINARY"
for tool in apt-get apt-cache dpkg-deb readelf; do
	command -v "$tool" >/dev/null || fail "$tool not found (apt-get install apt dpkg binutils)"
done

# shellcheck source=hack/image-apt.sh
source hack/image-apt.sh
apt_init "$ARCH"

# download fetches the .debs of ROOT_PACKAGES and their dependency closure
# into $apt_dir/debs (reused when already there) and prints their paths.
download() {
	local pkgs debs=$apt_dir/debs p v f want=()
	mkdir -p "$debs"
	pkgs=$(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
		--no-breaks --no-replaces --no-enhances "${ROOT_PACKAGES[@]}" | grep -v '^ ' | sort -u)
	[[ -n $pkgs ]] || fail "no packages resolved for ${ROOT_PACKAGES[*]} on $ARCH"
	# "PACKAGE VERSION" of each candidate, in one apt-cache call.
	# shellcheck disable=SC2086 # pkgs is a word list
	candidates=$(apt-cache "${APT_OPTS[@]}" policy $pkgs |
		awk '/^[^ ]/ { name = $1; sub(/:$/, "", name) } /^ +Candidate:/ { print name, $2 }')
	while read -r p v; do
		[[ $v != "(none)" ]] || fail "no candidate for $p on $ARCH"
		# The file name apt-get download writes: epochs are %3a-escaped.
		[[ -f $debs/${p}_${v//:/%3a}_$ARCH.deb || -f $debs/${p}_${v//:/%3a}_all.deb ]] || want+=("$p=$v")
	done <<<"$candidates"
	if ((${#want[@]})); then
		(cd "$debs" && apt-get "${APT_OPTS[@]}" download "${want[@]}") || fail "apt-get download ${want[*]}"
	fi
	while read -r p v; do
		for f in "$debs/${p}_${v//:/%3a}_"{"$ARCH",all}.deb; do
			if [[ -f $f ]]; then echo "$f"; fi
		done
	done <<<"$candidates"
}

apt_setup
mapfile -t DEBS < <(download)

stage=$CACHE/stage-$ARCH
rm -rf "$stage" "$DEST"
mkdir -p "$stage" "$DEST"
# owner maps each unpacked path (./usr/sbin/x) to "PACKAGE VERSION".
declare -A owner
for deb in "${DEBS[@]}"; do
	dpkg-deb -x "$deb" "$stage"
	pkgver=$(dpkg-deb -f "$deb" Package Version | awk -F': ' '{ printf "%s%s", (NR > 1 ? " " : ""), $2 }')
	while IFS= read -r path; do
		owner[$path]=$pkgver
	done < <(dpkg-deb --fsys-tarfile "$deb" | tar -t)
done
triplet=$(basename "$(dirname "$(find "$stage" -name 'libc.so.6' | head -1)")")
[[ $triplet == *-linux-gnu* ]] || fail "no libc.so.6 in the $ARCH packages"

declare -A picked
# pick PATH: copies ./PATH from the staging tree (a symlink as a symlink,
# and then its target too).
pick() {
	local p=${1#/} target
	p=./${p#./}
	[[ -n ${picked[$p]:-} ]] && return
	[[ -e $stage/$p || -L $stage/$p ]] || fail "$p is in no package of ${ROOT_PACKAGES[*]} for $ARCH"
	picked[$p]=1
	mkdir -p "$DEST/$(dirname "$p")"
	cp -a "$stage/$p" "$DEST/$p"
	if [[ -L $stage/$p ]]; then
		target=$(readlink "$stage/$p")
		if [[ $target == /* ]]; then pick "$target"; else pick "$(dirname "$p")/$target"; fi
	fi
}

# libdir_of SONAME: the path of a shared library in the staging tree.
find_lib() {
	local d
	for d in "lib/$triplet" "usr/lib/$triplet" lib usr/lib; do
		if [[ -e $stage/$d/$1 ]]; then
			echo "$d/$1"
			return
		fi
	done
	fail "shared library $1 is in no package of ${ROOT_PACKAGES[*]} for $ARCH"
}

# pick_elf FILE: picks FILE, its program interpreter and, transitively, the
# libraries it needs.
pick_elf() {
	local f=./${1#./} interp lib real
	real=$(cd "$stage" && readlink -f "$f")
	[[ -n ${picked_elf[$real]:-} ]] && return
	picked_elf[$real]=1
	pick "$f"
	interp=$(readelf -lW "$stage/$f" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')
	[[ -n $interp ]] && pick "$interp"
	for lib in $(readelf -dW "$stage/$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
		pick_elf "$(find_lib "$lib")"
	done
}
declare -A picked_elf

for multi in xtables-nft-multi xtables-legacy-multi; do
	pick_elf "usr/sbin/$multi"
done
for fam in iptables ip6tables; do
	for flavour in nft legacy; do
		for tool in "" -save -restore; do
			pick "usr/sbin/$fam-$flavour$tool"
		done
	done
	# Plain names, as Debian's alternatives set them by default.
	for tool in "" -save -restore; do
		ln -s "$fam-nft$tool" "$DEST/usr/sbin/$fam$tool"
		owner[./usr/sbin/$fam$tool]="(image: symlink to $fam-nft$tool)"
	done
done
for ext in "${EXTENSIONS[@]}"; do
	pick_elf "usr/lib/$triplet/xtables/libxt_$ext.so"
done

# Copyrights and dpkg status entries of the packages files came from.
declare -A used
for p in "${!picked[@]}"; do
	[[ -d $stage/$p && ! -L $stage/$p ]] && continue
	used[${owner[$p]%% *}]=1
done
mkdir -p "$DEST/var/lib/dpkg/status.d"
for deb in "${DEBS[@]}"; do
	pkg=$(dpkg-deb -f "$deb" Package)
	[[ -n ${used[$pkg]:-} ]] || continue
	pick "usr/share/doc/$pkg/copyright"
	dpkg-deb -f "$deb" Package Source Version Architecture Maintainer Installed-Size Homepage \
		>"$DEST/var/lib/dpkg/status.d/$pkg"
	owner[./var/lib/dpkg/status.d/$pkg]="(image: dpkg status of $pkg)"
done

install -D -m 0755 "$BINARY" "$DEST/usr/local/bin/istio-iptables"
owner[./usr/local/bin/istio-iptables]="istio-iptables $VERSION (this repository, static Go binary)"
mkdir -p "$DEST/run/xtables"

# Directories come out 0755 root; the listing names every file and symlink.
find "$DEST" -type d -exec chmod 0755 {} +
(
	cd "$DEST"
	find . ! -type d | LC_ALL=C sort | while IFS= read -r p; do
		from=${owner[$p]:-}
		[[ -n $from ]] || fail "no origin recorded for $p"
		if [[ -L $p ]]; then
			printf '%s -> %s\t%s\n' "${p#.}" "$(readlink "$p")" "$from"
		else
			printf '%s\t%s\n' "${p#.}" "$from"
		fi
	done
) >"$DEST.contents"
