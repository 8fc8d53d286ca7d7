#!/usr/bin/env bash
# Run the quant unit tests (NEON kernels against their scalar twins) for
# aarch64 under qemu user-mode emulation.
#
# Needs (Debian/Ubuntu):
#   rustup target add aarch64-unknown-linux-gnu
#   apt-get install -y gcc-aarch64-linux-gnu qemu-user
#
# Usage: tools/test_aarch64.sh [--install] [extra cargo test args]
#   --install   install the prerequisites above first (needs root for apt)
# Respects CARGO_TARGET_DIR. Extra arguments go to `cargo test` (default
# filter: `quant`).
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--install" ]]; then
    shift
    rustup target add aarch64-unknown-linux-gnu
    if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
        apt-get update
        apt-get install -y gcc-aarch64-linux-gnu qemu-user
    fi
fi

for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
    command -v "$tool" >/dev/null || { echo "missing $tool (run with --install)" >&2; exit 2; }
done
rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
    || { echo "missing rust target aarch64-unknown-linux-gnu (run with --install)" >&2; exit 2; }

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

if [[ $# -eq 0 ]]; then
    set -- quant
fi
exec cargo test --target aarch64-unknown-linux-gnu --lib "$@"
