#!/usr/bin/env bash
# Build the libFuzzer targets, replay the regressions, then fuzz each target
# for a bounded time. Any crash, sanitizer report, leak, timeout or
# differential mismatch fails (non-zero exit). What `tox -e fuzz` runs.
#
#   tests/fuzz/run.sh [SECONDS]     seconds per target (default:
#                                   $PIPETLS_FUZZ_SECONDS, else 60)
#   PIPETLS_FUZZ_TARGETS="pipetls_diff"   only these targets
#   PIPETLS_FUZZ_WORKDIR=DIR        where the growing corpora and any crash
#                                   files go (default build/fuzz/work)
#   CC=clang-NN                     another clang
#
# The committed seeds (tests/fuzz/corpus/<target>/) are read, never written.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-${PIPETLS_FUZZ_SECONDS:-60}}
targets=${PIPETLS_FUZZ_TARGETS:-pipetls_ops pipetls_diff}
build="$root/build/fuzz"
work=${PIPETLS_FUZZ_WORKDIR:-$build/work}
cc=${CC:-clang}

case "$seconds" in
'' | *[!0-9]*) echo "$0: seconds must be a number, not '$seconds'" >&2; exit 2 ;;
esac
if ! command -v "$cc" >/dev/null; then
    echo "$0: $cc not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 1
fi

cmake -S "$root" -B "$build" -DPIPETLS_FUZZ=ON -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$build" -j "$(nproc)" --target $targets

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

status=0
for t in $targets; do
    bin="$build/tests/fuzz/$t"
    seeds="$root/tests/fuzz/corpus/$t"
    regressions="$root/tests/fuzz/regressions/$t"
    mkdir -p "$work/$t" "$work/artifacts"

    # every input that once found something, first
    if compgen -G "$regressions/*" >/dev/null; then
        echo "== $t: replaying $(ls "$regressions" | wc -l) regression inputs"
        if ! "$bin" -runs=1 "$regressions"/* >"$work/$t.regressions.log" 2>&1; then
            tail -n 60 "$work/$t.regressions.log" >&2
            echo "$0: $t: a regression input fails again (log: $work/$t.regressions.log)" >&2
            status=1
            continue
        fi
    fi

    echo "== $t: fuzzing ${seconds}s (corpus $work/$t, seeds $seeds)"
    if ! "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=30 \
        -max_len=8192 -artifact_prefix="$work/artifacts/$t-" \
        "$work/$t" "$seeds" >"$work/$t.log" 2>&1; then
        tail -n 80 "$work/$t.log" >&2
        echo "$0: $t: FINDING (log: $work/$t.log, reproducer: $work/artifacts/$t-*)" >&2
        status=1
        continue
    fi
    # the figures: executions, coverage, corpus
    grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|INITED)' "$work/$t.log" | tail -n 1 || true
    grep -E '^stat::' "$work/$t.log" || true
done
exit $status
