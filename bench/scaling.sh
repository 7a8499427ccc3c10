#!/usr/bin/env bash
# bench/scaling.sh: how pipetls scales with lanes, in one prepared run.
#
# Builds the engine from this checkout (Release, build/scaling/), then runs
# `pipetls bench` (interleaved stock/pipetls pairs, bootstrap intervals):
#   write and read: AES-256-GCM, AES-256-CBC-HMAC-SHA256 (against stock
#                   MULTIBLOCK), at 1, 2, 4, 8, 16 lanes x max_pipelines 16, 32
#   busy:           AES-256-GCM, 1, 4, 16 connections, the same lanes and
#                   max_pipelines
# and writes, in the output folder: write-read.json, busy.json, their logs
# (the tables), scaling.svg (no dependency) and scaling.png when matplotlib
# is importable.  See docs/performance.md, "Scaling past 2 cores".
#
# Usage: bench/scaling.sh [--quick] [--out DIR] [--engine FILE] [--python PY]
#   --quick        small and fast (2 pairs of 1 MiB, AES-256-GCM, busy at
#                  1, 2 connections): checks that the script works
#   --out DIR      output folder (default: bench/out/scaling-<UTC time>)
#   --engine FILE  use this engine instead of building one
#   --python PY    the Python with pipetls's dependencies (default: .venv/bin/python
#                  of the checkout if there is one, else python3); the package
#                  is taken from this checkout (PYTHONPATH=pybind)
# Environment: PAIRS, PAIR_BYTES, LANES, MAX_PIPELINES, CONNECTIONS override
# the defaults (40, 16M, 1,2,4,8,16, 16,32, 1,4,16).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
quick=0
out=""
engine=""
python=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --out) out=${2:?--out needs a folder}; shift ;;
        --engine) engine=${2:?--engine needs a file}; shift ;;
        --python) python=${2:?--python needs a program}; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "bench/scaling.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python; else python=python3; fi
fi
out=${out:-$root/bench/out/scaling-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

if [ "$quick" = 1 ]; then
    pairs=${PAIRS:-2}; pair_bytes=${PAIR_BYTES:-small}
    ciphers=AES-256-GCM; connections=${CONNECTIONS:-1,2}
else
    pairs=${PAIRS:-40}; pair_bytes=${PAIR_BYTES:-16M}
    ciphers=AES-256-GCM,AES-256-CBC-HMAC-SHA256; connections=${CONNECTIONS:-1,4,16}
fi
lanes=${LANES:-1,2,4,8,16}
mps=${MAX_PIPELINES:-16,32}

if [ -z "$engine" ]; then
    echo "== building the engine from $root (build/scaling)" >&2
    cmake -S "$root" -B "$root/build/scaling" -DCMAKE_BUILD_TYPE=Release >"$out/build.log" 2>&1 ||
        { tail -20 "$out/build.log" >&2; exit 1; }
    cmake --build "$root/build/scaling" --target pipetls -j "$(nproc)" >>"$out/build.log" 2>&1 ||
        { tail -20 "$out/build.log" >&2; exit 1; }
    engine=$root/build/scaling/pipetls.so
fi
[ -f "$engine" ] || { echo "bench/scaling.sh: no engine at $engine" >&2; exit 1; }

export PYTHONPATH=$root/pybind${PYTHONPATH:+:$PYTHONPATH}
export COLUMNS=${COLUMNS:-200}
bench() { "$python" -m pipetls bench --engine "$engine" --pairs "$pairs" --pair-bytes "$pair_bytes" \
    --lanes "$lanes" --max-pipelines "$mps" --write-size 512K "$@"; }

"$python" - <<PY >"$out/machine.json"
import json, os, platform, subprocess
print(json.dumps({"cpus": os.cpu_count(), "machine": platform.machine(),
                  "uname": " ".join(platform.uname()),
                  "commit": subprocess.run(["git", "-C", "$root", "rev-parse", "HEAD"],
                                           capture_output=True, text=True).stdout.strip()}))
PY

echo "== write, read: $ciphers, lanes $lanes, max_pipelines $mps, $pairs pairs of $pair_bytes" >&2
bench --scenario write,read --cipher "$ciphers" --json "$out/write-read.json" \
    2>&1 | tee "$out/write-read.log" >&2
echo "== busy: AES-256-GCM, connections $connections" >&2
bench --scenario busy --cipher AES-256-GCM --connections "$connections" --json "$out/busy.json" \
    2>&1 | tee "$out/busy.log" >&2

"$python" - "$out" <<'PY'
import json, os, sys
from pipetls.bench.model import BenchResult
from pipetls.bench.report import plot, plot_svg
out = sys.argv[1]
rows = []
for name in ("write-read.json", "busy.json"):
    with open(os.path.join(out, name)) as f:
        rows += [BenchResult(**r) for r in json.load(f)["results"]]
plot_svg(rows, os.path.join(out, "scaling.svg"))
try:
    import matplotlib  # noqa: F401
except ImportError:
    print("matplotlib not installed: scaling.svg only", file=sys.stderr)
else:
    plot(rows, os.path.join(out, "scaling.png"))
PY
echo "== done: $out" >&2
ls "$out"
