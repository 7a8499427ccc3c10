"""Load through the Python API: 64 concurrent pipelining TLS connections
over loopback sockets, all sharing the engine's one lane pool, for a
bounded time, every byte checked.

Each client connection sends its own random payload in 64 KiB writes
(max_pipelines 8, split_send_fragment 4096: batches of 8 records) while a
second thread reads the echo; the server side of every connection (a thread
each, in this same process) echoes what it reads. Both directions of all
64 connections are encrypted and decrypted by the same engine at once.
Proof: the SHA-256 of every echo equals that of what was sent; the engine
pipelined, its worker lanes took part, and no batch failed. ADAPTIVE is off
here, so that every batch goes to the pool.

Under ``tox -e sanitize`` / ``tox -e tsan`` (tests/run_sanitized.sh) the
same test runs against the ASan+UBSan and TSan builds of the engine. The
``stress`` variant runs longer with more data.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

import pipetls
from support.proof import SUITES, Knobs, pt_context

CONNS = 64
KNOBS = Knobs(8, 4096, 1 << 20)
WRITE = 64 << 10
SANITIZED = bool(os.environ.get("LD_PRELOAD", "")) or bool(os.environ.get("PIPETLS_SANITIZE"))


@pytest.fixture
def engine(engine_path):
    """The engine with ADAPTIVE off: 64 connections on a few cores would
    otherwise (rightly) keep most batches in their callers, and this file
    is about the shared pool under the most contention it can get.
    tests/test_adaptive.py covers the adaptive decisions."""
    e = pipetls.load_engine(engine_path, register=True)
    was = e.adaptive
    e.adaptive = False
    try:
        yield e
    finally:
        e.adaptive = was


class EchoServer:
    """Accepts ``n`` connections; each is echoed in its own thread."""

    def __init__(self, ctx, n, timeout):
        self.ctx, self.n, self.timeout = ctx, n, timeout
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(n)
        self.lsock.settimeout(timeout)
        self.port = self.lsock.getsockname()[1]
        self.errors = []
        self.threads = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self):
        try:
            for _ in range(self.n):
                s, _ = self.lsock.accept()
                s.settimeout(self.timeout)
                t = threading.Thread(target=self._echo, args=(s,), daemon=True)
                t.start()
                self.threads.append(t)
        except BaseException as e:  # noqa: BLE001
            self.errors.append(e)
        finally:
            self.lsock.close()

    def _echo(self, sock):
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            with sock, pipetls.Connection(self.ctx, sock) as conn:
                conn.do_handshake()
                while True:
                    try:
                        k = conn.readinto(view)
                    except pipetls.TLSClosed:
                        break
                    conn.sendall(view[:k])
                conn.shutdown(timeout=2)
        except BaseException as e:  # noqa: BLE001
            self.errors.append(e)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        self._acceptor.join(timeout)
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def run_clients(ctx, port, payloads, timeout, corrupt=None):
    """One connection per payload; returns {i: (sha sent, sha echoed, n)},
    the errors as (i, where, exception) and the connections still running."""
    results, errors = {}, []
    corrupt = corrupt or {}

    def client(i, data):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            with sock, pipetls.Connection(ctx, sock, server_hostname="localhost") as conn:
                conn.do_handshake()
                want = hashlib.sha256(data).hexdigest()
                if i in corrupt:        # planted fault: change a byte after hashing
                    data = bytearray(data)
                    data[corrupt[i]] ^= 0x40
                got = {}

                def reader():
                    h, n, rbuf = hashlib.sha256(), 0, bytearray(1 << 20)
                    try:
                        while n < len(data):
                            k = conn.readinto(rbuf)
                            h.update(memoryview(rbuf)[:k])
                            n += k
                    except BaseException as e:  # noqa: BLE001
                        got["error"] = e
                    got["sha"], got["n"] = h.hexdigest(), n

                rt = threading.Thread(target=reader, daemon=True)
                rt.start()
                view = memoryview(data)
                for off in range(0, len(data), WRITE):
                    conn.sendall(view[off:off + WRITE])
                rt.join(timeout)
                if "error" in got:
                    # the echo failed in the client's SSL_read: name that side
                    errors.append((i, "client read, at byte %d" % got["n"], got["error"]))
                    return
                conn.shutdown(timeout=2)
                results[i] = (want, got["sha"], got["n"])
        except BaseException as e:  # noqa: BLE001
            errors.append((i, "client handshake/write", e))

    threads = [threading.Thread(target=client, args=(i, d), daemon=True)
               for i, d in enumerate(payloads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    return results, errors, hung


def load_run(engine, certs, per_conn, timeout, corrupt=None):
    suite = SUITES["aes128gcm"]
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=KNOBS)
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=KNOBS)
    payloads = [os.urandom(per_conn) for _ in range(CONNS)]
    before = engine.stats()
    started = time.monotonic()
    try:
        srv = EchoServer(sctx, CONNS, timeout)
        results, errors, hung = run_clients(cctx, srv.port, payloads, timeout, corrupt)
        srv_done = srv.join(30)
    finally:
        sctx.close()
        cctx.close()
    elapsed = time.monotonic() - started
    return results, errors, hung, srv, srv_done, engine.stats() - before, elapsed


def check_load(results, errors, hung, srv, srv_done, delta, elapsed, per_conn, timeout):
    assert not hung, f"connections still running after {timeout}s: {hung}"
    # the engine's counters of this run go with every failure (failed_batches
    # tells an engine-side rejection from one elsewhere)
    engine_said = f"engine: failed_batches {delta.failed_batches} of {delta.batches}"
    assert not errors, f"{len(errors)} connections failed, first: {errors[0]!r}; {engine_said}"
    assert srv_done and not srv.errors, f"server side: {srv.errors[:3]!r}; {engine_said}"
    assert len(results) == CONNS
    bad = [i for i, (want, got, n) in results.items() if want != got or n != per_conn]
    assert not bad, f"data differs on connections {bad}"
    assert delta.failed_batches == 0, delta
    assert delta.pipelined_batches > 0 and delta.hist.get(KNOBS.max_pipelines, 0) > 0, delta
    assert elapsed < timeout


def test_64_concurrent_pipelining_connections(engine, certs):
    per_conn = (256 << 10) if SANITIZED else (1 << 20)
    timeout = 300 if SANITIZED else 120
    out = load_run(engine, certs, per_conn, timeout)
    check_load(*out, per_conn, timeout)
    delta = out[5]
    if delta.lanes > 1:
        # the shared pool's worker lanes did part of the records
        workers = sum(v for k, v in delta.lanes_records.items() if k > 0)
        assert workers > 0, delta


@pytest.mark.stress
def test_64_connections_for_a_minute(engine, certs):
    """The same, repeated with 4 MiB per connection until 60 s have passed."""
    end = time.monotonic() + 60
    rounds = 0
    while time.monotonic() < end or rounds == 0:
        out = load_run(engine, certs, 4 << 20, 300)
        check_load(*out, 4 << 20, 300)
        rounds += 1


def test_negative_control_one_corrupted_connection_is_found(engine, certs):
    """One connection of 64 changes a byte after hashing what it sends: the
    check names exactly that connection."""
    per_conn = 64 << 10
    out = load_run(engine, certs, per_conn, 120, corrupt={17: 1000})
    with pytest.raises(AssertionError, match=r"data differs on connections \[17\]"):
        check_load(*out, per_conn, 120)
