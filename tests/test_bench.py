"""`pipetls bench` on a tiny size: the JSON has the documented structure and
its numbers are consistent with each other (speedup = stock time / pipetls
time, efficiency = speedup / bound, bound within 1..lanes). Never its timing.
The bench registers and unregisters the engine, so it runs in a child."""
import json
import os
import statistics
import subprocess
import sys

import pytest

from pipetls.bench import amdahl_bound


def run_bench(engine_path, *args):
    env = dict(os.environ, PIPETLS_ENGINE=engine_path)
    p = subprocess.run([sys.executable, "-m", "pipetls", "bench", *args],
                       capture_output=True, text=True, timeout=300, env=env)
    return p


@pytest.fixture(scope="module")
def bench_doc(engine_path):
    p = run_bench(engine_path, "--total", "4M", "--write-size", "64K", "--reps", "2",
                  "--cipher", "AES-128-GCM,AES-128-CBC-HMAC-SHA1", "--max-pipelines", "1,8",
                  "--lanes", "2", "--scenario", "write,read,latency", "--json", "-")
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def test_structure(bench_doc):
    assert {"machine", "config", "results"} <= set(bench_doc)
    assert bench_doc["machine"]["cpus"] >= 1 and "OpenSSL" in bench_doc["machine"]["openssl"]
    rows = bench_doc["results"]
    seen = {(r["scenario"], r["cipher"], r["max_pipelines"]) for r in rows}
    for cipher in ("AES-128-GCM", "AES-128-CBC-HMAC-SHA1"):
        for mp in (1, 8):
            assert ("write", cipher, mp) in seen and ("read", cipher, mp) in seen
        assert ("latency", cipher, 1) in seen
    for r in rows:
        for key in ("stock_gbps", "pipetls_gbps", "speedup", "bound", "efficiency",
                    "stock_reps", "pipetls_reps", "baseline", "lanes", "unit"):
            assert key in r, key
        assert len(r["stock_reps"]) == len(r["pipetls_reps"]) == 2


def test_numbers_are_consistent(bench_doc):
    for r in bench_doc["results"]:
        t_stock, t_pipe = statistics.median(r["stock_reps"]), statistics.median(r["pipetls_reps"])
        assert r["speedup"] == pytest.approx(t_stock / t_pipe, rel=1e-3)
        assert 1.0 - 1e-9 <= r["bound"] <= r["lanes"] + 1e-9
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["bound"], rel=1e-3, abs=1e-4)
        if r["unit"] == "GB/s":
            assert r["stock_gbps"] == pytest.approx(r["total_bytes"] / t_stock / 1e9, rel=1e-3)
        if r["max_pipelines"] == 1:
            assert r["bound"] == 1.0
    # the pipelined rows really were pipelined: batches of more than one record
    piped = [r for r in bench_doc["results"] if r["max_pipelines"] == 8 and r["scenario"] == "write"]
    assert piped and all(r["mean_batch"] > 1 for r in piped)
    cbc = [r for r in bench_doc["results"] if r["cipher"] == "AES-128-CBC-HMAC-SHA1"]
    # big writes with EtM off: stock uses MULTIBLOCK; 1 KiB writes never do
    assert all(r["baseline"] == ("stock" if r["scenario"] == "latency" else "stock MULTIBLOCK")
               for r in cbc)


def test_amdahl_bound_formula():
    assert amdahl_bound(2, 1.0, 1.0) == pytest.approx(2.0)
    assert amdahl_bound(2, 1.0, 0.0) == pytest.approx(1.0)
    assert amdahl_bound(4, 1.0, 0.5) == pytest.approx(4 / (4 * 0.5 + 0.5))
    assert amdahl_bound(8, 1.0, 2.0) == pytest.approx(8.0)  # crypto clamped to T


def test_bad_arguments_are_refused(engine_path):
    """Each bad option is a usage error (exit status 2, argparse's) whose
    message names the option and what is wrong with the value."""
    for args, why in ((["--max-pipelines", "33"], "max_pipelines must be 1..32, got 33"),
                      (["--cipher", "RC4"], "unknown cipher 'RC4'"),
                      (["--total", "-1"], "size must be >= 1"),
                      (["--scenario", "nope"], "unknown scenario 'nope'"),
                      (["--lanes", "0"], "lanes must be 1..256, got 0")):
        p = run_bench(engine_path, *args)
        assert p.returncode == 2, (args, p.returncode, p.stderr[-2000:])
        assert f"pipetls bench: error: argument {args[0]}: {why}" in p.stderr, (args, p.stderr)
        assert p.stdout == "", (args, p.stdout)
