"""Names that were renamed or dropped keep working for one release, each
with a DeprecationWarning that names its replacement, and answer exactly
what the replacement answers."""

from __future__ import annotations

import warnings

import pytest

import pipetls
from pipetls import Connection, Context, _ffi, handshake_pair


@pytest.fixture
def pair(certs):
    srv = Context(server=True, certfile=certs.cert, keyfile=certs.key, max_version="TLSv1.2",
                  alpn_protocols=["h2"])
    cli = Context(cafile=certs.ca, max_version="TLSv1.2", alpn_protocols=["h2"])
    s, c = Connection.memory_pair(srv, cli, server_hostname="localhost")
    handshake_pair(s, c)
    yield s, c
    s.close()
    c.close()


def _old(fn, replacement):
    with pytest.warns(DeprecationWarning, match=replacement):
        return fn()


def test_connection_properties(pair):
    s, c = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names do not warn
        new = (c.tls_version, c.cipher_name, c.getpeercert(binary_form=True),
               c.selected_alpn_protocol(), s.getpeercert(True))
    assert new[0] == "TLSv1.2" and "GCM" in new[1] and new[2] and new[3] == "h2"
    assert new[4] is None
    assert _old(lambda: c.version, "tls_version") == new[0]
    assert _old(lambda: c.cipher, "cipher_name") == new[1]
    assert _old(lambda: c.peer_certificate, r"getpeercert\(binary_form=True\)") == new[2]
    assert _old(lambda: c.alpn_protocol, r"selected_alpn_protocol\(\)") == new[3]
    c.write(b"abc")
    assert s.read(1) == b"a"
    assert s.pending_plaintext == 2
    assert _old(lambda: s.pending, "pending_plaintext") == 2


def test_getpeercert_is_der_only(pair):
    _, c = pair
    with pytest.raises(pipetls.ConfigError, match="binary_form=True"):
        c.getpeercert()


def test_connection_aliases(pair):
    s, c = pair
    assert _old(lambda: c.send(b"hello"), r"write\(\)") == 5
    assert _old(lambda: s.recv(2), r"read\(\)") == b"he"
    buf = bytearray(10)
    assert _old(lambda: s.recv_into(buf), r"readinto\(\)") == 3 and buf[:3] == b"llo"
    assert _old(lambda: c.unwrap(), r"shutdown\(\)") is False  # memory: no reply yet


def test_context_wrap(certs):
    with Context(cafile=certs.ca) as ctx:
        conn = _old(lambda: ctx.wrap(server_hostname="localhost"), r"Connection\(ctx")
        assert isinstance(conn, Connection) and conn.transport == "memory"
        conn.close()


def test_engine_unload(engine_path):
    # in a child: loading a second ENGINE beside a test session's one is refused
    import subprocess
    import sys

    code = ("import warnings, pipetls\n"
            "e = pipetls.Engine(%r)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    e.unload()\n"
            "assert e.closed, 'not closed'\n"
            "assert [x.category for x in w] == [DeprecationWarning], w\n"
            "assert 'Engine.close()' in str(w[0].message)\n"
            "print('ok')\n" % engine_path)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_gate_names_in_errors():
    import pipetls.errors as errors

    for name, target in (("check", _ffi.check), ("check_ptr", _ffi.check_ptr),
                         ("drain_errors", _ffi.drain_errors),
                         ("clear_errors", _ffi.clear_errors),
                         ("handle_openssl_error", _ffi.check)):
        assert _old(lambda: getattr(errors, name), "pipetls._ffi") is target
    with pytest.raises(AttributeError):
        errors.no_such_name  # noqa: B018
