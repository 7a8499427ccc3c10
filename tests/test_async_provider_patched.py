"""SSL_MODE_ASYNC with the pipetls provider on the patched OpenSSL 3.5.

Patch 0002 makes libssl 3.5 pipeline TLS 1.3 records through
``EVP_CipherPipeline*``; under ``SSL_MODE_ASYNC`` libssl runs every
SSL_read/SSL_write inside an ASYNC job, so the provider's data update can
hand its pipes to the lanes and pause the job (core/aead.c, core/async.c).

The patched ``openssl s_server -async`` / ``s_client -async`` load the
provider from an openssl.cnf with ``ASYNC`` set; the peer is the system's
stock OpenSSL 3.0, which knows nothing of pipelining. 32 MiB cross each way,
the hashes must match, and the provider's counters (``PIPETLS_STATS``, at
unload) must show paused jobs, every one resumed - and with ``ASYNC = 0``
none at all while batches still went to the lanes (the negative control,
same exchange, same run).

The C suite (provider/test/pt_prov_test.c ``async``) checks the same
mechanism directly: pauses seen by the job's starter equal the counters,
ASYNC 2/1/0, a context freed while its job is paused; it runs here on the
plain build and on the ASan/UBSan and TSan builds of the provider, and the
CLI exchange runs on those builds too (the sanitizer runtime preloaded into
the patched ``openssl``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from support.net import free_port
from support.patched import MODULE, cmake_build, penv
from support.peers import OPENSSL, stream_exchange
from support.stats import read_stats_file

pytestmark = pytest.mark.patched

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
BULK = 32 * MIB
SUITE = "TLS_AES_128_GCM_SHA256"
PIPELINE_OPTS = ["-max_pipelines", "8", "-split_send_frag", "4096", "-read_buf", "131072"]


@pytest.fixture(scope="module")
def blobs():
    a, b = os.urandom(BULK), os.urandom(BULK)
    return (a, hashlib.sha256(a).hexdigest()), (b, hashlib.sha256(b).hexdigest())


def async_conf(path: Path, module: Path, async_mode: int) -> Path:
    """openssl.cnf: the default provider and pipetls, pipetls preferred for
    its algorithms (so libssl's TLS 1.3 ciphers are ours), ASYNC set.
    INLINE_BELOW 4096: s_client writes 8 KiB at a time (two 4 KiB records),
    which should go to the lanes too."""
    path.write_text("\n".join([
        "config_diagnostics = 1",
        "openssl_conf = openssl_init", "",
        "[openssl_init]", "providers = provider_sect", "alg_section = evp_props", "",
        "[provider_sect]", "default = default_sect", "pipetls = pipetls_sect", "",
        "[default_sect]", "activate = 1", "",
        "[pipetls_sect]", f"module = {module}", "activate = 1", "THREADS = 2",
        "INLINE_BELOW = 4096", f"ASYNC = {async_mode}", "",
        "[evp_props]", "default_properties = ?provider=pipetls", ""]))
    return path


def sanitizer_env(kind):
    """(extra environment, build dir suffix) for a sanitizer build of the
    provider loaded into the uninstrumented patched openssl: the runtime is
    preloaded, as tests/run_sanitized.sh does for the engine."""
    if kind is None:
        return {}
    cc = os.environ.get("CC", "gcc")

    def runtime(name):
        lib = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True,
                             text=True).stdout.strip()
        assert lib and lib != name and os.path.exists(lib), f"{cc} has no {name}"
        return lib

    if kind == "asan":
        return {"LD_PRELOAD": f"{runtime('libasan.so')}:{runtime('libubsan.so')}",
                # the patched openssl is not instrumented: its own leaks at
                # exit are not ours to judge here; the C suite checks leaks
                "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
                "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    return {"LD_PRELOAD": runtime("libtsan.so"),
            "TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1:"
                            f"suppressions={REPO / 'tests' / 'tsan.supp'}"}


SANITIZE = {"asan": "address,undefined", "tsan": "thread"}


def module_for(prefix: Path, module35: Path, kind):
    if kind is None:
        return module35
    build = cmake_build(REPO / "build" / f"provider-3.5-{kind}", prefix,
                        f"-DPIPETLS_SANITIZE={SANITIZE[kind]}", "-DPIPETLS_OPENSSL_SRC=")
    return build / MODULE


def exchange(tmp_path, prefix, openssl35, module, certs, side, async_mode, s_data, c_data,
             kind=None):
    """The patched program on `side` ("server" or "client") with -async and
    the provider (ASYNC = async_mode), the stock 3.0 program on the other;
    returns (result, stats, logs)."""
    port = free_port()
    stats = tmp_path / f"stats-{side}-{async_mode}-{port}.txt"
    conf = async_conf(tmp_path / f"async-{side}-{async_mode}-{port}.cnf", module, async_mode)
    patched_env = penv(prefix, conf, PIPETLS_STATS=stats, **sanitizer_env(kind))
    if side == "server":
        server = [openssl35, "s_server", "-async", *PIPELINE_OPTS]
        client = [OPENSSL, "s_client"]
        envs = {"server_env": patched_env}
    else:
        server = [OPENSSL, "s_server"]
        client = [openssl35, "s_client", "-async", *PIPELINE_OPTS]
        envs = {"client_env": patched_env}
    server += ["-accept", f"127.0.0.1:{port}", "-naccept", "1", "-quiet",
               "-cert", certs.cert, "-key", certs.key, "-tls1_3", "-ciphersuites", SUITE]
    client += ["-connect", f"127.0.0.1:{port}", "-quiet", "-tls1_3", "-ciphersuites", SUITE,
               "-CAfile", certs.ca, "-verify_return_error", "-verify_hostname", "localhost"]
    res = stream_exchange(server, client, port=port, server_send=s_data, client_send=c_data,
                          timeout=600 if kind else 300, **envs)
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr[-4000:]}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr[-4000:]}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, f"expected one stats block in {stats}\n{logs}"
    return res, blocks[0], logs


def pipelined(st) -> int:
    return sum(n for k, n in st.hist.items() if k > 1)


# s_client resumes a paused SSL_read only when its socket is readable
# (apps/s_client.c selects on the socket once the async fd fired), so the
# last read batch of a stream could wait forever: on the client side only
# encrypt batches pause (ASYNC 1), as with the engine (docs/async.md).
ON = {"server": 2, "client": 1}


@pytest.mark.parametrize("side", ["server", "client"])
def test_cli_async_bulk_both_ways(tmp_path, prefix, openssl35, module35, certs, blobs, side):
    """32 MiB each way, the patched side with -async and the provider:
    byte-exact, and batches went to the lanes in paused jobs, every pause
    resumed."""
    (s_data, s_hash), (c_data, c_hash) = blobs
    res, st, logs = exchange(tmp_path, prefix, openssl35, module35, certs, side, ON[side],
                             s_data, c_data)
    print(side, "pipelined", pipelined(st), "async_batches", st.async_batches, "pauses",
          st.async_pauses, "resumes", st.async_resumes, "paused_ns", st.async_paused_ns)
    assert res.client.sha256 == s_hash, "server -> client data differs\n" + logs
    assert res.server.sha256 == c_hash, "client -> server data differs\n" + logs
    assert st.failed_batches == 0, st
    assert pipelined(st) > 0, st
    assert st.async_batches > 0, st
    assert st.async_pauses > 0, st
    # the CLI frees no paused connection: every pause was resumed
    assert st.async_resumes == st.async_pauses, st
    assert st.async_paused_ns > 0, st
    assert st.async_batches <= st.pipelined_batches, st


@pytest.mark.parametrize("side", ["server", "client"])
def test_cli_async_0_never_pauses(tmp_path, prefix, openssl35, module35, certs, blobs, side):
    """The same exchange with ASYNC = 0: still pipelined, inside ASYNC jobs,
    but no batch is posted and no job pauses."""
    (s_data, s_hash), (c_data, c_hash) = blobs
    res, st, logs = exchange(tmp_path, prefix, openssl35, module35, certs, side, 0,
                             s_data, c_data)
    assert res.client.sha256 == s_hash, "server -> client data differs\n" + logs
    assert res.server.sha256 == c_hash, "client -> server data differs\n" + logs
    assert st.failed_batches == 0, st
    assert pipelined(st) > 0, st
    assert st.async_batches == 0, st
    assert st.async_pauses == 0 and st.async_resumes == 0, st


def test_bad_async_value_refused(tmp_path, prefix, build35, module35):
    """ASYNC must be 0, 1 or 2: a bad value in openssl.cnf keeps the
    provider from coming up; the C suite's badconf shows the reason."""
    bad = tmp_path / "bad.cnf"
    async_conf(bad, module35, 7)
    proc = subprocess.run([str(build35 / "pt_prov_test"), "--conf", "params"],
                          capture_output=True, text=True, env=penv(prefix, bad), timeout=120)
    assert proc.returncode != 0 and "FAIL load" in proc.stdout, proc.stdout + proc.stderr
    good = tmp_path / "good.cnf"
    async_conf(good, module35, 1)
    proc = subprocess.run([str(build35 / "pt_prov_test"), "--conf", "params"],
                          capture_output=True, text=True, env=penv(prefix, good), timeout=120)
    assert proc.returncode == 0 and "param async 1\n" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run([str(build35 / "pt_prov_test"), str(module35), "badconf"],
                          capture_output=True, text=True, env=penv(prefix, None), timeout=120)
    assert proc.returncode == 0 and "ok badconf\n" in proc.stdout, proc.stdout


def test_c_suite_async(prefix, build35, module35):
    """Pipelines in ASYNC jobs, straight through EVP: outputs equal to the
    default provider's, pauses seen equal the counters (ASYNC 2, 1, 0), a
    context freed while its job is paused."""
    proc = subprocess.run([str(build35 / "pt_prov_test"), str(module35), "async"],
                          capture_output=True, text=True, env=penv(prefix, None), timeout=300)
    assert proc.returncode == 0 and "ok async\n" in proc.stdout, proc.stdout + proc.stderr


# ------------------------------------------------ non-blocking Connections

CHILD = REPO / "tests" / "support" / "async_provider_child.py"


def run_child(tmp_path, prefix, module35, certs, async_mode, n=16, size=512 * 1024,
              kind=None, mode=()):
    """support/async_provider_child.py on the patched build with the
    provider (ASYNC = async_mode; kind: a sanitizer build of it, the
    runtime preloaded into Python); returns (its JSON, the provider's
    stats)."""
    import json
    import sys

    stats = tmp_path / f"child-stats-{async_mode}-{len(mode)}.txt"
    conf = async_conf(tmp_path / f"child-{async_mode}-{len(mode)}.cnf", module35, async_mode)
    env = penv(prefix, conf, PIPETLS_OPENSSL=prefix, PIPETLS_STATS=stats,
               **sanitizer_env(kind))
    # the pytest process's import path, for the package under test
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, str(CHILD), str(certs.dir), str(n),
                           str(size), *mode], capture_output=True, text=True, env=env, timeout=600,
                          cwd=str(REPO / "tests"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, \
        proc.stderr[-6000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["libs"] and all(p.startswith(str(prefix)) for p in out["libs"]), out["libs"]
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, f"expected one stats block in {stats}\n{proc.stderr[-3000:]}"
    return out, blocks[0]


def test_nonblocking_connections_progress_while_paused(tmp_path, prefix, module35, certs):
    """16 TLS 1.3 connections (a round; repeated until a job paused), both ends non-blocking pipetls.Connections in
    one thread (one selectors loop), the server ends with async_mode on the
    provider: server calls raise WantAsync while their batch is on the
    lanes, and while one is paused other connections read and write (the
    loop's own event order shows it, no clock). Every byte arrives; each
    pause the loop saw is one the provider counted, and resumed."""
    out, st = run_child(tmp_path, prefix, module35, certs, 2)
    print("rounds", out["rounds"], "pauses", out["pauses"], "overlaps", out["overlaps"],
          "async_batches", st.async_batches, "async_pauses", st.async_pauses)
    assert out["tls"] == "TLSv1.3", out
    assert out["intact"], out
    assert out["pauses"] > 0, (out, st)
    assert out["pauses_by_clients"] == 0, out  # only async_mode connections pause
    assert out["overlaps"] >= 1, out
    assert out["resumes"] == out["pauses"], out
    assert st.async_pauses == out["pauses"] and st.async_resumes == st.async_pauses, (out, st)
    assert st.failed_batches == 0 and pipelined(st) > 0, st


def test_nonblocking_connections_async_0(tmp_path, prefix, module35, certs):
    """The same loop with ASYNC = 0: nothing raises WantAsync, nothing is
    counted as paused, the data still arrives through pipelined batches."""
    out, st = run_child(tmp_path, prefix, module35, certs, 0, n=4)
    assert out["intact"] and out["tls"] == "TLSv1.3", out
    assert out["pauses"] == 0 and out["resumes"] == 0, out
    assert st.async_pauses == 0 and st.async_batches == 0, st
    assert pipelined(st) > 0, st


def test_abandoned_jobs_no_leak(tmp_path, prefix, module35, certs):
    """200 TLS 1.3 connections over BIO pairs whose server write paused in
    the provider: half closed by close() (the job run to its end), half by
    SSL_free alone with the job paused (libssl frees the record layer's
    buffers, then the cipher context, which finishes the update on its own
    copy). The process has the same fds after as before, what arrived
    before a pause is intact, and the provider counts exactly the freed
    jobs' pauses as never resumed."""
    out, st = run_child(tmp_path, prefix, module35, certs, 2, n=200, size=64 * 1024,
                        mode=("abandon",))
    abandoned_checks(out, st)


def abandoned_checks(out, st):
    print("closed paused", out["closed_paused"], "freed paused", out["freed_paused"],
          "pauses", st.async_pauses, "resumes", st.async_resumes)
    assert out["fds_after"] == out["fds_before"], out
    assert out["intact"], out
    assert out["closed_paused"] > 0 and out["freed_paused"] > 0, out
    assert st.async_pauses - st.async_resumes == out["freed_paused"], (out, st)
    assert st.failed_batches == 0, st


# ------------------------------------------------------------ sanitizers

@pytest.mark.parametrize("kind", ["asan", "tsan"])
def test_async_sanitized(tmp_path, prefix, openssl35, module35, certs, kind):
    """The C suite's async test on a sanitizer build of the provider (leaks
    checked under ASan), then a 4 MiB each way -async exchange with the
    patched s_server on that build, then 8 non-blocking Connections in one
    loop on it."""
    module = module_for(prefix, module35, kind)
    env = sanitizer_env(kind)
    env.pop("LD_PRELOAD")  # pt_prov_test is instrumented itself
    if kind == "asan":
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
    proc = subprocess.run([str(module.parent / "pt_prov_test"), str(module), "async"],
                          capture_output=True, text=True, env=penv(prefix, None, **env),
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "ok async\n" in proc.stdout, out[-6000:]
    assert "Sanitizer" not in out and "runtime error" not in out, out[-6000:]
    data = os.urandom(4 * MIB), os.urandom(4 * MIB)
    res, st, logs = exchange(tmp_path, prefix, openssl35, module, certs, "server", 2,
                             data[0], data[1], kind=kind)
    assert res.client.sha256 == hashlib.sha256(data[0]).hexdigest(), logs
    assert res.server.sha256 == hashlib.sha256(data[1]).hexdigest(), logs
    assert "Sanitizer" not in logs and "runtime error" not in logs, logs
    assert st.async_pauses > 0 and st.async_resumes == st.async_pauses, st
    out, st = run_child(tmp_path, prefix, module, certs, 2, n=8, size=256 * 1024, kind=kind)
    assert out["intact"] and out["pauses"] > 0 and out["resumes"] == out["pauses"], out
    assert st.async_pauses == out["pauses"] and st.async_resumes == st.async_pauses, (out, st)
    out, st = run_child(tmp_path, prefix, module, certs, 2, n=40, size=64 * 1024, kind=kind,
                        mode=("abandon",))
    abandoned_checks(out, st)
