"""Every failure path of the Python API ends in an exception, never a crash.

Each case runs in a child process (``sys.executable -c ...``): a segfault,
a double free caught by glibc or ASan (``tox -e sanitize`` runs this file
with the sanitizer runtime preloaded, and children inherit it) or an abort
is a test failure that names the signal, not a dead test run.  Inside the
child, ``expect(Exc, fn, ...)`` requires exactly that exception class; the
child ends by checking OpenSSL's error queue is empty and printing a line
the parent looks for, so a child that dies or stops early fails the test.
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ALIVE = "pipetls-child-alive"

PRELUDE = r'''
import gc, os, socket, sys
import pipetls
from pipetls import _ffi, Connection, Context, Engine, handshake_pair, pump
from pipetls.errors import *
from pipetls.errors import MissingSymbolError
CERT, KEY, CA, ENGINE = sys.argv[1:5]
_raised = []

def expect(exc, fn, *args, **kwargs):
    """fn(*args, **kwargs) must raise exactly ``exc``."""
    try:
        fn(*args, **kwargs)
    except BaseException as e:  # noqa: B902 - we check the class below
        if type(e) is not exc:
            raise AssertionError("%r raised %s (%s), expected %s"
                                 % (fn, type(e).__name__, e, exc.__name__)) from e
        _raised.append(exc.__name__)
        return e
    raise AssertionError("%r did not raise %s" % (fn, exc.__name__))

def server_ctx(**kw):
    kw.setdefault("max_version", "TLSv1.2")
    return Context(server=True, certfile=CERT, keyfile=KEY, **kw)

def client_ctx(**kw):
    kw.setdefault("max_version", "TLSv1.2")
    return Context(cafile=CA, **kw)

def talk(s, c, data=b"still alive"):
    """A handshake and data both ways: the heap is still sound."""
    handshake_pair(s, c)
    c.write(data)
    s.feed(c.drain()) if s._rbio is not None else None
    assert s.read(100) == data
    s.write(data)
    c.feed(s.drain()) if c._rbio is not None else None
    assert c.read(100) == data

def fresh_pair():
    s, c = Connection.memory_pair(server_ctx(), client_ctx(), server_hostname="localhost")
    talk(s, c)
    s.close(); c.close()
'''

EPILOGUE = r'''
gc.collect()
fresh_pair()
gc.collect()
assert _ffi.ERR_peek_error() == 0, "OpenSSL error queue not empty: 0x%x" % _ffi.ERR_peek_error()
print("%s %s" % (ALIVE, ",".join(_raised)))
'''


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return "killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    if returncode >= 128 and returncode - 128 in signal.Signals._value2member_map_:
        return "exit %d (%s in a shell)" % (returncode, signal.Signals(returncode - 128).name)
    return "exit %d" % returncode


def run_child(body: str, certs, engine_path: str, python: str = sys.executable,
              timeout: float = 120, extra_env: dict | None = None) -> list[str]:
    """Run PRELUDE + body + EPILOGUE in a child; fail naming the signal if it
    dies.  Returns the exception class names the child's expect() saw."""
    code = (PRELUDE.replace("ALIVE", repr(ALIVE)) + textwrap.dedent(body)
            + EPILOGUE.replace("ALIVE", repr(ALIVE)))
    env = dict(os.environ, PIPETLS_ENGINE=engine_path, PYTHONDONTWRITEBYTECODE="1")
    env.update(extra_env or {})
    p = subprocess.run([python, "-c", code, str(certs.cert), str(certs.key), str(certs.ca),
                        engine_path], env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        pytest.fail("child %s\n--- stdout\n%s\n--- stderr\n%s"
                    % (_describe(p.returncode), p.stdout[-3000:], p.stderr[-6000:]))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(ALIVE)]
    assert lines, "the child did not reach its end:\n" + p.stdout[-3000:]
    return [n for n in lines[-1][len(ALIVE) + 1:].split(",") if n]


# --------------------------------------------------------------------------
# Connection constructors
# --------------------------------------------------------------------------
def test_memory_pair_client_without_server_hostname(certs, engine_path):
    # The reproducer: the client Connection raises after its BIO
    # half was made; it used to be freed twice (SIGSEGV).
    seen = run_child("""
        for _ in range(3):
            e = expect(ConfigError, Connection.memory_pair,
                       Context(server=True, verify=False), Context())
            assert e.knob == "server_hostname"
    """, certs, engine_path)
    assert seen == ["ConfigError"] * 3


def test_memory_pair_bad_arguments(certs, engine_path):
    seen = run_child("""
        srv, cli = server_ctx(), client_ctx()
        expect(ConfigTypeError, Connection.memory_pair, "not a context", cli)
        expect(ConfigTypeError, Connection.memory_pair, srv, object(), server_hostname="localhost")
        expect(ConfigTypeError, Connection.memory_pair, srv, cli, server_hostname=b"localhost")
        expect(ConfigError, Connection.memory_pair, srv, cli, bufsize=10)
        expect(ConfigError, Connection.memory_pair, srv, cli, bufsize=True)
        closed = client_ctx(); closed.close()
        expect(ClosedError, Connection.memory_pair, srv, closed, server_hostname="localhost")
        closed_srv = server_ctx(); closed_srv.close()
        expect(ClosedError, Connection.memory_pair, closed_srv, cli, server_hostname="localhost")
        s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
        talk(s, c)
    """, certs, engine_path)
    assert seen == ["ConfigTypeError"] * 3 + ["ConfigError"] * 2 + ["ClosedError"] * 2


def test_failed_constructor_leaves_the_bio_with_the_caller(certs, engine_path):
    # The BIO passed with bio= is still ours when the constructor raises:
    # freeing it must be the one and only free (ASan would see a second).
    seen = run_child("""
        for make in (lambda b: Connection(Context(), bio=b),                # check_hostname
                     lambda b: Connection(client_ctx(), bio=b, server_hostname=5),
                     lambda b: Connection(Context(), bio=(b, b))):
            b = _ffi.BIO_new(_ffi.BIO_s_mem())
            assert b
            try:
                make(b)
            except (ConfigError, ConfigTypeError) as e:
                _raised.append(type(e).__name__)
            else:
                raise AssertionError("no exception")
            gc.collect()
            assert _ffi.BIO_write(b, b"x", 1) == 1   # still alive, still ours
            assert _ffi.BIO_free(b) == 1
        # A successful one takes it: the SSL* frees it on close().
        b1, b2 = _ffi.BIO(), _ffi.BIO()
        assert _ffi.BIO_new_bio_pair(_ffi.ctypes.byref(b1), 1 << 16, _ffi.ctypes.byref(b2), 1 << 16)
        s = Connection(server_ctx(), bio=b1)
        c = Connection(client_ctx(), bio=b2.value, server_hostname="localhost")
        talk(s, c)
        s.close(); c.close(); s.close()
    """, certs, engine_path)
    assert seen == ["ConfigError", "ConfigTypeError", "ConfigError"]


def test_connection_wrong_types_and_values(certs, engine_path):
    seen = run_child("""
        cli = client_ctx()
        expect(ConfigTypeError, Connection, "ctx")
        expect(ConfigTypeError, Connection, None)
        expect(ConfigTypeError, Connection, cli, 5, server_hostname="localhost")
        expect(ConfigTypeError, Connection, cli, bio="x", server_hostname="localhost")
        expect(ConfigTypeError, Connection, cli, bio=1.5, server_hostname="localhost")
        expect(ConfigError, Connection, cli, bio=0, server_hostname="localhost")
        expect(ConfigError, Connection, cli, bio=(1, 2, 3), server_hostname="localhost")
        expect(ConfigError, Connection, cli, timeout=5, server_hostname="localhost")
        expect(ConfigTypeError, Connection, cli, server_hostname=5)
        with socket.socket() as sk:
            expect(ConfigError, Connection, cli, sk, bio=1, server_hostname="localhost")
            expect(ConfigTypeError, Connection, cli, sk, server_hostname="localhost", timeout="x")
            expect(ConfigError, Connection, cli, sk, server_hostname="localhost", timeout=-1)
        sk = socket.socket(); sk.close()
        expect(ClosedError, Connection, cli, sk, server_hostname="localhost")
    """, certs, engine_path)
    assert seen == (["ConfigTypeError"] * 5 + ["ConfigError"] * 3 + ["ConfigTypeError"]
                    + ["ConfigError", "ConfigTypeError", "ConfigError", "ClosedError"])


def test_connection_close_twice_and_use_after_close(certs, engine_path):
    seen = run_child("""
        s, c = Connection.memory_pair(server_ctx(), client_ctx(), server_hostname="localhost")
        talk(s, c)
        c.close(); c.close()
        assert c.closed
        ops = [lambda: c.read(1), lambda: c.readinto(bytearray(1)), lambda: c.write(b"x"),
               lambda: c.write(b""), lambda: c.sendall(b"x"), c.do_handshake, c.shutdown,
               lambda: c.max_pipelines, lambda: setattr(c, "max_pipelines", 2),
               lambda: c.read(0), c.fileno, lambda: c.handle, lambda: c.drain(),
               lambda: c.feed(b"x"), c.feed_eof, lambda: c.pending_out]
        for op in ops:
            expect(ClosedError, op)
        expect(ClosedError, handshake_pair, s, c)
        expect(ClosedError, pump, c, s, 10)
        s.close()
        del s, c
    """, certs, engine_path)
    assert seen == ["ClosedError"] * 18


def test_memory_io_misuse(certs, engine_path):
    seen = run_child("""
        s, c = Connection.memory_pair(server_ctx(), client_ctx(), server_hostname="localhost")
        m = Connection(client_ctx(), server_hostname="localhost")   # memory BIOs
        expect(ConfigError, m.drain, -1)
        expect(ConfigTypeError, m.drain, "all")
        expect(TypeError, m.feed, 123)
        expect(TypeError, m.readinto, b"read-only")
        expect(TypeError, m.write, "text is not bytes")
        expect(ConfigTypeError, m.read, "x")
        expect(ConfigError, m.read, -1)
        expect(PipetlsError, s.feed, b"x")      # a BIO-pair connection has no feed()
        m.close()
        talk(s, c)
    """, certs, engine_path)
    assert seen == (["ConfigError", "ConfigTypeError", "TypeError", "TypeError", "TypeError",
                     "ConfigTypeError", "ConfigError", "PipetlsError"])


def test_pump_and_handshake_pair_misuse(certs, engine_path):
    seen = run_child("""
        s, c = Connection.memory_pair(server_ctx(), client_ctx(), server_hostname="localhost")
        expect(ConfigTypeError, handshake_pair, s, "client")
        expect(ConfigTypeError, handshake_pair, s, c, max_rounds="many")
        expect(ConfigError, handshake_pair, s, c, max_rounds=0)
        handshake_pair(s, c)
        expect(ConfigTypeError, pump, "sender", s, 10)
        expect(ConfigError, pump, c, s, 10, read_size=0)      # used to spin for ever
        expect(ConfigError, pump, c, s, 10, write_size=-1)
        expect(ConfigTypeError, pump, c, s, 10, write_size=1.5)
        expect(ConfigError, pump, c, s, -1)
        expect(ConfigTypeError, pump, c, s, 10, on_data=5)
        expect(TypeError, pump, c, s, "text")
        assert pump(c, s, 100000) == 100000
        # a handshake that fails: the client does not trust the server
        s2, c2 = Connection.memory_pair(server_ctx(), Context(max_version="TLSv1.2"),
                                        server_hostname="localhost")
        expect(CertificateError, handshake_pair, s2, c2)
        expect(TLSError, c2.write, b"x")        # failed earlier: refused, not undefined
        s2.close(); c2.close()
    """, certs, engine_path)
    assert seen == (["ConfigTypeError"] * 2 + ["ConfigError", "ConfigTypeError"]
                    + ["ConfigError"] * 2 + ["ConfigTypeError", "ConfigError", "ConfigTypeError",
                                             "TypeError", "CertificateError", "TLSError"])


def test_closed_context_behind_a_live_connection(certs, engine_path):
    seen = run_child("""
        srv, cli = server_ctx(), client_ctx(alpn_protocols=["h2"], keylog_callback=lambda l: None)
        s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
        srv.close(); cli.close(); srv.close()
        del srv, cli
        gc.collect()
        talk(s, c)                      # each SSL* holds its own SSL_CTX reference
        s.close(); c.close()
        closed = client_ctx(); closed.close()
        expect(ClosedError, Connection, closed, server_hostname="localhost")
    """, certs, engine_path)
    assert seen == ["ClosedError"]


# --------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------
def test_context_constructor_failures(certs, engine_path, tmp_path):
    log = tmp_path / "keys.log"
    seen = run_child("""
        LOG = %r
        expect(OpenSSLError, Context, server=True, certfile="/nonexistent.pem")
        expect(OpenSSLError, Context, server=True, certfile=CERT, keyfile=CA)   # key mismatch
        expect(ConfigTypeError, Context, server=True, certfile=5)
        expect(OpenSSLError, Context, cafile="/nonexistent.pem")
        expect(ConfigError, Context, ciphers="NO-SUCH-CIPHER")
        expect(ConfigTypeError, Context, ciphers=5)
        expect(ConfigError, Context, ciphersuites="NOPE")
        expect(ConfigError, Context, max_pipelines=99)
        expect(ConfigTypeError, Context, max_pipelines="8")
        expect(ConfigError, Context, min_version="TLSv9")
        expect(ConfigError, Context, min_version="TLSv1.3", max_version="TLSv1.2")
        expect(ConfigTypeError, Context, alpn_protocols="h2")
        expect(ConfigTypeError, Context, alpn_protocols=[1])
        expect(ConfigTypeError, Context, alpn_protocols=5)
        expect(ConfigError, Context, alpn_protocols=[""])
        expect(ConfigTypeError, Context, engine="yes")
        expect(ConfigTypeError, Context, server=2)
        expect(ConfigError, Context, server=True, check_hostname=True)
        expect(ConfigTypeError, Context, keylog_callback=5)
        # the keylog file is opened, then a later knob fails: both freed
        expect(ConfigError, Context, keylog_file=LOG, max_pipelines=0)
        expect(ConfigError, Context, split_send_fragment=100)
    """ % str(log), certs, engine_path)
    assert seen == (["OpenSSLError"] * 2 + ["ConfigTypeError", "OpenSSLError", "ConfigError",
                     "ConfigTypeError", "ConfigError", "ConfigError", "ConfigTypeError",
                     "ConfigError", "ConfigError"] + ["ConfigTypeError"] * 3
                    + ["ConfigError", "ConfigTypeError", "ConfigTypeError", "ConfigError",
                       "ConfigTypeError", "ConfigError", "ConfigError"])


def test_context_close_twice_and_use_after_close(certs, engine_path):
    seen = run_child("""
        ctx = server_ctx()
        ctx.close(); ctx.close()
        assert ctx.closed
        ops = [lambda: ctx.handle, lambda: ctx.set_ciphers("AES128-SHA"),
               lambda: ctx.load_cert_chain(CERT, KEY), lambda: ctx.load_verify_locations(CA),
               lambda: ctx.verify, lambda: setattr(ctx, "verify", False),
               lambda: ctx.max_pipelines, lambda: setattr(ctx, "max_pipelines", 4),
               lambda: ctx.read_ahead, lambda: ctx.set_versions("TLSv1.2"),
               lambda: ctx.options, lambda: ctx.set_alpn_protocols(["h2"]),
               lambda: ctx.set_keylog(callback=print), lambda: ctx.encrypt_then_mac,
               lambda: ctx.set_pipelining(4)]
        for op in ops:
            expect(ClosedError, op)
        with client_ctx() as c2:
            pass
        expect(ClosedError, lambda: c2.versions)
    """, certs, engine_path)
    assert seen == ["ClosedError"] * 16


# --------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------
def test_engine_constructor_failures(certs, engine_path):
    seen = run_child("""
        expect(EngineError, Engine, "/nonexistent/pipetls.so")
        expect(EngineError, Engine, CERT)                # a file, not a library
        expect(EngineError, Engine, "/usr/lib/x86_64-linux-gnu/libz.so.1"
               if os.path.exists("/usr/lib/x86_64-linux-gnu/libz.so.1") else CA)
        expect(ConfigTypeError, Engine, 123)
        expect(ConfigError, Engine, ENGINE, threads=0)
        expect(ConfigTypeError, Engine, ENGINE, threads="4")
        expect(ConfigError, Engine, ENGINE, inline_below=-1)
        e = Engine(ENGINE)
        expect(EngineError, Engine, ENGINE)              # one ENGINE per library
        e.close(); e.close()
        e2 = Engine(ENGINE, threads=2)                   # loads again after close
        assert e2.threads == 2
        e2.close()
    """, certs, engine_path)
    assert seen == (["EngineError"] * 3 + ["ConfigTypeError", "ConfigError", "ConfigTypeError",
                                           "ConfigError", "EngineError"])


def test_engine_close_twice_and_use_after_close(certs, engine_path):
    seen = run_child("""
        e = Engine(ENGINE, register=True)
        e.close(); e.close()
        assert e.closed and not e.registered
        ops = [lambda: e.handle, e.stats, e.stats_text, e.reset_stats, e.info,
               e.register_default, e.unregister, lambda: e.threads,
               lambda: setattr(e, "threads", 2), lambda: e.inline_below,
               lambda: e.set_stats_file("-"), lambda: e.offers("AES-128-GCM"),
               lambda: e.id, lambda: e.name]
        for op in ops:
            expect(ClosedError, op)
    """, certs, engine_path)
    assert seen == ["ClosedError"] * 14


def test_unloaded_engine_behind_a_live_context(certs, engine_path):
    seen = run_child("""
        e = Engine(ENGINE, register=True)
        srv, cli = server_ctx(engine=e, max_pipelines=4), client_ctx(engine=e, max_pipelines=4)
        s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
        handshake_pair(s, c)            # keyed with the engine's ciphers
        e.close()
        gc.collect()
        assert pump(c, s, 1 << 20) == 1 << 20     # the cipher contexts hold the engine
        s2, c2 = Connection.memory_pair(srv, cli, server_hostname="localhost")
        talk(s2, c2)                    # new connections: stock ciphers, still working
        expect(ClosedError, Context, engine=e)
        for x in (s, c, s2, c2, srv, cli):
            x.close()
        e3 = pipetls.load_engine(ENGINE, register=True)
        assert e3.registered
    """, certs, engine_path)
    assert seen == ["ClosedError"]


# --------------------------------------------------------------------------
# stdlib.enable_pipelining
# --------------------------------------------------------------------------
def test_enable_pipelining_failures(certs, engine_path):
    seen = run_child("""
        import ssl
        from pipetls import enable_pipelining, stdlib
        expect(stdlib.NotAnSSLContext, enable_pipelining, Context())
        expect(stdlib.NotAnSSLContext, enable_pipelining, "ctx")
        sc = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        expect(ConfigError, enable_pipelining, sc, max_pipelines=0)
        expect(ConfigTypeError, enable_pipelining, sc, max_pipelines="8")
        expect(ConfigError, enable_pipelining, sc, split_send_fragment=100)
        expect(StdlibError, enable_pipelining, sc, engine="pipetls")
        closed = Engine(ENGINE); closed.close()
        expect(ClosedError, enable_pipelining, sc, engine=closed)
        # A wrong guess of where the SSL_CTX is must refuse, never crash:
        # unmapped, misaligned, NULL-ish, another Python object, freed memory.
        real = stdlib._read_candidate_pointer
        junk = bytearray(4096)
        for bad in (0xdeadbeef000, 0x10, 0x7, id(sc), id(junk), id(sc) + 8,
                    (1 << 47) - 8, (1 << 64) - 8):
            stdlib._read_candidate_pointer = lambda ctx, b=bad: b
            expect(StdlibError, enable_pipelining, sc)
        stdlib._read_candidate_pointer = lambda ctx: 0
        expect(StdlibError, enable_pipelining, sc)
        stdlib._read_candidate_pointer = real
        # Without /proc/self/mem nothing can be validated: refuse, never guess.
        real_open = stdlib.os.open
        def no_proc(path, *a, **k):
            if path == "/proc/self/mem":
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, *a, **k)
        stdlib.os.open = no_proc
        e = expect(StdlibError, enable_pipelining, sc)
        assert "/proc/self/mem" in str(e)
        stdlib.os.open = real_open
        applied = enable_pipelining(sc, max_pipelines=4)
        assert applied.max_pipelines == 4
        class Sub(ssl.SSLContext):      # a subclass: same layout at the start
            pass
        assert enable_pipelining(Sub(ssl.PROTOCOL_TLS_SERVER)).ssl_ctx
    """, certs, engine_path)
    assert seen == (["NotAnSSLContext"] * 2 + ["ConfigError", "ConfigTypeError", "ConfigError",
                                               "StdlibError", "ClosedError"]
                    + ["StdlibError"] * 10)


# The interpreters here that can import this package (3.9+); each runs the
# stdlib probe for real.  Another Python may link another libssl: then the
# package must refuse (invariant 7), which is an outcome this test accepts
# only with that reason.
def _local_pythons() -> list[str]:
    found = {os.path.realpath(sys.executable): sys.executable}
    for pattern in ("/root/.pyenv/versions/3.*/bin/python3", "/usr/bin/python3.*",
                    "/usr/local/bin/python3.*"):
        for p in sorted(glob.glob(pattern)):
            if os.access(p, os.X_OK) and not p.endswith("-config"):
                found.setdefault(os.path.realpath(p), p)
    out = []
    for p in found.values():
        r = subprocess.run([p, "-c", "import sys, platform; print(sys.version_info >= (3, 9), "
                            "platform.python_version())"], capture_output=True, text=True,
                           timeout=30)
        ok, _, version = r.stdout.strip().partition(" ")
        if ok == "True":
            out.append(pytest.param(p, id="%s-%s" % (version, p.strip("/").replace("/", "_"))))
    return out


PROBE = r'''
import ssl
from pipetls import enable_pipelining, stdlib, StdlibError
print("python", sys.version.split()[0], ssl.OPENSSL_VERSION, file=sys.stderr)
if not _ffi.stdlib_shares_openssl():
    expect(StdlibError, enable_pipelining, ssl.create_default_context())
    print("REFUSED-OTHER-LIBSSL")
else:
    # wrong guesses first, then the real one, then a pipelined stdlib connection
    real = stdlib._read_candidate_pointer
    for bad in (0xdeadbeef000, 0x10):
        stdlib._read_candidate_pointer = lambda ctx, b=bad: b
        expect(StdlibError, enable_pipelining, ssl.create_default_context())
    stdlib._read_candidate_pointer = real
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(CERT, KEY)
    sctx.maximum_version = ssl.TLSVersion.TLSv1_2
    cctx = ssl.create_default_context(cafile=CA)
    cctx.maximum_version = ssl.TLSVersion.TLSv1_2
    a = enable_pipelining(sctx, max_pipelines=4)
    b = enable_pipelining(cctx, max_pipelines=4)
    assert a.ssl_ctx and b.ssl_ctx and a.ssl_ctx != b.ssl_ctx
    bios = [ssl.MemoryBIO() for _ in range(4)]
    srv = sctx.wrap_bio(bios[0], bios[1], server_side=True)
    cli = cctx.wrap_bio(bios[2], bios[3], server_hostname="localhost")
    for _ in range(20):
        for o in (cli, srv):
            try:
                o.do_handshake()
            except ssl.SSLWantReadError:
                pass
        bios[0].write(bios[3].read()); bios[2].write(bios[1].read())
    assert cli.version() == "TLSv1.2"
    data = b"x" * 100000
    cli.write(data)
    bios[0].write(bios[3].read())
    got = b""
    while len(got) < len(data):
        got += srv.read(1 << 20)
    assert got == data
    print("PIPELINED", file=sys.stderr)
'''


@pytest.mark.parametrize("python", _local_pythons(), ids=os.path.basename)
def test_stdlib_probe_on_each_local_python(python, certs, engine_path):
    env = {}
    if python != sys.executable:
        # The package under test, seen from the other interpreter (pure
        # Python; the engine comes through PIPETLS_ENGINE).
        import pipetls

        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(pipetls.__file__))
    seen = run_child(PROBE, certs, engine_path, python=python, extra_env=env)
    assert seen in (["StdlibError", "StdlibError"], ["StdlibError"])


# --------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------
def _cli(*args: str, engine_path: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIPETLS_ENGINE=engine_path, COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "pipetls", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["connect-refused", "info-no-engine", "serve-bad-cert",
                                  "connect-bad-knob"])
def test_cli_failures_are_messages(case, certs, engine_path):
    args = {
        "connect-refused": ["connect", "--port", str(_closed_port()), "--insecure",
                            "--no-engine"],
        "info-no-engine": ["info", "--engine", "/nonexistent/pipetls.so"],
        "serve-bad-cert": ["serve", "--port", "0", "--cert", "/nonexistent.pem", "--no-engine"],
        "connect-bad-knob": ["connect", "--port", str(_closed_port()), "--insecure",
                             "--no-engine", "--max-pipelines", "99"],
    }[case]
    p = _cli(*args, engine_path=engine_path)
    assert p.returncode == 1, "%s: %s\n%s" % (case, _describe(p.returncode), p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    out = p.stderr + p.stdout
    want = {"connect-refused": "refused", "info-no-engine": "no such file",
            "serve-bad-cert": "cannot load certificate chain",
            "connect-bad-knob": "max_pipelines=99 is out of range"}[case]
    assert want in out.replace("\n", " "), out
