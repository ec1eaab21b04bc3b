#!/usr/bin/env bash
# mmdebstrap customize hook (runs on the build host, ROOTFS is the chroot
# with /proc, /sys and /dev mounted): applies overlay/, enables the image's
# services, builds the initramfs once, installs perch, locks root.
#   customize.sh ROOTFS DEB release|ci [DEB_STATUS]
# DEB is perch_<version>_arm64.deb on the host. With DEB_STATUS, build.sh is
# still cross-compiling it in the background: everything that does not need
# perch is done first, then this waits until DEB_STATUS holds the exit code
# of packaging/build-deb.sh.
set -euo pipefail
root=$1
deb=$2
variant=$3
deb_status=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
say() { echo "perch-image: [+$(($(date +%s) - t0))s] $*"; }
in_root() { chroot "$root" "$@"; }

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

say "boot configuration (raspi-firmware, initramfs)"
sed -i 's|^#\?ROOTPART=.*|ROOTPART=LABEL=RASPIROOT|; s|^#\?CONSOLES=.*|CONSOLES="tty0 ttyS1,115200"|' "$root/etc/default/raspi-firmware"
grep -q '^ROOTPART=LABEL=RASPIROOT' "$root/etc/default/raspi-firmware" || echo 'ROOTPART=LABEL=RASPIROOT' >> "$root/etc/default/raspi-firmware"
# The initramfs checks the root file system before mounting it (cmdline.txt
# has fsck.repair=yes; SD cards lose power). Its fsck hook cannot find the
# root's type in a chroot ("Couldn't identify type of root file system"),
# so it is named here; otherwise fsck is left out of the initramfs.
echo 'FSTYPE=ext4' > "$root/etc/initramfs-tools/conf.d/perch-fstype.conf"

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

if [ -n "$deb_status" ]; then
    say "waiting for the perch .deb (cross-compiling in the background)"
    waited=0
    until [ -s "$deb_status" ]; do
        [ "$waited" -lt 5400 ] || { echo "perch-image: no perch .deb after 90 minutes" >&2; exit 1; }
        sleep 5
        waited=$((waited + 5))
    done
    rc=$(cat "$deb_status")
    [ "$rc" = 0 ] || { echo "perch-image: packaging/build-deb.sh failed (exit $rc)" >&2; exit 1; }
    say "perch .deb ready after waiting ${waited}s"
fi
[ -f "$deb" ] || { echo "perch-image: no package at $deb" >&2; exit 1; }

say "installing $(basename "$deb")"
cp "$deb" "$root/tmp/"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "/tmp/$(basename "$deb")"
rm -f "$root/tmp/$(basename "$deb")"
in_root systemctl is-enabled perch.service >/dev/null || { echo "perch.service is not enabled" >&2; exit 1; }
in_root usermod --shell /usr/sbin/nologin perch

say "clean-up"
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/tmp/*
say "done"
