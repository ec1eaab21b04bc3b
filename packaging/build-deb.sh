#!/usr/bin/env bash
# Builds perch_<version>_<arch>.deb with dpkg-deb: the binary, the systemd
# units, a default /etc/perch/perch.toml (a conffile) and maintainer scripts
# that create the `perch` user and enable the service.
#
#   packaging/build-deb.sh [--arch amd64|arm64] [--binary PATH] [--out DIR]
#
# Without --binary, perch is built with `cargo build --release` (arm64 is
# cross-compiled with Debian's rustc-web and libstd-rust-web-dev:arm64; see
# docs/appliance.md). Prints the path of the package on its last line.
# PERCH_FAST_BUILD=1 (CI images, tests) cross-compiles as
# packaging/cross-build.sh says and leaves the package's data uncompressed:
# xz takes a minute of CPU on a debug binary, for a package that is
# installed at once and thrown away.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=$(dpkg --print-architecture)
binary=""
out="$repo/build"

die() { echo "build-deb: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=${2:?}; shift 2 ;;
        --binary) binary=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

case "$arch" in
    amd64) triple=x86_64-unknown-linux-gnu; gnu=x86_64-linux-gnu ;;
    arm64) triple=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu ;;
    *) die "unsupported architecture $arch (amd64 or arm64)" ;;
esac

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$version" ] || die "no version in Cargo.toml"

if [ -z "$binary" ]; then
    if [ "$arch" = "$(dpkg --print-architecture)" ]; then
        echo "build-deb: cargo build --release" >&2
        (cd "$repo" && cargo build --release --locked >&2)
        binary="${CARGO_TARGET_DIR:-$repo/target}/release/perch"
    else
        "$here/cross-build.sh" "$triple" >&2
        binary="${CARGO_TARGET_DIR:-$repo/target}/$triple/release/perch"
    fi
fi
[ -x "$binary" ] || die "no executable at $binary"

# The binary must be for the package's architecture.
machine=$(LC_ALL=C readelf -h "$binary" | sed -n 's/^ *Machine: *//p')
case "$arch:$machine" in
    amd64:*X86-64*|arm64:*AArch64*) ;;
    *) die "$binary is for '$machine', not $arch" ;;
esac

# Dependencies from the libraries the binary links, with the newest glibc
# symbol version it uses.
depends=""
glibc=$(LC_ALL=C objdump -T "$binary" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1 || true)
for lib in $(LC_ALL=C readelf -d "$binary" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    case "$lib" in
        libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|librt.so.1|ld-linux*) pkg="libc6${glibc:+ (>= $glibc)}" ;;
        libgcc_s.so.1) pkg="libgcc-s1" ;;
        libstdc++.so.6) pkg="libstdc++6" ;;  # openh264, the snapshot decoder, is C++
        *) die "$binary links $lib: add its package to build-deb.sh" ;;
    esac
    case ", $depends, " in *", $pkg, "*) ;; *) depends="${depends:+$depends, }$pkg" ;; esac
done
depends="$depends, systemd (>= 247), openssl"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/perch_${version}_$arch"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/usr/lib/perch" "$root/usr/lib/sysusers.d" "$root/etc/perch" \
    "$root/usr/share/doc/perch" "$root/etc/avahi/services"
install -m 0755 "$binary" "$root/usr/bin/perch"
# Debug info stays in the build; the package is for an SD card.
"${gnu}-strip" --strip-debug "$root/usr/bin/perch" 2>/dev/null || strip --strip-debug "$root/usr/bin/perch" 2>/dev/null || true
install -m 0644 "$repo/systemd/perch.service" "$repo/systemd/perch-tls-keygen.service" "$root/lib/systemd/system/"
install -m 0755 "$repo/systemd/tls-keygen" "$root/usr/lib/perch/tls-keygen"
install -m 0644 "$here/sysusers.conf" "$root/usr/lib/sysusers.d/perch.conf"
install -m 0644 "$here/perch.toml" "$root/etc/perch/perch.toml"
# mDNS: avahi-daemon (recommended) announces <hostname>.local with perch's
# web UI and broker, so phones and devices find the box by name.
install -m 0644 "$here/avahi/perch.service" "$root/etc/avahi/services/perch.service"
for doc in README.md docs/appliance.md docs/configuration.md docs/mqtt.md docs/storage.md; do
    [ -f "$repo/$doc" ] && install -m 0644 "$repo/$doc" "$root/usr/share/doc/perch/"
done
cat > "$root/usr/share/doc/perch/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: perch
Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF
install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$root/DEBIAN/"
printf '%s\n' /etc/perch/perch.toml /etc/avahi/services/perch.service > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: perch
Version: $version
Architecture: $arch
Maintainer: perch developers <perch@localhost>
Installed-Size: $size
Depends: $depends
Recommends: avahi-daemon, libnss-mdns
Section: net
Priority: optional
Description: self-hosted IoT appliance in one process
 An MQTT broker and collector, a time-series store with PromQL, InfluxDB,
 OpenTSDB and VictoriaMetrics write APIs, camera relay and a web dashboard,
 run as the systemd service perch.service (HTTP on 8080, MQTT on 1883).
EOF
mkdir -p "$out"
deb="$out/perch_${version}_$arch.deb"
compression=xz
[ "${PERCH_FAST_BUILD:-0}" = 1 ] && compression=none
dpkg-deb --root-owner-group "-Z$compression" --build "$root" "$deb" >&2
echo "build-deb: built $deb ($(du -h "$deb" | cut -f1))" >&2
echo "$deb"
