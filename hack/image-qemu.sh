#!/usr/bin/env bash
# image-qemu: prints the path of a qemu user-mode emulator for ARCH (default
# arm64), taken from Debian's qemu-user-static package of the host's
# architecture, unpacked into $CACHE/qemu (nothing is installed, no binfmt
# handler is registered: callers run `qemu-aarch64-static [-L ROOT] BINARY`).
#
#   hack/image-qemu.sh [ARCH]
#
# Exits 1 with a message on stderr when the package cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${CACHE:-$PWD/.cache/image}
SUITE=${SUITE:-bookworm}
KEYRING=${KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
fail() { printf 'image-qemu: %s\n' "$*" >&2; exit 1; }

case ${1:-arm64} in
arm64) qarch=aarch64 ;;
amd64) qarch=x86_64 ;;
*) fail "no qemu name known for ${1}" ;;
esac
out=$CACHE/qemu/qemu-$qarch-static
if [[ -x $out ]]; then
	echo "$out"
	exit 0
fi

# shellcheck source=hack/image-apt.sh
source hack/image-apt.sh
apt_init "$(dpkg --print-architecture)"
apt_setup
mkdir -p "$CACHE/qemu"
rm -f "$CACHE"/qemu/qemu-user-static_*.deb
(cd "$CACHE/qemu" && apt-get "${APT_OPTS[@]}" download qemu-user-static) || fail "apt-get download qemu-user-static"
deb=$(ls "$CACHE"/qemu/qemu-user-static_*.deb)
dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/bin/qemu-$qarch-static" >"$out.tmp" || fail "no qemu-$qarch-static in $deb"
chmod 0755 "$out.tmp"
mv "$out.tmp" "$out"
dpkg-deb -f "$deb" Version >"$out.version"
rm -f "$deb"
echo "$out"
