#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ (README: Fuzzing) within one time budget that includes
# the build: the targets are built once, then the seconds left are shared between them (at least
# FUZZ_MIN_SECONDS each, so a slow build still fuzzes every target). libFuzzer's output goes to
# target/fuzz-logs/<target>.log; this prints one line per target and, when a target fails, the
# tail of its log (the failing input is then in fuzz/artifacts/<target>/).
#
# Usage: scripts/fuzz.sh [BUDGET_SECONDS]   (default: FUZZ_BUDGET or 240)
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${1:-${FUZZ_BUDGET:-240}}
min_seconds=${FUZZ_MIN_SECONDS:-20}
targets=(yaml_config request_body command_args)
logs="$PWD/target/fuzz-logs"
mkdir -p "$logs"
started=$SECONDS

# -O: optimised with debug assertions (cargo-fuzz's default), the same flags `run -O` uses, so
# the runs below find everything built.
if ! (cd fuzz && cargo +nightly fuzz build -O) >"$logs/build.log" 2>&1; then
    echo "fuzz: the build failed; the end of $logs/build.log:" >&2
    tail -n 40 "$logs/build.log" >&2
    exit 1
fi
built=$((SECONDS - started))
each=$(((budget - built) / ${#targets[@]}))
((each >= min_seconds)) || each=$min_seconds
echo "fuzz: built in ${built} s; ${each} s per target (budget ${budget} s)"

failed=0
for target in "${targets[@]}"; do
    log="$logs/$target.log"
    status=0
    (cd fuzz && cargo +nightly fuzz run -O "$target" -- \
        -max_total_time="$each" -print_final_stats=0) >"$log" 2>&1 || status=$?
    # libFuzzer's last status line (`#N DONE cov: … corp: …`) and its closing `Done N runs in S s`.
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -E 's/^#([0-9]+)[[:space:]]+[A-Z]+[[:space:]]+/\1 execs, /')
    if ((status == 0)); then
        echo "fuzz: $target passed: ${stats:-no stats} ($(grep -c '' "$log") log lines in $log)"
    else
        echo "fuzz: $target FAILED (exit $status); the end of $log:" >&2
        tail -n 60 "$log" >&2
        failed=1
    fi
done
exit "$failed"
