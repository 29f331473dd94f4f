#!/usr/bin/env bash
# image-test: build the FROM-scratch images offline and check them.
#
#   hack/image-test.sh [ARCH...]        (default: amd64 arm64; make image-test)
#
#   1. build:   hack/image-build.sh ARCH... (Debian's packages, buildah from
#               scratch, the OCI layout .cache/image/oci with an index);
#   2. size:    per image, the layer uncompressed and compressed, and the file
#               count; fails when an image is IMAGE_LIMIT_MB (12) MB or more;
#   3. content: no shell; every ELF is of its image's architecture; the file
#               lists (paths and Debian packages) of all images match; the
#               index names every image by its platform;
#   4. arm64:   under Debian's qemu-aarch64-static (unpacked, not installed;
#               skipped with a message if it cannot be had): the arm64 binary's
#               --version, its dry run equal to the amd64 one byte for byte,
#               the arm64 iptables' --version and each extension's help (the
#               ELF loader, libraries and extensions load). qemu-user has no
#               netfilter netlink, so rules are not applied under it;
#   5. pod:     the amd64 image's own binaries, each run in a fresh network
#               namespace as the examples' init container runs: UID 0 with
#               only NET_ADMIN and NET_RAW (bounding set too), the image's
#               root filesystem read-only, a writable /run/xtables (the
#               emptyDir), the image's PATH and nothing else in the
#               environment. REDIRECT, TPROXY with --drop-invalid, DNS,
#               legacy, native nftables, re-run and cleanup, both families,
#               read back with the image's own *-save; every extension the
#               image ships shows up in what was read back.
#
# Needs root, buildah, jq, binutils, capsh (libcap2-bin). Contacts only the
# Go module proxy (for the build) and the Debian mirror. Nothing is applied
# outside the namespaces it creates; the machine's own iptables, nftables,
# rules and routes are compared before and after.
# shellcheck disable=SC2054 # commas in arrays belong to flag values
set -euo pipefail
cd "$(dirname "$0")/.."

(($#)) || set -- amd64 arm64
ARCHES=("$@")
CACHE=${CACHE:-$PWD/.cache/image}
OCI=${OCI:-$CACHE/oci}
IMAGE=${IMAGE:-localhost/istio-iptables:dev}
LIMIT_MB=${IMAGE_LIMIT_MB:-12}
export CACHE OCI IMAGE

bah() {
	TMPDIR=$CACHE/tmp buildah --root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs "$@"
}
log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'image-test: FAIL: %s\n' "$*" >&2; exit 1; }

namespaces=()
containers=()
timings=()
checks=0
cleanup() {
	local c n
	for c in "${containers[@]}"; do
		bah umount "$c" >/dev/null 2>&1 || true
		bah rm "$c" >/dev/null 2>&1 || true
	done
	for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT

# step NAME CMD...: runs CMD and records how long it took.
step() {
	local name=$1 t0=$EPOCHREALTIME
	shift
	log "$name"
	"$@"
	timings+=("$(awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%-36s %6.1f s", n, b - a }')")
}

pass() {
	checks=$((checks + 1))
	printf '  ok  %s\n' "$*"
}

# host_state prints the machine's own netfilter rules, policy rules and
# routes, without counters or timestamps.
host_state() {
	{
		iptables-save 2>/dev/null
		ip6tables-save 2>/dev/null
		nft list ruleset 2>/dev/null
		ip rule
		ip -6 rule
		ip route show table all
		ip -6 route show table all
	} | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//; s/counter packets [0-9]+ bytes [0-9]+/counter/'
}

# manifest_of REF: the path of the blob REF names in the OCI layout.
blob_of() {
	local digest
	digest=$(jq -r --arg r "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest' "$OCI/index.json")
	[[ -n $digest ]] || fail "no reference $1 in $OCI"
	echo "$OCI/blobs/${digest/://}"
}

build() {
	hack/image-build.sh "${ARCHES[@]}"
}

sizes=()
check_size() {
	local arch manifest layer config compressed uncompressed files limit=$((LIMIT_MB * 1000 * 1000))
	for arch in "${ARCHES[@]}"; do
		manifest=$(blob_of "$arch")
		[[ $(jq '.layers | length' "$manifest") == 1 ]] || fail "$arch image has not exactly one layer"
		layer=$OCI/blobs/$(jq -r '.layers[0].digest | sub(":"; "/")' "$manifest")
		config=$OCI/blobs/$(jq -r '.config.digest | sub(":"; "/")' "$manifest")
		compressed=$(($(stat -c %s "$layer") + $(stat -c %s "$config") + $(stat -c %s "$manifest")))
		uncompressed=$(gzip -dc "$layer" | wc -c)
		files=$(gzip -dc "$layer" | tar -tvf - | grep -vc '^d')
		sizes+=("$(awk -v a="$arch" -v u="$uncompressed" -v c="$compressed" -v f="$files" -v l="$LIMIT_MB" \
			'BEGIN { printf "image-test: size %s: %.1f MB uncompressed (%d bytes), %.1f MB compressed, %d files; limit %d MB", a, u / 1e6, u, c / 1e6, f, l }')")
		printf '%s\n' "${sizes[-1]}"
		((uncompressed < limit)) || fail "$arch image is $uncompressed bytes uncompressed, the limit is $limit"
		pass "$arch image under $LIMIT_MB MB"
		# Every entry root's, none setuid, setgid or writable by others.
		local odd
		odd=$(gzip -dc "$layer" | tar --numeric-owner -tvf - | awk '$2 != "0/0" || ($1 !~ /^l/ && $1 ~ /^...[sS]|^......[sS]|^........w/)')
		[[ -z $odd ]] || fail "$arch image has entries not owned by 0/0, setuid/setgid or world-writable: $odd"
		pass "$arch image: every entry owned by 0:0, no setuid, setgid or world-writable file"
	done
}

declare -A root
mount_images() {
	local arch ctr
	for arch in "${ARCHES[@]}"; do
		ctr=$(bah from --pull-never "$IMAGE-$arch")
		containers+=("$ctr")
		root[$arch]=$(bah mount "$ctr")
		# Mountpoints a runtime makes in the working container (not in the
		# image): /proc, /dev; /run/xtables is in the image.
		mkdir -p "${root[$arch]}/proc" "${root[$arch]}/dev"
	done
}

# normalized_contents ARCH: the file list of ARCH's image, with the
# architecture's triplet and dynamic loader names made generic.
normalized_contents() {
	sed -E 's/(x86_64|aarch64)-linux-gnu/TRIPLET/g; s/ld-linux-(x86-64\.so\.2|aarch64\.so\.1)/LDSO/g
		s#^/lib(64)?/LDSO -> [^\t]*#/lib*/LDSO -> (interpreter)#
		s/\t([^ ]+) .*/\t\1/' "$CACHE/rootfs-$1.contents"
}

check_content() {
	local arch want f n machine
	for arch in "${ARCHES[@]}"; do
		for f in bin/sh usr/bin/sh bin/bash bin/busybox usr/bin/env; do
			[[ ! -e ${root[$arch]}/$f ]] || fail "$arch image has /$f"
		done
		pass "$arch image has no shell"
		case $arch in
		amd64) want='Advanced Micro Devices X86-64' ;;
		arm64) want=AArch64 ;;
		*) fail "no ELF machine known for $arch" ;;
		esac
		n=0
		while IFS= read -r -d '' f; do
			machine=$(readelf -h "$f" 2>/dev/null | sed -n 's/^ *Machine: *//p') || true
			[[ -n $machine ]] || continue
			[[ $machine == "$want" ]] || fail "$arch image: ${f#"${root[$arch]}"} is $machine"
			n=$((n + 1))
		done < <(find "${root[$arch]}" -type f -print0)
		((n >= 10)) || fail "$arch image: only $n ELF files found"
		pass "$arch image: all $n ELF files are $want"
	done
	for arch in "${ARCHES[@]:1}"; do
		diff <(normalized_contents "${ARCHES[0]}") <(normalized_contents "$arch") ||
			fail "the file lists of the ${ARCHES[0]} and $arch images differ"
		pass "$arch and ${ARCHES[0]} images list the same $(wc -l <"$CACHE/rootfs-$arch.contents") files from the same packages"
	done
	if ((${#ARCHES[@]} > 1)); then
		local index platforms
		index=$(blob_of index)
		[[ $(jq -r .mediaType "$index") == application/vnd.oci.image.index.v1+json ]] || fail "reference index is no OCI index"
		for arch in "${ARCHES[@]}"; do
			platforms=$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a and .platform.os == "linux") | .digest' "$index")
			[[ $platforms == "$(basename "$(blob_of "$arch")" | sed 's/^/sha256:/')" ]] ||
				fail "the index does not name the $arch image as linux/$arch"
		done
		pass "the OCI index names linux/${ARCHES[*]}"
	fi
}

# The classic istio-init arguments of examples/kubernetes/pod-classic.yaml.
CLASSIC=(-p 15001 -u 1337 -m REDIRECT -i '*' -x "" -b 80, -d "")
TPROXY=(-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -x "" -b '*' -d 15090,15021,15020 --drop-invalid)
DNS=(-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --redirect-dns --dns-servers 10.96.0.10)

check_arm64() {
	[[ -n ${root[arm64]:-} ]] || return 0
	local q r=${root[arm64]} a=${root[amd64]:-} out
	if ! q=$(hack/image-qemu.sh arm64); then
		log "SKIP arm64 under qemu: Debian's qemu-user-static could not be had"
		return 0
	fi
	log "qemu: $q ($(cat "$q.version"))"
	out=$("$q" "$r/usr/local/bin/istio-iptables" --version)
	[[ $out == istio-iptables* ]] || fail "arm64 --version printed: $out"
	pass "arm64 istio-iptables --version under qemu: $out"
	if [[ -n $a ]]; then
		local args
		for args in CLASSIC TPROXY DNS; do
			local -n argv=$args
			cmp -s <("$q" "$r/usr/local/bin/istio-iptables" -n "${argv[@]}" --ipv6=true 2>/dev/null) \
				<("$a/usr/local/bin/istio-iptables" -n "${argv[@]}" --ipv6=true 2>/dev/null) ||
				fail "the arm64 dry run of $args differs from the amd64 one"
			unset -n argv
		done
		out=$("$q" "$r/usr/local/bin/istio-iptables" -n "${DNS[@]}" --ipv6=true 2>/dev/null | wc -l)
		pass "arm64 dry runs (REDIRECT, TPROXY, DNS; both families) equal the amd64 ones ($out lines for DNS)"
	fi
	local tool ext so
	for tool in iptables-nft-restore iptables-legacy-restore ip6tables-nft-save ip6tables-legacy-save; do
		out=$("$q" -L "$r" "$r/usr/sbin/$tool" --version 2>&1) || fail "arm64 $tool --version: $out"
		[[ $out == *v1.8* ]] || fail "arm64 $tool --version printed: $out"
	done
	pass "arm64 iptables (nft and legacy, both families) start under qemu: $out"
	for so in "$r"/usr/lib/*/xtables/libxt_*.so; do
		ext=${so##*/libxt_}
		ext=${ext%.so}
		case $ext in
		standard | NAT) continue ;; # no options of their own; NAT is REDIRECT's file
		[A-Z]*) out=$("$q" -L "$r" "$r/usr/sbin/iptables-legacy" -p tcp -j "$ext" -h 2>&1) ;;
		*) out=$("$q" -L "$r" "$r/usr/sbin/iptables-legacy" -p tcp -m "$ext" -h 2>&1) ;;
		esac
		grep -qi "^$ext .*options:" <<<"$out" || fail "arm64 extension $ext did not load: $(tail -2 <<<"$out")"
	done
	pass "arm64 extensions load under qemu (their help is printed)"
}

# new_ns: sets ns to a fresh network namespace with lo up and a veth pair
# with a global IPv6 address (so --ipv6=auto writes both families).
new_ns() {
	ns=ii-img-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
	ip netns add "$ns"
	namespaces+=("$ns")
	ip -n "$ns" link set lo up
	ip -n "$ns" link add eth0 type veth peer name eth1
	ip -n "$ns" addr add 10.10.0.2/24 dev eth0
	ip -n "$ns" addr add fd00:db8::2/64 dev eth0 nodad
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set eth1 up
}

# CAPSH: capsh options that leave UID 0 with only NET_ADMIN and NET_RAW, in
# every set (the examples' drop: [ALL], add: [NET_ADMIN, NET_RAW]) and no new
# privileges (allowPrivilegeEscalation: false).
caps_setup() {
	local drop
	command -v capsh >/dev/null || fail "capsh not found (apt-get install libcap2-bin)"
	drop=$(capsh --print | sed -n 's/^Bounding set =//p' | tr ',' '\n' | grep -vxE 'cap_net_admin|cap_net_raw' | paste -sd,)
	CAPSH=(--drop="$drop" --inh=cap_net_admin,cap_net_raw --addamb=cap_net_admin,cap_net_raw --no-new-privs)
	local status
	status=$(capsh "${CAPSH[@]}" --shell=/bin/grep -- -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs)' /proc/self/status)
	[[ $(grep -c ':[[:space:]]*0000000000003000$' <<<"$status") == 5 && $status == *"NoNewPrivs:"*1* ]] ||
		fail "capsh did not leave only NET_ADMIN and NET_RAW: $status"
	pass "the pod's capabilities: every set 0x3000 (NET_ADMIN, NET_RAW), no new privileges"
}

# in_pod CMD...: runs the image's CMD as the examples' init container runs:
# in $ns, the image's root read-only, fresh /proc, /dev/null and a writable
# /run/xtables (the emptyDir), the image's PATH, UID 0 with the capabilities
# above. LOCKFILE= (empty) leaves XTABLES_LOCKFILE unset.
in_pod() {
	local env=(PATH=/usr/local/bin:/usr/sbin:/usr/bin)
	[[ -n ${LOCKFILE-/run/xtables/xtables.lock} ]] && env+=(XTABLES_LOCKFILE="${LOCKFILE-/run/xtables/xtables.lock}")
	# shellcheck disable=SC2016 # the inner script expands its own arguments
	ip netns exec "$ns" unshare --mount --propagation private -- /bin/sh -euc '
		root=$1; shift
		mount --bind "$root" "$root"
		mount -o remount,bind,ro "$root"
		mount -t proc proc "$root/proc"
		mount -t tmpfs -o mode=0755,size=64k dev "$root/dev"
		touch "$root/dev/null"
		mount --bind /dev/null "$root/dev/null"
		mount -t tmpfs -o mode=0700,size=1m xtables "$root/run/xtables"
		exec "$@"
	' in_pod "$pod_root" env -i "${env[@]}" "$(command -v capsh)" "${CAPSH[@]}" --chroot="$pod_root" --shell="$1" -- "${@:2}"
}

# tool ARGS...: runs the image's istio-iptables in the pod; fails with its
# output unless it exits 0.
tool() {
	local out
	out=$(in_pod /usr/local/bin/istio-iptables "$@" 2>&1) || fail "istio-iptables $* in $ns: $out"
}

# saved FLAVOUR: the image's own iptables and ip6tables save of both tables,
# without comments and counters.
saved() {
	local fam
	for fam in iptables ip6tables; do
		echo "# $fam-$1"
		in_pod "/usr/sbin/$fam-$1-save" | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//'
	done
}

# expect TEXT LINE...: fails unless TEXT has every LINE as a whole line.
expect() {
	local text=$1 line
	shift
	for line in "$@"; do
		grep -qxF -- "$line" <<<"$text" || fail "missing rule in $ns: $line"
	done
}

# expect_clean: nothing of ours is left in $ns, in any backend.
expect_clean() {
	local flavour
	for flavour in nft legacy; do
		! saved "$flavour" | grep -q ISTIO || fail "ISTIO rules left in $ns ($flavour): $(saved "$flavour" | grep ISTIO | head -3)"
	done
	! ip netns exec "$ns" nft list tables | grep -q istio || fail "nft table left in $ns: $(ip netns exec "$ns" nft list tables)"
	! ip -n "$ns" rule | grep -q 'lookup 133' || fail "policy rule left in $ns: $(ip -n "$ns" rule)"
}

all_saved=""
check_pod() {
	pod_root=${root[amd64]:-}
	[[ -n $pod_root ]] || { log "SKIP the pod checks: they run the amd64 image"; return 0; }
	caps_setup
	local before out s s2
	before=$(host_state)

	new_ns
	out=$(in_pod /usr/local/bin/istio-iptables --version)
	pass "in the pod: $out"

	# REDIRECT, the classic istio-init arguments, iptables-nft (auto).
	tool "${CLASSIC[@]}"
	s=$(saved nft)
	expect "$s" '-A PREROUTING -p tcp -j ISTIO_INBOUND' \
		'-A ISTIO_INBOUND -p tcp -m tcp --dport 80 -j ISTIO_IN_REDIRECT' \
		'-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15001' \
		'-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN' \
		'-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001'
	[[ $(grep -c 'REDIRECT --to-ports 15001' <<<"$s") == 4 ]] || fail "REDIRECT not in both families: $s"
	pass "REDIRECT (nft): $(grep -c '^-A' <<<"$s") rules in both families, read back with iptables-nft-save and ip6tables-nft-save"
	all_saved+=$s$'\n'
	# Re-run: the restarted init container; nothing changes.
	tool "${CLASSIC[@]}"
	s2=$(saved nft)
	[[ $s2 == "$s" ]] || fail "re-run changed the rules: $(diff <(echo "$s") <(echo "$s2"))"
	pass "re-run with the same arguments: exit 0, rules unchanged"
	tool --cleanup-only
	expect_clean
	pass "cleanup: nothing of ours left (nft, legacy, native, ip rule)"

	# TPROXY with --drop-invalid: mangle rules and the policy route.
	new_ns
	tool "${TPROXY[@]}"
	s=$(saved nft)
	expect "$s" '-A PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff' \
		'-A OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff' \
		'-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff'
	grep -q -- '-j TPROXY --on-port 15006 .*--tproxy-mark 0x539/0xffffffff' <<<"$s" || fail "no TPROXY rule: $s"
	expect "$s" '-A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP' '-A ISTIO_DROP -j DROP'
	ip -n "$ns" rule | grep -q 'fwmark 0x539 lookup 133' || fail "no TPROXY policy rule: $(ip -n "$ns" rule)"
	pass "TPROXY + drop-invalid (nft): TPROXY, MARK, CONNMARK, conntrack rules and ip rule fwmark 0x539 lookup 133"
	all_saved+=$s$'\n'
	tool "${TPROXY[@]}"
	[[ $(saved nft) == "$s" ]] || fail "TPROXY re-run changed the rules"
	tool --cleanup-only
	expect_clean
	pass "TPROXY re-run unchanged; cleanup removes the rules and the policy route"

	# DNS capture to one server.
	new_ns
	tool "${DNS[@]}"
	s=$(saved nft)
	expect "$s" '-A ISTIO_OUTPUT_DNS -d 10.96.0.10/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053'
	grep -q -- '-j CT --zone 1' <<<"$s" || fail "no conntrack zone rule: $s"
	grep -q -- '-m multiport' <<<"$s" || fail "no multiport rule: $s"
	pass "DNS (--redirect-dns --dns-servers 10.96.0.10, nft): REDIRECT to 15053, CT zones"
	all_saved+=$s$'\n'
	tool --cleanup-only
	expect_clean

	# Legacy: the lock on a read-only root, then everything at once.
	new_ns
	if out=$(LOCKFILE='' in_pod /usr/local/bin/istio-iptables "${CLASSIC[@]}" --iptables-mode legacy 2>&1); then
		fail "legacy apply without XTABLES_LOCKFILE succeeded on a read-only root"
	fi
	grep -q 'xtables.lock' <<<"$out" || fail "legacy apply failed, but not on the lock: $out"
	pass "legacy without XTABLES_LOCKFILE fails on the read-only root, naming the lock"
	tool "${TPROXY[@]}" --redirect-dns --dns-servers 10.96.0.10 --iptables-mode legacy
	s=$(saved legacy)
	grep -q -- '-j TPROXY --on-port 15006' <<<"$s" || fail "no legacy TPROXY rule: $s"
	expect "$s" '-A ISTIO_OUTPUT_DNS -d 10.96.0.10/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053'
	[[ $(grep -c 'TPROXY --on-port' <<<"$s") == 2 ]] || fail "legacy TPROXY not in both families: $s"
	! saved nft | grep -q ISTIO || fail "legacy run left rules in iptables-nft"
	pass "legacy (TPROXY + DNS + drop-invalid): $(grep -c '^-A' <<<"$s") rules in both families, read back with *-legacy-save"
	all_saved+=$s$'\n'
	tool "${TPROXY[@]}" --redirect-dns --dns-servers 10.96.0.10 --iptables-mode legacy
	[[ $(saved legacy) == "$s" ]] || fail "legacy re-run changed the rules"
	tool --cleanup-only
	expect_clean
	pass "legacy re-run unchanged; cleanup"

	# Native nftables: one inet table over netlink, no iptables binary.
	new_ns
	tool "${CLASSIC[@]}" --native-nftables
	out=$(ip netns exec "$ns" nft list ruleset)
	grep -q 'redirect to :15001' <<<"$out" || fail "no native redirect: $out"
	! saved nft | grep -q ISTIO || fail "native run wrote iptables-nft rules"
	tool "${CLASSIC[@]}" --native-nftables
	[[ $(ip netns exec "$ns" nft list ruleset) == "$out" ]] || fail "native re-run changed the table"
	pass "native nftables: $(ip netns exec "$ns" nft list tables | tr '\n' ' ')with redirect to :15001; re-run unchanged"
	tool --cleanup-only --native-nftables
	expect_clean
	pass "native cleanup"

	# Every extension the image ships was used by some rule read back.
	local so ext pat
	for so in "$pod_root"/usr/lib/*/xtables/libxt_*.so; do
		ext=${so##*/libxt_}
		ext=${ext%.so}
		case $ext in
		standard) pat=' -j (RETURN|ACCEPT|DROP)$' ;;
		NAT) pat=' -j REDIRECT ' ;; # REDIRECT.so links to NAT.so
		[A-Z]*) pat=" -j $ext " ;;
		*) pat=" -m $ext " ;;
		esac
		grep -qE -- "$pat" <<<"$all_saved" || fail "the image ships libxt_$ext.so, but no rule read back uses it"
	done
	pass "every shipped extension is used: $(find "$pod_root"/usr/lib/*/xtables -name 'libxt_*.so' -printf '%f\n' | sed 's/^libxt_//; s/\.so$//' | sort | paste -sd' ')"

	[[ $(host_state) == "$before" ]] || fail "the machine's own rules or routes changed: $(diff <(echo "$before") <(host_state) | head)"
	pass "the machine's own iptables, nftables, ip rule and ip route are unchanged"
}

mkdir -p "$CACHE/tmp"
step "build (${ARCHES[*]})" build
step "size" check_size
step "mount the images" mount_images
step "content" check_content
step "arm64 under qemu" check_arm64
step "pod checks (amd64)" check_pod

printf '\n'
printf '%s\n' "${sizes[@]}"
printf 'image-test: PASS  %d checks; %s (%s), OCI layout %s\n' "$checks" "$IMAGE" "${ARCHES[*]}" "$OCI"
printf '  %s\n' "${timings[@]}"
