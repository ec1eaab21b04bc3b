# shellcheck shell=bash
# Helpers for build.sh and test-boot.sh: progress output, tool checks,
# binfmt_misc, and assembling a Raspberry Pi disk image from a root file
# system directory without loop devices or mounts.

FIRM_LABEL=RASPIFIRM
ROOT_LABEL=RASPIROOT
FIRM_START_MIB=4
FIRM_SIZE_MIB=512

die() {
    echo "ERROR: $*" >&2
    exit 1
}
info() { echo "    $*" >&2; }

_t0=0
_stage_t0=0
_stage_name=""
stamp_start() { _t0=$(date +%s); }
# elapsed T0 [T1]: T1 (default: now) - T0 as 1m05s
elapsed() {
    local s=$((${2:-$(date +%s)} - $1))
    printf '%dm%02ds' $((s / 60)) $((s % 60))
}
stage() {
    stage_done
    _stage_name=$1
    _stage_t0=$(date +%s)
    echo "==> [$(elapsed "$_t0")] $1" >&2
}
stage_done() {
    if [ -n "$_stage_name" ]; then
        echo "    done in $(elapsed "$_stage_t0"): $_stage_name" >&2
        _stage_name=""
    fi
}

# Shows mmdebstrap's and our own progress lines; the full output goes to
# $LOG (printed in full on failure by the caller's trap).
progress_filter() {
    local line
    while IFS= read -r line; do
        printf '%s\n' "$line" >> "${LOG:-/dev/null}"
        case "$line" in
            I:*|E:*|W:*|perch-image:*|"    "*) printf '    %s\n' "$line" >&2 ;;
        esac
    done
}

need_tools() {
    local missing=() t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    [ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]}
install them with: apt-get install mmdebstrap qemu-user-static binfmt-support dosfstools mtools e2fsprogs fdisk xz-utils zstd"
}

# qemu-user runs the arm64 package scripts; the kernel finds it through
# binfmt_misc, which a container may not have mounted.
ensure_binfmt() {
    local fs=/proc/sys/fs/binfmt_misc
    if [ ! -e "$fs/status" ]; then
        info "mounting binfmt_misc on $fs"
        mount -t binfmt_misc binfmt_misc "$fs" || die "cannot mount binfmt_misc (needs root and a kernel with binfmt_misc)"
    fi
    if [ ! -e "$fs/qemu-aarch64" ]; then
        info "registering qemu-aarch64 with binfmt_misc"
        if command -v update-binfmts >/dev/null && [ -e /usr/share/binfmts/qemu-aarch64 ]; then
            update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
        fi
        if [ ! -e "$fs/qemu-aarch64" ] && [ -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
            grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > "$fs/register" || true
        fi
    fi
    [ -e "$fs/qemu-aarch64" ] || die "qemu-aarch64 is not registered with binfmt_misc (apt-get install qemu-user-static binfmt-support)"
    grep -q enabled "$fs/qemu-aarch64" || echo 1 > "$fs/qemu-aarch64"
    # mmdebstrap checks the same way
    if command -v arch-test >/dev/null && ! arch-test arm64 >/dev/null 2>&1; then
        die "arm64 binaries do not run here through qemu-user (arch-test arm64 failed)"
    fi
}

mib() { echo $(((${1} + 1048575) / 1048576)); }

# assemble_image ROOTFS_DIR IMAGE: MBR; FAT32 $FIRM_LABEL at 4 MiB holding
# ROOTFS_DIR/boot/firmware; ext4 $ROOT_LABEL with the rest, sized to its
# content plus room (the partition grows to the card at first boot).
assemble_image() {
    local rootfs=$1 image=$2 dir
    dir=$(dirname "$image")
    local firm="$dir/.firm.vfat" root="$dir/.root.ext4" boot="$dir/.boot-firmware"
    rm -rf "$firm" "$root" "$boot"
    mv "$rootfs/boot/firmware" "$boot"
    mkdir -m 0755 "$rootfs/boot/firmware"

    info "FAT32 $FIRM_LABEL, ${FIRM_SIZE_MIB} MiB: $(du -sh "$boot" | cut -f1) of firmware, kernel, initrd, device trees"
    mkfs.vfat -C -F 32 -n "$FIRM_LABEL" "$firm" $((FIRM_SIZE_MIB * 1024)) >/dev/null
    mcopy -s -p -Q -m -i "$firm" "$boot"/* ::
    rm -rf "$boot"

    local used root_mib
    used=$(du -s --block-size=1 "$rootfs" | cut -f1)
    root_mib=$(($(mib "$used") * 5 / 4 + 256))
    info "ext4 $ROOT_LABEL, $root_mib MiB: $(mib "$used") MiB used"
    mkfs.ext4 -q -F -L "$ROOT_LABEL" -d "$rootfs" -E lazy_itable_init=0 "$root" "${root_mib}M" >&2

    local firm_start=$((FIRM_START_MIB * 2048)) firm_sectors=$((FIRM_SIZE_MIB * 2048))
    local root_start=$((firm_start + firm_sectors)) root_sectors=$((root_mib * 2048))
    rm -f "$image"
    truncate -s $(((root_start + root_sectors) * 512)) "$image"
    sfdisk --quiet "$image" <<EOF
label: dos
unit: sectors
start=$firm_start, size=$firm_sectors, type=c, bootable
start=$root_start, size=$root_sectors, type=83
EOF
    dd if="$firm" of="$image" bs=1M seek="$FIRM_START_MIB" conv=notrunc,sparse status=none
    dd if="$root" of="$image" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
    rm -f "$firm" "$root"
    info "$(basename "$image"): $(mib "$(stat -c %s "$image")") MiB"
    sfdisk --list "$image" | sed -n '/^Device/,$p' | sed 's/^/    /' >&2
}

# Byte offset and size of partition N of a disk image (from its MBR).
part_field() {
    local v
    v=$(sfdisk --dump "$1" | sed -n "s|^$1$2 :.*$3= *\([0-9]*\).*|\1|p")
    [ -n "$v" ] || die "$1 has no partition $2"
    echo $((v * 512))
}
part_offset() { part_field "$1" "$2" start; }
part_size() { part_field "$1" "$2" size; }

finish_image() {
    local image=$1 compress=$2 final
    stage "compress ($compress)"
    case "$compress" in
        xz) xz -T0 -6 -f "$image"; final="$image.xz" ;;
        zstd) zstd -T0 -q -f --rm -6 "$image"; final="$image.zst" ;;
        none) final=$image ;;
    esac
    (cd "$(dirname "$final")" && sha256sum "$(basename "$final")" > "$(basename "$final").sha256")
    stage_done
    echo "==> [$(elapsed "$_t0")] built $final ($(du -h "$final" | cut -f1))" >&2
    echo "$final"
}
