"""Fixtures and helpers for tests/test_api.py and tests/test_stdlib.py.

Import the fixtures into a test module with
``from _pt_helpers import *  # noqa: F401,F403``.  (``pt_certs`` is not the
conftest's ``certs``: it adds an unrelated CA, a wrong key and the DER leaf.)

The engine is registered process-wide, so one pytest process shares one
engine: ``pt_engine`` is session-scoped and uses ``pipetls.load_engine()``
(the same shared Engine any other test module gets).  Tests that read the
counters take a snapshot before and subtract (``EngineStats.__sub__``)
instead of resetting, so they do not disturb each other.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import pipetls  # noqa: F401
except ImportError:  # running from a source tree without installing
    sys.path.insert(0, os.path.join(_REPO, "pybind"))
    import pipetls  # noqa: F401

from pipetls import _ffi  # noqa: E402

__all__ = [
    "pt_engine",
    "pt_certs",
    "clean_error_queue",
    "Certs",
    "stats_delta",
    "tls12_server_ctx",
    "tls12_client_ctx",
    "OpenSSLServer",
    "needs_openssl_cli",
    "socket_pair_connections",
]

needs_openssl_cli = pytest.mark.needs_program("openssl")


# --------------------------------------------------------------------------
# Certificates (made with `cryptography`, once per session)
# --------------------------------------------------------------------------
class Certs:
    """Paths: ca (PEM), cert/key (leaf for localhost + 127.0.0.1, signed by
    ca), other_ca (an unrelated CA), leaf_der (the leaf in DER)."""


def _make_certs(d):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn)).issuer_name(name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("pipetls test CA")
    _, other_cert = ca("pipetls other CA")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("localhost")).issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    c = Certs()
    c.ca = os.path.join(d, "ca.pem")
    c.other_ca = os.path.join(d, "other_ca.pem")
    c.cert = os.path.join(d, "cert.pem")
    c.key = os.path.join(d, "key.pem")
    c.wrong_key = os.path.join(d, "wrong_key.pem")
    with open(c.ca, "wb") as f:
        f.write(ca_cert.public_bytes(pem))
    with open(c.other_ca, "wb") as f:
        f.write(other_cert.public_bytes(pem))
    with open(c.cert, "wb") as f:
        f.write(leaf.public_bytes(pem))
    for path, key in ((c.key, leaf_key), (c.wrong_key, ec.generate_private_key(ec.SECP256R1()))):
        with open(path, "wb") as f:
            f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    c.leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    return c


@pytest.fixture(scope="session")
def pt_certs(tmp_path_factory):
    return _make_certs(str(tmp_path_factory.mktemp("pt_certs")))


# --------------------------------------------------------------------------
# Engine and error queue
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pt_engine():
    """The process-wide shared engine, registered for its ciphers."""
    return pipetls.load_engine(register=True)


@pytest.fixture
def clean_error_queue():
    """OpenSSL's error queue (this thread) is empty before and after."""
    assert _ffi.ERR_peek_error() == 0, "error queue not empty before the test"
    yield
    leftover = _ffi.ERR_peek_error()
    _ffi.ERR_clear_error()
    assert leftover == 0, "the test left errors in OpenSSL's queue: 0x%x" % leftover


class stats_delta:
    """``with stats_delta(engine) as d: ...``; then ``d.stats`` holds the
    counters accumulated inside the block."""

    def __init__(self, engine):
        self.engine = engine
        self.stats = None

    def __enter__(self):
        self._before = self.engine.stats()
        return self

    def __exit__(self, *exc):
        self.stats = self.engine.stats() - self._before
        return False


# --------------------------------------------------------------------------
# Contexts and transports
# --------------------------------------------------------------------------
def tls12_server_ctx(pt_certs, **kw):
    kw.setdefault("max_version", "TLSv1.2")
    return pipetls.Context(server=True, certfile=pt_certs.cert, keyfile=pt_certs.key, **kw)


def tls12_client_ctx(pt_certs, **kw):
    kw.setdefault("max_version", "TLSv1.2")
    return pipetls.Context(server=False, cafile=pt_certs.ca, **kw)


def socket_pair_connections(server_ctx, client_ctx, timeout=10.0, hostname="localhost"):
    """A real TCP connection on 127.0.0.1; handshakes both ends (server in a
    thread).  Returns (server_conn, client_conn, server_sock, client_sock)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    result = {}

    def accept():
        try:
            s, _ = lsock.accept()
            s.settimeout(timeout)
            conn = pipetls.Connection(server_ctx, s)
            result["sock"] = s
            result["conn"] = conn
            conn.do_handshake()
        except BaseException as e:  # reported in the main thread
            result["error"] = e
        finally:
            _ffi.ERR_clear_error()

    th = threading.Thread(target=accept)
    th.start()
    csock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        cconn = pipetls.Connection(client_ctx, csock, server_hostname=hostname)
        cconn.do_handshake()
    finally:
        th.join(timeout + 5)
        lsock.close()
    if "error" in result:
        raise result["error"]
    return result["conn"], cconn, result["sock"], csock


class OpenSSLServer:
    """``openssl s_server`` on 127.0.0.1 with the given extra arguments.
    Its stdout (what it received) is collected in a thread."""

    def __init__(self, args, pt_certs):
        cmd = ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", pt_certs.cert,
               "-key", pt_certs.key, "-naccept", "1", "-ign_eof"] + list(args)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.port = None
        self.head = b""
        while self.port is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("s_server exited: %s" % self.proc.stderr.read().decode())
            self.head += line
            m = re.search(rb"ACCEPT .*:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        self.chunks = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            b = self.proc.stdout.read1(1 << 20)
            if not b:
                return
            self.chunks.append(b)

    def finish(self, timeout=30):
        """Wait for the server to exit; returns everything it printed."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        self._close_pipes()
        return b"".join(self.chunks)

    def _close_pipes(self):
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        self._close_pipes()
