"""The semantics of the original pipelining design (../shared/seeds), shown
through libssl with the pipetls engine: the write split (split_send_fragment
x max_pipelines), equal spreading of the data, records on the wire, and read
pipelining with read_ahead and a large read buffer."""
import hashlib
import os

import pytest

import pipetls
from pipetls import Connection, Context, handshake_pair

GCM = "ECDHE-RSA-AES128-GCM-SHA256"
GCM_OVERHEAD = 8 + 16  # explicit nonce + tag


@pytest.fixture(scope="module")
def engine(engine_path):
    e = pipetls.load_engine(engine_path, register=True)
    e.inline_below = 0  # every batch goes to the lanes, even small ones
    return e


def expected_batches(n, split, maxp):
    """libssl's write split (ssl3_write_bytes), as the seed describes it:
    a list of batches, each the list of record payload sizes."""
    out = []
    while True:
        pipes = 1 if n == 0 else min((n - 1) // split + 1, maxp)
        if n // pipes >= split:
            lens = [split] * pipes
        else:
            q, r = divmod(n, pipes)
            lens = [q + (1 if j < r else 0) for j in range(pipes)]
        out.append(lens)
        n -= sum(lens)
        if n == 0:
            return out


def records(wire):
    """(type, length) of each TLS record in a byte stream."""
    out, i = [], 0
    while i + 5 <= len(wire):
        t, ln = wire[i], int.from_bytes(wire[i + 3:i + 5], "big")
        out.append((t, ln))
        i += 5 + ln
    assert i == len(wire), "stream does not end on a record boundary"
    return out


def pair(certs, engine, server_knobs=None, client_knobs=None, cipher=GCM):
    sctx = Context(server=True, certfile=str(certs.cert), keyfile=str(certs.key),
                   max_version="TLSv1.2", ciphers=cipher, engine=engine, **(server_knobs or {}))
    cctx = Context(server=False, verify=False, max_version="TLSv1.2", ciphers=cipher,
                   engine=engine, **(client_knobs or {}))
    s, c = Connection(sctx), Connection(cctx)
    handshake_pair(s, c)
    return sctx, cctx, s, c


def read_all(conn, n):
    got = bytearray()
    while len(got) < n:
        try:
            chunk = conn.read(1 << 20)
        except pipetls.WantRead:
            break
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("size,batches", [
    (2000, [1]), (2001, [2]), (4000, [2]), (4001, [3]), (6000, [3]), (6001, [4]),
    (100000, [4] * 12 + [2]),
])
def test_seed_write_split(engine, certs, size, batches):
    """split_send_fragment 2000, max_pipelines 4: SSL_write of 2000, 2001,
    4000, 4001, 6000, 6001 and 100000 bytes gives batches of 1, 2, 2, 3, 3, 4
    and 4 records (the 100000-byte write: twelve full batches of 4 x 2000,
    then the last 4000 bytes in 2), with the data spread equally."""
    sctx, cctx, s, c = pair(certs, engine, {"max_pipelines": 4, "split_send_fragment": 2000})
    with sctx, cctx, s, c:
        data = os.urandom(size)
        plan = expected_batches(size, 2000, 4)
        assert [len(b) for b in plan] == batches
        before = engine.stats()
        s.sendall(data)  # write() may return after each batch (partial writes)
        delta = engine.stats() - before
        want = {}
        for b in plan:
            want[len(b)] = want.get(len(b), 0) + 1
        assert {k: v for k, v in delta.hist.items() if v} == want
        assert delta.records == sum(len(b) for b in plan)
        # on the wire: one application-data record per pipe, sized as planned
        wire = s.drain()
        recs = [ln - GCM_OVERHEAD for t, ln in records(wire) if t == 23]
        assert recs == [x for b in plan for x in b]
        for b in plan:  # equal spreading: sizes within a batch differ by <= 1
            assert max(b) - min(b) <= 1
        c.feed(wire)
        assert read_all(c, size) == data


def test_seed_plan_matches_the_announcement():
    """The planner above against the announcement's worked example."""
    for n, k in [(0, 1), (1, 1), (2000, 1), (2001, 2), (4000, 2), (4001, 3),
                 (6000, 3), (6001, 4), (10 ** 6, 4)]:
        assert len(expected_batches(n, 2000, 4)[0]) == k, n
    # negative control: a planner that ignored max_pipelines would be caught
    assert len(expected_batches(10 ** 6, 2000, 32)[0]) != 4


def test_default_split_keeps_record_count(engine, certs):
    """With split_send_fragment left at max_send_fragment the number of
    records equals the non-pipelined case; only the apportioning differs."""
    sctx, cctx, s, c = pair(certs, engine, {"max_pipelines": 8})
    with sctx, cctx, s, c:
        size = 5 * 16384 + 100
        before = engine.stats()
        s.sendall(os.urandom(size))
        delta = engine.stats() - before
        wire = s.drain()
        assert len([1 for t, _ in records(wire) if t == 23]) == 6
        assert delta.hist.get(6) == 1


def test_read_pipelining(engine, certs):
    """read_ahead (turned on by max_pipelines > 1) and a read buffer holding
    many records: several application-data records decrypted in one batch."""
    sctx, cctx, s, c = pair(certs, engine, {"max_pipelines": 8},
                            {"max_pipelines": 8, "default_read_buffer_len": 1 << 20})
    with sctx, cctx, s, c:
        data = os.urandom(4 << 20)
        s.sendall(data)
        wire = s.drain()
        before = engine.stats()
        c.feed(wire)
        got = read_all(c, len(data))
        delta = engine.stats() - before
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert delta.pipelined_batches > 0, delta
        assert max(k for k, v in delta.hist.items() if v) >= 4


def test_no_read_pipelining_without_big_buffer(engine, certs):
    """Negative control: max_pipelines 1 on the reader means one record per
    cipher call, so the read check above can fail."""
    sctx, cctx, s, c = pair(certs, engine, {"max_pipelines": 8}, {"max_pipelines": 1})
    with sctx, cctx, s, c:
        data = os.urandom(1 << 20)
        s.sendall(data)
        wire = s.drain()
        before = engine.stats()
        c.feed(wire)
        assert read_all(c, len(data)) == data
        delta = engine.stats() - before
        assert delta.pipelined_batches == 0 and delta.hist.get(1, 0) > 0


@pytest.mark.parametrize("cipher,etm", [
    ("ECDHE-RSA-AES256-GCM-SHA384", True), ("ECDHE-RSA-CHACHA20-POLY1305", True),
    ("AES128-SHA", False), ("AES256-SHA256", False), ("AES256-SHA256", True),
])
def test_round_trip_8mib_each_way_each_cipher(engine, certs, cipher, etm):
    """Pipelined both ways for every TLS 1.2 family, data intact."""
    knobs = {"max_pipelines": 8, "split_send_fragment": 4096,
             "default_read_buffer_len": 1 << 20, "encrypt_then_mac": etm}
    sctx, cctx, s, c = pair(certs, engine, knobs, knobs, cipher=cipher)
    with sctx, cctx, s, c:
        before = engine.stats()
        for a, b in ((s, c), (c, s)):
            h_in, h_out, total = hashlib.sha256(), hashlib.sha256(), 0
            block = os.urandom(1 << 20)
            for _ in range(8):
                a.sendall(block)
                h_in.update(block)
                b.feed(a.drain())
                got = read_all(b, len(block))
                h_out.update(got)
                total += len(got)
            assert total == 8 << 20 and h_in.digest() == h_out.digest()
        delta = engine.stats() - before
        assert delta.failed_batches == 0
        assert delta.pipelined_batches > 0
