"""The public Python API of pipetls: every function and its error paths."""

from __future__ import annotations

import array
import gc
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from support.api import socket_pair_connections, stats_delta, tls12_client_ctx, tls12_server_ctx
from support.peers import OPENSSL, OpenSSLServer

import pipetls
from pipetls import (
    ClosedError,
    ConfigError,
    ConfigTypeError,
    Connection,
    Context,
    EngineError,
    PipetlsError,
    TLSAlertError,
    TLSClosed,
    WantRead,
    _ffi,
    handshake_pair,
    pump,
)
from pipetls.errors import (
    CertificateError,
    MissingSymbolError,
    OpenSSLError,
    TLSTimeout,
    TLSUnexpectedEOF,
)
from pipetls._ffi import check, check_ptr, drain_errors


HEADERS = "/usr/include/openssl"


# --------------------------------------------------------------------------
# package surface
# --------------------------------------------------------------------------
def test_public_names():
    for name in pipetls.__all__:
        assert hasattr(pipetls, name), name
    assert re.match(r"^\d+\.\d+\.\d+", pipetls.__version__)
    assert pipetls.openssl_version().startswith("OpenSSL 3.")
    assert callable(pipetls.engine_path)


# --------------------------------------------------------------------------
# _ffi: loading, constants, prototypes
# --------------------------------------------------------------------------
def test_ffi_uses_the_stdlib_openssl():
    import _ssl  # noqa: F401

    assert _ffi.stdlib_shares_openssl()
    with open("/proc/self/maps") as f:
        maps = f.read()
    assert os.path.realpath(_ffi.LIBCRYPTO_PATH) in {
        os.path.realpath(line.split(None, 5)[5].strip())
        for line in maps.splitlines() if "libcrypto.so" in line}


def _header_defines():
    out = {}
    for name in ("ssl.h", "tls1.h", "bio.h", "evp.h", "engine.h", "sslerr.h", "err.h",
                 "ssl3.h", "prov_ssl.h", "x509_vfy.h", "crypto.h"):
        path = os.path.join(HEADERS, name)
        with open(path) as f:
            for m in re.finditer(r"^#\s*define\s+(\w+)\s+(0[xX][0-9a-fA-F]+|\d+)[UuLl]*\b",
                                 f.read(), re.M):
                out.setdefault(m.group(1), int(m.group(2), 0))
    return out


@pytest.mark.skipif(not os.path.isfile(os.path.join(HEADERS, "ssl.h")),
                    reason="OpenSSL headers not installed")
def test_ffi_constants_match_the_headers():
    defines = _header_defines()
    checked = 0
    for name in dir(_ffi):
        if not re.match(r"^(SSL|TLS|BIO|EVP|ENGINE|ERR|OPENSSL|X509|TLSEXT)_[A-Z0-9_]+$", name):
            continue
        value = getattr(_ffi, name)
        if not isinstance(value, int) or name not in defines:
            continue
        assert value == defines[name], "%s: _ffi has %r, the header %r" % (name, value, defines[name])
        checked += 1
    # The pipelining controls in particular.
    for name in ("SSL_CTRL_SET_MAX_PIPELINES", "SSL_CTRL_SET_SPLIT_SEND_FRAGMENT",
                 "SSL_CTRL_SET_MAX_SEND_FRAGMENT", "SSL_CTRL_SET_READ_AHEAD",
                 "SSL_CTRL_SET_MIN_PROTO_VERSION", "SSL_CTRL_SET_TLSEXT_HOSTNAME"):
        assert getattr(_ffi, name) == defines[name]
    assert checked > 40


def test_ffi_bit_options_match_the_headers():
    import ssl

    assert _ffi.SSL_OP_NO_TICKET == ssl.OP_NO_TICKET
    assert _ffi.SSL_OP_NO_COMPRESSION == ssl.OP_NO_COMPRESSION
    assert _ffi.SSL_OP_IGNORE_UNEXPECTED_EOF == ssl.OP_IGNORE_UNEXPECTED_EOF


def test_ffi_prototypes_are_declared():
    void = {"SSL_CTX_set_default_read_buffer_len"}   # void in <openssl/ssl.h>
    for name in ("SSL_CTX_ctrl", "SSL_write_ex", "SSL_read_ex", "ENGINE_ctrl", "BIO_new_bio_pair",
                 "EVP_CipherInit_ex", "SSL_CTX_get_options", "SSL_CTX_set_default_read_buffer_len"):
        f = getattr(_ffi, name)
        assert f.argtypes is not None, name
        if name in void:
            assert f.restype is None, name
        else:
            assert f.restype is not None, name
    assert _ffi.SSL_CTX_get_options.restype is _ffi.c_uint64


def test_ffi_missing_symbol_is_an_import_error():
    with pytest.raises(MissingSymbolError, match="NoSuchFunction_pipetls") as ei:
        _ffi._fn(_ffi.libcrypto, "NoSuchFunction_pipetls", None)
    assert isinstance(ei.value, ImportError)
    assert ei.value.name == "NoSuchFunction_pipetls"


def _run_python(code, env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(pipetls.__file__))] + sys.path)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)


def test_pipetls_openssl_prefix_missing():
    r = _run_python("import pipetls", {"PIPETLS_OPENSSL": "/nonexistent/prefix"})
    assert r.returncode != 0
    assert "PipetlsError" in r.stderr and "/nonexistent/prefix" in r.stderr


def test_pipetls_openssl_prefix_same_library(tmp_path):
    # A prefix whose libraries are the loaded ones (by realpath) is accepted
    # even after the stdlib loaded them.
    lib = tmp_path / "lib"
    lib.mkdir()
    os.symlink(_ffi.LIBSSL_PATH, lib / "libssl.so.3")
    os.symlink(_ffi.LIBCRYPTO_PATH, lib / "libcrypto.so.3")
    r = _run_python("import ssl, pipetls._ffi as f; print(f.LIBSSL_PATH)",
                    {"PIPETLS_OPENSSL": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert str(lib / "libssl.so.3") in r.stdout


def test_pipetls_openssl_prefix_refuses_a_second_libcrypto(tmp_path):
    # Another file (a copy) while the stdlib's libcrypto is mapped: invariant 7.
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(_ffi.LIBSSL_PATH, lib / "libssl.so.3")
    shutil.copy(_ffi.LIBCRYPTO_PATH, lib / "libcrypto.so.3")
    r = _run_python("import ssl, pipetls", {"PIPETLS_OPENSSL": str(tmp_path)})
    assert r.returncode != 0
    assert "invariant 7" in r.stderr
    # Alone in its process (ssl not imported first) the copy loads, and an
    # ssl imported afterwards binds to it by soname: still one libcrypto.
    code = ("import sys, pipetls._ffi as f; assert 'ssl' not in sys.modules\n"
            "import ssl\n"
            "maps = {l.split(None, 5)[5].strip() for l in open('/proc/self/maps') "
            "if 'libcrypto.so' in l}\n"
            "print(f.LIBCRYPTO_PATH, sorted(maps), f.stdlib_shares_openssl())")
    r = _run_python(code, {"PIPETLS_OPENSSL": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(lib / "libcrypto.so.3")
    assert "['%s'] True" % (lib / "libcrypto.so.3") in r.stdout


# --------------------------------------------------------------------------
# errors: the gate
# --------------------------------------------------------------------------
def test_error_tree():
    for cls in (OpenSSLError, ConfigError, EngineError, pipetls.StdlibError, pipetls.TLSError,
                WantRead, pipetls.WantWrite, TLSTimeout, ClosedError):
        assert issubclass(cls, PipetlsError)
    assert issubclass(TLSAlertError, pipetls.TLSError)
    assert issubclass(TLSClosed, pipetls.TLSError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigTypeError, TypeError)
    assert issubclass(TLSTimeout, TimeoutError)
    e = TLSAlertError(20, sent=True)
    assert (e.alert, e.alert_name, e.sent) == (20, "bad_record_mac", True)


def test_check_drains_the_queue():
    # Put a real error on the queue: an unknown cipher name.
    ctx = _ffi.SSL_CTX_new(_ffi.TLS_method())
    try:
        assert _ffi.SSL_CTX_set_cipher_list(ctx, b"NO-SUCH-CIPHER") == 0
        assert _ffi.ERR_peek_error() != 0
        with pytest.raises(OpenSSLError) as ei:
            check(0, "set_cipher_list")
        assert ei.value.errors and "no cipher match" in ei.value.errors[0]
        assert ei.value.codes
        assert _ffi.ERR_peek_error() == 0
    finally:
        _ffi.SSL_CTX_free(ctx)
    assert check(1, "ok") == 1
    with pytest.warns(DeprecationWarning):
        assert pipetls.errors.handle_openssl_error is check
    assert check_ptr(1234, "ok") == 1234
    with pytest.raises(ConfigError, match="nullptr"):
        check_ptr(None, "nullptr", exc=ConfigError)
    assert drain_errors() == ([], [])


# --------------------------------------------------------------------------
# engine
# --------------------------------------------------------------------------
def test_engine_path_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPETLS_ENGINE", str(tmp_path / "missing.so"))
    with pytest.raises(EngineError, match="no such file"):
        pipetls.engine_path()
    real = tmp_path / "pipetls.so"
    real.write_bytes(b"not an engine")
    monkeypatch.setenv("PIPETLS_ENGINE", str(real))
    assert pipetls.engine_path() == str(real)


def test_engine_path_default(pt_engine, monkeypatch):
    monkeypatch.delenv("PIPETLS_ENGINE", raising=False)
    try:
        p = pipetls.engine_path()
    except EngineError as e:
        assert "PIPETLS_ENGINE" in str(e)
        return
    assert os.path.basename(p) == "pipetls.so" and os.path.isfile(p)


def test_engine_bad_paths(tmp_path):
    with pytest.raises(EngineError, match="no such file"):
        pipetls.Engine(str(tmp_path / "nope.so"))
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"\x7fELF this is not a shared object")
    with pytest.raises(EngineError, match="not a loadable pipetls engine") as ei:
        pipetls.Engine(str(junk))
    assert ei.value.errors  # OpenSSL's reasons are carried along
    # A real shared object that is not an engine.
    with pytest.raises(EngineError, match="not a loadable pipetls engine"):
        pipetls.Engine(_ffi.LIBSSL_PATH)


@pytest.mark.parametrize("knob,value,text", [
    ("threads", 0, "1..256"), ("threads", 257, "1..256"),
    ("inline_below", -1, "0..1073741824"), ("inline_below", 2**30 + 1, "0..1073741824"),
])
def test_engine_knob_ranges(pt_engine, knob, value, text):
    with pytest.raises(ConfigError) as ei:
        setattr(pt_engine, knob, value)
    assert knob in str(ei.value) and text in str(ei.value)
    with pytest.raises(ConfigError, match=knob):
        pipetls.Engine(**{knob: value})  # validated before anything is loaded


@pytest.mark.parametrize("value", ["4", 2.0, True, None])
def test_engine_knob_types(pt_engine, value):
    with pytest.raises(ConfigTypeError, match="threads"):
        pt_engine.threads = value


def test_engine_out_of_place_knob(pt_engine):
    """OUT_OF_PLACE (patch 0004's plaintext buffers): on by default, in INFO;
    the setter checks its type, the command its range, both name the knob."""
    assert pt_engine.out_of_place is True and pt_engine.info()["out_of_place"] == 1
    try:
        pt_engine.out_of_place = False
        assert pt_engine.out_of_place is False and pt_engine.info()["out_of_place"] == 0
    finally:
        pt_engine.out_of_place = True
    with pytest.raises(ConfigTypeError, match="out_of_place"):
        pt_engine.out_of_place = 2
    rc = _ffi.ENGINE_ctrl_cmd_string(pt_engine.handle, b"OUT_OF_PLACE", b"2", 0)
    lines, _ = _ffi.drain_errors_detailed()
    assert rc == 0 and any("OUT_OF_PLACE must be 0 or 1, got 2" in x for x in lines), lines
    assert pt_engine.out_of_place is True


def test_engine_threads_and_inline_below(pt_engine):
    old_threads, old_inline = pt_engine.threads, pt_engine.inline_below
    try:
        pt_engine.threads = 3
        assert pt_engine.threads == 3 == pt_engine.stats().lanes
        pt_engine.inline_below = 1234
        assert pt_engine.inline_below == 1234
    finally:
        pt_engine.threads = old_threads
        pt_engine.inline_below = old_inline


def test_engine_info_and_stats(pt_engine):
    info = pt_engine.info()
    assert info["version"] and isinstance(info["lanes"], int) and info["lanes"] >= 1
    assert "AES-128-GCM" in info["ciphers"]
    assert pt_engine.offers("AES-128-GCM")
    assert not pt_engine.offers("no-such-cipher")
    assert pt_engine.id == "pipetls"
    assert pt_engine.registered
    st = pt_engine.stats()
    assert isinstance(st, pipetls.EngineStats)
    assert st.lanes == info["lanes"] and st.format == 1


def test_engine_reset_stats(pt_engine, pt_certs):
    srv, cli = tls12_server_ctx(pt_certs), tls12_client_ctx(pt_certs)
    s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
    with s, c:
        handshake_pair(s, c)
        pump(c, s, 100000)
        assert pt_engine.stats().records > 0
        pt_engine.reset_stats()
        st = pt_engine.stats()
        assert st.records == st.batches == st.bytes == 0 and st.hist == {}


def test_engine_stats_parse():
    text = ("pipetls.stats 1\nlanes 4\nworkers 3\ninline_below 16384\nbatches 10\n"
            "pipelined_batches 6\ninline_batches 4\nrecords 40\nbytes 655360\n"
            "failed_batches 1\ncrypto_ns 1000\nbatch_ns 2000\nhist.1 4\nhist.6 6\n"
            "lane.0.records 20\nlane.0.bytes 300\nlane.3.records 20\nlane.3.bytes 355\n"
            "future_key 7\n")
    st = pipetls.EngineStats.parse(text)
    assert (st.lanes, st.workers, st.batches, st.pipelined_batches, st.records) == (4, 3, 10, 6, 40)
    assert st.hist == {1: 4, 6: 6} and st.max_batch == 6 and st.mean_batch == 4.0
    assert st.lanes_records == {0: 20, 3: 20} and st.lanes_bytes == {0: 300, 3: 355}
    assert st.failed_batches == 1 and st.extra == {"future_key": 7}
    d = st - pipetls.EngineStats.parse("hist.1 4\nrecords 4\nbatches 4\n")
    assert d.hist == {6: 6} and d.records == 36 and d.batches == 6


def test_unregister_and_register_again(pt_engine, pt_certs):
    nid = _ffi.EVP_CIPHER_get_nid(_ffi.EVP_get_cipherbyname(b"AES-128-GCM"))

    def default_engine_id():
        e = _ffi.ENGINE_get_cipher_engine(nid)
        if not e:
            return None
        try:
            return _ffi.ENGINE_get_id(e).decode()
        finally:
            _ffi.ENGINE_finish(e)

    assert default_engine_id() == "pipetls"
    try:
        pt_engine.unregister()
        assert not pt_engine.registered and default_engine_id() is None
        # Stock ciphers now: no records reach the engine.
        srv, cli = tls12_server_ctx(pt_certs), tls12_client_ctx(pt_certs)
        s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
        with s, c, stats_delta(pt_engine) as d:
            handshake_pair(s, c)
            pump(c, s, 1 << 20)
        assert d.stats.records == 0
    finally:
        pt_engine.register_default()
    assert pt_engine.registered and default_engine_id() == "pipetls"


def test_load_engine_is_shared(pt_engine):
    assert pipetls.load_engine() is pt_engine
    assert pipetls.shared_engine() is pt_engine
    with pytest.raises(EngineError, match="shared engine"):
        pipetls.load_engine(path="/some/other/pipetls.so")


def test_second_engine_from_the_same_library(pt_engine):
    # OpenSSL binds one ENGINE per engine library at a time.
    with pytest.raises(EngineError, match="already loaded"):
        pipetls.Engine(pt_engine.path)
    assert pt_engine.registered


def test_engine_use_after_close(pt_engine, tmp_path):
    # A copy is another library: it loads beside the shared engine.
    copy = tmp_path / "pipetls_copy.so"
    shutil.copy(pt_engine.path, copy)
    stats_file = tmp_path / "stats.txt"
    with pipetls.Engine(str(copy), threads=2) as e:
        assert e is not pt_engine and not e.registered
        assert e.info()["version"] == pt_engine.info()["version"]
        assert e.threads == 2
        e.set_stats_file(str(stats_file))
    assert e.closed
    # Unloading wrote the counters.
    assert pipetls.EngineStats.parse(stats_file.read_text()).lanes == 2
    for op in (e.stats, e.info, e.reset_stats, e.register_default):
        with pytest.raises(ClosedError):
            op()
    with pytest.raises(ClosedError):
        e.threads = 2
    e.close()  # twice is fine
    assert pt_engine.registered and pt_engine.stats().lanes >= 1


# --------------------------------------------------------------------------
# context: knobs
# --------------------------------------------------------------------------
KNOB_CASES = [
    ("max_pipelines", 0, "1..32"),
    ("max_pipelines", 33, "1..32"),
    ("max_send_fragment", 511, "512..16384"),
    ("max_send_fragment", 16385, "512..16384"),
    ("split_send_fragment", 511, "512..max_send_fragment"),
    ("split_send_fragment", 16385, "512..max_send_fragment"),
    ("default_read_buffer_len", -1, "0..2**30"),
]


@pytest.mark.parametrize("knob,value,text", KNOB_CASES)
def test_context_knob_out_of_range(knob, value, text, monkeypatch):
    ctx = Context(server=True)
    calls = []
    real = _ffi.SSL_CTX_ctrl
    monkeypatch.setattr(_ffi, "SSL_CTX_ctrl", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(_ffi, "SSL_CTX_set_default_read_buffer_len",
                        lambda *a: calls.append(a))
    before = getattr(ctx, knob)
    with pytest.raises(ConfigError) as ei:
        setattr(ctx, knob, value)
    assert ei.value.knob == knob
    assert knob in str(ei.value) and text in str(ei.value)
    assert calls == []  # refused before OpenSSL was touched
    assert getattr(ctx, knob) == before
    ctx.close()


@pytest.mark.parametrize("knob", ["max_pipelines", "max_send_fragment", "split_send_fragment",
                                  "default_read_buffer_len"])
@pytest.mark.parametrize("value", ["8", 8.0, True, None, [8]])
def test_context_knob_wrong_type(knob, value):
    with Context() as ctx:
        with pytest.raises(ConfigTypeError, match=knob):
            setattr(ctx, knob, value)


def test_context_read_ahead_type():
    with Context() as ctx:
        with pytest.raises(ConfigTypeError, match="read_ahead"):
            ctx.read_ahead = "yes"
        with pytest.raises(ConfigTypeError):
            ctx.read_ahead = 2


def test_context_knobs_set_and_get():
    with Context(server=True) as ctx:
        assert (ctx.max_pipelines, ctx.max_send_fragment, ctx.split_send_fragment,
                ctx.default_read_buffer_len, ctx.read_ahead) == (1, 16384, 16384, 0, False)
        ctx.max_pipelines = 8
        assert ctx.max_pipelines == 8 and ctx.read_ahead  # > 1 turns read_ahead on
        ctx.read_ahead = False
        assert not ctx.read_ahead
        ctx.split_send_fragment = 4000
        assert ctx.split_send_fragment == 4000
        ctx.max_send_fragment = 2048  # clamps split, as OpenSSL does
        assert ctx.max_send_fragment == 2048 and ctx.split_send_fragment == 2048
        with pytest.raises(ConfigError, match=r"512\.\.max_send_fragment \(2048\)"):
            ctx.split_send_fragment = 4000
        ctx.default_read_buffer_len = 1 << 20
        assert ctx.default_read_buffer_len == 1 << 20
        ctx.set_pipelining(16, split_send_fragment=1024, read_buffer_len=0, max_send_fragment=8192)
        assert (ctx.max_pipelines, ctx.split_send_fragment, ctx.max_send_fragment) == (16, 1024, 8192)
        with pytest.raises(ConfigError, match="max_pipelines"):
            ctx.set_pipelining(40, split_send_fragment=1024)
        assert ctx.max_pipelines == 16  # nothing applied


def test_context_openssl_refusal_is_config_error(monkeypatch):
    with Context() as ctx:
        monkeypatch.setattr(_ffi, "SSL_CTX_ctrl", lambda *a: 0)
        with pytest.raises(ConfigError, match="OpenSSL refused max_pipelines=4"):
            ctx.max_pipelines = 4
        monkeypatch.undo()
        assert ctx.max_pipelines == 1


def test_context_constructor_options(pt_certs):
    ctx = Context(server=True, certfile=pt_certs.cert, keyfile=pt_certs.key, max_pipelines=4,
                  split_send_fragment=2000, max_send_fragment=8000, read_ahead=True,
                  default_read_buffer_len=65536, encrypt_then_mac=False,
                  min_version="TLSv1.2", max_version="TLSv1.3",
                  ciphers="ECDHE-ECDSA-AES128-GCM-SHA256", ciphersuites="TLS_AES_128_GCM_SHA256",
                  alpn_protocols=["h2", "http/1.1"])
    assert (ctx.max_pipelines, ctx.split_send_fragment, ctx.max_send_fragment) == (4, 2000, 8000)
    assert ctx.default_read_buffer_len == 65536 and ctx.read_ahead
    assert not ctx.encrypt_then_mac
    assert ctx.versions == ("TLSv1.2", "TLSv1.3")
    assert ctx.alpn_protocols == ["h2", "http/1.1"]
    assert not ctx.verify and ctx.server
    ctx.close()
    assert ctx.closed


def test_context_engine_argument_and_wrap(pt_engine, pt_certs):
    srv = Context(server=True, certfile=pt_certs.cert, keyfile=pt_certs.key, engine=True,
                  max_version="TLSv1.2")
    cli = Context(cafile=pt_certs.ca, engine=pt_engine, max_version="TLSv1.2")
    assert srv._engine is pt_engine and cli._engine is pt_engine and pt_engine.registered
    s, c = Connection(srv), Connection(cli, server_hostname="localhost")
    with s, c:
        handshake_pair(s, c)
        assert not c.session_reused
        c.write(b"abc")
        s.feed(c.drain())
        assert s.read(1) == b"a" and s.pending_plaintext == 2
        buf = bytearray(5)
        assert s.readinto(buf) == 2 and buf[:2] == b"bc"
        assert c.shutdown() is False  # memory transport: no reply yet
    assert repr(srv).startswith("<pipetls.Context server")


def test_context_encrypt_then_mac():
    with Context() as ctx:
        assert ctx.encrypt_then_mac
        ctx.encrypt_then_mac = False
        assert ctx.options & _ffi.SSL_OP_NO_ENCRYPT_THEN_MAC
        ctx.encrypt_then_mac = True
        assert not ctx.options & _ffi.SSL_OP_NO_ENCRYPT_THEN_MAC
        with pytest.raises(ConfigTypeError):
            ctx.encrypt_then_mac = "off"


def test_context_versions_and_ciphers_errors():
    with Context() as ctx:
        with pytest.raises(ConfigError, match="unknown TLS version"):
            ctx.set_versions("TLSv9")
        with pytest.raises(ConfigError, match="above max_version"):
            ctx.set_versions("TLSv1.3", "TLSv1.2")
        with pytest.raises(ConfigTypeError):
            ctx.set_versions(1.2)
        import ssl

        ctx.set_versions(ssl.TLSVersion.TLSv1_2, None)
        assert ctx.versions == ("TLSv1.2", None)
        with pytest.raises(ConfigError, match="no usable cipher") as ei:
            ctx.set_ciphers("NOT-A-CIPHER")
        assert ei.value.errors  # OpenSSL's own reason
        with pytest.raises(ConfigError, match="ciphersuites"):
            ctx.set_ciphersuites("TLS_NOT_A_SUITE")
        with pytest.raises(ConfigTypeError):
            ctx.set_ciphers(b"AES128-SHA")
        with pytest.raises(ConfigError, match="1..255"):
            ctx.set_alpn_protocols(["", "h2"])
        with pytest.raises(ConfigTypeError):
            ctx.set_alpn_protocols("h2")


def test_context_certificate_errors(pt_certs, tmp_path):
    with Context(server=True) as ctx:
        with pytest.raises(OpenSSLError, match="cannot load certificate chain"):
            ctx.load_cert_chain(str(tmp_path / "missing.pem"))
        with pytest.raises(OpenSSLError, match="key values mismatch"):
            ctx.load_cert_chain(pt_certs.cert, pt_certs.wrong_key)
        with pytest.raises(ConfigTypeError):
            ctx.load_cert_chain(1234)
        with pytest.raises(OpenSSLError, match="verify locations"):
            ctx.load_verify_locations(str(tmp_path / "missing.pem"))
        with pytest.raises(ConfigError):
            ctx.load_verify_locations()
        with pytest.raises(ConfigError, match="client"):
            ctx.check_hostname = True


def test_context_use_after_close():
    ctx = Context()
    ctx.close()
    ctx.close()
    with pytest.raises(ClosedError):
        ctx.max_pipelines = 2
    with pytest.raises(ClosedError):
        ctx.max_pipelines
    with pytest.raises(ClosedError):
        ctx.set_ciphers("AES128-SHA")
    with pytest.raises(ClosedError):
        ctx.handle
    with pytest.raises(ClosedError):
        Connection(ctx)


# --------------------------------------------------------------------------
# connections over memory
# --------------------------------------------------------------------------
@pytest.fixture
def pair(pt_engine, pt_certs):
    srv = tls12_server_ctx(pt_certs, max_pipelines=8)
    cli = tls12_client_ctx(pt_certs, max_pipelines=8)
    s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
    handshake_pair(s, c)
    yield s, c
    s.close()
    c.close()


def test_memory_pair_basics(pair, pt_certs):
    s, c = pair
    assert s.tls_version == c.tls_version == "TLSv1.2"
    assert s.cipher_name == c.cipher_name and "GCM" in c.cipher_name
    assert c.getpeercert(binary_form=True) == pt_certs.leaf_der
    assert s.getpeercert(binary_form=True) is None  # no client certificate asked
    assert c.verify_result == 0
    assert c.handshake_done and s.handshake_done
    assert c.write(b"hello") == 5
    assert s.read(100) == b"hello"
    assert s.write(bytearray(b"world")) == 5
    buf = bytearray(10)
    assert c.readinto(memoryview(buf)[2:]) == 5 and bytes(buf[2:7]) == b"world"
    with pytest.raises(WantRead):
        s.read(10)


def test_pipelined_64mib_memory_pair(pair, pt_engine):
    s, c = pair
    data = os.urandom(1 << 20) * 64
    h = hashlib.sha256()
    with stats_delta(pt_engine) as d:
        n = pump(c, s, data, on_data=h.update)
    assert n == len(data)
    assert h.digest() == hashlib.sha256(data).digest()
    st = d.stats
    assert st.max_batch > 1, st.hist
    assert st.hist.get(8, 0) >= 512  # 4096 records written 8 at a time
    assert st.failed_batches == 0
    assert st.records >= 2 * (64 << 20) // 16384  # both directions went through the engine


def test_split_send_fragment_apportioning(pt_engine, pt_certs):
    # DESIGN: split 2000, 4 pipelines: 4001..6000 bytes -> 3 records.
    srv = tls12_server_ctx(pt_certs)
    cli = tls12_client_ctx(pt_certs, max_pipelines=4, split_send_fragment=2000)
    s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
    with s, c:
        handshake_pair(s, c)
        for size, hist in ((2000, {1: 1}), (2001, {2: 1}), (4001, {3: 1}), (6001, {4: 1}),
                           (8000, {4: 1}), (60000, {4: 7, 2: 1})):
            data = os.urandom(size)
            with stats_delta(pt_engine) as d:
                # Partial writes: write() returns after each batch of records.
                assert c.sendall(data) == size
            assert d.stats.hist == hist, (size, d.stats.hist)
            got = b""
            while len(got) < size:
                got += s.read(1 << 16)
            assert got == data
        assert c.write(os.urandom(60000)) == 8000  # one batch: 4 x 2000


def test_connection_knobs(pair):
    s, c = pair
    assert c.max_pipelines == 8  # inherited from the context
    c.max_pipelines = 2
    assert c.max_pipelines == 2 and c.read_ahead
    c.split_send_fragment = 1024
    c.max_send_fragment = 4096
    assert (c.split_send_fragment, c.max_send_fragment) == (1024, 4096)
    c.default_read_buffer_len = 0
    c.read_ahead = False
    assert not c.read_ahead
    for knob, value, text in KNOB_CASES:
        with pytest.raises(ConfigError, match=re.escape(knob)) as ei:
            setattr(c, knob, value)
        assert text.split("..")[0] in str(ei.value)
    with pytest.raises(ConfigTypeError):
        c.max_pipelines = "2"


def test_buffer_types_and_zero_length(pair):
    s, c = pair
    assert c.write(b"") == 0
    assert c.write(memoryview(b"abc")[:0]) == 0
    assert c.sendall(b"") == 0
    assert s.read(0) == b""
    assert s.readinto(bytearray()) == 0
    with pytest.raises(WantRead):  # nothing was sent
        s.read(10)
    for data in (b"bytes", bytearray(b"bytearray"), memoryview(b"xxmemoryviewxx")[2:-2],
                 array.array("B", b"array")):
        n = c.write(data)
        assert n == len(bytes(data))
        assert s.read(100) == bytes(data)
    big = array.array("i", range(1000))  # multi-byte items: sent as raw bytes
    assert c.sendall(big) == 4000
    assert b"".join(s.read(4000) for _ in range(1)) == big.tobytes()
    with pytest.raises(TypeError):
        c.write("text")
    with pytest.raises(TypeError):
        s.readinto(b"read-only")
    with pytest.raises(TypeError):
        c.write(memoryview(b"abcdef")[::2])  # not contiguous
    with pytest.raises(ConfigError):
        s.read(-1)


def test_shutdown_and_write_after_shutdown(pair):
    s, c = pair
    c.write(b"last words")
    assert c.shutdown() is False  # memory transport: the peer's close_notify is not here yet
    with pytest.raises(TLSClosed):
        c.write(b"more")
    with pytest.raises(TLSClosed):
        c.sendall(b"more")
    assert s.read(100) == b"last words"
    with pytest.raises(TLSClosed):
        s.read(100)
    assert s.shutdown() is True  # had the client's, sends its own
    assert c.shutdown() is True  # now takes the server's
    with pytest.raises(TLSClosed):
        c.read(10)


def test_use_after_close(pair):
    s, c = pair
    c.close()
    c.close()
    assert c.closed
    ops = [lambda: c.read(1), lambda: c.readinto(bytearray(1)), lambda: c.write(b"x"),
           lambda: c.write(b""), lambda: c.sendall(b"x"), c.do_handshake, c.shutdown,
           lambda: c.tls_version, lambda: c.cipher_name, lambda: c.getpeercert(True),
           lambda: c.max_pipelines, lambda: setattr(c, "max_pipelines", 2),
           lambda: c.pending_plaintext,
           lambda: c.read(0), c.fileno, lambda: c.handle]
    for op in ops:
        with pytest.raises(ClosedError):
            op()
    # The peer sees the transport end without close_notify.
    with pytest.raises((WantRead, TLSUnexpectedEOF)):
        s.read(10)


def test_garbage_collection_frees_the_ssl(pt_certs, pt_engine):
    from pipetls.connection import _alert_sinks

    before = len(_alert_sinks)
    for _ in range(20):
        srv, cli = tls12_server_ctx(pt_certs), tls12_client_ctx(pt_certs)
        s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
        handshake_pair(s, c)
        c.write(b"x" * 1000)
        del s, c, srv, cli  # no close(): the finalizers free the SSL*s
    gc.collect()
    assert len(_alert_sinks) == before


def test_connection_outlives_its_closed_context(pt_certs, pt_engine):
    srv, cli = tls12_server_ctx(pt_certs), tls12_client_ctx(pt_certs)
    s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
    srv.close()
    cli.close()
    with s, c:
        handshake_pair(s, c)
        c.write(b"still here")
        assert s.read(100) == b"still here"


def _tamper_pair(pt_certs, **kw):
    srv = tls12_server_ctx(pt_certs, **kw)
    cli = tls12_client_ctx(pt_certs, **kw)
    s, c = Connection(srv), Connection(cli, server_hostname="localhost")  # memory BIOs
    handshake_pair(s, c)
    return s, c


@pytest.mark.parametrize("ciphers", ["ECDHE-ECDSA-AES128-GCM-SHA256",
                                     "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_bad_record_mac_alert(pt_certs, pt_engine, ciphers):
    s, c = _tamper_pair(pt_certs, max_pipelines=8, ciphers=ciphers)
    with s, c:
        c.write(os.urandom(100000))  # 7 records, one pipelined batch
        ct = bytearray(c.drain())
        assert len(ct) > 100000
        ct[-3] ^= 0x40  # in the last record's tag
        s.feed(ct)
        with stats_delta(pt_engine) as d:
            with pytest.raises(TLSAlertError) as ei:
                while True:
                    s.read(1 << 20)
        e = ei.value
        assert (e.alert, e.alert_name, e.sent) == (20, "bad_record_mac", True)
        assert "bad record mac" in e.description
        assert any("bad record mac" in line for line in e.errors)
        assert d.stats.failed_batches >= 1
        # The client receives the alert.
        c.feed(s.drain())
        with pytest.raises(TLSAlertError) as ei:
            c.read(10)
        assert (ei.value.alert, ei.value.sent) == (20, False)
        # The failed connection stays failed.
        with pytest.raises(pipetls.TLSError):
            s.read(10)


def test_certificate_verification_failures(pt_certs, pt_engine):
    srv = tls12_server_ctx(pt_certs)
    for cli, host in ((Context(cafile=pt_certs.other_ca), "localhost"),
                      (Context(cafile=pt_certs.ca), "not-localhost.example")):
        s, c = Connection(srv), Connection(cli, server_hostname=host)
        with s, c:
            with pytest.raises(CertificateError) as ei:
                handshake_pair(s, c)
            assert ei.value.verify_code != 0 and ei.value.verify_message
    # IP addresses are checked against the IP SAN.
    s, c = Connection(srv), Connection(Context(cafile=pt_certs.ca), server_hostname="127.0.0.1")
    with s, c:
        handshake_pair(s, c)
    with pytest.raises(ConfigError, match="server_hostname"):
        Connection(Context(cafile=pt_certs.ca))  # check_hostname without a name


def test_alpn(pt_certs, pt_engine):
    srv = tls12_server_ctx(pt_certs, alpn_protocols=["h2", "http/1.1"])
    cli = tls12_client_ctx(pt_certs, alpn_protocols=["http/1.1"])
    s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
    with s, c:
        handshake_pair(s, c)
        assert s.selected_alpn_protocol() == c.selected_alpn_protocol() == "http/1.1"
    cli = tls12_client_ctx(pt_certs, alpn_protocols=["spdy/1"])
    s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
    with s, c:
        handshake_pair(s, c)
        assert c.selected_alpn_protocol() is None


@pytest.mark.parametrize("version,label", [("TLSv1.2", "CLIENT_RANDOM "),
                                           ("TLSv1.3", "CLIENT_HANDSHAKE_TRAFFIC_SECRET ")])
def test_keylog(pt_certs, tmp_path, version, label):
    path = tmp_path / "keys.log"
    lines = []
    srv = Context(server=True, certfile=pt_certs.cert, keyfile=pt_certs.key, max_version=version)
    cli = Context(cafile=pt_certs.ca, min_version=version, max_version=version,
                  keylog_file=str(path), keylog_callback=lines.append)
    s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
    with s, c:
        handshake_pair(s, c)
    cli.close()
    text = path.read_text().splitlines()
    assert text == lines and any(line.startswith(label) for line in lines)
    for line in lines:
        assert re.match(r"^[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]+$", line)
    with pytest.raises(ConfigTypeError):
        Context(keylog_callback="not callable")
    # Turned off again: no more lines.
    cli2 = Context(cafile=pt_certs.ca, keylog_callback=lines.append)
    cli2.set_keylog(None, None)
    n = len(lines)
    s, c = Connection.memory_pair(srv, cli2, server_hostname="localhost")
    with s, c:
        handshake_pair(s, c)
    assert len(lines) == n
    # Not logging unless asked.
    srv2 = Context(server=True, certfile=pt_certs.cert, keyfile=pt_certs.key)
    assert srv2._keepalive.keylog_cb is None


def test_memory_connection_helpers(pt_certs):
    srv = tls12_server_ctx(pt_certs)
    s = Connection(srv)
    with s:
        assert s.pending_out == 0 and s.drain() == b""
        assert s.feed(b"") == 0
        s.feed_eof()
        with pytest.raises(TLSUnexpectedEOF):
            s.do_handshake()
    s2, c2 = Connection.memory_pair(srv, tls12_client_ctx(pt_certs), server_hostname="localhost")
    with s2, c2:
        with pytest.raises(PipetlsError, match="memory Connection"):
            s2.feed(b"x")
    with pytest.raises(ConfigError, match="bufsize"):
        Connection.memory_pair(srv, srv, bufsize=10)
    with pytest.raises(ConfigTypeError):
        Connection("not a context")
    with pytest.raises(ConfigError, match="timeout"):
        Connection(srv, timeout=5)
    with Connection(srv, timeout=0) as m:
        assert m.timeout == 0.0
        with pytest.raises(ConfigError, match="timeout"):
            m.timeout = 1


# --------------------------------------------------------------------------
# connections over sockets
# --------------------------------------------------------------------------
def test_socket_round_trip_and_timeouts(pt_certs, pt_engine):
    srv = tls12_server_ctx(pt_certs, max_pipelines=8)
    cli = tls12_client_ctx(pt_certs, max_pipelines=8)
    sconn, cconn, ssock, csock = socket_pair_connections(srv, cli)
    try:
        assert cconn.timeout == 10.0 and cconn.fileno() == csock.fileno()
        data = os.urandom(4 << 20)
        got = bytearray()

        def reader():
            buf = bytearray(1 << 20)
            while len(got) < len(data):
                got.extend(memoryview(buf)[:sconn.readinto(buf)])

        th = threading.Thread(target=reader)
        th.start()
        with stats_delta(pt_engine) as d:
            assert cconn.sendall(data) == len(data)
            th.join(30)
        assert bytes(got) == data
        assert d.stats.max_batch > 1
        # Timeouts: nobody sends.
        cconn.timeout = 0.2
        t0 = time.monotonic()
        with pytest.raises(TLSTimeout):
            cconn.read(10)
        assert 0.15 < time.monotonic() - t0 < 5
        cconn.setblocking(False)
        with pytest.raises(WantRead):
            cconn.read(10)
        cconn.timeout = 5
        with pytest.raises(ConfigError):
            cconn.timeout = -1
        # Clean close both ways.
        sconn.timeout = 5
        done = []
        th = threading.Thread(target=lambda: done.append(sconn.shutdown(timeout=5)))
        th.start()
        with pytest.raises(TLSClosed):
            cconn.read(10)
        assert cconn.shutdown(timeout=5) is True
        th.join(10)
        assert done == [True]
    finally:
        sconn.close()
        cconn.close()
        assert csock.gettimeout() == 10.0  # restored
        ssock.close()
        csock.close()


def test_socket_unexpected_eof(pt_certs, pt_engine):
    sconn, cconn, ssock, csock = socket_pair_connections(tls12_server_ctx(pt_certs),
                                                         tls12_client_ctx(pt_certs))
    try:
        sconn.close()
        ssock.close()  # no close_notify
        with pytest.raises((TLSUnexpectedEOF, ConnectionResetError)):
            cconn.read(10)
    finally:
        cconn.close()
        csock.close()


def test_context_manager_sends_close_notify(pt_certs, pt_engine):
    sconn, cconn, ssock, csock = socket_pair_connections(tls12_server_ctx(pt_certs),
                                                         tls12_client_ctx(pt_certs))
    try:
        with cconn:
            cconn.write(b"bye")
        assert cconn.closed
        assert sconn.read(10) == b"bye"
        with pytest.raises(TLSClosed):
            sconn.read(10)
    finally:
        sconn.close()
        ssock.close()
        csock.close()


@pytest.mark.needs_program("openssl")
def test_client_against_openssl_s_server(pt_certs, pt_engine):
    srv = OpenSSLServer(["-cert", pt_certs.cert, "-key", pt_certs.key, "-naccept", "1",
                         "-ign_eof", "-max_pipelines", "8", "-tls1_2"], engine=pt_engine.path)
    with srv:
        cli = tls12_client_ctx(pt_certs, max_pipelines=8)
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        with Connection(cli, sock, server_hostname="localhost") as c:
            c.do_handshake()
            assert c.tls_version == "TLSv1.2"
            data = os.urandom(8 << 20)
            with stats_delta(pt_engine) as d:
                c.sendall(data)
            assert d.stats.hist.get(8, 0) >= 64  # 512 records, 8 per batch
            assert c.shutdown(timeout=5)
        sock.close()
    assert data in srv.stdout


# --------------------------------------------------------------------------
# CLI (the interop matrix lives in test_cli_interop.py)
# --------------------------------------------------------------------------
def test_cli_config(pt_engine, capsys):
    from pipetls import cli

    assert cli.main(["config", "--threads", "3", "--engine", pt_engine.path]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^openssl_conf = ", out, re.M)
    assert "dynamic_path = %s" % pt_engine.path in out
    assert "THREADS = 3" in out and "default_algorithms = CIPHERS" in out
    # Order matters to OpenSSL's engine config: load, ctrl, init.
    assert out.index("dynamic_path") < out.index("THREADS") < out.index("init = 1")


@pytest.mark.needs_program("openssl")
def test_cli_config_loads_the_engine(pt_engine, tmp_path):
    from pipetls import cli

    cnf = tmp_path / "pt.cnf"
    assert cli.main(["config", "--engine", pt_engine.path, "-o", str(cnf)]) == 0
    env = dict(os.environ, OPENSSL_CONF=str(cnf))
    r = subprocess.run([OPENSSL, "engine", "-t", "pipetls"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert "pipetls" in r.stdout and "available" in r.stdout, r.stdout + r.stderr


def test_cli_config_nginx(pt_engine, tmp_path, capsys):
    """``pipetls config --nginx``: the openssl.cnf (-o) only loads the engine,
    stdout is the server block with the commands as ssl_conf_command lines
    and an ssl_buffer_size that fills every pipeline; the nginx side runs
    in tests/test_programs_patched.py."""
    from pipetls import cli

    cnf = tmp_path / "pt.cnf"
    assert cli.main(["config", "--nginx", "--engine", pt_engine.path, "-o", str(cnf),
                     "--split-send-frag", "4096", "--stats", "/tmp/w.stats"]) == 0
    out = capsys.readouterr().out
    assert "dynamic_path = %s" % pt_engine.path in cnf.read_text()
    assert "system_default" not in cnf.read_text()
    assert re.search(r"^server \{$", out, re.M) and out.rstrip().endswith("}")
    assert "    ssl_conf_command MaxPipelines 8;" in out
    assert "    ssl_conf_command SplitSendFragment 4096;" in out
    assert "    ssl_buffer_size 32k;" in out          # 8 x 4096
    assert "OPENSSL_CONF=%s" % cnf in out and "env PIPETLS_STATS=/tmp/w.stats;" in out
    # SplitSendFragment before MaxPipelines: the order SSL_CONF needs
    assert out.index("SplitSendFragment") < out.index("ssl_conf_command MaxPipelines")


def test_cli_config_system_default(pt_engine, capsys):
    """The pipelining options add a system_default section (and
    config_diagnostics); an out-of-range value fails before anything is
    printed, naming the command and the range."""
    from pipetls import cli

    assert cli.main(["config", "--engine", pt_engine.path, "--max-pipelines", "8",
                     "--read-buf", "1M"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^config_diagnostics = 1$", out, re.M)
    assert re.search(r"^ssl_conf = pipetls_ssl_module$", out, re.M)
    assert re.search(r"^MaxPipelines = 8\nReadBufferLength = 1048576$", out, re.M)
    assert cli.main(["config", "--engine", pt_engine.path, "--max-pipelines", "33"]) == 1
    captured = capsys.readouterr()
    assert "MaxPipelines=33 is out of range: allowed 1..32" in captured.out + captured.err
    assert "openssl_conf" not in captured.out
    # without the options the file is what it was: no ssl_conf section
    assert cli.main(["config", "--engine", pt_engine.path]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"^ssl_conf", out, re.M) and "config_diagnostics" not in out


def test_cli_config_provider(tmp_path, capsys):
    """``pipetls config --nginx --provider PATH``: the openssl.cnf activates
    the default provider and the pipetls one and prefers the latter's
    ciphers; the block offers TLS 1.3 with ``Ciphersuites`` and no
    ``ssl_ciphers``.  A missing module, or --engine beside --provider, is
    refused before anything is written (the file loading in OpenSSL 3.5 is
    tests/test_programs_patched.py)."""
    from pipetls import cli

    module = tmp_path / "pipetls-provider.so"
    module.write_bytes(b"")
    cnf = tmp_path / "pt.cnf"
    assert cli.main(["config", "--nginx", "--provider", str(module), "--threads", "2",
                     "-o", str(cnf)]) == 0
    out = capsys.readouterr().out
    text = cnf.read_text()
    assert "dynamic_path" not in text and "engines" not in text
    assert re.search(r"^default = pipetls_default_provider\npipetls = pipetls_provider$",
                     text, re.M)
    assert re.search(r"^\[pipetls_default_provider\]\nactivate = 1$", text, re.M)
    assert re.search(r"^module = %s$" % re.escape(str(module)), text, re.M)
    assert re.search(r"^THREADS = 2$", text, re.M)
    assert re.search(r"^default_properties = \?provider=pipetls$", text, re.M)
    assert "    ssl_protocols TLSv1.3;" in out and "    ssl_ciphers " not in out
    assert ("    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
            "TLS_CHACHA20_POLY1305_SHA256;") in out
    assert "    ssl_conf_command MaxPipelines 8;" in out and "ssl_buffer_size 128k;" in out
    missing = tmp_path / "nothing.so"
    cnf.unlink()
    assert cli.main(["config", "--provider", str(missing), "-o", str(cnf)]) == 1
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())   # rich wraps lines
    assert "%s: no such file" % missing in said and not cnf.exists()
    assert cli.main(["config", "--provider", str(module), "--engine", "/x/pipetls.so"]) == 1
    captured = capsys.readouterr()
    assert "--provider and --engine" in " ".join((captured.out + captured.err).split())
    assert "openssl_conf" not in captured.out
    assert cli.main(["config", "--provider", str(module), "--threads", "0"]) == 1
    captured = capsys.readouterr()
    assert "threads=0 is out of range" in " ".join((captured.out + captured.err).split())


@pytest.mark.needs_program("openssl")
def test_cli_openssl_argv(pt_engine):
    from pipetls import cli

    argv = cli.openssl_argv(["--", "s_server", "-max_pipelines", "8"], pt_engine.path)
    assert argv[1:] == ["s_server", "-engine", pt_engine.path, "-max_pipelines", "8"]
    assert cli.openssl_argv(["version"], pt_engine.path)[1:] == ["version"]
    assert cli.openssl_argv(["ciphers", "-v"], pt_engine.path)[1:] == ["ciphers", "-v"]
    assert cli.main(["openssl", "--engine", pt_engine.path, "version"]) == 0


def test_cli_info_and_version(pt_engine, capsys, monkeypatch):
    from pipetls import cli

    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["info", "--engine", pt_engine.path]) == 0
    out = capsys.readouterr().out
    assert "AES-128-GCM" in out and pt_engine.path in out and "OpenSSL 3." in out
    assert cli.main(["info", "--engine", "/nonexistent/pipetls.so"]) == 1
    assert cli.main(["--version"]) == 0
    assert pipetls.__version__ in capsys.readouterr().out


def test_cli_serve_connect_bulk(pt_engine, pt_certs):
    env = dict(os.environ, PIPETLS_ENGINE=pt_engine.path)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(pipetls.__file__))]
                                        + sys.path)
    serve = subprocess.Popen(
        [sys.executable, "-m", "pipetls.cli", "serve", "--port", "0", "--naccept", "1",
         "--cert", pt_certs.cert, "--key", pt_certs.key, "--tls1_2", "--max-pipelines", "8",
         "--bulk", "8M", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        line = serve.stdout.readline()
        port = int(re.search(r"ACCEPT .*:(\d+)", line).group(1))
        r = subprocess.run(
            [sys.executable, "-m", "pipetls.cli", "connect", "--port", str(port),
             "--cafile", pt_certs.ca, "--servername", "localhost", "--max-pipelines", "8",
             "--bulk", "8M"],
            capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "sent 8388608 bytes" in r.stdout
        assert "batches of 8" in r.stderr  # the engine's statistics table
        out, err = serve.communicate(timeout=30)
        assert "received 8388608 bytes" in out, err
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
