#!/usr/bin/env bash
# mmdebstrap customize hook (runs on the build host, ROOTFS is the chroot
# with /proc, /sys and /dev mounted): installs perch, applies overlay/,
# enables the image's services, locks root, and builds the initramfs once.
#   customize.sh ROOTFS /tmp/perch_<version>_arm64.deb release|ci
set -euo pipefail
root=$1
deb=$2
variant=$3
here=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
say() { echo "perch-image: [+$(($(date +%s) - t0))s] $*"; }
in_root() { chroot "$root" "$@"; }

say "installing $(basename "$deb")"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb"
rm -f "$root$deb"
in_root systemctl is-enabled perch.service >/dev/null || { echo "perch.service is not enabled" >&2; exit 1; }

say "applying overlay/ and enabling services"
cp -a --no-preserve=ownership "$here/overlay/." "$root/"
chmod 0755 "$root/usr/lib/perch-image/setup"
in_root systemctl enable perch-setup.service systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service avahi-daemon.service >/dev/null 2>&1
# SSH runs only when root has a key (perch-setup starts it); no ssh.socket.
in_root systemctl disable ssh.service >/dev/null 2>&1 || true
rm -f "$root"/etc/ssh/ssh_host_*
# No password on any account: root is locked, and there is no other login.
in_root passwd --lock root >/dev/null
in_root usermod --shell /usr/sbin/nologin perch

say "boot configuration (raspi-firmware)"
sed -i 's|^#\?ROOTPART=.*|ROOTPART=LABEL=RASPIROOT|; s|^#\?CONSOLES=.*|CONSOLES="tty0 ttyS1,115200"|' "$root/etc/default/raspi-firmware"
grep -q '^ROOTPART=LABEL=RASPIROOT' "$root/etc/default/raspi-firmware" || echo 'ROOTPART=LABEL=RASPIROOT' >> "$root/etc/default/raspi-firmware"

if [ "$variant" = ci ]; then
    # CI-speed variant: only what QEMU (virtio) and the Pi 3/4 SD
    # controllers need to find the root file system.
    cat > "$root/etc/initramfs-tools/conf.d/perch-ci.conf" <<'EOC'
# perch CI-speed image: reduced initramfs module list (not for release)
MODULES=list
EOC
    cat >> "$root/etc/initramfs-tools/modules" <<'EOC'
# perch CI-speed image: root on virtio (QEMU virt) or SD (Pi 3, Pi 4)
virtio_pci
virtio_mmio
virtio_blk
sdhci_iproc
bcm2835
mmc_block
ext4
EOC
fi

say "initramfs, once, for every installed kernel (MODULES=$( [ "$variant" = ci ] && echo list || echo most))"
rm -f "$root/usr/sbin/update-initramfs"
in_root dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
in_root update-initramfs -c -k all
compgen -G "$root/boot/firmware/initrd*" >/dev/null || { echo "no initrd in /boot/firmware (raspi-firmware hook)" >&2; exit 1; }

say "clean-up"
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/tmp/*
say "done"
