#!/usr/bin/env bash
# Builds every fuzz target (crates/*/fuzz, each its own workspace) and runs each for SECONDS,
# then prints one line per target: executions and crashes. Exits non-zero when any target crashed
# (or failed to build or run); the crashing input stays in target/fuzz-artifacts/TARGET/.
#
#   bash scripts/fuzz.sh 60                      # every target, a minute each
#   FUZZ_TARGETS="ike_fragments offload" bash scripts/fuzz.sh 600
#   FUZZ_CRATES="ike bgp" bash scripts/fuzz.sh 10   # build and run only these crates' targets
#
# libFuzzer is built with the stable toolchain (RUSTC_BOOTSTRAP=1, no sanitizer). Each target
# starts from its committed seeds (crates/*/fuzz/corpus/TARGET, read only) and from what earlier
# runs on this machine found (target/fuzz-corpus/TARGET, where new inputs are written).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_EACH=${1:-60}
if ! [[ $SECONDS_EACH =~ ^[0-9]+$ ]] || [ "$SECONDS_EACH" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh SECONDS (a whole number of seconds per target, e.g. 60)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: run 'cargo install cargo-fuzz --locked' (scripts/install-deps.sh does)" >&2
    exit 1
fi

export RUSTC_BOOTSTRAP=1
TARGET_DIR=$ROOT/target/fuzz
BIN_DIR=$TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release
WORK=$ROOT/target/fuzz-corpus
ARTIFACTS=$ROOT/target/fuzz-artifacts
LOGS=$ROOT/target/fuzz-logs
mkdir -p "$WORK" "$ARTIFACTS" "$LOGS"

# target name -> its fuzz crate directory
declare -A CRATE_OF=()
ORDER=()
for dir in crates/*/fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    if [ -n "${FUZZ_CRATES:-}" ]; then
        crate=${dir#crates/}; crate=${crate%/fuzz}
        [[ " $FUZZ_CRATES " == *" $crate "* ]] || continue
    fi
    echo "== building $dir"
    (cd "$dir" && cargo fuzz build --sanitizer none --target-dir "$TARGET_DIR") >"$LOGS/build-${dir//\//_}.log" 2>&1 || {
        echo "fuzz build failed in $dir; see $LOGS/build-${dir//\//_}.log:" >&2
        tail -30 "$LOGS/build-${dir//\//_}.log" >&2
        exit 1
    }
    for t in $(cd "$dir" && cargo fuzz list); do
        CRATE_OF[$t]=$dir
        ORDER+=("$t")
    done
done

if [ -n "${FUZZ_TARGETS:-}" ]; then
    for t in $FUZZ_TARGETS; do
        [ -n "${CRATE_OF[$t]:-}" ] || { echo "no fuzz target named '$t'; targets: ${ORDER[*]}" >&2; exit 2; }
    done
    ORDER=($FUZZ_TARGETS)
fi

failed=0
rows=()
for t in "${ORDER[@]}"; do
    dir=${CRATE_OF[$t]}
    seeds=$ROOT/$dir/corpus/$t
    mkdir -p "$WORK/$t" "$ARTIFACTS/$t"
    corpora=("$WORK/$t")
    [ -d "$seeds" ] && corpora+=("$seeds")
    log=$LOGS/$t.log
    echo "== fuzzing $t for ${SECONDS_EACH}s"
    before=$(find "$ARTIFACTS/$t" -type f | wc -l)
    rc=0
    # -timeout: one input taking over 10 s is a finding (a hang); the outer timeout bounds the run.
    timeout -k 10 $((SECONDS_EACH + 120)) "$BIN_DIR/$t" -max_total_time="$SECONDS_EACH" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$ARTIFACTS/$t/" "${corpora[@]}" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    after=$(find "$ARTIFACTS/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then
        crashes=1 # died without an artefact (killed, out of memory, harness failure)
    fi
    if [ "$crashes" != 0 ]; then
        failed=1
        echo "   $t crashed (exit $rc); input in $ARTIFACTS/$t/, log $log:" >&2
        grep -m5 -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" >&2 || tail -5 "$log" >&2
    fi
    rows+=("$(printf '%-20s %-22s %12s %8s' "$t" "$dir" "${execs:-?}" "$crashes")")
done

echo
printf '%-20s %-22s %12s %8s\n' target crate executions crashes
for r in "${rows[@]}"; do echo "$r"; done
exit $failed
