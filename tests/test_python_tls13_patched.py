"""The Python package on the patched OpenSSL 3.5 (patch 0002): ``pipetls.Context``
pipelines TLS 1.3 through the pipetls provider, ``pipetls info`` says which
path serves which version and suite, ``pipetls bench --openssl patched``.

Every process here that touches the patched build runs on it alone
(support.patched.penv: LD_LIBRARY_PATH=<prefix>/lib, PIPETLS_OPENSSL=<prefix>;
invariant 7); the pytest process stays on the system's OpenSSL 3.0.  What a
Context pair does is read from the provider's statistics in that process
(support/python_tls13_child.py): batches of more than one record around the
writes and around the reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.patched import penv

pytestmark = pytest.mark.patched

HERE = Path(__file__).resolve().parent
CHILD = HERE / "support" / "python_tls13_child.py"
SUITES13 = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256"]
# the certs fixture's key is RSA
SUITES12 = {"AES-128-GCM": "ECDHE-RSA-AES128-GCM-SHA256",
            "AES-256-GCM": "ECDHE-RSA-AES256-GCM-SHA384",
            "ChaCha20-Poly1305": "ECDHE-RSA-CHACHA20-POLY1305"}
SUITE_CIPHER13 = {"TLS_AES_128_GCM_SHA256": "AES-128-GCM",
                  "TLS_AES_256_GCM_SHA384": "AES-256-GCM",
                  "TLS_CHACHA20_POLY1305_SHA256": "ChaCha20-Poly1305"}


def env35(prefix, module35, engine_path=None, **extra):
    env = penv(prefix, None, PIPETLS_OPENSSL=prefix, PIPETLS_PROVIDER=module35, **extra)
    if engine_path is not None:
        env["PIPETLS_ENGINE"] = str(engine_path)
    return env


def pair(prefix, module35, certs, version, suite, provider, *, engine=None):
    argv = [sys.executable, str(CHILD), certs.cert, certs.key, version, suite, provider]
    if engine is not None:
        argv.append("engine")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env=env35(prefix, module35, engine), stdin=subprocess.DEVNULL)
    assert proc.stdout.strip(), proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["rc"] = proc.returncode
    out["stderr"] = proc.stderr
    return out


def batched(d) -> int:
    return sum(d.values())


# ------------------------------------------------------------------ Context

@pytest.mark.parametrize("provider", ["auto", "true"])
@pytest.mark.parametrize("suite", SUITES13)
def test_context_pipelines_tls13_through_the_provider(prefix, module35, certs, suite, provider):
    """A Context pair (the default provider="auto", and provider=True),
    max_pipelines 8, 4 MiB in writes of 8 records: data intact, the
    provider batched more than one record writing and reading."""
    r = pair(prefix, module35, certs, "1.3", suite, provider)
    assert r["rc"] == 0, r
    assert r["openssl"].startswith("OpenSSL 3.5"), r
    assert (r["version"], r["cipher"]) == ("TLSv1.3", suite), r
    assert r["intact"], r
    assert r["context_provider"] == [True, True], r
    assert r["failed"] == 0, r
    # 4 MiB = 256 records of 16 KiB; most of them in batches both ways
    assert batched(r["write_batched"]) > 0 and batched(r["read_batched"]) > 0, r
    assert max(int(k) for k in r["write_batched"]) > 1, r
    assert sum(int(k) * n for k, n in r["write_batched"].items()) > 128, r
    assert sum(int(k) * n for k, n in r["read_batched"].items()) > 128, r


def test_context_provider_false_gets_no_batches(prefix, module35, certs):
    """provider=False: the same pair, the provider loaded in the process,
    but the SSL_CTX is made without the property query: the provider sees
    no batch at all (libssl's default-provider ciphers, one record at a
    time), and the data is intact."""
    r = pair(prefix, module35, certs, "1.3", SUITES13[1], "false")
    assert r["rc"] == 0, r
    assert r["intact"] and r["context_provider"] == [False, False], r
    assert r["write_batches"] == 0 and r["read_batches"] == 0, r
    assert r["write_batched"] == {} and r["read_batched"] == {}, r


def test_engine_with_provider_true_is_refused(prefix, module35, certs, engine35):
    """engine=True with provider=True: a registered ENGINE would take TLS 1.3
    too, so the Context refuses, naming why; with "auto" it is made without
    the provider and TLS 1.3 is not batched by the provider."""
    r = pair(prefix, module35, certs, "1.3", SUITES13[0], "true", engine=engine35)
    assert r["rc"] == 3 and r["type"] == "ConfigError", r
    assert "ENGINE" in r["error"] and "provider" in r["error"], r
    r = pair(prefix, module35, certs, "1.3", SUITES13[0], "auto", engine=engine35)
    assert r["rc"] == 0 and r["intact"], r
    assert r["context_provider"] == [False, False], r
    assert r["write_batched"] == {} and r["read_batched"] == {}, r


# -------------------------------------------------------------- pipetls info

def test_info_names_the_paths_the_library_takes(prefix, module35, certs, engine35):
    """``pipetls info --json`` says, per TLS version and suite, which path
    pipelines it; each claim is checked against a Context pair of that
    suite: "provider" -> the provider batched both ways (provider="auto",
    no engine), not "provider" -> it did not; "engine" -> the engine batched
    both ways (engine=True), not "engine" -> it did not."""
    proc = subprocess.run([sys.executable, "-m", "pipetls", "info", "--json"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env=env35(prefix, module35, engine35))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["openssl"].startswith("OpenSSL 3.5"), doc["openssl"]
    rows = {(r["tls"], r["suite"]): r for r in doc["paths"]}
    # every TLS 1.3 suite and the TLS 1.2 AEAD ones are named
    for suite in SUITES13:
        assert ("1.3", suite) in rows, sorted(rows)
    for suite in SUITES12.values():
        assert ("1.2", suite) in rows, sorted(rows)
    for (version, suite), row in rows.items():
        assert row["served_by"] in ("engine", "provider", "engine or provider", "none"), row
        by = set(row["served_by"].split(" or "))
        assert by == {n for n in ("engine", "provider") if row[n]} or \
            (by == {"none"} and not row["engine"] and not row["provider"]), row
        if suite not in SUITES13 and suite not in SUITES12.values():
            continue  # CBC: the engine's alone; test_patched.py covers it
        r = pair(prefix, module35, certs, version, suite, "auto")
        assert r["rc"] == 0 and r["intact"], r
        through = batched(r["write_batched"]) > 0 and batched(r["read_batched"]) > 0
        assert through == bool(row["provider"]), (row, r)
        if not row["provider"]:
            assert r["write_batched"] == {} and r["read_batched"] == {}, (row, r)
        r = pair(prefix, module35, certs, version, suite, "auto", engine=engine35)
        assert r["rc"] == 0 and r["intact"], r
        through = batched(r["engine_write_batched"]) > 0 and batched(r["engine_read_batched"]) > 0
        assert through == bool(row["engine"]), (row, r)
    # what the patched build (patch 0002) does: TLS 1.3 through the provider only
    for suite in SUITES13:
        assert rows[("1.3", suite)]["served_by"] == "provider", rows[("1.3", suite)]


# ------------------------------------------------------------- pipetls bench

def _bench_env(prefix, module35, tmp_path):
    """The environment of a ``pipetls bench --openssl patched`` started on
    the system's OpenSSL: PIPETLS_OPENSSL unset, the prefix found in the
    build cache."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIPETLS_OPENSSL", "LD_LIBRARY_PATH", "OPENSSL_CONF")}
    env["PIPETLS_PROVIDER"] = str(module35)
    # the cache the prefix lives in (openssl_patches/build.py's layout:
    # <cache>/openssl-<version>-<key>/prefix, BUILD-INFO.json beside it); a
    # prefix from elsewhere (PIPETLS_PATCHED_PREFIX) gets a cache entry of
    # that layout here, naming it
    build = Path(prefix).parent
    if (build / "BUILD-INFO.json").is_file():
        env["PIPETLS_CACHE"] = str(build.parent)
    else:
        entry = tmp_path / "cache" / "openssl-3.5-test"
        entry.mkdir(parents=True)
        (entry / "prefix").symlink_to(prefix)
        (entry / "BUILD-INFO.json").write_text(json.dumps({
            "key": "test", "built_at": "9999", "patches": [
                {"name": "0001-ssl-conf-pipelining-commands.patch"},
                {"name": "0002-tls13-provider-cipher-pipelining.patch"}]}))
        env["PIPETLS_CACHE"] = str(entry.parent)
    return env


def test_bench_openssl_patched_tls13(prefix, module35, tmp_path):
    """``pipetls bench --openssl patched --tls 1.3`` started on the system's
    OpenSSL (PIPETLS_OPENSSL unset, the prefix found in the build cache)
    runs again on the patched build and writes the rows: write, read,
    latency and loopback per suite, each with its pairs, the provider's
    counters (batches of max_pipelines records on the pipelined rows), the
    bound and efficiency.  Nothing here is about time."""
    env = _bench_env(prefix, module35, tmp_path)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipetls", "bench", "--openssl", "patched", "--tls", "1.3",
         "--pairs", "3", "--pair-bytes", "1M", "--scenario", "write,read,latency,loopback",
         "--json", str(out)], capture_output=True, text=True, timeout=1200, env=env,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["openssl"].startswith("OpenSSL 3.5"), doc["machine"]
    assert doc["config"]["openssl"] == "patched" and doc["config"]["path"] == "provider"
    rows = {(r["scenario"], r["cipher"]): r for r in doc["results"]}
    assert set(rows) == {(s, c) for s in ("write", "read", "latency", "loopback")
                         for c in SUITE_CIPHER13.values()}, sorted(rows)
    for (scenario, cipher), r in rows.items():
        assert r["tls"] == "1.3" and r["path"] == "provider", r
        assert r["suite"] == {v: k for k, v in SUITE_CIPHER13.items()}[cipher], r
        assert "default provider" in r["baseline"] and "max_pipelines 1" in r["baseline"], r
        assert len(r["pairs"]) == 3 and r["stock_gbps"] > 0 and r["pipetls_gbps"] > 0, r
        assert r["speedup_lo"] <= r["speedup"] <= r["speedup_hi"], r
        assert 0 < r["efficiency"] <= 1.0 and r["bound"] >= 1.0, r
        assert r["verdict"], r
        if scenario == "latency":
            assert r["max_pipelines"] == 1 and r["unit"] == "us/write", r
            assert r["bound"] == 1.0, r
            continue
        assert r["max_pipelines"] == 8 and r["unit"] == "GB/s", r
        # the pipetls side went through the provider, in batches of records
        assert r["batches"] > 0 and r["mean_batch"] > 1, r
        assert r["counters"].get("failed_batches", 0) == 0, r
        assert sum(v for k, v in r["counters"].items()
                   if k.startswith("hist.") and int(k[5:]) > 1) > 0, r


def test_bench_control_rows_tls13(prefix, module35, tmp_path):
    """``--control`` on the patched build, TLS 1.3 through the provider:
    each write and read row is followed by its control row (stock, the
    default provider, on LANES connections at once), whose pairs move LANES
    times the stock side's bytes; the provider's row carries its share."""
    if (os.cpu_count() or 1) < 2:
        pytest.fail("the control needs 2 lanes: this machine has one CPU")
    env = _bench_env(prefix, module35, tmp_path)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipetls", "bench", "--openssl", "patched", "--tls", "1.3",
         "--cipher", "AES-256-GCM", "--pairs", "2", "--pair-bytes", "1M",
         "--scenario", "write,read", "--control", "--json", str(out)],
        capture_output=True, text=True, timeout=1200, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [(r["scenario"], r["control"]) for r in rows] == [
        ("write", False), ("write", True), ("read", False), ("read", True)], rows
    for piped, ctl in (rows[0:2], rows[2:4]):
        lanes = piped["lanes"]
        assert lanes >= 2 and piped["path"] == "provider" and piped["batches"] > 0, piped
        assert ctl["baseline"] == "control: %d stock connections in %d processes" % (lanes, lanes)
        assert piped["of_control_lo"] <= piped["of_control"] <= piped["of_control_hi"], piped
        for pc in ctl["pairs"]:
            assert pc["control_bytes"] == lanes * pc["stock_bytes"] > 0, pc


def test_bench_with_pipetls_openssl_alone(prefix, module35, tmp_path):
    """PIPETLS_OPENSSL=<prefix> alone (no LD_LIBRARY_PATH, no OPENSSL_CONF):
    the package loads that build by path, and the throwaway certificate
    is made by that build's openssl program with its own libraries."""
    env = _bench_env(prefix, module35, tmp_path)
    env["PIPETLS_OPENSSL"] = str(prefix)
    proc = subprocess.run(
        [sys.executable, "-m", "pipetls", "bench", "--tls", "1.3", "--path", "provider",
         "--cipher", "AES-128-GCM", "--pairs", "1", "--pair-bytes", "1M", "--scenario", "write",
         "--json", "-"], capture_output=True, text=True, timeout=600, env=env,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["machine"]["openssl"].startswith("OpenSSL 3.5"), doc["machine"]
    assert [r["path"] for r in doc["results"]] == ["provider"], doc["results"]


def test_bench_path_provider_refuses_tls12_where_libssl_does_not(prefix, module35):
    """--path provider --tls 1.2: refused with the probe's reason when this
    libssl hands the provider one TLS 1.2 record at a time (a libssl that
    pipelines TLS 1.2 through provider ciphers runs the rows instead)."""
    from_info = subprocess.run([sys.executable, "-m", "pipetls", "info", "--json"],
                               capture_output=True, text=True, timeout=300,
                               env=env35(prefix, module35), stdin=subprocess.DEVNULL)
    assert from_info.returncode == 0, from_info.stderr
    rows = json.loads(from_info.stdout)["paths"]
    tls12 = [r for r in rows if r["tls"] == "1.2" and r["cipher"] == "AES-128-GCM"][0]
    proc = subprocess.run(
        [sys.executable, "-m", "pipetls", "bench", "--openssl", "patched", "--path", "provider",
         "--tls", "1.2", "--cipher", "AES-128-GCM", "--scenario", "write", "--pairs", "1",
         "--pair-bytes", "1M", "--json", "-"], capture_output=True, text=True, timeout=600,
        env=env35(prefix, module35), stdin=subprocess.DEVNULL)
    if tls12["provider"]:
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert [r["path"] for r in doc["results"]] == ["provider"], doc
        assert doc["results"][0]["mean_batch"] > 1, doc
    else:
        assert proc.returncode != 0, proc.stdout
        assert "does not pipeline TLS 1.2 through the provider" in proc.stderr, proc.stderr


# ------------------------------------------------------ pipetls serve/connect

def _batched_rows(text: str, title: str) -> dict:
    """{K: batches} of the 'batches of K' rows after the table titled ``title``."""
    out, inside = {}, False
    for line in text.splitlines():
        if title in line:
            inside = True
        elif inside and "batches of" in line:
            cells = [c.strip() for c in line.strip("│ ").split("│")]
            out[int(cells[0].split()[-1])] = int(cells[1])
        elif inside and line.startswith("└"):
            break
    return out


def test_serve_connect_pipeline_tls13_through_the_provider(prefix, module35):
    """``pipetls serve`` and ``pipetls connect`` on the patched build, both
    with --max-pipelines 8 and the default --provider auto: TLS 1.3, all
    bytes received, and each side's provider table shows batches of more
    than one record (the client writing, the server reading)."""
    from support.net import free_port, wait_listening

    port = free_port()
    env = env35(prefix, module35, COLUMNS="200")
    total = 8 << 20
    srv = subprocess.Popen([sys.executable, "-m", "pipetls", "serve", "--port", str(port),
                            "--naccept", "1", "--bulk", str(total), "--max-pipelines", "8"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_listening(port, 30.0, srv)
        cli = subprocess.run([sys.executable, "-m", "pipetls", "connect", "--port", str(port),
                              "--insecure", "--bulk", str(total), "--max-pipelines", "8"],
                             capture_output=True, text=True, env=env, timeout=300)
        out, err = srv.communicate(timeout=120)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    logs = "--- client\n%s%s\n--- server\n%s%s" % (cli.stdout, cli.stderr, out, err)
    assert cli.returncode == 0 and srv.returncode == 0, logs
    assert "connected: TLSv1.3" in cli.stderr, logs
    assert "received %d bytes" % total in out, logs
    wrote = _batched_rows(cli.stderr, "provider (client)")
    read = _batched_rows(err, "provider (server)")
    assert any(k > 1 and n for k, n in wrote.items()), logs
    assert any(k > 1 and n for k, n in read.items()), logs
    assert "engine (client)" not in cli.stderr and "engine (server)" not in err, logs


# ------------------------------------------------------- Python's own ssl

def test_stdlib_tls13_through_the_provider(prefix, module35, certs):
    """Python's ssl on the patched libraries (LD_LIBRARY_PATH, no
    PIPETLS_OPENSSL: _ssl and pipetls share them): after prefer_provider(),
    enable_pipelining() on new ssl.SSLContexts takes the provider path and a
    TLS 1.3 MemoryBIO pair is batched both ways, data intact.  A pair made
    before the preference, with the same knobs, is not batched by the
    provider; enable_pipelining(provider=True) refuses such a context and
    "auto" gives it the engine, as before."""
    env = penv(prefix, None, PIPETLS_PROVIDER=module35)
    env.pop("PIPETLS_OPENSSL", None)
    proc = subprocess.run([sys.executable, str(HERE / "support" / "stdlib_tls13_child.py"),
                           certs.cert, certs.key], capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["paths"] == [True, True], out
    r = out["provider"]
    assert r["version"] == "TLSv1.3" and r["intact"], out
    assert r["write_batched"] > 0 and r["read_batched"] > 0, out
    e = out["early"]
    assert e["version"] == "TLSv1.3" and e["intact"], out
    assert e["write_batched"] == 0 and e["read_batched"] == 0, out
    assert "made before prefer_provider()" in out["early_true"], out
    assert out["early_auto"] == "engine", out
