# shellcheck shell=bash
# build.sh --base: customizes an official Raspberry Pi OS Lite (arm64) image
# in place - the route for the Raspberry Pi 5, which Debian's own kernel does
# not boot yet. No loop devices, mounts or chroot: debugfs writes into the
# image's ext4 root partition at its offset. What goes in:
#   - perch's .deb, installed by perch-install.service at first boot with
#     dpkg (its maintainer scripts create the user and start perch, exactly
#     as on a running Raspberry Pi OS),
#   - the hostname `perch` if the image still has Raspberry Pi OS's default.
# Raspberry Pi OS keeps its own first-boot set-up (user account through
# Raspberry Pi Imager or userconf.txt, `ssh` file, Wi-Fi through Imager).

# customize_raspios BASE DEB OUT_IMAGE: prints OUT_IMAGE's path.
customize_raspios() {
    local base=$1 deb=$2 image=$3
    stage "Raspberry Pi OS base: unpacking $(basename "$base")"
    case "$base" in
        *.xz) xz -dc "$base" > "$image" ;;
        *.zst) zstd -dqf -o "$image" "$base" ;;
        *.img) cp --sparse=always "$base" "$image" ;;
        *) die "--base wants a .img or .img.xz file" ;;
    esac
    local root_off fs
    root_off=$(part_offset "$image" 2)
    fs="$image?offset=$root_off"
    debugfs -R 'stat /etc/os-release' "$fs" >/dev/null 2>&1 \
        || die "partition 2 of $base is not an ext4 root file system"
    local free_blocks block_size free_mib deb_mib
    free_blocks=$(dumpe2fs -h "$fs" 2>/dev/null | sed -n 's/^Free blocks: *//p')
    block_size=$(dumpe2fs -h "$fs" 2>/dev/null | sed -n 's/^Block size: *//p')
    free_mib=$((free_blocks * block_size / 1048576))
    deb_mib=$(mib "$(stat -c %s "$deb")")
    info "root file system at byte $root_off: $free_mib MiB free"
    [ "$free_mib" -gt $((deb_mib * 4 + 32)) ] \
        || die "only $free_mib MiB free in the root file system; perch needs about $((deb_mib * 4 + 32)) MiB"

    stage "Raspberry Pi OS base: adding perch (installed at first boot) and the hostname"
    local stage_dir cmds
    stage_dir=$(mktemp -d)
    cp "$deb" "$stage_dir/perch.deb"
    cat > "$stage_dir/perch-install.service" <<'EOF'
# Installs perch from the package build.sh put in the image, once, at the
# first boot that gets this far; then removes the package file.
[Unit]
Description=Install perch (first boot of a customized Raspberry Pi OS image)
ConditionPathExists=/var/lib/perch-image/perch.deb
After=network.target systemd-sysusers.service

[Service]
Type=oneshot
Environment=DEBIAN_FRONTEND=noninteractive
ExecStart=/usr/bin/dpkg --install /var/lib/perch-image/perch.deb
ExecStartPost=/bin/rm -f /var/lib/perch-image/perch.deb

[Install]
WantedBy=multi-user.target
EOF
    local hostname
    hostname=$(debugfs -R 'cat /etc/hostname' "$fs" 2>/dev/null | tr -d '\n')
    cmds=$stage_dir/debugfs.cmds
    {
        echo "mkdir /var/lib/perch-image"
        echo "write $stage_dir/perch.deb /var/lib/perch-image/perch.deb"
        echo "rm /etc/systemd/system/perch-install.service"
        echo "write $stage_dir/perch-install.service /etc/systemd/system/perch-install.service"
        echo "mkdir /etc/systemd/system/multi-user.target.wants"
        echo "symlink /etc/systemd/system/multi-user.target.wants/perch-install.service /etc/systemd/system/perch-install.service"
    } > "$cmds"
    if [ "$hostname" = raspberrypi ] || [ -z "$hostname" ]; then
        echo perch > "$stage_dir/hostname"
        debugfs -R 'cat /etc/hosts' "$fs" 2>/dev/null | sed 's/\braspberrypi\b/perch/g' > "$stage_dir/hosts"
        {
            echo "rm /etc/hostname"
            echo "write $stage_dir/hostname /etc/hostname"
            echo "rm /etc/hosts"
            echo "write $stage_dir/hosts /etc/hosts"
        } >> "$cmds"
        info "hostname: perch (was ${hostname:-unset})"
    else
        info "hostname stays $hostname (set by the image)"
    fi
    chmod 0644 "$stage_dir"/*
    # Errors of mkdir/rm on what exists or not yet are expected: the result
    # is checked instead.
    local out f
    out=$(debugfs -w -f "$cmds" "$fs" 2>&1)
    rm -rf "$stage_dir"
    for f in /var/lib/perch-image/perch.deb /etc/systemd/system/perch-install.service \
        /etc/systemd/system/multi-user.target.wants/perch-install.service; do
        debugfs -R "stat $f" "$fs" 2>/dev/null | grep -q 'Inode:' || die "$f did not land in the image: $out"
    done
    e2fsck -fn "$fs" >/dev/null 2>&1 || die "the root file system does not check clean after customizing (e2fsck -fn '$fs')"
    info "perch.deb, perch-install.service (enabled) written; e2fsck clean"
    stage_done
    echo "$image"
}
