"""The semantics of the original pipelining design (../shared/seeds), shown
through libssl with the pipetls engine: the write split (split_send_fragment
x max_pipelines), equal spreading of the data, records on the wire, and read
pipelining with read_ahead and a large read buffer."""
import ctypes
import hashlib
import os

import pytest

import pipetls
from pipetls import Connection, Context, _ffi, handshake_pair
from support.api import engine_settings
from support.plan import batch_histogram, expected_batches
from support.records import APPLICATION_DATA, parse_records

GCM = "ECDHE-RSA-AES128-GCM-SHA256"
GCM_OVERHEAD = 8 + 16  # explicit nonce + tag


@pytest.fixture(scope="module")
def engine(engine_path):
    e = pipetls.load_engine(engine_path, register=True)
    # every batch goes to the lanes, even small ones -- for this module only
    with engine_settings(e, inline_below=0):
        yield e


def records(wire):
    """(type, length) of each TLS record in a byte stream."""
    recs, _ = parse_records(wire)      # strict: the stream ends on a record boundary
    return [(r.type, len(r.body)) for r in recs]


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


ANNOUNCEMENT = [(0, 0), (1, 1), (2000, 1), (2001, 2), (4000, 2), (4001, 3), (6000, 3),
                (6001, 4), (10 ** 6, 4)]


def ssl_write_ex(conn, data: bytes) -> int:
    """One SSL_write_ex straight into libssl (0 bytes included); the count."""
    n = ctypes.c_size_t(0)
    buf = ctypes.create_string_buffer(data, max(1, len(data)))
    assert _ffi.SSL_write_ex(conn.handle, buf, len(data), ctypes.byref(n)) == 1
    return n.value


@pytest.mark.parametrize("size,first", ANNOUNCEMENT, ids=[str(n) for n, _ in ANNOUNCEMENT])
def test_seed_plan_matches_the_announcement(engine, certs, size, first):
    """The announcement's worked example (split 2000, 4 pipelines: 0-2000
    bytes one pipeline, 2001-4000 two, 4001-6000 three, 6001+ four) as the
    engine's batches: one SSL_write_ex of ``size`` bytes, and the engine's
    batch histogram is the planner's, its first batch ``first`` records.
    0 bytes: libssl writes no record at all, so no batch (support.plan)."""
    plan = expected_batches(size, 2000, 4)
    assert (len(plan[0]) if plan else 0) == first
    sctx, cctx, s, c = pair(certs, engine, {"max_pipelines": 4, "split_send_fragment": 2000})
    with sctx, cctx, s, c:
        data = os.urandom(size)
        before = engine.stats()
        done = 0
        while done < size or (size == 0 and done == 0):
            done += ssl_write_ex(s, data[done:])
            if size == 0:
                break
        delta = engine.stats() - before
        assert {k: v for k, v in delta.hist.items() if v} == batch_histogram(plan), delta
        wire = s.drain()
        assert [ln - GCM_OVERHEAD for t, ln in records(wire) if t == APPLICATION_DATA] == \
            [x for b in plan for x in b]
        c.feed(wire)
        assert read_all(c, size) == data


def test_planner_negative_controls():
    """A planner that ignored max_pipelines, or wrote an empty record for 0
    bytes, would be caught above."""
    assert len(expected_batches(10 ** 6, 2000, 32)[0]) != 4
    assert batch_histogram(expected_batches(0, 2000, 4)) != {1: 1}


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


@pytest.mark.parametrize("rbuf", [0, 1 << 20], ids=["default-buffer", "1MiB-buffer"])
def test_no_read_pipelining_without_big_buffer(engine, certs, rbuf):
    """Negative control, the read buffer alone varied: both readers have
    max_pipelines 8 (so read_ahead) when they read; they differ only in
    default_read_buffer_len. libssl allocates the read buffer at the
    handshake, sized for the max_pipelines of that moment -- here 1, so one
    record: with OpenSSL's default size every record is decrypted alone;
    with a 1 MiB buffer the same reader decrypts batches of 8. The reader
    keeps its buffers (release_buffers=False): with libssl's
    SSL_MODE_RELEASE_BUFFERS the read buffer is freed when empty and made
    again at the next read, sized for max_pipelines then (see
    test_released_read_buffer_follows_max_pipelines)."""
    reader = {"max_pipelines": 1, "release_buffers": False}
    if rbuf:
        reader["default_read_buffer_len"] = rbuf
    sctx, cctx, s, c = pair(certs, engine, {"max_pipelines": 8}, reader)
    with sctx, cctx, s, c:
        c.max_pipelines = 8          # after the handshake: the buffer stays as it is
        assert c.read_ahead
        data = os.urandom(1 << 20)
        s.sendall(data)
        wire = s.drain()
        before = engine.stats()
        c.feed(wire)
        assert read_all(c, len(data)) == data
        delta = engine.stats() - before
        if rbuf:
            assert delta.pipelined_batches > 0 and delta.hist.get(8, 0) > 0, delta.hist
        else:
            assert delta.pipelined_batches == 0 and delta.hist.get(1, 0) == 64, delta.hist


def test_released_read_buffer_follows_max_pipelines(engine, certs):
    """The counterpart of the control above with the default
    release_buffers=True: the handshake leaves the read buffer empty, so
    libssl frees it and makes it again at the first application-data read,
    sized for the max_pipelines set after the handshake: batches of 8."""
    sctx, cctx, s, c = pair(certs, engine, {"max_pipelines": 8}, {"max_pipelines": 1})
    with sctx, cctx, s, c:
        assert cctx.release_buffers
        c.max_pipelines = 8
        data = os.urandom(1 << 20)
        s.sendall(data)
        wire = s.drain()
        before = engine.stats()
        c.feed(wire)
        assert read_all(c, len(data)) == data
        delta = engine.stats() - before
        assert delta.pipelined_batches > 0 and delta.hist.get(8, 0) > 0, delta.hist


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
