"""`pipetls bench` on a tiny size: the JSON has the documented structure and
its numbers are consistent with each other (speedup = the median of the
pairs' stock time / pipetls time, inside its interval; efficiency = the
median of the pairs' speedup / bound, never above 1; bound within 1..lanes).
Never its timing. The bench registers and unregisters the engine, so it
runs in a child."""
import json
import os
import statistics
import subprocess
import sys

import pytest

from pipetls.bench import amdahl_bound
from pipetls.bench.model import bootstrap_median, counter_delta, parse_counters, verdict


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
        # --reps is the older name of --pairs: two interleaved pairs, the
        # order alternating, each side's seconds and bytes
        assert [p["order"] for p in r["pairs"]] == ["stock-first", "pipetls-first"], r["pairs"]
        for p, s_t, p_t in zip(r["pairs"], r["stock_reps"], r["pipetls_reps"]):
            assert p["stock_bytes"] == p["pipetls_bytes"] == r["total_bytes"], p
            assert p["stock_s"] == pytest.approx(s_t, abs=1e-6)
            assert p["pipetls_s"] == pytest.approx(p_t, abs=1e-6)
        assert r["interval_method"] == "bootstrap" and r["interval_confidence"] == 0.95


def test_numbers_are_consistent(bench_doc):
    for r in bench_doc["results"]:
        ratios = [p["stock_s"] / p["pipetls_s"] for p in r["pairs"]]
        assert r["speedup"] == pytest.approx(statistics.median(ratios), rel=1e-3)
        assert r["speedup_lo"] <= r["speedup"] <= r["speedup_hi"], r
        lo, hi = bootstrap_median([p["ratio"] for p in r["pairs"]])
        assert (r["speedup_lo"], r["speedup_hi"]) == (pytest.approx(lo, abs=1e-3),
                                                       pytest.approx(hi, abs=1e-3))
        assert (r["verdict"], r["conclusive"]) == verdict(r["speedup"], r["speedup_lo"],
                                                          r["speedup_hi"])
        assert 1.0 - 1e-9 <= r["bound"] <= r["lanes"] + 1e-9
        assert r["bound"] == pytest.approx(statistics.median(p["bound"] for p in r["pairs"]),
                                           rel=1e-3)
        eff = statistics.median(p["ratio"] / p["bound"] for p in r["pairs"])
        assert r["efficiency_raw"] == pytest.approx(eff, rel=1e-3, abs=1e-4)
        assert r["efficiency"] == pytest.approx(min(eff, 1.0), rel=1e-3, abs=1e-4)
        assert r["efficiency"] <= 1.0 and r["efficiency_clamped"] == (eff > 1.0)
        t_stock = statistics.median(r["stock_reps"])
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


def test_bootstrap_interval_and_verdict():
    """The interval is reproducible (fixed seed), holds the median, narrows
    with agreeing pairs; the verdict refuses wide or 1.0-straddling ones."""
    xs = [1.5, 1.6, 1.4, 1.55, 1.45, 1.7, 1.3, 1.62, 1.58, 1.52]
    lo, hi = bootstrap_median(xs)
    assert bootstrap_median(xs) == (lo, hi)
    assert lo <= statistics.median(xs) <= hi and min(xs) <= lo and hi <= max(xs)
    assert verdict(statistics.median(xs), lo, hi) == ("faster", True)
    assert verdict(0.9, 0.85, 0.95) == ("slower", True)
    assert verdict(1.0, 0.95, 1.05) == ("straddles 1.0", False)
    assert verdict(1.6, 1.1, 2.1) == ("faster, wide", False)
    assert verdict(0.5, 0.4, 0.6) == ("slower, wide", False)
    assert verdict(1.1, 0.8, 1.5) == ("too wide", False)
    assert bootstrap_median([2.0]) == (2.0, 2.0)


def test_busy_scenario(engine_path):
    """busy at 1 and 2 connections: well-formed JSON, the pairs, aggregate
    bytes of all connections, and the engine's counters of the pipetls side
    (it pipelined: batches of more than one record)."""
    p = run_bench(engine_path, "--scenario", "busy", "--connections", "1,2", "--pairs", "2",
                  "--pair-bytes", "small", "--json", "-")
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    rows = doc["results"]
    assert [(r["scenario"], r["connections"]) for r in rows] == [("busy", 1), ("busy", 2)]
    assert doc["config"]["connections"] == [1, 2] and doc["config"]["pairs"] == 2
    for r in rows:
        assert r["cipher"] == "AES-128-GCM" and r["unit"] == "GB/s", r
        assert len(r["pairs"]) == 2, r
        per_conn = max((1 << 20) // r["connections"], 4 * r["write_size"])
        for pair in r["pairs"]:
            assert pair["stock_bytes"] == pair["pipetls_bytes"] == per_conn * r["connections"]
            assert pair["stock_s"] > 0 and pair["pipetls_s"] > 0
        c = r["counters"]
        assert c["batches"] > 0 and r["batches"] == c["batches"], c
        assert c["records"] > c["batches"] and r["mean_batch"] > 1, c
        assert c["failed_batches"] == 0, c
        assert r["efficiency"] <= 1.0
    # one line per row on stderr while it runs
    assert "busy AES-128-GCM mp=8" in p.stderr and "connections=2" in p.stderr, p.stderr[-2000:]


def test_counters_pass_through_unknown_keys():
    """Every integer line of STATS becomes a counter delta, whether this
    version knows its name or not; settings are taken as they are."""
    before = parse_counters("pipetls.stats 1\nlanes 2\nbatches 10\nrecords 80\n"
                            "batches_kept 3\nhist.8 10\nlane.1.records 40\nversion x\n")
    after = parse_counters("pipetls.stats 1\nlanes 2\nbatches 25\nrecords 200\n"
                           "batches_kept 7\nhist.8 25\nlane.1.records 100\nversion x\n"
                           "a_new_counter 5\n")
    assert counter_delta(after, before) == {
        "pipetls.stats": 1, "lanes": 2, "batches": 15, "records": 120, "batches_kept": 4,
        "hist.8": 15, "lane.1.records": 60, "a_new_counter": 5}


def test_pair_bytes_presets_and_errors(engine_path):
    p = run_bench(engine_path, "--pair-bytes", "huge")
    assert p.returncode == 2, p.stderr[-2000:]
    assert "argument --pair-bytes: not a size: 'huge'" in p.stderr, p.stderr[-2000:]
    assert "small, medium, large" in p.stderr, p.stderr[-2000:]
    p = run_bench(engine_path, "--connections", "0")
    assert p.returncode == 2 and "connections must be 1..1024, got 0" in p.stderr, p.stderr[-2000:]


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


def test_scaling_script_quick(engine_path, tmp_path):
    """bench/scaling.sh --quick (with the engine under test instead of its own
    build): write/read and busy JSON at every lane count and max_pipelines
    16 and 32, and an SVG plot; its exit status is the benches'."""
    import xml.etree.ElementTree as ET
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "scaling.sh"
    out = tmp_path / "scaling"
    p = subprocess.run(["bash", str(script), "--quick", "--engine", engine_path, "--python",
                        sys.executable, "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    wr = json.loads((out / "write-read.json").read_text())["results"]
    busy = json.loads((out / "busy.json").read_text())["results"]
    grid = {(lanes, mp) for lanes in (1, 2, 4, 8, 16) for mp in (16, 32)}
    for scenario in ("write", "read"):
        assert {(r["lanes"], r["max_pipelines"]) for r in wr if r["scenario"] == scenario} == grid
    assert {(r["lanes"], r["max_pipelines"], r["connections"]) for r in busy} == {
        (lanes, mp, c) for lanes, mp in grid for c in (1, 2)}
    # 512 KiB writes: max_pipelines 32 gets full batches of 32 records
    assert all(r["mean_batch"] == 32 for r in wr
               if r["scenario"] == "write" and r["max_pipelines"] == 32), wr
    svg = ET.parse(out / "scaling.svg").getroot()
    assert svg.tag.endswith("svg") and len(list(svg.iter("{http://www.w3.org/2000/svg}polyline"))) \
        == 2 * 2 + 2 * 2  # write, read x mp; busy x mp x connections
    bad = subprocess.run(["bash", str(script), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument: --nope" in bad.stderr


def test_control_rows(engine_path):
    """--control: after each pipelined write and read row (lanes 2,
    max_pipelines 8) a control row of the same pairs, stock on 2
    connections at once, each moving the pair's bytes; its ratio is per
    byte, the pipetls row carries its share of the control; max_pipelines 1
    and latency rows get none."""
    p = run_bench(engine_path, "--scenario", "write,read,latency", "--cipher", "AES-128-GCM",
                  "--max-pipelines", "1,8", "--lanes", "2", "--pairs", "2", "--pair-bytes", "2M",
                  "--write-size", "64K", "--control", "--json", "-")
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    assert doc["config"]["control"] is True
    rows = doc["results"]
    kinds = [(r["scenario"], r["max_pipelines"], r["control"]) for r in rows]
    assert kinds == [("write", 1, False), ("write", 8, False), ("write", 8, True),
                     ("read", 1, False), ("read", 8, False), ("read", 8, True),
                     ("latency", 1, False)], kinds
    for i, r in enumerate(rows):
        assert r["steal_fraction"] is None or 0.0 <= r["steal_fraction"] <= 1.0, r
        if not r["control"]:
            assert (r["of_control"] is None) == (rows[i + 1:i + 2] == []
                                                 or not rows[i + 1]["control"]), r
            continue
        piped = rows[i - 1]
        assert r["baseline"] == "control: 2 stock connections in 2 processes"
        assert r["bound"] == 2.0 and r["batches"] == 0 and r["efficiency"] <= 1.0
        shares = []
        for pc, pp in zip(r["pairs"], piped["pairs"]):
            # the same stock side in both rows, the control moving twice its bytes
            assert pc["stock_s"] == pp["stock_s"] and pc["order"] == pp["order"]
            assert pc["control_bytes"] == 2 * pc["stock_bytes"] > 0 and pc["control_s"] > 0
            per_byte = (pc["stock_s"] / pc["stock_bytes"]) / (pc["control_s"] / pc["control_bytes"])
            assert pc["ratio"] == pytest.approx(per_byte, rel=1e-3)
            shares.append((pc["control_s"] / pc["control_bytes"])
                          / (pp["pipetls_s"] / pp["pipetls_bytes"]))
        assert r["speedup"] == pytest.approx(statistics.median(p["ratio"] for p in r["pairs"]),
                                             rel=1e-3)
        assert piped["of_control"] == pytest.approx(statistics.median(shares), rel=1e-3)
        assert piped["of_control_lo"] <= piped["of_control"] <= piped["of_control_hi"]
        # GB/s per byte too: the control's aggregate rate
        rate = statistics.median(pc["control_bytes"] / pc["control_s"] for pc in r["pairs"])
        assert r["pipetls_gbps"] * 1e9 == pytest.approx(rate, rel=0.35)
    assert "pipetls reached, of the control's throughput" in p.stderr + p.stdout


def test_control_needs_a_row_to_control(engine_path):
    p = run_bench(engine_path, "--scenario", "write", "--lanes", "1", "--control")
    assert p.returncode != 0
    assert "--control" in p.stderr and "more than one lane" in p.stderr, p.stderr[-2000:]
