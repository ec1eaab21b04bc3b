#!/usr/bin/env bash
# Boots a perch image under QEMU and checks that perch works in it:
#
#   image-build/test-boot.sh IMAGE [--machine virt|raspi3b|both] [--logs DIR]
#
# IMAGE is a .img, .img.xz or .img.zst from build.sh; it is never written to.
# The test works on a sparse copy grown to a power of two (QEMU's SD card
# needs one; the root file system grows into it at first boot), with the
# kernel, initrd and device tree copied out of its FAT partition (mtools) and
# QEMU's -snapshot, so each machine boots the same pristine first boot.
#
# It drops an SSH public key on the FAT partition as ssh_authorized_keys,
# exactly as a user would (docs/appliance.md): the image has no password and
# no other way in. Then, per machine:
#   1. waits for GET /healthz on the forwarded HTTP port,
#   2. over SSH: perch.service is active, Type=notify, WatchdogUSec=30s, and
#      the watchdog is being pinged (WatchdogTimestamp advances); the
#      hostname is perch, root's password is locked, avahi-daemon runs;
#      creates a device user with `perch user add` (perch has no default
#      credentials and the image does not enable anonymous MQTT),
#   3. publishes 21.5 with mosquitto_pub as that user to the forwarded MQTT
#      port, reads the sample back with GET /api/v1/export,
#   4. powers the guest off and waits for QEMU to exit.
# Exits 0 only if every step held on every machine; timings are printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

image=""
machines=(virt raspi3b)
logs=""
while [ $# -gt 0 ]; do
    case "$1" in
        --machine)
            case "${2:?}" in
                both) machines=(virt raspi3b) ;;
                virt|raspi3b) machines=("$2") ;;
                *) die "--machine is virt, raspi3b or both" ;;
            esac
            shift 2 ;;
        --logs) logs=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$image" ] || die "one image only"; image=$1; shift ;;
    esac
done
[ -n "$image" ] || die "usage: test-boot.sh IMAGE [--machine virt|raspi3b|both] [--logs DIR]"
[ -f "$image" ] || die "no image at $image"
need_tools qemu-system-aarch64 mcopy mdir sfdisk ssh ssh-keygen mosquitto_pub curl
stamp_start

work=$(mktemp -d /tmp/perch-boot.XXXXXX)
qemu_pid=""
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
    fi
    if [ -n "$logs" ]; then
        mkdir -p "$logs"
        cp "$work"/*.log "$logs"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

stage "preparing a working copy of $(basename "$image")"
disk=$work/disk.img
case "$image" in
    *.xz) xz -dc "$image" > "$disk" ;;          # xz and zstd write sparse files
    *.zst) zstd -dqf -o "$disk" "$image" ;;
    *) cp --sparse=always "$image" "$disk" ;;
esac
size=$(stat -c %s "$disk")
pow=$((1 << 30))
while [ "$pow" -lt $((size + (512 << 20))) ]; do pow=$((pow * 2)); done
truncate -s "$pow" "$disk"
info "$(mib "$size") MiB image in a $(mib "$pow") MiB disk"

fat="$disk@@$(part_offset "$disk" 1)"
kernel=$(mdir -b -i "$fat" :: | sed 's|^::/||' | grep -E '^vmlinuz-' | sort -V | tail -n1 || true)
initrd=$(mdir -b -i "$fat" :: | sed 's|^::/||' | grep -E '^initrd.img-' | sort -V | tail -n1 || true)
[ -n "$kernel" ] || die "no vmlinuz-* on the FAT partition of $image"
[ -n "$initrd" ] || die "no initrd.img-* on the FAT partition of $image"
for f in "$kernel" "$initrd" cmdline.txt bcm2837-rpi-3-b.dtb; do
    mcopy -n -i "$fat" "::$f" "$work/$f" || die "no $f on the FAT partition"
done
cmdline=$(tr -d '\n' < "$work/cmdline.txt")
info "kernel $kernel, initrd $initrd"
info "cmdline.txt: $cmdline"

ssh-keygen -q -t ed25519 -N '' -C perch-boot-test -f "$work/id"
mcopy -i "$fat" "$work/id.pub" ::ssh_authorized_keys
ssh_opts=(-i "$work/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -o ConnectTimeout=10)

free_port() {
    local p
    while :; do
        p=$(shuf -i 20000-60000 -n 1)
        if ! ss -Htln "sport = :$p" | grep -q .; then
            echo "$p"
            return
        fi
    done
}

failures=()
summary=()

# run_machine NAME BOOT_TIMEOUT_S: boots, checks, powers off; returns 1 on
# the first failed check (the reason is printed).
run_machine() {
    local m=$1 timeout=$2 http mqtt sshp serial t_start
    http=$(free_port); mqtt=$(free_port); sshp=$(free_port)
    serial=$work/$m-serial.log
    local fwd="hostfwd=tcp:127.0.0.1:$http-:8080,hostfwd=tcp:127.0.0.1:$mqtt-:1883,hostfwd=tcp:127.0.0.1:$sshp-:22"
    local args=(-snapshot -no-reboot -display none -monitor none -serial "file:$serial"
        -kernel "$work/$kernel" -initrd "$work/$initrd")
    # shellcheck disable=SC2054 # QEMU's option values contain commas
    case "$m" in
        virt)
            args+=(-M virt -cpu cortex-a72 -smp 2 -m 1024
                -append "$cmdline console=ttyAMA0,115200"
                -drive "if=none,file=$disk,format=raw,id=hd0" -device virtio-blk-pci,drive=hd0
                # romfile= : no PXE option ROM (the kernel is loaded
                # directly), so Debian's ipxe-qemu, a mere Recommends of
                # qemu-system-arm, need not be installed.
                -netdev "user,id=net0,$fwd" -device virtio-net-pci,netdev=net0,romfile=
                -device virtio-rng-pci) ;;
        raspi3b)
            # The image's own device tree; SD card on the Pi's SD host
            # controller; network over USB (dwc2 + usb-net), as a Pi 3B has.
            args+=(-M raspi3b -dtb "$work/bcm2837-rpi-3-b.dtb"
                -append "$cmdline console=ttyAMA0,115200"
                -drive "if=sd,file=$disk,format=raw"
                -netdev "user,id=net0,$fwd" -device usb-net,netdev=net0) ;;
    esac
    stage "boot on -M $m (HTTP :$http, MQTT :$mqtt, SSH :$sshp on 127.0.0.1)"
    t_start=$(date +%s)
    qemu-system-aarch64 "${args[@]}" > "$work/$m-qemu.log" 2>&1 &
    qemu_pid=$!

    fail() {
        echo "FAIL [$m]: $*" >&2
        echo "---- last 40 lines of the $m serial console ----" >&2
        tail -n 40 "$serial" >&2 || true
        echo "---- qemu ----" >&2
        cat "$work/$m-qemu.log" >&2 || true
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
        qemu_pid=""
        failures+=("$m: $*")
        return 1
    }
    guest() { ssh "${ssh_opts[@]}" -p "$sshp" root@127.0.0.1 "$@"; }

    local deadline=$((t_start + timeout)) t_ready
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$http/healthz")" = 200 ]; do
        kill -0 "$qemu_pid" 2>/dev/null || { fail "QEMU exited before /healthz answered"; return 1; }
        [ "$(date +%s)" -lt "$deadline" ] || { fail "no 200 from /healthz within ${timeout}s"; return 1; }
        sleep 2
    done
    t_ready=$(($(date +%s) - t_start))
    info "/healthz answered 200 after ${t_ready}s"

    until guest true 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || { fail "no SSH login with the key from ssh_authorized_keys within ${timeout}s"; return 1; }
        sleep 2
    done
    info "SSH login as root with the key dropped on the FAT partition"

    local props
    props=$(guest systemctl show perch.service -p ActiveState -p SubState -p Type -p WatchdogUSec -p NRestarts -p User)
    info "perch.service: $(echo "$props" | tr '\n' ' ')"
    echo "$props" | grep -qx 'ActiveState=active' || { fail "perch.service is not active"; return 1; }
    echo "$props" | grep -qx 'Type=notify' || { fail "perch.service is not Type=notify"; return 1; }
    echo "$props" | grep -qx 'WatchdogUSec=30s' || { fail "perch.service has no 30 s watchdog"; return 1; }
    echo "$props" | grep -qx 'NRestarts=0' || { fail "perch.service was restarted"; return 1; }
    local w1 w2
    w1=$(guest systemctl show perch.service -p WatchdogTimestampMonotonic --value)
    sleep 10
    w2=$(guest systemctl show perch.service -p WatchdogTimestampMonotonic --value)
    if [ "${w1:-0}" -eq 0 ] || [ "${w2:-0}" -le "${w1:-0}" ]; then fail "watchdog not pinged (WatchdogTimestampMonotonic $w1 then $w2)"; return 1; fi
    info "watchdog pinged: last ping moved $(((w2 - w1) / 1000)) ms in 10 s"
    guest "systemctl is-active perch-setup.service perch-tls-keygen.service >/dev/null; test -s /etc/perch/tls/cert.pem" \
        || { fail "first-boot set-up (perch-setup, perch-tls-keygen) did not complete"; return 1; }
    # What a user relies on: the name, no password on root, mDNS running.
    local facts
    # shellcheck disable=SC2016 # expanded in the guest
    facts=$(guest 'echo "$(hostname) $(passwd -S root | cut -d" " -f2) $(systemctl is-active avahi-daemon.service) $(grep -c "<type>_mqtt._tcp</type>" /etc/avahi/services/perch.service)"')
    [ "$facts" = "perch L active 1" ] \
        || { fail "expected hostname perch, root locked (L), avahi-daemon active and announcing _mqtt._tcp (1), got: $facts"; return 1; }
    info "hostname perch, root locked, avahi-daemon active, perch announced (_http._tcp, _mqtt._tcp)"
    local failed
    failed=$(guest systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')
    [ -z "$failed" ] || info "failed units in the guest (not perch's): $failed"
    info "root file system: $(guest df -h --output=size / | tail -n1 | tr -d ' ') (grown at first boot)"

    echo s3cret-boot-test | guest "runuser -u perch -- perch user add boottest --role device --password-stdin --config /etc/perch/perch.toml" >/dev/null \
        || { fail "perch user add failed"; return 1; }
    echo s3cret-view-test | guest "runuser -u perch -- perch user add bootview --role viewer --password-stdin --config /etc/perch/perch.toml" >/dev/null \
        || { fail "perch user add (viewer) failed"; return 1; }
    local anon
    anon=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$http/api/v1/labels")
    [ "$anon" = 401 ] || { fail "the API answered $anon without credentials, not 401"; return 1; }
    mosquitto_pub -h 127.0.0.1 -p "$mqtt" -u boottest -P s3cret-boot-test -i boottest -q 1 \
        -t boottest/lab/temperature -m 21.5 || { fail "mosquitto_pub was refused"; return 1; }
    local found="" body tries
    for tries in $(seq 20 -1 1); do
        body=$(curl -s --max-time 10 -u bootview:s3cret-view-test -G "http://127.0.0.1:$http/api/v1/export" \
            --data-urlencode 'match[]={topic="boottest/lab/temperature"}' || true)
        if echo "$body" | grep -q '"values":\[21.5\]'; then found=1; break; fi
        [ "$tries" -gt 1 ] && sleep 1
    done
    [ -n "$found" ] || { fail "the published sample is not in /api/v1/export (got: $body)"; return 1; }
    info "published over MQTT, read back over HTTP: $body"

    guest "journalctl -b -u perch.service -u perch-setup.service -u perch-tls-keygen.service --no-pager -o short-monotonic" \
        > "$work/$m-journal.log" 2>&1 || true

    local t_off
    t_off=$(date +%s)
    guest systemctl poweroff >/dev/null 2>&1 || true
    local waited=0
    while kill -0 "$qemu_pid" 2>/dev/null; do
        [ "$waited" -lt 180 ] || { fail "the guest did not power off within 180 s"; return 1; }
        sleep 1
        waited=$((waited + 1))
    done
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
    # systemd's status lines carry colour codes: "Stopped <esc>[...mperch.service"
    grep -q 'Stopped .*perch\.service' "$serial" || info "(the serial console did not show perch stopping)"
    local total=$(($(date +%s) - t_start))
    info "powered off in $(($(date +%s) - t_off))s"
    summary+=("$m: /healthz after ${t_ready}s, all checks and power-off after ${total}s")
    stage_done
}

for m in "${machines[@]}"; do
    case "$m" in
        virt) run_machine virt 600 || true ;;
        raspi3b) run_machine raspi3b 1200 || true ;;
    esac
done
stage_done

echo "==> boot test of $(basename "$image") ($(elapsed "$_t0") in all)" >&2
for s in ${summary[@]+"${summary[@]}"}; do echo "    PASS $s" >&2; done
for f in ${failures[@]+"${failures[@]}"}; do echo "    FAIL $f" >&2; done
echo "boot: ${#summary[@]} passed, ${#failures[@]} failed"
[ ${#failures[@]} -eq 0 ]
