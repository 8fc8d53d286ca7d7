#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a short fixed time from its committed seeds and
# fails on any crash, hang (-timeout) or out-of-memory (-rss_limit_mb). Installs the nightly
# toolchain and cargo-fuzz when they are missing. The long runs and their figures are in
# docs/fuzzing.md. Environment: FUZZ_SECONDS (default 20) per target.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/fuzz}
cd fuzz
cargo +nightly fuzz build -O
targets=$(cargo +nightly fuzz list)
for t in $targets; do
    # Findings go to a scratch corpus so the committed seeds stay as they are.
    work=$(mktemp -d)
    echo "fuzz: $t for ${seconds}s"
    if ! cargo +nightly fuzz run -O "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        2>"$work.log"; then
        tail -n 60 "$work.log" >&2
        echo "error: fuzz target $t failed (artifact under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^stat::average_exec_per_sec' "$work.log" | tr '\n' ' '
    echo
    rm -rf "$work" "$work.log"
done
