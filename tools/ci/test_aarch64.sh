#!/usr/bin/env bash
# Run the quant unit tests (NEON kernels against their scalar twins) for
# aarch64 under qemu user-mode emulation, once per emulated CPU so that every
# kernel level runs: `-cpu max` has dotprod (level neon-dotprod, which also
# tests base NEON), `-cpu cortex-a57` has not (level neon).
#
# Needs (Debian/Ubuntu):
#   rustup target add aarch64-unknown-linux-gnu
#   apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
#
# Usage: tools/ci/test_aarch64.sh [--install | --check] [extra cargo test args]
#   --install   install the prerequisites above first (needs root for apt)
#   --check     only check the prerequisites: exit 0 if present, else 1
# Respects CARGO_TARGET_DIR. Builds with --release: the tests run faster
# under emulation, and the host-side build scripts and proc macros are the
# ones `cargo test --release` already built. Extra arguments go to
# `cargo test` (default, when there are none: the filter `quant::`).
# AARCH64_CPUS overrides the CPU list, as "cpu:expected-kernels ..."
# (default "max:neon-dotprod cortex-a57:neon").
set -euo pipefail

cd "$(dirname "$0")/../.."

SYSROOT=/usr/aarch64-linux-gnu

# Prints what is missing; fails if anything is.
check() {
    local ok=0
    for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
        command -v "$tool" >/dev/null || { echo "missing $tool" >&2; ok=1; }
    done
    [[ -e $SYSROOT/lib/ld-linux-aarch64.so.1 ]] \
        || { echo "missing $SYSROOT/lib/ld-linux-aarch64.so.1 (libc6-dev-arm64-cross)" >&2; ok=1; }
    rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
        || { echo "missing rust target aarch64-unknown-linux-gnu" >&2; ok=1; }
    return $ok
}

case "${1:-}" in
    --check)
        check
        exit
        ;;
    --install)
        shift
        rustup target add aarch64-unknown-linux-gnu
        if ! check 2>/dev/null; then
            apt-get update
            apt-get install -y --no-install-recommends \
                gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
        fi
        ;;
esac

check || { echo "(run with --install)" >&2; exit 2; }

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc

if [[ $# -eq 0 ]]; then
    set -- quant::
fi
# Build once; the runner is not part of cargo's fingerprint, so changing the
# CPU between runs does not rebuild.
cargo test --release --target aarch64-unknown-linux-gnu --lib --no-run "$@"
for spec in ${AARCH64_CPUS:-max:neon-dotprod cortex-a57:neon}; do
    cpu=${spec%%:*}
    echo "== aarch64 tests under qemu -cpu $cpu (expects ${spec#*:} kernels)" >&2
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $cpu -L $SYSROOT" \
        EDGEMOE_EXPECT_KERNELS="${spec#*:}" \
        cargo test --release --target aarch64-unknown-linux-gnu --lib "$@"
done
