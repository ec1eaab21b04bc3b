#!/usr/bin/env bash
# Cross-compiles perch in release mode for TRIPLE (default
# aarch64-unknown-linux-gnu) with Debian's own Rust: rustc-web and the
# target's libstd-rust-web-dev, plus the GNU cross compiler for the C parts
# (mimalloc, ring). Installs them when missing (as root). The binary lands in
# ${CARGO_TARGET_DIR:-target}/TRIPLE/release/perch.
#
# PERCH_FAST_BUILD=1 turns off LTO, debug info and optimization (opt-level
# 0) and uses 16 codegen units: a build for CI-speed images, whose boot test
# only needs perch to start and answer, not for releases. It takes half the
# CPU time of opt-level 1 (docs/appliance.md, Timings).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
triple=${1:-aarch64-unknown-linux-gnu}
case "$triple" in
    aarch64-unknown-linux-gnu) darch=arm64; gnu=aarch64-linux-gnu ;;
    *) echo "cross-build: unsupported target $triple" >&2; exit 1 ;;
esac
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

need=()
[ -x /usr/bin/rustc ] || need+=(rustc-web cargo-web)
dpkg -s "libstd-rust-web-dev:$darch" >/dev/null 2>&1 || need+=("libstd-rust-web-dev:$darch")
command -v "$gnu-gcc" >/dev/null || need+=("gcc-$gnu" "g++-$gnu" "libc6-dev-$darch-cross")
if [ ${#need[@]} -gt 0 ]; then
    echo "cross-build: installing ${need[*]}" >&2
    dpkg --print-foreign-architectures | grep -qx "$darch" || $SUDO dpkg --add-architecture "$darch"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

env_triple=${triple//-/_}
export RUSTC=/usr/bin/rustc
export "CARGO_TARGET_${env_triple^^}_LINKER=$gnu-gcc"
export "CC_${env_triple}=$gnu-gcc" "CXX_${env_triple}=$gnu-g++" "AR_${env_triple}=$gnu-ar"
if [ "${PERCH_FAST_BUILD:-0}" = 1 ]; then
    export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=0
fi
cd "$repo"
echo "cross-build: cargo build --release --target $triple ($(/usr/bin/rustc --version))" >&2
cargo build --release --locked --target "$triple"
