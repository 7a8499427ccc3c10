"""Bad input at every API: each gives a clear error or works -- never a
crash, never a hang.

* pipelining knobs out of range and of the wrong type (Context, Connection);
* an engine path that does not exist, is a directory, an empty file, a text
  file, an ELF program, a shared library that is not an engine;
* bad control values: THREADS / INLINE_BELOW out of range or not numbers,
  unknown commands, the STATS buffer protocol at its edges (through pipetls,
  through raw ENGINE_ctrl, through ``openssl engine -pre``);
* bad EVP-level ctrls on the engine's ciphers that test_engine_evp.py does
  not cover (AAD of the wrong size, a record too short for its tag, pipe
  counts of 0 / -1, NULL arrays, unknown ctrls) -- in a child process, so a
  crash there is seen as a crash and not taken for a failure;
* use after close, write after shutdown, reads after close_notify;
* a 1 GiB write in one call over a real socket, and zero-length writes.

"Clear error" means a pipetls exception (or TypeError / ValueError /
OSError for plain Python misuse) whose message names the problem -- not an
AttributeError from deep inside, not a segfault.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import time

import pytest

import pipetls
from pipetls import _ffi
from support.proof import (SUITES, Knobs, PtServer, pt_connect, pt_context, run_isolated)
from support.peers import OPENSSL
from support.badinput import zero_length_ssl_write_ex

CLEAR = (pipetls.PipetlsError, TypeError, ValueError, OSError)
GIB = 1 << 30


@pytest.fixture(scope="module")
def engine(engine_path):
    return pipetls.load_engine(engine_path, register=True)


def assert_clear(exc_info, *words):
    """The exception is one of the clear kinds and names the problem."""
    e = exc_info.value
    assert isinstance(e, CLEAR) and not isinstance(e, AttributeError), repr(e)
    text = str(e).lower()
    for w in words:
        assert w.lower() in text, f"{w!r} not in {str(e)!r}"


# ------------------------------------------------------------------ knobs

BAD_KNOBS = [
    ("max_pipelines", 0, pipetls.ConfigError, "1..32"),
    ("max_pipelines", 33, pipetls.ConfigError, "1..32"),
    ("max_pipelines", -1, pipetls.ConfigError, "1..32"),
    ("max_pipelines", 2 ** 64, pipetls.ConfigError, "1..32"),
    ("max_pipelines", "4", pipetls.ConfigTypeError, "int"),
    ("max_pipelines", 4.0, pipetls.ConfigTypeError, "int"),
    ("max_pipelines", True, pipetls.ConfigTypeError, "int"),
    ("split_send_fragment", 511, pipetls.ConfigError, "512"),
    ("split_send_fragment", 16385, pipetls.ConfigError, "max_send_fragment"),
    ("split_send_fragment", 0, pipetls.ConfigError, "512"),
    ("split_send_fragment", "x", pipetls.ConfigTypeError, "int"),
    ("max_send_fragment", 511, pipetls.ConfigError, "512"),
    ("max_send_fragment", 16385, pipetls.ConfigError, "16384"),
    ("default_read_buffer_len", -1, pipetls.ConfigError, "default_read_buffer_len"),
    ("default_read_buffer_len", GIB + 1, pipetls.ConfigError, "2**30"),
    ("default_read_buffer_len", "1M", pipetls.ConfigTypeError, "int"),
    ("default_read_buffer_len", 1.0, pipetls.ConfigTypeError, "int"),
    ("encrypt_then_mac", "yes", pipetls.ConfigTypeError, "bool"),
    ("encrypt_then_mac", 2, pipetls.ConfigTypeError, "bool"),
    ("read_ahead", "no", pipetls.ConfigTypeError, "bool"),
]


@pytest.mark.parametrize("knob,value,exc,words", BAD_KNOBS,
                         ids=[f"{k}={v!r}" for k, v, *_ in BAD_KNOBS])
def test_bad_knob_on_context_and_connection(knob, value, exc, words):
    with pytest.raises(exc) as ei:
        pipetls.Context(server=False, verify=False, **{knob: value})
    assert_clear(ei, knob, words)
    assert ei.value.knob == knob
    with pipetls.Context(server=False, verify=False) as ctx:
        with pipetls.Connection(ctx) as conn:
            if knob == "encrypt_then_mac":
                return  # a Context-only option
            with pytest.raises(exc) as ei:
                setattr(conn, knob, value)
            assert_clear(ei, knob)
            # the connection is still usable: a good value is taken
            setattr(conn, knob, {"max_pipelines": 4, "split_send_fragment": 4096,
                                 "max_send_fragment": 4096, "default_read_buffer_len": 0,
                                 "read_ahead": True}[knob])


def test_knob_edges_work():
    """The edges of every range are accepted."""
    for kw in (dict(max_pipelines=1), dict(max_pipelines=32), dict(split_send_fragment=512),
               dict(split_send_fragment=16384), dict(max_send_fragment=512),
               dict(default_read_buffer_len=0), dict(default_read_buffer_len=GIB),
               dict(max_send_fragment=1024, split_send_fragment=1024)):
        with pipetls.Context(server=False, verify=False, **kw) as ctx:
            for k, v in kw.items():
                assert getattr(ctx, k) == v
    with pytest.raises(pipetls.ConfigError, match="max_send_fragment"):
        pipetls.Context(server=False, verify=False, max_send_fragment=1024,
                        split_send_fragment=2048)


@pytest.mark.parametrize("kw,exc,words", [
    (dict(ciphers="NOPE"), pipetls.ConfigError, ["no usable cipher"]),
    (dict(ciphers=5), pipetls.ConfigTypeError, ["ciphers"]),
    (dict(ciphersuites="NOPE"), pipetls.ConfigError, ["ciphersuites"]),
    (dict(max_version="TLSv9"), pipetls.ConfigError, ["max_version"]),
    (dict(min_version="TLSv1.3", max_version="TLSv1.2"), pipetls.ConfigError, ["above"]),
    (dict(certfile="/nonexistent/x.pem"), pipetls.PipetlsError, ["/nonexistent/x.pem"]),
    (dict(cafile="/nonexistent/ca.pem"), pipetls.PipetlsError, ["/nonexistent/ca.pem"]),
    (dict(keylog_callback=5), pipetls.ConfigTypeError, ["keylog_callback"]),
    (dict(engine="pipetls.so"), TypeError, ["engine"]),
], ids=["ciphers", "ciphers-type", "ciphersuites", "version", "min>max", "certfile", "cafile",
        "keylog-callback", "engine-type"])
def test_bad_context_arguments(kw, exc, words):
    with pytest.raises(exc) as ei:
        pipetls.Context(**kw)
    assert_clear(ei, *words)


def test_bad_connection_arguments():
    with pipetls.Context(server=False, verify=False) as ctx:
        with pytest.raises(pipetls.ConfigTypeError) as ei:
            pipetls.Connection(None)
        assert_clear(ei, "context")
        s = socket.socket()
        s.close()
        with pytest.raises(pipetls.ClosedError) as ei:
            pipetls.Connection(ctx, s)
        assert_clear(ei, "closed")
        with pytest.raises(TypeError) as ei:
            pipetls.Connection(ctx, "not a socket")
        assert_clear(ei, "sock")
        with pipetls.Connection(ctx) as conn:
            for call, words in ((lambda: conn.read(-1), ["n=-1"]), (lambda: conn.read("x"), ["int"]),
                                (lambda: conn.write("text"), ["bytes-like"]),
                                (lambda: conn.write(None), ["bytes-like"]),
                                (lambda: conn.readinto(b"ro"), ["writable"]),
                                (lambda: setattr(conn, "timeout", -1), ["timeout"])):
                with pytest.raises(CLEAR) as ei:
                    call()
                assert_clear(ei, *words)


# ----------------------------------------------------------------- engine

def _not_engines(tmp_path):
    text = tmp_path / "text.so"
    text.write_text("not an engine\n")
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    out = [("missing", tmp_path / "nope" / "pipetls.so"), ("directory", tmp_path),
           ("empty", empty), ("text", text)]
    for p in ("/bin/true", "/usr/bin/true"):
        if os.path.exists(p):
            out.append(("program", p))
            break
    for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1",
              "/lib64/libz.so.1"):
        if os.path.exists(p):
            out.append(("other-library", p))
            break
    return out


def test_engine_paths_that_are_not_engines(tmp_path, engine):
    for what, path in _not_engines(tmp_path):
        with pytest.raises(pipetls.EngineError) as ei:
            pipetls.Engine(path)
        assert_clear(ei, os.fspath(path))
        assert _ffi.ERR_peek_error() == 0, f"{what}: errors left on the queue"
    with pytest.raises(TypeError):
        pipetls.Engine(12)
    # asking the shared loader for another file than the loaded one
    with pytest.raises(pipetls.EngineError) as ei:
        pipetls.load_engine(tmp_path / "text.so")
    assert_clear(ei, "shared engine")
    assert pipetls.shared_engine() is engine and not engine.closed


@pytest.mark.parametrize("kw,exc", [
    (dict(threads=0), pipetls.ConfigError), (dict(threads=257), pipetls.ConfigError),
    (dict(threads="4"), pipetls.ConfigTypeError), (dict(threads=4.0), pipetls.ConfigTypeError),
    (dict(inline_below=-1), pipetls.ConfigError),
    (dict(inline_below=GIB + 1), pipetls.ConfigError),
])
def test_bad_engine_settings(engine_path, kw, exc):
    with pytest.raises(exc) as ei:
        pipetls.Engine(engine_path, **kw)
    assert_clear(ei, next(iter(kw)))


@pytest.mark.parametrize("cmd,value", [
    ("THREADS", "abc"), ("THREADS", "0"), ("THREADS", "257"), ("THREADS", "-1"),
    ("THREADS", "4x"), ("THREADS", "99999999999999999999"), ("THREADS", ""),
    ("INLINE_BELOW", "-5"), ("INLINE_BELOW", str(2 ** 31)), ("INLINE_BELOW", "1e3"),
    ("NO_SUCH_COMMAND", "1"),
])
def test_bad_ctrl_strings_are_refused(engine, cmd, value):
    before = engine.stats()
    with pytest.raises(pipetls.EngineError) as ei:
        engine._ctrl_string(engine.handle, cmd, value)
    assert_clear(ei, cmd)
    after = engine.stats()
    assert (after.lanes, after.inline_below) == (before.lanes, before.inline_below)


def test_stats_buffer_protocol_edges(engine):
    """STATS through raw ENGINE_ctrl: a 1-byte buffer gets an empty string
    and the full length back (so callers can retry); the text is complete
    once the buffer is big enough; unknown command numbers fail."""
    full = engine.stats_text()
    buf = ctypes.create_string_buffer(b"\xff" * 8, 8)
    n = _ffi.ENGINE_ctrl(engine.handle, _ffi.PIPETLS_CMD_STATS, 1, buf, None)
    assert n >= len(full) - 64 and buf.raw[0] == 0 and buf.raw[1:8] == b"\xff" * 7
    buf = ctypes.create_string_buffer(n + 1)
    assert _ffi.ENGINE_ctrl(engine.handle, _ffi.PIPETLS_CMD_STATS, n + 1, buf, None) == n
    assert buf.value.decode().startswith("pipetls.stats 1")
    assert _ffi.ENGINE_ctrl(engine.handle, _ffi.ENGINE_CMD_BASE + 99, 0, None, None) <= 0
    _ffi.ERR_clear_error()


def test_ctrl_edges_in_a_child_do_not_crash(engine_path):
    """Raw ENGINE_ctrl edges (NULL buffer, length 0 and negative, STATS_FILE
    to a missing directory, RESET_STATS with junk arguments) in a child:
    no crash, a clean exit (the stats file write at unload may fail, but
    must not crash)."""
    code = r"""
import ctypes, os, pipetls
from pipetls import _ffi
e = pipetls.load_engine(os.environ["PIPETLS_ENGINE"])
h = e.handle
S, I, R = _ffi.PIPETLS_CMD_STATS, _ffi.PIPETLS_CMD_INFO, _ffi.PIPETLS_CMD_RESET_STATS
print(_ffi.ENGINE_ctrl(h, S, 100, None, None))
print(_ffi.ENGINE_ctrl(h, S, 0, ctypes.create_string_buffer(1), None))
print(_ffi.ENGINE_ctrl(h, S, -1, ctypes.create_string_buffer(16), None))
print(_ffi.ENGINE_ctrl(h, I, 10, None, None))
print(_ffi.ENGINE_ctrl(h, R, 5, ctypes.create_string_buffer(4), None))
print(_ffi.ENGINE_ctrl_cmd_string(h, b"THREADS", None, 0))
print(_ffi.ENGINE_ctrl_cmd_string(h, b"STATS_FILE", b"/nonexistent/dir/stats.txt", 0))
_ffi.ERR_clear_error()
print("alive", e.stats().lanes > 0)
"""
    r = run_isolated(code, timeout=60, env={"PIPETLS_ENGINE": engine_path})
    assert not r.timed_out and not r.crashed, (r.returncode, r.stderr[-2000:])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("alive True")


@pytest.mark.needs_program("openssl")
def test_openssl_cli_with_bad_engine_or_ctrl(tmp_path, engine_path):
    """``openssl engine`` with a file that is not an engine, or with a bad
    ``-pre`` command for ours: no crash, the exit status stock's CLI gives
    the same mistake with a missing engine file / with its own ``dynamic``
    engine (measured in this run), and the failing command and its reason
    named in the output."""
    text = tmp_path / "text.so"
    text.write_text("nope")

    def run(*args):
        p = subprocess.run([OPENSSL, "engine", *map(str, args)], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode >= 0 and p.returncode not in (134, 139), (args, p.stderr)
        return p

    # stock's answers: an engine file that does not load, a -pre that fails
    stock_no_engine = run(tmp_path / "missing.so").returncode
    stock_bad_pre = run("-pre", "NO_SUCH:1", "dynamic")
    assert stock_no_engine != 0
    assert "[Failure]: NO_SUCH:1" in stock_bad_pre.stdout, stock_bad_pre.stdout

    p = run(text)
    assert p.returncode == stock_no_engine, (p.returncode, p.stderr)
    assert str(text) in p.stderr and "could not load the shared library" in p.stderr, p.stderr
    for pre, reason in (("THREADS:abc", "argument is not a number"),
                        ("THREADS:0", "1..256"),
                        ("NO_SUCH:1", "invalid cmd name")):
        p = run("-pre", pre, engine_path)
        assert p.returncode == stock_bad_pre.returncode, (pre, p.returncode, p.stderr)
        assert f"[Failure]: {pre}" in p.stdout, (pre, p.stdout)
        assert reason in p.stdout + p.stderr, (pre, p.stdout, p.stderr)


EVP_BAD_CTRLS = r"""
import ctypes as C, json, os, pipetls
from pipetls import _ffi
L = _ffi.libcrypto
vp = C.c_void_p
for name, res, args in (
        ("EVP_CIPHER_CTX_new", vp, []), ("EVP_CIPHER_CTX_free", None, [vp]),
        ("EVP_CIPHER_fetch", vp, [vp, C.c_char_p, C.c_char_p]),
        ("EVP_CipherInit_ex", C.c_int, [vp, vp, vp, C.c_char_p, C.c_char_p, C.c_int]),
        ("EVP_CIPHER_CTX_ctrl", C.c_int, [vp, C.c_int, C.c_int, vp]),
        ("EVP_Cipher", C.c_int, [vp, vp, vp, C.c_uint]),
        ("ENGINE_get_cipher", vp, [vp, C.c_int]), ("OBJ_txt2nid", C.c_int, [C.c_char_p]),
        ("ERR_clear_error", None, [])):
    f = getattr(L, name); f.restype = res; f.argtypes = args
e = pipetls.Engine(os.environ["PIPETLS_ENGINE"])     # loaded, not the default
TLS1_AAD, OUT, INP, LENS, IV_FIXED = 0x16, 0x22, 0x23, 0x24, 0x12
SKIP = set(os.environ.get("PIPETLS_TEST_EVP_SKIP", "").split(","))
out = {}

def new_ctx(sn, engine, enc, key_len, iv, key=True):
    if engine:
        c = L.ENGINE_get_cipher(e.handle, L.OBJ_txt2nid(sn))
    else:
        c = L.EVP_CIPHER_fetch(None, sn, None)
    assert c, sn
    ctx = L.EVP_CIPHER_CTX_new()
    assert L.EVP_CipherInit_ex(ctx, c, e.handle if engine else None,
                               b"k" * key_len if key else None, iv if key else None, enc) == 1
    if key and sn == b"aes-128-gcm":
        L.EVP_CIPHER_CTX_ctrl(ctx, IV_FIXED, 4, C.create_string_buffer(4))
    return ctx

def aad(seq, ln):
    return C.create_string_buffer(seq.to_bytes(8, "big") + bytes([23, 3, 3]) + ln.to_bytes(2, "big"), 13)

CTRLS = {   # same call on the engine's cipher and on OpenSSL's own
    "aad_len_12": lambda c: L.EVP_CIPHER_CTX_ctrl(c, TLS1_AAD, 12, aad(0, 100)),
    "aad_len_14": lambda c: L.EVP_CIPHER_CTX_ctrl(c, TLS1_AAD, 14, C.create_string_buffer(14)),
    "record_shorter_than_tag": lambda c: L.EVP_CIPHER_CTX_ctrl(c, TLS1_AAD, 13, aad(0, 10)),
    "record_len_0": lambda c: L.EVP_CIPHER_CTX_ctrl(c, TLS1_AAD, 13, aad(0, 0)),
    "unknown_ctrl": lambda c: L.EVP_CIPHER_CTX_ctrl(c, 0x7777, 0, None),
}
arr4 = (vp * 4)()
PIPE_CTRLS = {   # the engine alone: OpenSSL's ciphers have no pipelines, and
                 # OpenSSL 3.0's own AES-GCM segfaults on a NULL TLS AAD
    "aad_null": lambda c: L.EVP_CIPHER_CTX_ctrl(c, TLS1_AAD, 13, None),
    "out_bufs_0": lambda c: L.EVP_CIPHER_CTX_ctrl(c, OUT, 0, arr4),
    "out_bufs_-1": lambda c: L.EVP_CIPHER_CTX_ctrl(c, OUT, -1, arr4),
    "out_bufs_33": lambda c: L.EVP_CIPHER_CTX_ctrl(c, OUT, 33, arr4),
    "out_bufs_2^30": lambda c: L.EVP_CIPHER_CTX_ctrl(c, OUT, 1 << 30, arr4),
    "out_bufs_null_array": lambda c: L.EVP_CIPHER_CTX_ctrl(c, OUT, 4, None),
    "in_bufs_null_array": lambda c: L.EVP_CIPHER_CTX_ctrl(c, INP, 4, None),
    "lens_null_array": lambda c: L.EVP_CIPHER_CTX_ctrl(c, LENS, 4, None),
}

def short_records(c):
    # pipes set, each record too short for its tag / MAC: the call must fail
    bufs = [C.create_string_buffer(64) for _ in range(2)]
    ptrs = (vp * 2)(*[C.cast(b, vp) for b in bufs])
    lens = (C.c_size_t * 2)(10, 10)
    L.EVP_CIPHER_CTX_ctrl(c, OUT, 2, ptrs); L.EVP_CIPHER_CTX_ctrl(c, INP, 2, ptrs)
    L.EVP_CIPHER_CTX_ctrl(c, LENS, 2, lens)
    for s in range(2):
        L.EVP_CIPHER_CTX_ctrl(c, TLS1_AAD, 13, aad(s, 10))
    return L.EVP_Cipher(c, bufs[0], bufs[0], 10)

def no_key(c):
    b = C.create_string_buffer(64)
    return L.EVP_Cipher(c, b, b, 32)

for sn, kl, iv in ((b"aes-128-gcm", 16, None), (b"chacha20-poly1305", 32, b"\0" * 12),
                   (b"aes-128-cbc-hmac-sha1", 16, b"\0" * 16)):
    fam = sn.decode()
    for enc in (0, 1):
        for name, op in list(CTRLS.items()) + [("cipher_without_key", no_key)]:
            res = []
            for engine in (True, False):
                ctx = new_ctx(sn, engine, enc, kl, iv, key=name != "cipher_without_key")
                res.append(op(ctx))
                L.EVP_CIPHER_CTX_free(ctx)
                L.ERR_clear_error()
            out[f"{fam} enc={enc} {name}"] = {"engine": res[0], "openssl": res[1]}
        for name, op in list(PIPE_CTRLS.items()) + [("short_records_cipher", short_records)]:
            if name in SKIP:
                continue
            ctx = new_ctx(sn, True, enc, kl, iv)
            out[f"{fam} enc={enc} {name}"] = {"engine": op(ctx)}
            L.EVP_CIPHER_CTX_free(ctx)
            L.ERR_clear_error()
print(json.dumps(out))
"""


def test_bad_evp_ctrls_fail_cleanly(engine_path):
    """Every ctrl gets the engine's cipher the outcome OpenSSL's own cipher
    gets in the same child (invariant 1: refused by both, or accepted by
    both with the same result); bad pipeline ctrls are refused (a NULL array, a
    count of -1, 33 or 2**30), and a batch of records too short for their
    tag fails -- with no crash or hang in any case. A pipe count of 0 is
    refused too: there is no batch of no records."""
    r = run_isolated(EVP_BAD_CTRLS, timeout=60, env={"PIPETLS_ENGINE": engine_path})
    assert not r.timed_out, "a bad EVP ctrl hung the engine"
    assert not r.crashed, (f"a bad EVP ctrl crashed the engine (rc {r.returncode}); run "
                           f"the child with 'TRY' prints to see which\n{r.stderr[-3000:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    res = json.loads(r.stdout.strip().splitlines()[-1])
    wrong = {}
    for key, v in res.items():
        if "openssl" in v:
            # a refusal is a refusal (<= 0: some ciphers say 0, some -1)
            if max(v["openssl"], 0) != max(v["engine"], 0):
                wrong[key] = v
        elif v["engine"] > 0:
            wrong[key] = v
    assert not wrong, f"the engine answers otherwise than OpenSSL's own cipher: {wrong}"


# ------------------------------------------------------------ life cycle

def _pair(engine, certs, **knobs):
    suite = SUITES["aes128gcm"]
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=Knobs(4, 4096, 0))
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=Knobs(4, 4096, 0))
    s = pipetls.Connection(sctx)
    c = pipetls.Connection(cctx, server_hostname="localhost")
    pipetls.handshake_pair(s, c)
    return sctx, cctx, s, c


def test_use_after_close(engine, certs):
    sctx, cctx, s, c = _pair(engine, certs)
    c.close()
    for call in (lambda: c.read(1), lambda: c.write(b"x"), lambda: c.write(b""),
                 c.do_handshake, c.shutdown, lambda: c.pending_plaintext, lambda: c.tls_version,
                 lambda: c.max_pipelines, lambda: setattr(c, "max_pipelines", 2),
                 lambda: c.sendall(b"abc"), lambda: c.readinto(bytearray(4))):
        with pytest.raises(pipetls.ClosedError) as ei:
            call()
        assert_clear(ei, "closed")
    c.close()  # twice is fine
    s.close()
    sctx.close()
    with pytest.raises(pipetls.ClosedError):
        pipetls.Connection(sctx)
    with pytest.raises(pipetls.ClosedError):
        sctx.max_pipelines = 4
    cctx.close()
    cctx.close()
    assert _ffi.ERR_peek_error() == 0


def test_connection_outlives_its_closed_context(engine, certs):
    sctx, cctx, s, c = _pair(engine, certs)
    sctx.close()
    cctx.close()
    data = os.urandom(100000)
    got = pipetls.pump(c, s, data)
    assert got == len(data)
    s.close()
    c.close()


def test_write_after_shutdown_and_read_after_close_notify(engine, certs):
    sctx, cctx, s, c = _pair(engine, certs)
    with sctx, cctx, s, c:
        assert c.shutdown(timeout=0) is False  # memory: the peer's comes later
        for call in (lambda: c.write(b"abc"), lambda: c.sendall(b"abc")):
            with pytest.raises(pipetls.TLSClosed) as ei:
                call()
            assert_clear(ei, "shutdown")
        s.feed(c.drain())
        with pytest.raises(pipetls.TLSClosed) as ei:
            s.read(10)
        assert_clear(ei, "close_notify")
        with pytest.raises(pipetls.TLSClosed):
            s.read(10)  # again: still closed, no hang, no crash
        # TLS allows the other half to keep writing after close_notify
        assert s.write(b"late") == 4
    assert _ffi.ERR_peek_error() == 0


def test_zero_length_writes(engine, certs):
    sctx, cctx, s, c = _pair(engine, certs)
    with sctx, cctx, s, c:
        before = engine.stats()
        assert c.write(b"") == 0 and c.write(bytearray()) == 0
        assert c.write(memoryview(b"abc")[3:]) == 0 and c.sendall(b"") == 0
        assert c.drain() == b"", "an empty write put a record on the wire"
        assert (engine.stats() - before).records == 0
        # and the connection still works
        assert pipetls.pump(c, s, b"after") == 5


def test_zero_length_ssl_write_ex_directly(engine, certs, stock):
    """SSL_write_ex with 0 bytes straight into libssl + engine: exactly what
    stock libssl does with it in the same run (its return value, count and
    records on the wire), no crash, and the connection still works."""
    want = stock.call("support.badinput:zero_length_ssl_write_ex", certs=str(certs.dir))
    got = zero_length_ssl_write_ex(engine, certs)
    assert got == want
    assert got["tail"] == 0 and got["after"] == 10
    assert got["n"] == 0, got        # never a count of bytes it did not have


def test_one_gib_write_in_one_call(engine, certs):
    """``write()`` of 1 GiB in one call returns a partial count (one
    batch); ``sendall()`` of 1 GiB in one call delivers every byte intact
    over a real socket, pipelined, in bounded time."""
    suite, knobs = SUITES["aes128gcm"], Knobs(32, 16384, 1 << 20)
    buf = bytearray(GIB)
    for off in range(0, GIB, 1 << 24):        # markers, so a shift is caught
        buf[off:off + 8] = off.to_bytes(8, "big")
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=knobs)
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=knobs)
    view = memoryview(buf)

    def reader(conn):
        rbuf = bytearray(1 << 20)
        rv = memoryview(rbuf)
        got = 0
        while got < GIB:
            k = conn.readinto(rv)
            if rv[:k] != view[got:got + k]:
                raise AssertionError(f"data differs in [{got}, {got + k})")
            got += k
        conn.shutdown(timeout=5)
        return got

    started = time.monotonic()
    before = engine.stats()
    srv = PtServer(sctx, reader, timeout=120)
    try:
        conn, sock = pt_connect(cctx, srv.port, timeout=120)
        with sock, conn:
            first = conn.write(view)
            assert 0 < first <= GIB
            assert first <= 32 * 16384, "write() did not stop after one batch"
            assert conn.sendall(view[first:]) == GIB - first
            assert srv.join(180) == GIB
    finally:
        sctx.close()
        cctx.close()
    delta = engine.stats() - before
    assert delta.failed_batches == 0 and delta.hist.get(32, 0) > 0, delta
    assert time.monotonic() - started < 180


def test_negative_control_crash_and_hang_are_detected():
    """run_isolated tells a crash and a hang from a clean exit."""
    r = run_isolated("import ctypes; ctypes.string_at(0)", timeout=30)
    assert r.crashed and not r.timed_out
    r = run_isolated("import time; time.sleep(30)", timeout=2)
    assert r.timed_out
    r = run_isolated("print('ok')", timeout=30)
    assert r.returncode == 0 and not r.crashed and r.stdout.strip() == "ok"


def test_negative_control_assert_clear_rejects_an_attribute_error():
    class Box:
        value = AttributeError("'str' object has no attribute 'registered'")
    with pytest.raises(AssertionError):
        assert_clear(Box)
