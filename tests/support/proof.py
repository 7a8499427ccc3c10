"""Helpers for the proof tests (test_interop, test_wire, test_tamper,
test_badinput, test_concurrency64): pipetls endpoints on real loopback
sockets, peers in their own processes (support.peers), payloads, the
suites and knobs.

The pipetls side always runs in the pytest process with the engine
registered; every peer runs in a child process without the engine unless a
test asks for ``openssl ... -engine``. Every wait is bounded.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import pytest

import pipetls

from .net import free_port, wait_listening
from .peers import OPENSSL, StdioPeer
from .plan import expected_batches  # noqa: F401 - part of this module's API
from .stats import read_stats_file

HERE = Path(__file__).resolve().parent          # tests/support
TESTS = HERE.parent

MIB = 1 << 20
PEER_CHILD = HERE / "peer_child.py"

# The sizes of the issue: each is one write call on the sending side.
SIZES_FULL = [0, 1, 2000, 2001, 6001, 16384, 16385, MIB, 64 * MIB]
SIZES_SMALL = [0, 1, 2000, 2001, 6001, 16384, 16385]



# ------------------------------------------------------------- payloads

_PAYLOADS: dict = {}


def payload(n: int, seed: int, text: bool = False) -> bytes:
    """n random bytes, the same for the same (n, seed, text) within a run.
    ``text``: base64 lines of random bytes (no NUL, no '*'), for gnutls-serv
    --echo, which handles what it reads as C strings."""
    key = (n, seed, text)
    if key not in _PAYLOADS:
        if len(_PAYLOADS) > 8:
            _PAYLOADS.clear()
        if text:
            _PAYLOADS[key] = base64.encodebytes(os.urandom(n * 3 // 4 + 3))[:n]
        else:
            _PAYLOADS[key] = os.urandom(n)
    return _PAYLOADS[key]


def sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- suites

@dataclass(frozen=True)
class Suite:
    id: str
    cipher: Optional[str] = None    # TLS 1.2 (OpenSSL name)
    etm: bool = True                # Encrypt-then-MAC (CBC only)
    tls13: Optional[str] = None     # TLS 1.3 suite
    gnutls: str = ""                # GnuTLS priority string

    @property
    def is13(self) -> bool:
        return self.tls13 is not None

    @property
    def peer_cipher(self) -> str:
        return self.tls13 or self.cipher

    def __str__(self):
        return self.id


_G12 = "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:-MAC-ALL:"
SUITE_LIST = [
    Suite("aes128gcm", "ECDHE-RSA-AES128-GCM-SHA256", gnutls=_G12 + "+AES-128-GCM:+AEAD"),
    Suite("aes256gcm", "ECDHE-RSA-AES256-GCM-SHA384", gnutls=_G12 + "+AES-256-GCM:+AEAD"),
    Suite("chacha20", "ECDHE-RSA-CHACHA20-POLY1305",
          gnutls=_G12 + "+CHACHA20-POLY1305:+AEAD"),
    Suite("cbcsha-etm", "ECDHE-RSA-AES128-SHA", True, gnutls=_G12 + "+AES-128-CBC:+SHA1"),
    Suite("cbcsha-noetm", "ECDHE-RSA-AES128-SHA", False,
          gnutls=_G12 + "+AES-128-CBC:+SHA1:%NO_ETM"),
    Suite("cbcsha256-etm", "ECDHE-RSA-AES128-SHA256", True,
          gnutls=_G12 + "+AES-128-CBC:+SHA256"),
    Suite("cbcsha256-noetm", "ECDHE-RSA-AES128-SHA256", False,
          gnutls=_G12 + "+AES-128-CBC:+SHA256:%NO_ETM"),
    Suite("tls13-aes128gcm", tls13="TLS_AES_128_GCM_SHA256",
          gnutls="NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM"),
    Suite("tls13-aes256gcm", tls13="TLS_AES_256_GCM_SHA384",
          gnutls="NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM"),
    Suite("tls13-chacha20", tls13="TLS_CHACHA20_POLY1305_SHA256",
          gnutls="NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305"),
]
SUITES = {s.id: s for s in SUITE_LIST}


@dataclass(frozen=True)
class Knobs:
    max_pipelines: int = 1
    split: int = 16384
    rbuf: int = 0        # default_read_buffer_len; 0 = OpenSSL's default

    def __str__(self):
        return f"p{self.max_pipelines}-s{self.split}-" + ("rb1M" if self.rbuf else "rbdef")


KNOBS_ALL = [Knobs(p, s, r) for p in (1, 4, 32) for s in (512, 4096, 16384) for r in (0, MIB)]


def pt_context(engine, certs, *, server: bool, suite: Suite, knobs: Knobs = Knobs(),
               keylog=None, **extra):
    """A pipetls Context for ``suite`` with the pipelining ``knobs``."""
    kw = dict(max_pipelines=knobs.max_pipelines, split_send_fragment=knobs.split,
              engine=engine)
    if knobs.rbuf:
        kw["default_read_buffer_len"] = knobs.rbuf
    if suite.is13:
        kw.update(min_version="TLSv1.3", max_version="TLSv1.3", ciphersuites=suite.tls13)
    else:
        kw.update(max_version="TLSv1.2", ciphers=suite.cipher, encrypt_then_mac=suite.etm)
    if server:
        kw.update(certfile=str(certs.cert), keyfile=str(certs.key))
    else:
        kw.update(cafile=str(certs.ca))
    if keylog is not None:
        kw["keylog_callback"] = keylog
    kw.update(extra)
    return pipetls.Context(server=server, **kw)


# ------------------------------------------------------ pipetls endpoints

class PtServer:
    """Accept one TCP connection on 127.0.0.1 in a thread and run
    ``handler(conn)`` on a pipetls server Connection there (after the
    handshake). ``join()`` returns the handler's result or raises its error.

    ``linger``: close as a careful server does (nginx's lingering close):
    after the handler, half-close and read the peer's bytes until it closes
    (at most ``timeout``), so the kernel never answers unread data with a
    reset that could destroy a fatal alert on its way to the peer."""

    def __init__(self, ctx, handler: Callable, timeout: float = 30.0,
                 handshake: bool = True, linger: bool = False):
        self.ctx, self.handler, self.timeout = ctx, handler, timeout
        self.handshake = handshake
        self.linger = linger
        self._lsock = socket.socket()
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(4)
        self._lsock.settimeout(timeout)
        self.port = self._lsock.getsockname()[1]
        self.result = None
        self.error: Optional[BaseException] = None
        self.conn = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        sock = None
        try:
            sock, _ = self._lsock.accept()
            sock.settimeout(self.timeout)
            with pipetls.Connection(self.ctx, sock) as conn:
                self.conn = conn
                if self.handshake:
                    conn.do_handshake()
                self.result = self.handler(conn)
        except BaseException as e:  # noqa: BLE001 - handed to join()
            self.error = e
        finally:
            self._lsock.close()
            if sock is not None:
                if self.linger:
                    _lingering_close(sock, self.timeout)
                sock.close()
            pipetls._ffi.clear_errors()

    def join(self, timeout: Optional[float] = None, raise_error: bool = True):
        self._t.join(timeout if timeout is not None else self.timeout + 10)
        if self._t.is_alive():
            raise AssertionError("the pipetls server thread did not finish in time")
        if self.error is not None and raise_error:
            raise self.error
        return self.result


def _lingering_close(sock: socket.socket, timeout: float) -> None:
    """Half-close ``sock`` and discard what the peer still sends until it
    closes or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    try:
        sock.shutdown(socket.SHUT_WR)
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(1 << 16):
                break
    except OSError:
        pass


def pt_connect(ctx, port: int, timeout: float = 30.0, hostname: str = "localhost"):
    """A pipetls client Connection to 127.0.0.1:port, handshake done."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        conn = pipetls.Connection(ctx, sock, server_hostname=hostname)
        conn.do_handshake()
    except BaseException:
        sock.close()
        raise
    return conn, sock


@dataclass
class Received:
    n: int = 0
    sha256: str = ""
    data: Optional[bytes] = None


def pt_read(conn, expect: int, keep: bool = False, into: Optional[bytearray] = None) -> Received:
    """Read exactly ``expect`` bytes (hashing them). ``into``: a bytearray
    that collects them, so a caller sees what arrived even if it raises."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got = 0
    kept = into if into is not None else (bytearray() if keep else None)
    while got < expect:
        k = conn.readinto(view[:min(len(buf), expect - got)])
        h.update(view[:k])
        if kept is not None:
            kept += view[:k]
        got += k
    return Received(got, h.hexdigest(), bytes(kept) if kept is not None else None)


def pt_write_plan(conn, data, plan: Sequence[int]) -> None:
    """One write call per plan entry (sendall: all of it), in order."""
    view = memoryview(data)
    off = 0
    for n in plan:
        if n == 0:
            assert conn.write(b"") == 0
        else:
            assert conn.sendall(view[off:off + n]) == n
        off += n


def pt_exchange(conn, data, plan, expect: int, keep: bool = False) -> Received:
    """Write ``data`` per ``plan`` in a thread while reading ``expect``
    bytes here; both directions at once (no deadlock on full buffers)."""
    err: List[BaseException] = []

    def writer():
        try:
            pt_write_plan(conn, data, plan)
        except BaseException as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        got = pt_read(conn, expect, keep)
    finally:
        t.join(conn.timeout + 5 if conn.timeout else 60)
    if err:
        raise err[0]
    if t.is_alive():
        raise AssertionError("the pipetls writer did not finish")
    return got


# ------------------------------------------------------------- processes

def peer_child_argv(lib: str, role: str, port: int, certs, suite: Suite, expect: int,
                    plan: Sequence[int], corrupt_at: int = -1, timeout: float = 120) -> list:
    argv = [sys.executable, str(PEER_CHILD), lib, role, "--port", str(port),
            "--ca", str(certs.ca), "--cert", str(certs.cert), "--key", str(certs.key),
            "--cipher", suite.peer_cipher, "--expect", str(expect),
            "--plan", ",".join(map(str, plan)), "--timeout", str(timeout)]
    if suite.is13:
        argv.append("--tls13")
    if corrupt_at >= 0:
        argv += ["--corrupt-at", str(corrupt_at)]
    return argv


def openssl_version_opts(suite: Suite) -> list:
    if suite.is13:
        return ["-tls1_3", "-ciphersuites", suite.tls13]
    return ["-tls1_2", "-cipher", suite.cipher] + ([] if suite.etm else ["-no_etm"])


@dataclass
class InteropResult:
    to_peer_sha: str            # what the peer received
    to_peer_n: int
    from_peer: Received         # what pipetls received
    stats: object               # engine counters during the connection (pytest process)
    peer_rc: Optional[int] = None
    peer_stderr: str = ""
    peer_stats: list = field(default_factory=list)
    seconds: float = 0.0


PEERS = ["openssl", "openssl-engine", "pyssl", "gnutls", "curl", "tlslite"]
# (peer, the peer's role); curl is a client only.
PEER_ROLES = [(p, r) for p in PEERS for r in ("client", "server") if (p, r) != ("curl", "server")]


def run_interop(peer: str, peer_role: str, suite: Suite, knobs: Knobs, sizes: Sequence[int],
                *, engine, engine_path: str, certs, tmp_path: Path,
                corrupt_at: int = -1, use_engine: bool = True) -> InteropResult:
    """One connection: pipetls (this process, engine on, ``knobs``) against
    ``peer`` in ``peer_role``; every size in ``sizes`` is one write, both
    directions. Returns the SHA-256 of what each side got (the caller
    compares); raises AssertionError with the peer's stderr on a failure."""
    total = sum(sizes)
    pt_data = payload(total, 1, text=peer == "gnutls" and peer_role == "server")
    peer_plan = list(sizes)
    peer_data = payload(total, 2)
    slow = peer == "tlslite"
    timeout = 30 + total / ((0.15 if slow else 8) * MIB)
    pt_role_server = peer_role == "client"
    ctx = pt_context(engine if use_engine else None, certs, server=pt_role_server,
                     suite=suite, knobs=knobs)
    stats_file = tmp_path / f"peer-stats-{os.getpid()}-{time.monotonic_ns()}.txt"
    env = {}
    started = time.monotonic()
    before = engine.stats()
    peer_proc = None
    srv = None
    from_peer = None
    try:
        if peer == "curl":
            assert pt_role_server
            box = {}

            def http(conn):
                box["body"] = _serve_http(conn, pt_data, sizes)
                conn.shutdown(timeout=5)

            srv = PtServer(ctx, http, timeout=timeout)
            argv = ["curl", "-sS", "--fail", "--http1.1", "--cacert", str(certs.ca),
                    "--resolve", f"localhost:{srv.port}:127.0.0.1", "-H", "Expect:",
                    "--data-binary", "@-", "--max-time", str(int(timeout)),
                    "-o", "-", f"https://localhost:{srv.port}/upload"]
            if suite.is13:
                argv += ["--tlsv1.3", "--tls13-ciphers", suite.tls13]
            else:
                argv += ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", suite.cipher]
            peer_proc = StdioPeer(argv, peer_data, expect=len(pt_data),
                                  stdin_close_after_send=True)
            srv.join(timeout)
            from_peer = box["body"]
        elif peer == "gnutls" and peer_role == "server":
            # gnutls-serv has no stdin mode: an echo server; what comes back
            # is what it received, so one stream proves both directions.
            port = free_port()
            argv = ["gnutls-serv", "--echo", "--crlf", "-p", str(port),
                    "--x509certfile", str(certs.cert), "--x509keyfile", str(certs.key),
                    "--priority", suite.gnutls, "-q"]
            peer_proc = StdioPeer(argv)
            wait_listening(port, 10, peer_proc.proc)
            conn, sock = pt_connect(ctx, port, timeout)
            with sock, conn:
                from_peer = pt_exchange(conn, pt_data, sizes, expect=len(pt_data))
                conn.shutdown(timeout=2)
            peer_data = pt_data
            peer_proc.kill()
        else:
            if pt_role_server:
                box = {}

                peer_ready = threading.Event()

                def handler(conn):
                    box["got"] = pt_exchange(conn, pt_data, sizes, expect=len(peer_data))
                    # wait until the peer has all of ours before closing
                    peer_ready.wait(timeout)
                    peer_proc.got_all.wait(timeout)
                    conn.shutdown(timeout=5)

                srv = PtServer(ctx, handler, timeout=timeout)
                port = srv.port
            else:
                port = free_port()
            argv = _stdio_argv(peer, peer_role, port, suite, knobs, certs, engine_path,
                               len(pt_data), peer_plan, corrupt_at, timeout)
            if peer == "openssl-engine":
                env["PIPETLS_STATS"] = str(stats_file)
            peer_proc = StdioPeer(argv, peer_data, expect=len(pt_data), env=env,
                                  keep_preload=peer == "openssl-engine")
            if pt_role_server:
                peer_ready.set()
                srv.join(timeout)
                from_peer = box["got"]
            else:
                wait_listening(port, 10, peer_proc.proc)
                conn, sock = pt_connect(ctx, port, timeout)
                with sock, conn:
                    from_peer = pt_exchange(conn, pt_data, sizes, expect=len(peer_data))
                    peer_proc.got_all.wait(timeout)
                    peer_proc.close_stdin()
                    conn.shutdown(timeout=5)
        peer_proc.got_all.wait(timeout)
        peer_proc.close_stdin()
        rc = peer_proc.wait(30)
    except BaseException as e:
        if peer_proc is not None:
            peer_proc.kill()
            peer_proc.wait(10)
            raise AssertionError(f"{peer} {peer_role}: {type(e).__name__}: {e}\n"
                                 f"peer argv: {' '.join(peer_proc.argv)}\n"
                                 f"peer stderr:\n{peer_proc.stderr[-3000:]}") from e
        raise
    finally:
        ctx.close()
    echo = peer == "gnutls" and peer_role == "server"
    # gnutls-serv --echo: what came back is what it received
    res = InteropResult(from_peer.sha256 if echo else peer_proc.sha256,
                        from_peer.n if echo else peer_proc.received, from_peer,
                        engine.stats() - before, rc, peer_proc.stderr,
                        read_stats_file(stats_file) if peer == "openssl-engine" else [],
                        time.monotonic() - started)
    res.expected_to_peer = sha(pt_data)
    res.expected_from_peer = sha(peer_data)
    return res


def _stdio_argv(peer, peer_role, port, suite, knobs, certs, engine_path, expect, plan,
                corrupt_at, timeout):
    if peer in ("openssl", "openssl-engine"):
        if peer_role == "client":
            argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
                    "-CAfile", certs.ca, "-verify_return_error", "-verify_hostname", "localhost"]
        else:
            argv = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
                    "-quiet", "-cert", certs.cert, "-key", certs.key]
        argv += openssl_version_opts(suite)
        if peer == "openssl-engine":
            argv += ["-engine", engine_path, "-max_pipelines", "8", "-split_send_frag", "4096",
                     "-read_buf", str(1 << 20)]
        return argv
    if peer == "gnutls":
        assert peer_role == "client"
        return ["gnutls-cli", "--x509cafile", str(certs.ca), "-p", str(port), "127.0.0.1",
                "--verify-hostname", "localhost", "--sni-hostname", "localhost",
                "--priority", suite.gnutls, "--logfile", os.devnull]
    if peer in ("pyssl", "tlslite"):
        return peer_child_argv(peer, peer_role, port, certs, suite, expect, plan, corrupt_at,
                               timeout)
    raise ValueError(peer)


def _serve_http(conn, body, plan) -> Received:
    """A minimal HTTP/1.1 server on a pipetls connection: read one request
    with a Content-Length body (hashed), answer 200 with ``body`` written
    one write per ``plan`` entry."""
    head = bytearray()
    while b"\r\n\r\n" not in head:
        chunk = conn.read(65536)
        head += chunk
        assert len(head) < 1 << 20, "no end of the HTTP header"
    hdr, _, rest = bytes(head).partition(b"\r\n\r\n")
    clen = 0
    for line in hdr.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v)
    h = hashlib.sha256(rest[:clen])
    got = len(rest)
    buf = bytearray(1 << 20)
    while got < clen:
        k = conn.readinto(memoryview(buf)[:min(len(buf), clen - got)])
        h.update(memoryview(buf)[:k])
        got += k
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    pt_write_plan(conn, body, plan)
    return Received(got, h.hexdigest())


# ------------------------------------------------------ crash isolation

@dataclass
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def crashed(self) -> bool:
        return self.returncode < 0 or self.returncode in (134, 139)


def run_isolated(code: str, timeout: float = 60.0, env=None) -> ChildResult:
    """Run Python ``code`` in a child process with pipetls importable and
    the engine path in $PIPETLS_ENGINE; a crash (signal) or hang there does
    not take pytest down. Returns its status and output."""
    full_env = dict(os.environ)
    pkg_root = str(Path(pipetls.__file__).resolve().parent.parent)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [pkg_root, str(TESTS), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout, env=full_env)
        return ChildResult(p.returncode, p.stdout, p.stderr, False)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return ChildResult(-9, out, err, True)


def full_only(request) -> None:
    """Skip unless the full matrix was asked for: ``-m full`` (any marker
    expression naming ``full`` without ``not``) or PIPETLS_FULL=1. The
    project's default ``pytest`` run has no -m, so without this the full
    matrix would run there."""
    expr = request.config.getoption("markexpr", "") or ""
    if os.environ.get("PIPETLS_FULL") == "1":
        return
    if "full" in expr and "not full" not in expr:
        return
    pytest.skip("full matrix: run with -m full (or PIPETLS_FULL=1)")
