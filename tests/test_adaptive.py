"""Adaptive lanes (ADAPTIVE, CPUS; core/lanes.c): a worker takes records
only where a core is free. Behaviour, not time: with more writing threads
than CPUs the callers keep their batches (batches_kept, kept_busy_callers);
a lone connection still pipelines; with CPUS 1 a lone caller fills the one
core and keeps everything; ADAPTIVE 0 sends every batch out as before.

The busy cases run tests/c/pt_busy.c (N threads, each writing over its own
connection; built here, with the engine's sanitizer under tox -e
sanitize/tsan)."""
import os
import re
import shutil
import subprocess

import pytest

import pipetls
from pipetls import ConfigError, ConfigTypeError, Connection, Context, _ffi, handshake_pair
from support.api import engine_settings

HERE = os.path.dirname(os.path.abspath(__file__))
SANITIZE = os.environ.get("PIPETLS_SANITIZE", "")
GCM = "ECDHE-RSA-AES128-GCM-SHA256"
CPUS = len(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def busy_binary(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed to build tests/c/pt_busy.c"
    out = tmp_path_factory.mktemp("busy") / "pt_busy"
    flags = ["-O2"]
    if SANITIZE:
        flags = ["-O1", "-g", f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer"]
    subprocess.run([cc, *flags, "-Wall", "-o", str(out), os.path.join(HERE, "c", "pt_busy.c"),
                    "-lssl", "-lcrypto", "-lpthread"], check=True)
    return str(out)


def run_busy(binary, engine_path, certs, threads, mib, lanes=0):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # the harness links its sanitizer runtime itself
    env["TSAN_OPTIONS"] = "halt_on_error=1"
    p = subprocess.run([binary, engine_path, str(certs.cert), str(certs.key), str(threads),
                        str(mib), GCM, str(lanes), "8"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr[-4000:]
    out = {}
    for line in p.stdout.splitlines():
        m = re.fullmatch(r"([a-z_.0-9]+) (\S+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    assert out["mode"] == "pipetls" and out["failed"] == "0", p.stdout
    return {k: int(v) for k, v in out.items() if v.isdigit()}


def worker_records(st):
    return sum(v for k, v in st.items() if re.fullmatch(r"lane\.[1-9]\d*\.records", k))


def test_busy_callers_keep_their_batches(busy_binary, engine_path, certs):
    """Twice as many writing threads as CPUs: callers fill every core, and
    the statistics show batches their callers kept for that reason."""
    threads = 2 * CPUS
    st = run_busy(busy_binary, engine_path, certs, threads, 4 if SANITIZE else 16, lanes=2)
    assert st["adaptive"] == 1 and st["cpus"] == CPUS, st
    # 256 KiB writes with 8 pipelines: batches of 8 records of 16 KiB
    assert st["batches"] >= threads * (16 if SANITIZE else 64) * 4 // 8 * 8 // 8, st
    assert st["kept_busy_callers"] > 0, st
    assert 0 < st["batches_kept"] <= st["inline_batches"] <= st["batches"], st
    assert st["batches_kept"] == st["kept_busy_callers"] + st["kept_busy_workers"] + st["kept_no_gain"]
    assert st["records_kept"] == 8 * st["batches_kept"], st
    assert st["failed_batches"] == 0


def test_lone_connection_still_pipelines(busy_binary, engine_path, certs):
    """One writing thread in an otherwise idle process: its batches go to the
    lanes and a worker does part of the records (one CPU: nothing to gain,
    every batch kept by its caller). 64 MiB, about 30 ms: a run of a few
    milliseconds can end inside the hold that one early loss or stall keeps
    (4 windows or more), with every batch kept."""
    st = run_busy(busy_binary, engine_path, certs, 1, 64, lanes=2)
    assert st["cpus"] == CPUS
    if CPUS >= 2:
        assert worker_records(st) > 0, st
        assert st["batches_kept"] < st["batches"], st
        assert st["kept_busy_callers"] == 0, st  # one caller never fills two cores
    else:
        assert worker_records(st) == 0 and st["batches_kept"] == st["batches"], st


@pytest.fixture(scope="module")
def engine(engine_path):
    e = pipetls.load_engine(engine_path, register=True)
    with engine_settings(e, threads=2, inline_below=0):
        yield e


def write_batches(engine, certs, nbytes=1 << 20):
    """A lone memory pair writing nbytes with 8 pipelines; the counters of it."""
    common = dict(max_version="TLSv1.2", ciphers=GCM, engine=engine, max_pipelines=8)
    sctx = Context(server=True, certfile=str(certs.cert), keyfile=str(certs.key), **common)
    cctx = Context(server=False, verify=False, **common)
    with sctx, cctx, Connection(sctx) as s, Connection(cctx) as c:
        handshake_pair(s, c)
        before = engine.stats()
        s.sendall(os.urandom(nbytes))
        return engine.stats() - before


def with_cpus(engine, cpus, adaptive=True):
    class _Cm:
        def __enter__(self):
            engine.cpus = cpus
            engine.adaptive = adaptive
            return engine

        def __exit__(self, *exc):
            engine.cpus = 0
            engine.adaptive = True
    return _Cm()


def test_one_cpu_a_lone_caller_keeps_every_batch(engine, certs):
    with with_cpus(engine, 1):
        assert engine.cpus == 1 and engine.adaptive
        d = write_batches(engine, certs)
    assert d.pipelined_batches >= 8, d
    assert d.batches_kept == d.pipelined_batches == d.kept_busy_callers, d
    assert d.records_kept == d.records, d
    assert sum(v for k, v in d.lanes_records.items() if k > 0) == 0, d


def test_adaptive_off_sends_every_batch_out(engine, certs):
    """Negative control of the above: the same with ADAPTIVE 0."""
    with with_cpus(engine, 1, adaptive=False):
        assert not engine.adaptive
        d = write_batches(engine, certs)
    assert d.pipelined_batches >= 8 and d.batches_kept == 0 and d.inline_batches == 0, d


def test_settings_reported_in_stats_and_info(engine):
    st = engine.stats()
    assert st.adaptive == 1 and st.cpus == CPUS, st
    info = engine.info()
    assert info["adaptive"] == 1 and info["cpus"] == CPUS, info


@pytest.mark.parametrize("name,value,message", [
    ("ADAPTIVE", "2", "ADAPTIVE must be 0 or 1"),
    ("CPUS", "257", "CPUS must be 0..256"),
    ("CPUS", "-1", "CPUS must be 0..256"),
])
def test_out_of_range_commands_are_refused(engine, name, value, message):
    rc = _ffi.ENGINE_ctrl_cmd_string(engine.handle, name.encode(), value.encode(), 0)
    lines, _ = _ffi.drain_errors_detailed()
    assert rc == 0
    assert any(message in line for line in lines), lines
    assert engine.stats().adaptive == 1 and engine.stats().cpus == CPUS  # unchanged


def test_python_setters_check_their_values(engine):
    with pytest.raises(ConfigError):
        engine.cpus = 300
    with pytest.raises(ConfigTypeError):
        engine.adaptive = 2
    st = engine.stats()
    assert st.cpus == CPUS and st.adaptive == 1  # unchanged


def test_stats_fields_parse_and_subtract():
    """The adaptive counters are fields of EngineStats (not extra keys) and
    are counters for ``-``; adaptive and cpus are settings and are kept."""
    from pipetls.engine import EngineStats
    a = EngineStats.parse("pipetls.stats 1\nadaptive 1\ncpus 4\nbatches 10\nbatches_kept 3\n"
                          "records_kept 24\nkept_busy_callers 2\nkept_busy_workers 1\n"
                          "kept_no_gain 0\nbatches_narrowed 5\nworker_declines 6\n")
    b = EngineStats.parse("adaptive 1\ncpus 4\nbatches 30\nbatches_kept 13\nrecords_kept 104\n"
                          "kept_busy_callers 9\nkept_busy_workers 3\nkept_no_gain 1\n"
                          "batches_narrowed 7\nworker_declines 6\n")
    d = b - a
    assert (d.adaptive, d.cpus, d.batches, d.batches_kept, d.records_kept) == (1, 4, 20, 10, 80)
    assert (d.kept_busy_callers, d.kept_busy_workers, d.batches_narrowed, d.worker_declines) \
        == (7, 2, 2, 0)
    assert "kept_no_gain" not in a.extra and "batches_kept" not in a.extra
