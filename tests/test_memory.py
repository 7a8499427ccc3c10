"""Heap per idle connection pair: pipetls with max_pipelines 8 against stock
libssl, measured in one child process with mallinfo2 (support.memory_child:
50 socketpair-joined pairs, AES-128-GCM, handshake and one 128 KiB write
each way, then idle). A count of bytes, not a time.

The bound is 1.3x stock (issue 13, section 4). What it holds: with
``release_buffers`` (the default of pipetls's Contexts) libssl frees the
read buffer it sized for max_pipelines records and the write buffers of
the last batch once they are empty; without it (the negative control) the
same pairs keep them and pay several times stock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PAIRS = 50
BOUND = 1.3


def _measure(engine_path: str, certs, *configs: str) -> dict:
    env = dict(os.environ, PIPETLS_ENGINE=engine_path)
    cmd = [sys.executable, "-m", "support.memory_child", str(certs.dir), "--pairs", str(PAIRS)]
    for c in configs:
        cmd += ["--config", c]
    out = subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_idle_pair_heap_within_bound_of_stock(engine_path, certs, record_property):
    """max_pipelines 8 with the default release_buffers: an idle pair costs
    at most 1.3x a stock pair (libssl defaults, no engine) measured in the
    same process the same way. The same pairs with release_buffers=False
    (buffers of the widest batch kept) exceed the bound: the measurement
    can tell the two apart. During a burst (a write cut short by a full
    socket, its reader one record in) the pair holds what the burst needs,
    and never more than the pair that keeps every buffer."""
    r = _measure(engine_path, certs, "8:1", "8:0")
    stock = r["stock"]["idle"]
    released, kept = r["pipetls"]
    assert released["max_pipelines"] == 8 and released["release_buffers"]
    assert kept["max_pipelines"] == 8 and not kept["release_buffers"]
    record_property("stock_idle_kib", round(stock / 1024, 1))
    record_property("pipetls_idle_kib", round(released["idle"] / 1024, 1))
    record_property("pipetls_burst_kib", round(released["burst"] / 1024, 1))
    record_property("kept_idle_kib", round(kept["idle"] / 1024, 1))
    print("heap per pair: stock %.1f KiB; pipetls mp 8 idle %.1f KiB (%.2fx), burst %.1f KiB; "
          "buffers kept: idle %.1f KiB (%.2fx)" % (
              stock / 1024, released["idle"] / 1024, released["idle"] / stock,
              released["burst"] / 1024, kept["idle"] / 1024, kept["idle"] / stock))
    assert stock > 0
    assert released["idle"] <= BOUND * stock, r
    # negative control: keeping the buffers breaks the bound
    assert kept["idle"] > BOUND * stock, r
    # the burst state really holds buffers again (the release is not a
    # measurement artefact), and no more than keeping them all would
    assert released["burst"] > released["idle"] + 64 * 1024, r
    assert released["burst"] <= kept["idle"], r
