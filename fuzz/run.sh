#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (CI: 30 s each), starting from the seeds in
# fuzz/seeds/<target>/ (real messages and frames). A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/ for `cargo +nightly fuzz run <target> <file>`.
#
#   fuzz/run.sh [seconds per target]
#
# Needs the nightly toolchain (libFuzzer's instrumentation and AddressSanitizer) and cargo-fuzz
# (installed from crates.io when missing). Where nightly is absent it says so and stops: the
# property tests of tests/decoders_prop.rs cover the same decoders on stable.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "no nightly toolchain here: fuzzing skipped (tests/decoders_prop.rs runs on stable)"
    exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Kept apart from the main build: nightly, sanitizer flags, release profile.
target_dir="${CARGO_TARGET_DIR:-target}/fuzz"

cargo +nightly fuzz build --target-dir "$target_dir"
for target in $(cargo +nightly fuzz list); do
    # The working corpus is scratch: what the fuzzer learns is not written into the clone.
    corpus=$(mktemp -d)
    echo "== fuzz $target for ${seconds}s"
    log="$corpus.log"
    status=0
    cargo +nightly fuzz run --target-dir "$target_dir" "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
    # libFuzzer's summary, or the crash report when it found one.
    if [ "$status" -eq 0 ]; then
        grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|peak_rss_mb))' "$log" || true
    else
        tail -n 40 "$log"
    fi
    rm -rf "$corpus" "$log"
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $target failed (exit $status); input in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
done
