"""Runs in a process of its own on the patched OpenSSL 3.5 (LD_LIBRARY_PATH,
PIPETLS_OPENSSL, and an OPENSSL_CONF that loads the pipetls provider,
prefers it for its ciphers and sets its ASYNC): N TLS 1.3 connections on
127.0.0.1, both ends non-blocking pipetls.Connections in one thread, one
``selectors`` loop. The server ends have ``async_mode`` (SSL_MODE_ASYNC)
and max_pipelines 8, so their pipelined records go through the provider's
pipeline functions inside ASYNC jobs; the clients pipeline without async.
Each end sends SIZE random bytes and hashes what it gets.

The loop logs its own events in order: ("pause", id) when a call raised
WantAsync, ("resume", id) when the repeated call went through,
("progress", id) for every read or write that moved data. A round of N
fresh connections is repeated (10 rounds at most) until some job paused.
Prints one JSON document for tests/test_async_provider_patched.py, summed
over the rounds: pauses, resumes, overlaps (pauses during which another
connection made progress), intact (every hash matched), rounds, libs (the
libssl/libcrypto mapped), tls (the negotiated version).

    python support/async_provider_child.py CERT_DIR N SIZE

With ``abandon`` as a fourth argument: N connections over BIO pairs
instead, the server end writing SIZE-byte chunks until a write's job
pauses; then the connection is closed with the job paused, every other
one by ``close()`` (which runs the job to its end first) and the rest by
SSL_free alone, as a C program abandoning a job would (the provider
finishes the update when libssl frees the cipher context). Prints fds
before and after, closed_paused, freed_paused, intact.
"""
import hashlib
import json
import os
import selectors
import socket
import sys
import time

import pipetls  # first: it maps the libssl of PIPETLS_OPENSSL
import pipetls.pairs

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.pki import Certs  # noqa: E402

SUITE = "TLS_AES_128_GCM_SHA256"


def mapped_libs():
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split(None, 5)[-1].strip()
            if "/libssl.so" in path or "/libcrypto.so" in path:
                libs.add(path)
    return sorted(libs)


class Side:
    def __init__(self, ident, conn, sock, tx, expect):
        self.ident, self.conn, self.sock = ident, conn, sock
        self.tx = memoryview(tx)
        self.sent = 0
        self.expect = expect
        self.got = 0
        self.hash = hashlib.sha256()
        self.buf = bytearray(1 << 18)  # one buffer: a paused read resumes into it
        self.paused = None  # "read" / "write" while a job is paused
        self.handshaken = False

    @property
    def finished(self):
        return self.sent == len(self.tx) and self.got == self.expect


class Loop:
    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.log = []

    def add(self, side):
        self.sel.register(side.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, side)

    def step(self, side):
        """Runs side until it must wait; returns (socket events, async fds)."""
        c = side.conn
        try:
            if not side.handshaken:
                c.do_handshake()
                side.handshaken = True
            events = 0
            ops = [side.paused] if side.paused else (
                (["write"] if side.sent < len(side.tx) else []) + ["read"])
            for op in ops:
                while True:
                    try:
                        if op == "write":
                            if side.sent == len(side.tx):
                                break
                            side.sent += c.write(side.tx[side.sent:side.sent + (1 << 18)])
                        else:
                            if side.got == side.expect:
                                break
                            n = c.readinto(side.buf)
                            side.hash.update(memoryview(side.buf)[:n])
                            side.got += n
                        if side.paused:
                            self.log.append(("resume", side.ident))
                            side.paused = None
                        self.log.append(("progress", side.ident))
                    except pipetls.WantAsync as e:
                        side.paused = op
                        self.log.append(("pause", side.ident))
                        return 0, e.fds
                    except pipetls.WantRead:
                        events |= selectors.EVENT_READ
                        break
                    except pipetls.WantWrite:
                        events |= selectors.EVENT_WRITE
                        break
            return events, ()
        except pipetls.WantRead:
            return selectors.EVENT_READ, ()
        except pipetls.WantWrite:
            return selectors.EVENT_WRITE, ()
        except pipetls.WantAsync as e:
            return 0, e.fds

    def run(self, sides, timeout):
        deadline = time.monotonic() + timeout
        waiting = set(sides)
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError("the loop did not finish")
            for key, _ in self.sel.select(1.0):
                side = key.data
                if not isinstance(key.fileobj, socket.socket):
                    self.sel.unregister(key.fd)  # an async fd: its job can resume
                elif side.paused:
                    continue  # the paused job comes first
                if side not in waiting:
                    continue
                events, fds = self.step(side)
                if side.finished:
                    waiting.discard(side)
                    self.sel.unregister(side.sock)
                    continue
                self.sel.modify(side.sock, events or selectors.EVENT_READ, side)
                for fd in fds:
                    self.sel.register(fd, selectors.EVENT_READ, side)

    def overlaps(self):
        open_at, hits = {}, 0
        for i, (what, ident) in enumerate(self.log):
            if what == "pause":
                open_at[ident] = i
            elif what == "resume" and ident in open_at:
                start = open_at.pop(ident)
                if any(w == "progress" and o != ident for w, o in self.log[start:i]):
                    hits += 1
        return hits


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def write_until_paused(server, client, chunk, tries):
    """Writes chunk after chunk (the client reading) until a write's job
    pauses; returns (bytes the client got, True if it paused)."""
    buf = bytearray(1 << 18)
    got = bytearray()
    for _ in range(tries):
        try:
            server.write(chunk)
        except pipetls.WantAsync:
            return bytes(got), True
        except pipetls.WantWrite:
            pass
        while True:
            try:
                n = client.readinto(buf)
            except pipetls.WantRead:
                break
            got += buf[:n]
    return bytes(got), False


def abandon(sctx, cctx, n, size):
    chunk = os.urandom(size)
    closed_paused = freed_paused = 0
    intact = True
    before = open_fds()
    for i in range(n):
        server, client = pipetls.Connection.memory_pair(sctx, cctx, server_hostname="localhost")
        try:
            pipetls.pairs.handshake_pair(server, client)
            got, paused = write_until_paused(server, client, chunk, 8)
            intact &= got == chunk * (len(got) // len(chunk))
            if paused and i % 2:
                freed_paused += 1
                server._finalizer()  # SSL_free with the job paused
            elif paused:
                closed_paused += 1
        finally:
            server.close()
            client.close()
    print(json.dumps({"fds_before": before, "fds_after": open_fds(),
                      "closed_paused": closed_paused, "freed_paused": freed_paused,
                      "intact": intact, "libs": mapped_libs()}))


def main():
    certs = Certs.of(sys.argv[1])
    n, size = int(sys.argv[2]), int(sys.argv[3])
    common = dict(min_version="TLSv1.3", max_version="TLSv1.3", ciphersuites=SUITE,
                  max_pipelines=8)
    sctx = pipetls.Context(server=True, certfile=certs.cert, keyfile=certs.key,
                           async_mode=True, **common)
    cctx = pipetls.Context(cafile=certs.ca, **common)
    if sys.argv[4:] == ["abandon"]:
        abandon(sctx, cctx, n, size)
        return
    # rounds of n fresh connections until some job paused (MAX_ROUNDS at
    # most): a job pauses only when its batch is not done by the time it
    # has been posted, and on a loaded machine the woken worker may run
    # first and finish it
    totals = {"pauses": 0, "pauses_by_clients": 0, "resumes": 0, "overlaps": 0,
              "intact": True, "rounds": 0}
    tls = None
    while totals["rounds"] < MAX_ROUNDS and (totals["rounds"] == 0 or totals["pauses"] == 0):
        r, tls = one_round(sctx, cctx, n, size)
        totals["rounds"] += 1
        for k in ("pauses", "pauses_by_clients", "resumes", "overlaps"):
            totals[k] += r[k]
        totals["intact"] = totals["intact"] and r["intact"]
    print(json.dumps({**totals, "tls": tls, "libs": mapped_libs()}))


MAX_ROUNDS = 10


def one_round(sctx, cctx, n, size):
    loop = Loop()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(n)
    port = lsock.getsockname()[1]
    pairs, sides = [], []
    for i in range(n):
        cs = socket.create_connection(("127.0.0.1", port))
        ss, _ = lsock.accept()
        for s in (cs, ss):
            s.setblocking(False)
        a, b = os.urandom(size), os.urandom(size)
        srv = Side(("s", i), pipetls.Connection(sctx, ss, timeout=0), ss, a, size)
        cli = Side(("c", i), pipetls.Connection(cctx, cs, server_hostname="localhost",
                                                timeout=0), cs, b, size)
        for side in (srv, cli):
            loop.add(side)
            sides.append(side)
        pairs.append((srv, cli, hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()))
    lsock.close()
    loop.run(sides, timeout=300.0)
    intact = all(cli.hash.hexdigest() == a_hash and srv.hash.hexdigest() == b_hash
                 for srv, cli, a_hash, b_hash in pairs)
    tls = pairs[0][0].conn.tls_version
    for srv, cli, _, _ in pairs:
        for side in (srv, cli):
            side.conn.close()
            side.sock.close()
    pauses = [ident for what, ident in loop.log if what == "pause"]
    return {
        "pauses": len(pauses),
        "pauses_by_clients": sum(1 for ident in pauses if ident[0] == "c"),
        "resumes": sum(1 for what, _ in loop.log if what == "resume"),
        "overlaps": loop.overlaps(),
        "intact": intact,
    }, tls

if __name__ == "__main__":
    main()
