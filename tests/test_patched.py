"""The patched OpenSSL 3.5 (openssl_patches/): pipelining from openssl.cnf.

Patch 0001 adds the SSL_CONF commands MaxPipelines, SplitSendFragment,
MaxSendFragment and ReadBufferLength, so a program that never calls
``SSL_CTX_set_max_pipelines`` pipelines when ``OPENSSL_CONF`` points at a
configuration that loads the pipetls engine and sets ``MaxPipelines = 8`` in
the ``system_default`` section.  Here the unmodified programs are the patched
build's own ``openssl s_server`` (no pipelining option on its command line)
and Python's ``ssl`` module running on the patched libssl.  Engine statistics
(``PIPETLS_STATS``) prove batches of more than one record.

Invariant 7 (DESIGN.md): the patched OpenSSL runs only in processes of its
own: every process here gets ``LD_LIBRARY_PATH=<prefix>/lib`` and the tests
check, from /proc/<pid>/maps, that it mapped no other libssl/libcrypto.  The
pytest process itself never loads the patched libraries.

The prefix (the ``prefix`` fixture of conftest.py, support.patched):
``$PIPETLS_PATCHED_PREFIX``; else, with
``PIPETLS_PATCHED_REQUIRED=1`` (what ``tox -e patched`` sets) the output of
``python3 openssl_patches/build.py`` (instant when the cache holds the
build).  Without either, the tests are skipped; with
``PIPETLS_PATCHED_REQUIRED=1`` a missing or broken build fails them.

The engine (``engine35``): ``$PIPETLS_PATCHED_ENGINE`` if set, else the
``engine_path`` fixture (the pipetls.so built against the system's OpenSSL 3.0 headers): an
ENGINE built against 3.0 loads into 3.5 (same ``libcrypto.so.3`` ABI and
dynamic-engine version), which ``test_engine_built_for_30_loads_into_35``
checks.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.net import free_port, wait_listening
from support.patched import assert_only_patched, mapped_ssl_libs, penv
from support.peers import stream_exchange
from support.stats import read_stats_file

pytestmark = pytest.mark.patched

MIB = 1 << 20
BULK = 16 * MIB
TOKEN = b"go\n"
TLS12_GCM = ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]


# ------------------------------------------------------------------ helpers

def write_conf(path: Path, engine: str, tls_lines=(), diagnostics: bool = True,
               engine_loaded: bool = True) -> Path:
    """An openssl.cnf: load the pipetls engine for all ciphers, and apply
    ``tls_lines`` (SSL_CONF commands) to every SSL_CTX (system_default)."""
    lines = []
    if diagnostics:
        lines.append("config_diagnostics = 1")
    lines += ["openssl_conf = openssl_init", "", "[openssl_init]"]
    if engine_loaded:
        lines.append("engines = engine_section")
    if tls_lines:  # an empty section is a configuration error
        lines.append("ssl_conf = ssl_module")
    lines.append("")
    if engine_loaded:
        lines += ["[engine_section]", "pipetls = pipetls_section", "",
                  "[pipetls_section]", "engine_id = pipetls",
                  f"dynamic_path = {engine}", "init = 1",
                  "default_algorithms = CIPHERS", ""]
    if tls_lines:
        lines += ["[ssl_module]", "system_default = tls_system_default", "",
                  "[tls_system_default]", *tls_lines, ""]
    path.write_text("\n".join(lines))
    return path


def pipelined(st) -> int:
    return sum(n for k, n in st.hist.items() if k > 1)


def s_server_argv(openssl, certs, port, *extra):
    return [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
            "-quiet", "-cert", certs.cert, "-key", certs.key, *TLS12_GCM, *extra]


def s_client_argv(openssl, certs, port, *extra):
    return [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
            "-CAfile", certs.ca, "-verify_return_error", *TLS12_GCM, *extra]


def s_server_run(tmp_path, prefix, openssl, certs, conf, *, server_send=b"",
                 client_send=TOKEN):
    """The patched s_server (OPENSSL_CONF=conf, engine statistics on) against
    the patched s_client with an empty configuration (no engine, no
    pipelining). Returns (stats block of the server, StreamResult)."""
    port = free_port()
    stats = tmp_path / f"stats-{port}.txt"
    res = stream_exchange(
        s_server_argv(openssl, certs, port), s_client_argv(openssl, certs, port),
        port=port, server_send=server_send, client_send=client_send,
        server_env=penv(prefix, conf, PIPETLS_STATS=stats),
        client_env=penv(prefix, None), timeout=180)
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    assert res.server.sha256 == hashlib.sha256(client_send).hexdigest(), logs
    assert res.client.sha256 == hashlib.sha256(server_send).hexdigest(), logs
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, f"expected one stats block in {stats}\n{logs}"
    st = blocks[0]
    assert st.failed_batches == 0, st
    return st, res


# --------------------------------------------------------------------- tests

def test_patch_adds_the_conf_commands(tmp_path, prefix, openssl35):
    """SSL_CONF_cmd knows MaxPipelines & co. on the patched libssl, with the
    API's ranges; the system's stock libssl (control) does not know them."""
    script = textwrap.dedent("""
        import ctypes, ctypes.util, sys
        ssl = ctypes.CDLL(sys.argv[1])
        ssl.TLS_method.restype = ctypes.c_void_p
        ssl.SSL_CTX_new.restype = ctypes.c_void_p
        ssl.SSL_CTX_new.argtypes = [ctypes.c_void_p]
        ssl.SSL_CONF_CTX_new.restype = ctypes.c_void_p
        ssl.SSL_CONF_CTX_set_ssl_ctx.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        ssl.SSL_CONF_CTX_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        ssl.SSL_CONF_cmd.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        ctx = ssl.SSL_CTX_new(ssl.TLS_method())
        cctx = ssl.SSL_CONF_CTX_new()
        ssl.SSL_CONF_CTX_set_ssl_ctx(cctx, ctx)
        ssl.SSL_CONF_CTX_set_flags(cctx, 0x2 | 0x4 | 0x8)  # FILE|CLIENT|SERVER
        for cmd, value in [("MaxPipelines", "8"), ("MaxPipelines", "0"),
                           ("MaxPipelines", "33"), ("MaxSendFragment", "512"),
                           ("MaxSendFragment", "16385"), ("SplitSendFragment", "512"),
                           ("SplitSendFragment", "513"), ("ReadBufferLength", "65536"),
                           ("ReadBufferLength", "-1")]:
            print(cmd, value, ssl.SSL_CONF_cmd(cctx, cmd.encode(), value.encode()))
    """)
    expected = {"MaxPipelines 8": 2, "MaxPipelines 0": 0, "MaxPipelines 33": 0,
                "MaxSendFragment 512": 2, "MaxSendFragment 16385": 0,
                "SplitSendFragment 512": 2, "SplitSendFragment 513": 0,
                "ReadBufferLength 65536": 2, "ReadBufferLength -1": 0}

    def results(libssl, env):
        proc = subprocess.run([sys.executable, "-c", script, libssl],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return {" ".join(line.split()[:2]): int(line.split()[2])
                for line in proc.stdout.splitlines()}

    assert results(str(prefix / "lib" / "libssl.so.3"), penv(prefix, None)) == expected
    # control: the system's libssl (its own process) has no such commands (-2)
    stock_env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    stock_env["OPENSSL_CONF"] = os.devnull
    stock = results("libssl.so.3", stock_env)
    assert set(stock.values()) == {-2}, stock


def test_engine_built_for_30_loads_into_35(prefix, openssl35, engine35):
    """The engine loads into the patched 3.5 openssl, and the process maps
    only the patched libraries (invariant 7)."""
    proc = subprocess.run([openssl35, "engine", "-t", "-c", engine35],
                          capture_output=True, text=True, timeout=60,
                          env=penv(prefix, None))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(pipetls)" in proc.stdout and "[ available ]" in proc.stdout, proc.stdout
    assert "AES-128-GCM" in proc.stdout or "id-aes128-GCM" in proc.stdout, proc.stdout


@pytest.mark.parametrize("direction", ["read", "write"])
def test_s_server_pipelines_from_config(tmp_path, prefix, openssl35, engine35,
                                        certs, direction):
    """Patched s_server, no pipelining option: MaxPipelines = 8 in openssl.cnf
    makes it pipeline. read: the client sends 16 MiB (read_ahead follows
    from MaxPipelines); write: the server sends 16 MiB in 16 KiB writes, split
    into 4 records by SplitSendFragment = 4096."""
    lines = ["MaxPipelines = 8"]
    if direction == "write":
        lines.append("SplitSendFragment = 4096")
    conf = write_conf(tmp_path / "pipe.cnf", engine35, lines)
    data = os.urandom(BULK)
    if direction == "read":
        st, _ = s_server_run(tmp_path, prefix, openssl35, certs, conf,
                             client_send=data)
    else:
        st, _ = s_server_run(tmp_path, prefix, openssl35, certs, conf,
                             server_send=data)
    assert st.bytes >= BULK, st
    assert st.pipelined_batches > 0, st
    assert pipelined(st) == st.pipelined_batches, st
    assert max(st.hist) <= 8, st
    if direction == "write":
        # s_server writes what it reads from stdin, up to 16 KiB a call; with
        # the 4096-byte split a full write is a batch of 4 records
        assert st.hist.get(4, 0) > 0, st


@pytest.mark.parametrize("direction", ["read", "write"])
def test_s_server_control_without_maxpipelines(tmp_path, prefix, openssl35,
                                               engine35, certs, direction):
    """Control: the same engine configuration without the MaxPipelines line
    (SplitSendFragment alone does nothing without pipelines): the engine does
    all the records, one at a time."""
    conf = write_conf(tmp_path / "nopipe.cnf", engine35,
                      ["SplitSendFragment = 4096"] if direction == "write" else [])
    data = os.urandom(BULK)
    kw = {"client_send": data} if direction == "read" else {"server_send": data}
    st, _ = s_server_run(tmp_path, prefix, openssl35, certs, conf, **kw)
    assert st.bytes >= BULK, st
    assert st.pipelined_batches == 0, st
    assert set(st.hist) <= {1}, st


@pytest.mark.parametrize("line, message", [
    ("MaxPipelines = 33", "MaxPipelines must be a number from 1 to 32"),
    ("MaxPipelines = 0", "MaxPipelines must be a number from 1 to 32"),
    ("MaxPipelines = eight", "MaxPipelines must be a number from 1 to 32"),
    ("MaxSendFragment = 511", "MaxSendFragment must be a number from 512 to 16384"),
    ("SplitSendFragment = 16385", "SplitSendFragment must be a number from 1 to 16384"),
    ("ReadBufferLength = -1", "ReadBufferLength must be a number from 0 to"),
])
def test_out_of_range_fails_at_startup(tmp_path, prefix, openssl35, engine35,
                                       certs, line, message):
    """An out-of-range value makes s_server fail at startup (SSL_CTX_new)
    with an error naming the command and its range."""
    conf = write_conf(tmp_path / "bad.cnf", engine35, [line])
    port = free_port()
    proc = subprocess.run(s_server_argv(openssl35, certs, port), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env=penv(prefix, conf))
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "cmd=" + line.split()[0] in proc.stderr, proc.stderr


def test_in_range_control_starts(tmp_path, prefix, openssl35, engine35, certs):
    """Control for the startup failures: the extreme valid values start."""
    conf = write_conf(tmp_path / "edge.cnf", engine35,
                      ["MaxSendFragment = 512", "SplitSendFragment = 512",
                       "MaxPipelines = 32", "ReadBufferLength = 0"])
    port = free_port()
    srv = subprocess.Popen(s_server_argv(openssl35, certs, port),
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=penv(prefix, conf))
    try:
        wait_listening(port, 20.0, srv)
        assert_only_patched(mapped_ssl_libs(srv.pid), prefix)
    finally:
        srv.kill()
        _, err = srv.communicate(timeout=10)
    assert b"must be a number" not in err, err


def test_out_of_range_ignored_without_diagnostics(tmp_path, prefix, openssl35,
                                                  engine35, certs):
    """OpenSSL's rule for the system default section: without
    config_diagnostics a bad command is skipped, not fatal. The server then
    starts and does not pipeline (why our configurations set it)."""
    conf = write_conf(tmp_path / "bad-quiet.cnf", engine35, ["MaxPipelines = 33"],
                      diagnostics=False)
    st, _ = s_server_run(tmp_path, prefix, openssl35, certs, conf,
                         client_send=os.urandom(2 * MIB))
    assert st.pipelined_batches == 0, st


# ------------------------------------------------------ Python's ssl module

PY_PEER = r'''
import hashlib, os, random, socket, ssl, sys

role, port, size, certdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
libs = set()
with open("/proc/self/maps") as f:
    for line in f:
        path = line.split(None, 5)[-1].strip()
        if "/libssl.so" in path or "/libcrypto.so" in path:
            libs.add(path)
print("VERSION", ssl.OPENSSL_VERSION, flush=True)
print("LIBS", " ".join(sorted(libs)), flush=True)
up = random.Random(1).randbytes(size)      # client -> server
down = random.Random(2).randbytes(size)    # server -> client

def recv_exactly(s, n):
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = s.recv_into(view[got:], min(n - got, 1 << 20))
        if k == 0:
            raise EOFError(f"EOF after {got} of {n} bytes")
        got += k
    return bytes(buf)

if role == "server":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(certdir, "server.pem"),
                        os.path.join(certdir, "server.key"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    with socket.create_server(("127.0.0.1", port)) as ls:
        print("LISTENING", flush=True)
        conn, _ = ls.accept()
        with ctx.wrap_socket(conn, server_side=True) as s:
            got = recv_exactly(s, size)
            assert got == up, "server: data from the client differs"
            s.sendall(down)
            s.unwrap()
else:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certdir, "ca.pem"))
    with socket.create_connection(("127.0.0.1", port)) as conn:
        with ctx.wrap_socket(conn, server_hostname="localhost") as s:
            s.sendall(up)
            got = recv_exactly(s, size)
            assert got == down, "client: data from the server differs"
            try:
                s.unwrap()
            except (ssl.SSLError, OSError):
                pass
print("OK", flush=True)
'''


def python_ssl_run(tmp_path, prefix, certs, conf, size=BULK):
    """Python's ssl on the patched libssl: a server with OPENSSL_CONF=conf and
    engine statistics, a client (another process) with an empty config. Both
    move ``size`` bytes each way. Returns (server stats block, server stdout)."""
    script = tmp_path / "py_peer.py"
    script.write_text(PY_PEER)
    port = free_port()
    stats = tmp_path / f"py-stats-{port}.txt"
    server = subprocess.Popen(
        [sys.executable, script, "server", str(port), str(size), str(certs.dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL, env=penv(prefix, conf, PIPETLS_STATS=stats))
    try:
        wait_listening(port, 30.0, server)
        client = subprocess.run(
            [sys.executable, script, "client", str(port), str(size), str(certs.dir)],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
            env=penv(prefix, None))
        sout, serr = server.communicate(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    logs = (f"--- server rc={server.returncode}\n{sout}{serr}\n"
            f"--- client rc={client.returncode}\n{client.stdout}{client.stderr}")
    assert server.returncode == 0 and client.returncode == 0, logs
    for out in (sout, client.stdout):
        version = re.search(r"^VERSION (.*)$", out, re.M).group(1)
        assert version.startswith("OpenSSL 3.5."), logs
        libs = set(re.search(r"^LIBS ?(.*)$", out, re.M).group(1).split())
        assert_only_patched(libs, prefix)
        assert "OK" in out.split(), logs
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, f"expected one stats block in {stats}\n{logs}"
    assert blocks[0].failed_batches == 0, blocks[0]
    return blocks[0], sout


def test_python_ssl_pipelines_from_config(tmp_path, prefix, openssl35, engine35, certs):
    """Python's own ssl module, unmodified, on the patched libssl: with
    MaxPipelines = 8 from OPENSSL_CONF the server pipelines both its reads
    and its writes (sendall of 16 MiB: batches of 8 records)."""
    conf = write_conf(tmp_path / "py.cnf", engine35, ["MaxPipelines = 8"])
    st, _ = python_ssl_run(tmp_path, prefix, certs, conf)
    assert st.bytes >= 2 * BULK, st
    assert st.pipelined_batches > 0, st
    # a 16 MiB SSL_write with 8 pipelines of 16 KiB records: full batches
    assert st.hist.get(8, 0) >= BULK // (8 * (16 << 10)) // 2, st


def test_python_ssl_control_without_maxpipelines(tmp_path, prefix, openssl35,
                                                 engine35, certs):
    """Control: the engine is loaded the same way, no MaxPipelines line: no
    batch of more than one record."""
    conf = write_conf(tmp_path / "py-nopipe.cnf", engine35, [])
    st, _ = python_ssl_run(tmp_path, prefix, certs, conf)
    assert st.bytes >= 2 * BULK, st
    assert st.pipelined_batches == 0, st


def test_python_ssl_out_of_range_fails(tmp_path, prefix, openssl35, engine35):
    """Python's ssl.SSLContext() fails at startup on an out-of-range value
    (ssl.SSLError "error in system default config")."""
    conf = write_conf(tmp_path / "py-bad.cnf", engine35, ["MaxPipelines = 64"])
    code = "import ssl\nssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nprint('created')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60, env=penv(prefix, conf))
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "created" not in proc.stdout
    # Python reports the last error of the queue: SSL_CTX_new's
    assert "SSLError" in proc.stderr, proc.stderr
    assert "error in system default config" in proc.stderr, proc.stderr
    # control: a valid value
    conf_ok = write_conf(tmp_path / "py-ok.cnf", engine35, ["MaxPipelines = 32"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60, env=penv(prefix, conf_ok))
    assert proc.returncode == 0 and "created" in proc.stdout, proc.stderr
