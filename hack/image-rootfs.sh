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
# PACKAGES: iptables and the closure of its Depends (apt-cache depends
# --recurse); files are picked from them below.
ROOT_PACKAGES=(iptables)

fail() { printf 'image-rootfs: %s\n' "$*" >&2; exit 1; }
[[ -f $BINARY ]] || fail "no binary $BINARY"
for tool in apt-get apt-cache dpkg-deb readelf; do
	command -v "$tool" >/dev/null || fail "$tool not found (apt-get install apt dpkg binutils)"
done

# apt_sources prints "URI SUITE" for every enabled deb source of the host's
# apt configuration (one-line .list files and deb822 .sources files).
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

apt_dir=$CACHE/apt-$ARCH
APT_OPTS=(
	-o "Dir::State=$apt_dir/state" -o "Dir::State::status=$apt_dir/state/status"
	-o "Dir::Cache=$apt_dir/cache" -o "Dir::Etc::SourceList=$apt_dir/sources.list"
	-o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
	-o "Dir::Etc::Preferences=$apt_dir/preferences" -o "Dir::Etc::PreferencesParts=$apt_dir/preferences.d"
	-o "APT::Architecture=$ARCH" -o "APT::Architectures::=$ARCH"
	-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
	-o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -qq
)

# apt_setup writes the private sources (the host's Debian sources for SUITE,
# its -updates and -security) and fetches the package lists for ARCH, once a
# day at most.
apt_setup() {
	mkdir -p "$apt_dir"/{state/lists/partial,cache/archives/partial,sources.list.d,preferences.d}
	touch "$apt_dir/state/status"
	local sources
	if [[ -n ${MIRROR:-} ]]; then
		sources="$MIRROR $SUITE"$'\n'"$MIRROR $SUITE-updates"
		[[ -n ${SECURITY_MIRROR:-} ]] && sources+=$'\n'"$SECURITY_MIRROR $SUITE-security"
	else
		sources=$(apt_sources | awk -v s="$SUITE" '$2 ~ "^" s "(-updates|-security)?$"')
	fi
	[[ -n $sources ]] || fail "no Debian $SUITE source in /etc/apt/sources.list*; set MIRROR"
	awk -v a="$ARCH" -v k="$KEYRING" '{ print "deb [arch=" a " signed-by=" k "]", $1, $2, "main" }' \
		<<<"$sources" >"$apt_dir/sources.list.new"
	if cmp -s "$apt_dir/sources.list.new" "$apt_dir/sources.list" &&
		[[ -n $(find "$apt_dir/state/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit) ]]; then
		rm "$apt_dir/sources.list.new"
		return
	fi
	mv "$apt_dir/sources.list.new" "$apt_dir/sources.list"
	apt-get "${APT_OPTS[@]}" update || fail "apt-get update for $ARCH (see $apt_dir/sources.list)"
}

# download fetches the .debs of ROOT_PACKAGES and their dependency closure
# into $apt_dir/debs (reused when already there) and prints their paths.
download() {
	local pkgs debs=$apt_dir/debs
	mkdir -p "$debs"
	pkgs=$(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
		--no-breaks --no-replaces --no-enhances "${ROOT_PACKAGES[@]}" | grep -v '^ ' | sort -u)
	[[ -n $pkgs ]] || fail "no packages resolved for ${ROOT_PACKAGES[*]} on $ARCH"
	local p want=()
	for p in $pkgs; do
		local v
		v=$(apt-cache "${APT_OPTS[@]}" policy "$p" | awk '/Candidate:/ { print $2 }')
		# The file name apt-get download writes: epochs are %3a-escaped.
		[[ -f $debs/${p}_${v//:/%3a}_$ARCH.deb || -f $debs/${p}_${v//:/%3a}_all.deb ]] || want+=("$p:$ARCH=$v")
	done
	if ((${#want[@]})); then
		(cd "$debs" && apt-get "${APT_OPTS[@]}" download "${want[@]}") || fail "apt-get download ${want[*]}"
	fi
	for p in $pkgs; do
		local v
		v=$(apt-cache "${APT_OPTS[@]}" policy "$p" | awk '/Candidate:/ { print $2 }')
		local f
		for f in "$debs/${p}_${v//:/%3a}_"{"$ARCH",all}.deb; do
			if [[ -f $f ]]; then echo "$f"; fi
		done
	done
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
