"""SSL_MODE_ASYNC with the engine: a pipelined batch inside an ASYNC job
goes to the lanes while the job pauses (core/async.c).

The stock CLI first: ``openssl s_server -async`` / ``s_client -async`` with
the engine against a stock peer, 32 MiB each way, and the engine's counters
must show batches that went to the lanes alone and paused jobs, with every
pause resumed (the CLI resumes a job when its wait fd is readable).
"""

from __future__ import annotations

import hashlib
import os

import pytest

from support.net import free_port
from support.peers import OPENSSL, stream_exchange
from support.stats import read_stats_file

MIB = 1 << 20
BULK = 32 * MIB
PIPELINE_OPTS = ["-max_pipelines", "8", "-split_send_frag", "4096",
                 "-read_buf", "131072"]
TLS12 = ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]


@pytest.fixture(scope="module")
def blobs():
    a, b = os.urandom(BULK), os.urandom(BULK)
    return (a, hashlib.sha256(a).hexdigest()), (b, hashlib.sha256(b).hexdigest())


def cli_pair(tmp_path, certs, engine_path, engine_side, server_send, client_send, engine_extra):
    port = free_port()
    stats = tmp_path / f"stats-{engine_side}-{port}.txt"
    server = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}",
              "-naccept", "1", "-quiet", "-cert", certs.cert, "-key", certs.key, *TLS12]
    client = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
              "-CAfile", certs.ca, "-verify_return_error",
              "-verify_hostname", "localhost", *TLS12]
    env = {"PIPETLS_STATS": str(stats)}
    if engine_side == "client":
        # s_client resumes a paused SSL_read only when its socket is
        # readable (apps/s_client.c selects on the socket once the async fd
        # fired): the last read batch of a stream could wait forever, so its
        # reads do not pause (engine ASYNC 1, docs/async.md). Its writes are
        # 8 KiB: below the default INLINE_BELOW, so that goes down to 4096
        # through openssl.cnf, the engine's control commands there.
        conf = tmp_path / f"async-{port}.cnf"
        conf.write_text(
            "openssl_conf = init\n[init]\nengines = engines\n[engines]\n"
            "pipetls = pt\n[pt]\n"
            f"dynamic_path = {engine_path}\nINLINE_BELOW = 4096\nASYNC = 1\n")
        env["OPENSSL_CONF"] = str(conf)
        engine_path = "pipetls"
    opts = ["-engine", engine_path, *PIPELINE_OPTS, *engine_extra]
    if engine_side == "server":
        server += opts
        envs = {"server_env": env}
    else:
        client += opts
        envs = {"client_env": env}
    res = stream_exchange(server, client, port=port, server_send=server_send,
                          client_send=client_send, timeout=180.0, **envs)
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, logs
    return res, blocks[0], logs


@pytest.mark.parametrize("engine_side", ["server", "client"])
def test_cli_async_bulk_both_ways(tmp_path, certs, engine_path, blobs, engine_side):
    """32 MiB each way, ``-async`` on the engine side: byte-exact, and the
    batches went to the lanes in paused jobs."""
    (s_data, s_hash), (c_data, c_hash) = blobs
    res, st, logs = cli_pair(tmp_path, certs, engine_path, engine_side, s_data, c_data,
                             ["-async"])
    assert res.client.sha256 == s_hash, "server -> client data differs\n" + logs
    assert res.server.sha256 == c_hash, "client -> server data differs\n" + logs
    assert st.failed_batches == 0, st
    assert st.pipelined_batches > 0, st
    assert st.async_batches > 0, st
    assert st.async_pauses > 0, st
    # a job pauses only to be resumed: the CLI frees no paused connection
    assert st.async_resumes == st.async_pauses, st
    assert st.async_paused_ns > 0, st
    # every batch that went to the lanes alone is counted as a batch too
    assert st.async_batches <= st.pipelined_batches, st


def test_pipetls_async_env_is_checked(engine_path):
    """PIPETLS_ASYNC must be 0, 1 or 2: anything else and the engine does
    not load, saying why; 0 loads."""
    import subprocess
    bad = subprocess.run([OPENSSL, "engine", "-t", engine_path], capture_output=True,
                         text=True, env=dict(os.environ, PIPETLS_ASYNC="7"))
    assert bad.returncode != 0 and "PIPETLS_ASYNC must be 0, 1 or 2" in bad.stderr, bad
    good = subprocess.run([OPENSSL, "engine", "-t", engine_path], capture_output=True,
                          text=True, env=dict(os.environ, PIPETLS_ASYNC="0"))
    assert good.returncode == 0, good


def test_cli_without_async_never_pauses(tmp_path, certs, engine_path, blobs):
    """The same exchange without ``-async``: no job, so no batch is posted
    and nothing pauses (the counters can tell the two apart)."""
    (s_data, s_hash), (c_data, c_hash) = blobs
    res, st, logs = cli_pair(tmp_path, certs, engine_path, "server", s_data[:4 * MIB],
                             c_data[:4 * MIB], [])
    assert res.client.sha256 == hashlib.sha256(s_data[:4 * MIB]).hexdigest(), logs
    assert st.pipelined_batches > 0, st
    assert st.async_batches == 0, st
    assert st.async_pauses == 0, st


# ------------------------------------------------ non-blocking Connections

import selectors  # noqa: E402
import socket  # noqa: E402

import pipetls  # noqa: E402
from support.api import stats_delta  # noqa: E402


def async_contexts(pt_certs, pipes=16):
    server = pipetls.Context(server=True, certfile=pt_certs.cert, keyfile=pt_certs.key,
                             max_version="TLSv1.2", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
                             max_pipelines=pipes, async_mode=True)
    # the clients pipeline too, without async: their batches block as usual
    client = pipetls.Context(cafile=pt_certs.ca, max_version="TLSv1.2",
                             max_pipelines=pipes)
    return server, client


class Side:
    """One end of one connection in the loop: sends ``tx``, hashes what it
    receives, and remembers which operation its paused ASYNC job is in."""

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
    """All connections in one thread, one selectors loop. ``log`` is the
    order of events: ("pause", id), ("resume", id), ("progress", id)."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.log = []
        self.sides = []

    def add(self, side):
        self.sides.append(side)
        self.sel.register(side.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, side)

    def _watch(self, side, events, async_fds=()):
        self.sel.modify(side.sock, events or selectors.EVENT_READ, side)
        for fd in async_fds:
            self.sel.register(fd, selectors.EVENT_READ, side)

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
                            n = c.write(side.tx[side.sent:side.sent + (1 << 18)])
                            side.sent += n
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
                        assert e.fds, "WantAsync without a wait fd"
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
        except pipetls.WantAsync as e:  # a handshake never pauses; if it did, wait
            return 0, e.fds

    def run(self, timeout=120.0):
        import time
        deadline = time.monotonic() + timeout
        waiting = set(self.sides)
        while waiting:
            assert time.monotonic() < deadline, "the loop did not finish"
            ready = self.sel.select(1.0)
            for key, _ in ready:
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
                self._watch(side, events, fds)

    def overlaps(self):
        """Pauses during which another connection made progress."""
        open_at, hits = {}, 0
        for i, (what, ident) in enumerate(self.log):
            if what == "pause":
                open_at[ident] = i
            elif what == "resume" and ident in open_at:
                start = open_at.pop(ident)
                if any(w == "progress" and o != ident for w, o in self.log[start:i]):
                    hits += 1
        return hits


def connect_pairs(loop, server_ctx, client_ctx, n, size):
    """n TCP connections on 127.0.0.1, each end a non-blocking Connection
    sending ``size`` random bytes; returns [(server_side, client_side, hashes)]."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(n)
    port = lsock.getsockname()[1]
    pairs = []
    try:
        for i in range(n):
            cs = socket.create_connection(("127.0.0.1", port))
            ss, _ = lsock.accept()
            for s in (cs, ss):
                s.setblocking(False)
            a, b = os.urandom(size), os.urandom(size)
            srv = Side(("s", i), pipetls.Connection(server_ctx, ss, timeout=0), ss, a, size)
            cli = Side(("c", i), pipetls.Connection(client_ctx, cs, server_hostname="localhost",
                                                    timeout=0), cs, b, size)
            loop.add(srv)
            loop.add(cli)
            pairs.append((srv, cli, hashlib.sha256(a).hexdigest(),
                          hashlib.sha256(b).hexdigest()))
    finally:
        lsock.close()
    return pairs


def close_pairs(pairs):
    for srv, cli, _, _ in pairs:
        for side in (srv, cli):
            side.conn.close()
            side.sock.close()


def test_selectors_loop_64_connections(pt_engine, pt_certs):
    """64 connections, both ends in one thread: while a server connection's
    job is paused (its batch on the lanes), other connections make progress
    -- seen in the order of the loop's own events -- and every byte arrives."""
    server_ctx, client_ctx = async_contexts(pt_certs)
    loop = Loop()
    with stats_delta(pt_engine) as d:
        pairs = connect_pairs(loop, server_ctx, client_ctx, 64, 512 * 1024)
        try:
            loop.run()
        finally:
            close_pairs(pairs)
    for srv, cli, a_hash, b_hash in pairs:
        assert cli.hash.hexdigest() == a_hash, f"server -> client {srv.ident}"
        assert srv.hash.hexdigest() == b_hash, f"client -> server {srv.ident}"
    pauses = [e for e in loop.log if e[0] == "pause"]
    st = d.stats
    print("pauses", len(pauses), "overlaps", loop.overlaps(), "async_batches", st.async_batches)
    assert pauses, f"no connection's job ever paused: {st}"
    assert all(ident[0] == "s" for _, ident in pauses), "only async_mode connections pause"
    assert loop.overlaps() >= 1, "no progress elsewhere while a job was paused"
    assert st.async_pauses >= len(pauses), st
    assert st.async_resumes >= len([e for e in loop.log if e[0] == "resume"]), st
    assert st.failed_batches == 0, st


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def drain_into(client, buf):
    """Read what the client can read now; returns the bytes."""
    got = bytearray()
    while True:
        try:
            n = client.readinto(buf)
        except pipetls.WantRead:
            return bytes(got)
        got += buf[:n]


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
        got += drain_into(client, buf)
    return bytes(got), False


def test_abandoned_jobs_and_fd_count(pt_engine, pt_certs):
    """1000 connections over BIO pairs, each with batches that went to the
    lanes in an ASYNC job (so each made its wait fd). Connections whose
    write paused are closed while paused: half by close(), which runs the
    job to its end first (OpenSSL frees a paused job no other way), half by
    SSL_free alone, as a C program abandoning a job would -- the engine
    finishes the batch when libssl frees the cipher context and closes the
    fd with the SSL*. The process has the same fds after as before, and
    what arrived before a pause is intact."""
    server_ctx, client_ctx = async_contexts(pt_certs)
    chunk = os.urandom(64 * 1024)
    conns, closed_paused, freed_paused = 1000, 0, 0
    before = open_fds()
    with stats_delta(pt_engine) as d:
        for i in range(conns):
            server, client = pipetls.Connection.memory_pair(server_ctx, client_ctx,
                                                            server_hostname="localhost")
            try:
                pipetls.pairs.handshake_pair(server, client)
                got, paused = write_until_paused(server, client, chunk, 8 if i % 4 == 0 else 1)
                assert len(got) % len(chunk) == 0 and got == chunk * (len(got) // len(chunk))
                if paused and i % 2:
                    freed_paused += 1
                    server._finalizer()  # SSL_free with the job paused
                elif paused:
                    closed_paused += 1
            finally:
                server.close()
                client.close()
    st = d.stats
    print("closed paused", closed_paused, "freed paused", freed_paused,
          "async_batches", st.async_batches, "pauses", st.async_pauses)
    assert open_fds() == before, "fds leaked"
    assert st.async_batches >= conns, st  # every connection made its eventfd
    assert closed_paused > 0 and freed_paused > 0, (closed_paused, freed_paused)
    # every pause is resumed but those of the jobs freed paused
    assert st.async_pauses - st.async_resumes == freed_paused, st
    assert st.failed_batches == 0, st


def test_asyncio_64_connections(pt_engine, pt_certs):
    """pipetls.aio: one asyncio loop serves 64 connections (the clients
    are in the same loop); each server connection sends 512 KiB and gets
    512 KiB. While a server connection waits on its job's fd, the loop runs
    other connections' reads and writes (the event order shows it); the
    data is intact."""
    import asyncio
    import pipetls.aio as aio

    server_ctx, client_ctx = async_contexts(pt_certs)
    size, n = 512 * 1024, 64
    log = []
    payloads = [(os.urandom(size), os.urandom(size)) for _ in range(n)]

    async def recv_all(conn, want):
        h, got, buf = hashlib.sha256(), 0, bytearray(1 << 18)
        while got < want:
            k = await conn.readinto(buf)
            assert k, "closed early"
            h.update(memoryview(buf)[:k])
            got += k
        return h.hexdigest()

    server_got = {}

    async def handle(conn):
        first = await conn.read(4)  # which payload: the client says
        i = int.from_bytes(first, "big")
        conn.trace = lambda what, kind: log.append(
            ("progress" if what == "done" else what, i))
        send = asyncio.ensure_future(conn.sendall(payloads[i][0]))
        server_got[i] = await recv_all(conn, size)
        await send

    async def client(port, i):
        conn = await aio.open_connection("127.0.0.1", port, client_ctx,
                                         server_hostname="localhost")
        try:
            await conn.sendall(i.to_bytes(4, "big"))
            send = asyncio.ensure_future(conn.sendall(payloads[i][1]))
            got = await recv_all(conn, size)
            await send
            return got
        finally:
            aio._close(conn)

    async def main():
        srv = await aio.start_server(handle, "127.0.0.1", 0, server_ctx)
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(client(srv.port, i) for i in range(n))), 120)
        finally:
            srv.close()
            await srv.wait_closed()

    with stats_delta(pt_engine) as d:
        client_got = asyncio.run(main())
    for i, (a, b) in enumerate(payloads):
        assert client_got[i] == hashlib.sha256(a).hexdigest(), f"server -> client {i}"
        assert server_got[i] == hashlib.sha256(b).hexdigest(), f"client -> server {i}"
    pauses = [e for e in log if e[0] == "pause"]
    assert pauses, f"no job paused: {d.stats}"
    overlaps = 0
    open_at = {}
    for k, (what, ident) in enumerate(log):
        if what == "pause":
            open_at[ident] = k
        elif what == "resume" and ident in open_at:
            start = open_at.pop(ident)
            overlaps += any(w == "progress" and o != ident for w, o in log[start:k])
    print("asyncio pauses", len(pauses), "overlaps", overlaps)
    assert overlaps >= 1, "no progress elsewhere while a job was paused"
    assert d.stats.async_pauses >= len(pauses), d.stats


def test_no_free_lane_means_no_pause(pt_engine, pt_certs):
    """With one lane (no worker threads) a batch inside an ASYNC job runs in
    the calling thread as always: it pipelines, never pauses, arrives
    intact. The same writes with workers do pause sometimes (the control)."""
    from support.api import engine_settings

    server_ctx, client_ctx = async_contexts(pt_certs)
    chunk = os.urandom(256 * 1024)

    def run():
        server, client = pipetls.Connection.memory_pair(server_ctx, client_ctx,
                                                        server_hostname="localhost")
        pauses = 0
        try:
            pipetls.pairs.handshake_pair(server, client)
            buf, got = bytearray(1 << 18), bytearray()
            for _ in range(16):
                while True:
                    try:
                        server.write(chunk)
                        break
                    except pipetls.WantAsync as e:
                        pauses += 1
                        selectors_wait(e.fds)
                got += drain_into(client, buf)
            assert got == chunk * 16
        finally:
            server.close()
            client.close()
        return pauses

    with engine_settings(pt_engine, threads=1), stats_delta(pt_engine) as d:
        assert run() == 0
    with engine_settings(pt_engine, threads=2, async_pause=0), stats_delta(pt_engine) as d0:
        for _ in range(5):
            assert run() == 0  # ASYNC 0: never pauses, lanes or not
    assert d0.stats.async_batches == 0 and d0.stats.pipelined_batches > 0, d0.stats
    with pytest.raises(pipetls.ConfigError):
        pt_engine.async_pause = 3
    assert pt_engine.async_pause == 2
    assert d.stats.pipelined_batches > 0, d.stats
    assert d.stats.async_batches == 0 and d.stats.async_pauses == 0, d.stats
    with engine_settings(pt_engine, threads=2), stats_delta(pt_engine) as d2:
        for _ in range(20):
            run()
    assert d2.stats.async_batches > 0, d2.stats


def selectors_wait(fds):
    with selectors.DefaultSelector() as sel:
        for fd in fds:
            sel.register(fd, selectors.EVENT_READ)
        assert sel.select(30), "the job's fd never became readable"
