#!/usr/bin/env bash
# Build the engine with sanitizers and run a subset of the tests against it.
#
#   tests/run_sanitized.sh asan [pytest args...]   -fsanitize=address,undefined
#   tests/run_sanitized.sh tsan [pytest args...]   -fsanitize=thread
#
# The build goes to build/<mode>/pipetls.so; the tests find it through
# PIPETLS_ENGINE. Python itself is not instrumented, so the sanitizer runtime
# is LD_PRELOADed (it must come first in the process); child processes that the
# tests start (openssl s_server -engine ...) inherit it and the options below.
# PIPETLS_SANITIZE (address,undefined / thread) tells tests that compile their
# own C harness (tests/c/) to use the same sanitizer.
# Without pytest args it runs the engine-level tests (-m "not full").
set -euo pipefail

usage() { echo "usage: $0 asan|tsan [pytest args...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
mode=$1
shift

root=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-gcc}

runtime() {  # absolute path of a gcc sanitizer runtime, or fail
    local lib
    lib=$("$cc" -print-file-name="$1")
    if [ ! -e "$lib" ] || [ "$lib" = "$1" ]; then
        echo "$0: $cc has no $1 (install gcc's sanitizer runtimes)" >&2
        exit 1
    fi
    echo "$lib"
}

case "$mode" in
asan | address,undefined)
    name=asan
    sanitize=address,undefined
    preload="$(runtime libasan.so):$(runtime libubsan.so)"
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    ;;
tsan | thread)
    name=tsan
    sanitize=thread
    preload=$(runtime libtsan.so)
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp"
    ;;
*) usage ;;
esac

build="$root/build/$name"
cmake -S "$root" -B "$build" -DPIPETLS_SANITIZE="$sanitize" -DCMAKE_C_COMPILER="$cc"
cmake --build "$build" --parallel "$(nproc)"
engine="$build/pipetls.so"
[ -f "$engine" ] || { echo "$0: $engine was not built" >&2; exit 1; }

if [ $# -eq 0 ]; then
    for t in tests/test_engine_evp.py tests/test_pipelining.py tests/test_load.py \
        tests/test_concurrency64.py tests/test_tamper.py tests/test_wire.py tests/test_failure_paths.py \
        tests/test_engine_edges.py tests/test_errors_c.py tests/test_cbc_hmac_mode.py \
        tests/test_adaptive.py tests/test_async.py; do
        if [ -e "$root/$t" ]; then set -- "$@" "$t"; fi
    done
    if [ $# -eq 0 ]; then
        echo "$0: none of the sanitizer test files exist" >&2
        exit 1
    fi
    set -- -m "not full" "$@"
fi

cd "$root"
# The interpreter itself, not a wrapper script (a pyenv shim is bash, which
# does not survive a preloaded TSan runtime).
python=$(${PYTHON:-python} -c 'import sys; print(sys.executable)')
echo "$0: PIPETLS_ENGINE=$engine LD_PRELOAD=$preload $python -m pytest $*" >&2
export PIPETLS_SANITIZE="$sanitize"
PIPETLS_ENGINE="$engine" LD_PRELOAD="$preload" exec "$python" -m pytest "$@"
