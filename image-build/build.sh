#!/usr/bin/env bash
# Builds the flashable Raspberry Pi image perch-<version>-arm64.img.xz:
# Debian bookworm arm64 (mmdebstrap) with Debian's Raspberry Pi support
# (raspi-firmware, linux-image-arm64) and perch installed from its .deb.
# Boots the Pi 3B+, 4, 400, CM4 and Zero 2 W. See docs/appliance.md.
#
#   image-build/build.sh [options]
#     --variant release   all initramfs modules, xz (default)
#     --variant ci        CI-speed: initramfs with a reduced module list
#                         (QEMU virtio and the Pi SD controllers only), a
#                         build without LTO, zstd; named ...-ci.img.zst. Not
#                         for release: a Pi booting from USB would not boot.
#     --base FILE         instead: customize an official Raspberry Pi OS Lite
#                         image (.img or .img.xz) in place - the Pi 5 route
#     --deb FILE          use this perch_<version>_arm64.deb (default:
#                         cross-compile it alongside the root file system)
#     --out DIR           where images go (default: build/)
#     --mirror URL        Debian mirror (default http://deb.debian.org/debian)
#     --compress xz|zstd|none
#
# Runs as root on Debian 12 with Debian's packages only; assembles the image
# without loop devices or mounts (mkfs.vfat + mcopy, mkfs.ext4 -d, sfdisk,
# dd conv=notrunc). Prints the image's path on its last line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

variant=release
base=""
deb=""
out="$repo/build"
mirror=http://deb.debian.org/debian
compress=""
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) variant=${2:?}; shift 2 ;;
        --base) base=${2:?}; shift 2 ;;
        --deb) deb=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --mirror) mirror=${2:?}; shift 2 ;;
        --compress) compress=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$variant" in
    release) : "${compress:=xz}" ;;
    ci) : "${compress:=zstd}" ;;
    *) die "--variant is release or ci" ;;
esac
case "$compress" in xz|zstd|none) ;; *) die "--compress is xz, zstd or none" ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap chroots, files owned by root in the image)"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp_start

stage "preflight: tools and binfmt_misc"
need_tools mmdebstrap mkfs.vfat mcopy mkfs.ext4 sfdisk xz zstd debugfs qemu-aarch64-static
ensure_binfmt

fast=0
[ "$variant" = ci ] && fast=1
deb_status=""
deb_pid=""
if [ -n "$base" ]; then
    stage "perch .deb for arm64"
    if [ -z "$deb" ]; then
        deb=$(PERCH_FAST_BUILD=$fast "$repo/packaging/build-deb.sh" --arch arm64 --out "$out" | tail -n1)
    fi
    [ -f "$deb" ] || die "no package at $deb"
    deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
    info "using $deb"
    stage_done  # customize_raspios runs in a subshell, with its own stages
    # shellcheck source=raspios.sh
    . "$here/raspios.sh"
    image=$(customize_raspios "$base" "$deb" "$out/perch-$version-arm64-raspios.img")
    finish_image "$image" "$compress"
    exit 0
fi

name="perch-$version-arm64"
[ "$variant" = ci ] && name="$name-ci"
work="$out/$name.work"
rm -rf "$work"
mkdir -p "$work"
cleanup() {
    # The background cross-compilation has its own process group.
    if [ -n "$deb_pid" ]; then kill -- "-$deb_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"

stage "perch .deb for arm64"
if [ -z "$deb" ]; then
    # Cross-compiling takes minutes of CPU, mmdebstrap mostly waits for the
    # network and for single-threaded dpkg under qemu-user: the two run side
    # by side, and customize.sh waits for the package only when everything
    # else is in place.
    deb="$out/perch_${version}_arm64.deb"
    rm -f "$deb"
    deb_status="$work/deb.status"
    deb_log="$out/perch_${version}_arm64.build.log"
    info "cross-compiling in the background, alongside the root file system (log: $deb_log)"
    deb_t0=$(date +%s)
    # Its own session is its own scheduling group (Linux's autogroup):
    # given this process's nice, so that a build.sh run at idle priority
    # (scripts/test) compiles at idle priority too.
    # shellcheck disable=SC2016 # expanded by the inner shell
    PERCH_FAST_BUILD=$fast setsid bash -c 'echo "$(nice)" 2>/dev/null > /proc/self/autogroup || true
        "$1" --arch arm64 --out "$2" > /dev/null 2> "$3"; echo $? > "$4"' \
        build-deb "$repo/packaging/build-deb.sh" "$out" "$deb_log" "$deb_status" &
    deb_pid=$!
else
    [ -f "$deb" ] || die "no package at $deb"
    deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
    info "using $deb"
fi

stage "root file system: mmdebstrap bookworm arm64 (debootstrap, packages, perch)"
# mmdebstrap's and customize.sh's whole output; the console shows progress.
export LOG="$out/$name.build.log"
: > "$LOG"
packages=(
    systemd-sysv systemd-resolved systemd-timesyncd udev kmod dbus
    iproute2 iputils-ping openssh-server avahi-daemon libnss-mdns
    wpasupplicant firmware-brcm80211 wireless-regdb
    raspi-firmware linux-image-arm64 initramfs-tools zstd
    e2fsprogs dosfstools fdisk openssl ca-certificates
    less nano
)
# update-initramfs is diverted to `true` while packages install (each run
# costs minutes under qemu-user) and run once by customize.sh at the end.
# shellcheck disable=SC2016 # $1 is mmdebstrap's, expanded by its hook shell
mmdebstrap --variant=apt --architectures=arm64 \
    --components=main,non-free-firmware \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"' \
    --customize-hook="\"$here/customize.sh\" \"\$1\" \"$deb\" $variant \"$deb_status\"" \
    --skip=cleanup/reproducible \
    bookworm "$rootfs" \
    "deb $mirror bookworm main non-free-firmware" \
    "deb $mirror bookworm-updates main non-free-firmware" \
    "deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware" \
    2>&1 | progress_filter || {
    echo "---- last 60 lines of $LOG ----" >&2
    tail -n 60 "$LOG" >&2
    if [ -n "$deb_status" ] && [ -s "$deb_status" ] && [ "$(cat "$deb_status")" != 0 ]; then
        echo "---- last 40 lines of $deb_log ----" >&2
        tail -n 40 "$deb_log" >&2
        die "cross-compiling perch failed (its whole output: $deb_log)"
    fi
    die "mmdebstrap failed (its whole output: $LOG)"
}
if [ -n "$deb_pid" ]; then
    wait "$deb_pid" || true
    deb_pid=""
    info "perch .deb: cross-compiled alongside in $(elapsed "$deb_t0" "$(stat -c %Y "$deb_status")") ($(sed -n 's/^ *Finished //p' "$deb_log" | tail -n1))"
fi
stage_done

stage "image assembly: FAT $FIRM_LABEL + ext4 $ROOT_LABEL, MBR"
image="$out/$name.img"
assemble_image "$rootfs" "$image"
rm -rf "$work"
trap - EXIT

finish_image "$image" "$compress"
