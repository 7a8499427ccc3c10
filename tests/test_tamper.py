"""Tampering while pipelining.

A pipetls client writes batches of n records (max_pipelines n, every write
n x split bytes, so record i carries bytes [i*split, (i+1)*split)); a relay
holds one batch, damages record k and sends the n records in one ``send``,
so the pipetls server (max_pipelines 32, read_ahead, 1 MiB read buffer)
decrypts them as one pipelined batch. Damage: one bit in the header (type,
version, length), the explicit nonce / CBC IV, the ciphertext, the tag /
MAC, the CBC padding; a truncated record; a truncated stream; a dropped,
repeated or reordered record. With the keys (tests/_tls12_wire.py) the
relay also forges properly protected records: a ChangeCipherSpec, an
unknown content type, a 3-byte alert, a handshake message, a 16385-byte
record, an empty record.

Every damaged case must: fail on the pipetls side with the right alert
(TLSAlertError, ``sent`` True), hand up no plaintext of the bad record (what
was read is a prefix of what was sent that ends at or before the record),
show up in the engine's failed_batches when the engine did the check, and
leave the process serving the next connection normally.

The same damage on records written by pipetls (pipelined) and read by stock
``openssl s_client`` and ``gnutls-cli``: they refuse the record, hand up
nothing of it, and pipetls receives their alert.
"""

from __future__ import annotations

import shutil

import pytest

import pipetls
from _proof_helpers import (ALERT_BAD_RECORD_MAC, ALERT_DECODE_ERROR, ALERT_PROTOCOL_VERSION,
                            ALERT_RECORD_OVERFLOW, ALERT_UNEXPECTED_MESSAGE, MIB, SUITES, Knobs,
                            PtServer, StdioPeer, openssl_version_opts, payload, pt_connect,
                            pt_context, pt_exchange, pt_read, pt_write_plan)
from _relay import BatchTamper, Forge, Relay, flip, set_len
from _tls12_wire import ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE
from conftest import OPENSSL

N, SPLIT = 4, 4096          # batch of N records of SPLIT bytes
BATCHES = 5                 # batches written; the damaged one is batch 1
DAMAGED_BATCH = 1
READER = Knobs(32, 16384, MIB)
WRITER = Knobs(N, SPLIT, 0)
TAMPER_SUITES = ["aes128gcm", "chacha20", "cbcsha-noetm", "cbcsha256-etm"]


@pytest.fixture(scope="module")
def engine(engine_path):
    return pipetls.load_engine(engine_path, register=True)


# ------------------------------------------------------------ the damage

def body_pos(suite, rec, field):
    """Offset (in the whole record) of a byte of ``field`` for this suite,
    or None where the suite has no such field."""
    blen = len(rec) - 5
    kind = "gcm" if "gcm" in suite.id else "chacha" if "chacha" in suite.id else "cbc"
    mac = 32 if "sha256" in suite.id else 20
    if field == "nonce":
        return {"gcm": 5 + 3, "cbc": 5 + 3}.get(kind)     # ChaCha: implicit nonce
    if field == "ciphertext":
        return 5 + blen // 2
    if field == "tag":
        if kind != "cbc" or suite.etm:
            return len(rec) - 1                              # AEAD tag / EtM MAC
        return 5 + SPLIT                                     # MAC inside: byte SPLIT of plaintext
    if field == "padding":
        if kind != "cbc":
            return None
        if suite.etm:
            return len(rec) - mac - 1                        # last ciphertext byte
        return len(rec) - 16 - 1                             # flips the pad-length byte
    raise ValueError(field)


def op_flip_field(suite, field):
    def op(recs, k):
        pos = {"type": 0, "version": 2, "length": 4}.get(field)
        if pos is None:
            pos = body_pos(suite, recs[k], field)
        recs[k] = flip(recs[k], pos, 0)
        return recs, False
    return op


def op_truncate_record(recs, k):
    recs[k] = set_len(recs[k], recs[k][5:-1])
    return recs, False


def op_truncate_to_10(recs, k):
    """Record k cut to 10 bytes of body (header fixed): shorter than any
    tag or MAC."""
    recs[k] = set_len(recs[k], recs[k][5:15])
    return recs, False


def op_truncate_stream(recs, k):
    return recs[:k] + [recs[k][:len(recs[k]) // 2]], True


def op_drop(recs, k):
    return recs[:k] + recs[k + 1:], False


def op_duplicate(recs, k):
    return recs[:k + 1] + [recs[k]] + recs[k + 1:], False


def op_reorder(recs, k):
    j = k + 1 if k + 1 < len(recs) else k - 1
    recs[k], recs[j] = recs[j], recs[k]
    return recs, False


# case id -> (op factory(suite), k, expected alert or "eof", engine_checks)
# engine_checks: the failing check is the engine's (AEAD tag, stitched
# CBC-HMAC), so failed_batches must count it; with EtM libssl checks the MAC
# before decrypting anything.
def cases():
    out = []
    for sid in TAMPER_SUITES:
        s = SUITES[sid]
        for field, k in (("type", 1), ("version", 2), ("length", 0), ("nonce", 3),
                         ("ciphertext", 0), ("ciphertext", 3), ("tag", 2), ("padding", 1)):
            if field in ("nonce", "padding") and body_pos(s, b"\0" * 9000, field) is None:
                continue
            alert = {"version": ALERT_PROTOCOL_VERSION}.get(field, ALERT_BAD_RECORD_MAC)
            out.append((sid, f"flip-{field}", k, alert))
        for name, k in (("truncate-record", 2), ("truncate-stream", 2), ("drop", 1),
                        ("duplicate", 0), ("reorder", 2)):
            out.append((sid, name, k, "eof" if name == "truncate-stream"
                        else ALERT_BAD_RECORD_MAC))
        # shorter than the MAC: with EtM libssl rejects the length itself
        # (SSL_R_LENGTH_TOO_SHORT, decode_error); otherwise it cannot verify
        out.append((sid, "truncate-to-10", 1,
                    ALERT_DECODE_ERROR if s.etm and "cbc" in sid else ALERT_BAD_RECORD_MAC))
    return out


def make_op(suite, name):
    if name.startswith("flip-"):
        return op_flip_field(suite, name[5:])
    return {"truncate-record": op_truncate_record, "truncate-stream": op_truncate_stream,
            "truncate-to-10": op_truncate_to_10, "drop": op_drop, "duplicate": op_duplicate, "reorder": op_reorder}[name]


# ------------------------------------------------------- pipetls reader

class ReaderResult:
    def __init__(self):
        self.received = bytearray()
        self.error = None


def run_reader_case(engine, certs, suite, hook_factory, data):
    """pipetls client (writer) -> relay(hook) -> pipetls server (reader).
    Returns (ReaderResult, writer's error or None, stats delta, relay)."""
    res = ReaderResult()
    keylines = []
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=READER,
                      keylog=keylines.append)
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=WRITER,
                      keylog=keylines.append)

    def handler(conn):
        try:
            pt_read(conn, len(data), into=res.received)
        except pipetls.PipetlsError as e:
            res.error = e

    before = engine.stats()
    srv = PtServer(sctx, handler, timeout=20)
    hook = hook_factory(lambda: list(keylines))
    relay = Relay(srv.port, c2s=hook, timeout=20).start()
    writer_error = None
    try:
        conn, sock = pt_connect(cctx, relay.port, timeout=20)
        with sock, conn:
            try:
                pt_write_plan(conn, data, [N * SPLIT] * BATCHES)
            except (pipetls.PipetlsError, OSError):
                pass  # the reader may already have failed and gone
            srv.join()
            try:
                conn.read(1)
            except (pipetls.PipetlsError, OSError) as e:
                writer_error = e
    finally:
        srv.join(raise_error=False)
        relay.kill()
        relay.join()
        sctx.close()
        cctx.close()
    return res, writer_error, engine.stats() - before, relay


def assert_no_bad_plaintext(received, data, bad_start):
    """What was handed up is a prefix of what was sent, ending at or before
    the first byte of the damaged record."""
    assert bytes(received) == data[:len(received)], "plaintext handed up was altered"
    assert len(received) <= bad_start, (
        f"{len(received)} bytes handed up: plaintext of the bad record "
        f"(starting at {bad_start}) reached the caller")


def clean_connection_works(engine, certs, suite):
    """The next connection in this process works normally."""
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=READER)
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=WRITER)
    data = payload(N * SPLIT * 2, 31)

    def handler(conn):
        got = pt_exchange(conn, data, [len(data)], expect=len(data), keep=True)
        conn.shutdown(timeout=5)
        return got

    try:
        srv = PtServer(sctx, handler, timeout=20)
        conn, sock = pt_connect(cctx, srv.port, timeout=20)
        with sock, conn:
            got = pt_exchange(conn, data, [len(data)], expect=len(data), keep=True)
        assert got.data == data and srv.join().data == data
    finally:
        sctx.close()
        cctx.close()


CASES = cases()


@pytest.mark.parametrize("suite_id,name,k,alert", CASES,
                         ids=[f"{s}-{n}-k{k}" for s, n, k, _ in CASES])
def test_tampered_record_in_a_batch(engine, certs, suite_id, name, k, alert):
    suite = SUITES[suite_id]
    data = payload(N * SPLIT * BATCHES, 30)
    hook = None

    def factory(_keylog):
        nonlocal hook
        hook = BatchTamper(N, k, make_op(suite, name), batch=DAMAGED_BATCH)
        return hook

    res, writer_error, delta, relay = run_reader_case(engine, certs, suite, factory, data)
    assert hook.done, "the relay never damaged the batch"
    bad_start = (DAMAGED_BATCH * N + k) * SPLIT
    if name == "drop":
        bad_start = (DAMAGED_BATCH * N + k) * SPLIT   # that record never arrives
    if name == "duplicate":
        bad_start = (DAMAGED_BATCH * N + k + 1) * SPLIT
    assert res.error is not None, f"the reader accepted the damage ({len(res.received)} bytes)"
    if alert == "eof":
        assert isinstance(res.error, pipetls.TLSUnexpectedEOF), repr(res.error)
    else:
        assert isinstance(res.error, pipetls.TLSAlertError), repr(res.error)
        assert res.error.alert == alert, (res.error.alert_name, res.error.errors)
        assert res.error.sent is True
        # the writer got the alert
        assert isinstance(writer_error, pipetls.TLSAlertError), repr(writer_error)
        assert writer_error.alert == alert and writer_error.sent is False
    assert_no_bad_plaintext(res.received, data, bad_start)
    if name not in ("flip-type", "flip-version", "flip-length", "truncate-stream"):
        # DESIGN.md invariant 3: the damaged batch fails as a whole -- not
        # even its good records before k are handed up. (A header flip ends
        # the batch early instead: the records before it are a batch of
        # their own and may be handed up.)
        batch_start = DAMAGED_BATCH * N * SPLIT
        assert len(res.received) <= batch_start, (len(res.received), batch_start)
    engine_checks = suite.tls13 is None and (suite.id in ("aes128gcm", "chacha20")
                                             or not suite.etm)
    if engine_checks and alert == ALERT_BAD_RECORD_MAC and name.startswith("flip-") \
            and name not in ("flip-type", "flip-length"):
        assert delta.failed_batches >= 1, delta
    clean_connection_works(engine, certs, suite)


# --------------------------------------------------- forged (with keys)

FORGED = [
    # (id, records to insert, expected alert or None for "works")
    ("ccs", [(CHANGE_CIPHER_SPEC, b"\x01")], ALERT_UNEXPECTED_MESSAGE),
    ("unknown-type", [(0x30, b"hello")], ALERT_UNEXPECTED_MESSAGE),
    # OpenSSL 3.0: an alert record that is not 2 bytes is "invalid alert"
    ("alert-3-bytes", [(ALERT, b"\x01\x00\x00")], ALERT_UNEXPECTED_MESSAGE),
    ("handshake-finished", [(HANDSHAKE, b"\x14\x00\x00\x0c" + b"\0" * 12)],
     ALERT_UNEXPECTED_MESSAGE),
    ("oversized-16385", [(APPLICATION_DATA, b"\0" * 16385)], ALERT_RECORD_OVERFLOW),
    ("empty-record", [(APPLICATION_DATA, b"")], None),
    ("exactly-16384", [(APPLICATION_DATA, b"Z" * 16384)], None),
]


@pytest.mark.parametrize("suite_id", ["aes128gcm", "chacha20", "cbcsha-noetm"])
@pytest.mark.parametrize("fid,inserts,alert", FORGED, ids=[f[0] for f in FORGED])
def test_forged_record_in_a_batch(engine, certs, suite_id, fid, inserts, alert):
    """Properly protected records that must still be refused (or, when
    legal, accepted) in the middle of a pipelined stream."""
    suite = SUITES[suite_id]
    data = payload(N * SPLIT * BATCHES, 32)
    at = DAMAGED_BATCH * N + 2     # before app record 6 (inside batch 1)
    hook_box = {}

    def factory(keylog):
        hook_box["h"] = Forge("c2s", keylog, at, inserts)
        return hook_box["h"]

    res, writer_error, delta, relay = run_reader_case(engine, certs, suite, factory, data)
    assert hook_box["h"].inserted
    if alert is None:
        extra = b"".join(p for _, p in inserts)
        # the reader wanted len(data) bytes; it got them, the forged ones in place
        want = (data[:at * SPLIT] + extra + data[at * SPLIT:])[:len(data)]
        assert res.error is None, repr(res.error)
        assert bytes(res.received) == want
    else:
        assert isinstance(res.error, pipetls.TLSAlertError), repr(res.error)
        assert res.error.alert == alert, (res.error.alert_name, res.error.errors)
        assert res.error.sent is True
        assert_no_bad_plaintext(res.received, data, at * SPLIT)
    clean_connection_works(engine, certs, suite)


def test_negative_control_identity_relay_passes(engine, certs):
    """The same harness with a relay that changes nothing: no error, all
    data -- so the failures above come from the damage, not the harness."""
    suite = SUITES["aes128gcm"]
    data = payload(N * SPLIT * BATCHES, 30)
    ident = lambda recs, k: (recs, False)  # noqa: E731
    res, _, delta, relay = run_reader_case(
        engine, certs, suite, lambda _k: BatchTamper(N, 0, ident, batch=DAMAGED_BATCH), data)
    assert res.error is None and bytes(res.received) == data
    assert delta.failed_batches == 0 and delta.pipelined_batches > 0
    # and the batch really reached the reader as one pipelined batch of N
    assert delta.hist.get(N, 0) > 0, delta


def test_negative_control_leak_check_can_fail():
    data = bytes(range(256)) * 64
    with pytest.raises(AssertionError, match="bad record"):
        assert_no_bad_plaintext(data[:5000], data, 4096)
    with pytest.raises(AssertionError, match="altered"):
        assert_no_bad_plaintext(b"\x01" + data[1:100], data, 4096)


# ------------------------------------------- stock readers of our records

STOCK_OPS = [("flip-ciphertext", 1), ("flip-tag", 3), ("flip-nonce", 0), ("drop", 2),
             ("duplicate", 1), ("reorder", 0), ("flip-type", 2)]


def stock_reader_argv(reader, port, suite, certs):
    if reader == "openssl":
        return [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
                "-CAfile", certs.ca, *openssl_version_opts(suite)]
    return ["gnutls-cli", "--x509cafile", str(certs.ca), "-p", str(port), "127.0.0.1",
            "--verify-hostname", "localhost", "--priority", suite.gnutls,
            "--logfile", "/dev/null"]


@pytest.mark.parametrize("reader", ["openssl", "gnutls"])
@pytest.mark.parametrize("suite_id", ["aes128gcm", "chacha20", "cbcsha-noetm"])
@pytest.mark.parametrize("name,k", STOCK_OPS, ids=[f"{n}-k{k}" for n, k in STOCK_OPS])
def test_stock_reader_refuses_tampered_pipelined_records(engine, certs, reader, suite_id,
                                                         name, k):
    if shutil.which("gnutls-cli" if reader == "gnutls" else "openssl") is None:
        pytest.skip(f"{reader} is not installed")
    suite = SUITES[suite_id]
    if name == "flip-nonce" and suite_id == "chacha20":
        pytest.skip("ChaCha20-Poly1305 has no explicit nonce")
    data = payload(N * SPLIT * BATCHES, 33)
    hook = BatchTamper(N, k, make_op(suite, name), batch=DAMAGED_BATCH)
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=WRITER)
    box = {}

    def handler(conn):
        before = engine.stats()
        try:
            pt_write_plan(conn, data, [N * SPLIT] * BATCHES)
        except (pipetls.PipetlsError, OSError):
            pass
        box["write_stats"] = engine.stats() - before
        try:
            conn.read(1)        # the reader's alert, or its EOF
        except (pipetls.PipetlsError, OSError) as e:
            box["error"] = e

    srv = PtServer(sctx, handler, timeout=20)
    relay = Relay(srv.port, s2c=hook, timeout=20).start()
    peer = StdioPeer(stock_reader_argv(reader, relay.port, suite, certs), b"", expect=len(data),
                     keep=True)
    try:
        srv.join()
        rc = peer.wait(20)
    finally:
        peer.kill()
        relay.kill()
        relay.join()
        sctx.close()
    assert hook.done
    assert box["write_stats"].pipelined_batches > 0, box["write_stats"]
    bad_start = (DAMAGED_BATCH * N + k + (1 if name == "duplicate" else 0)) * SPLIT
    assert rc != 0, f"{reader} accepted the damage: {peer.stderr[-2000:]}"
    assert_no_bad_plaintext(peer.data, data, bad_start)
    # a stock reader takes one record at a time: everything before the bad
    # record was handed up, nothing from it on
    assert len(peer.data) == bad_start, (len(peer.data), bad_start)
    err = box.get("error")
    if reader == "openssl":
        assert "bad record mac" in peer.stderr.lower() or "wrong version" in peer.stderr.lower() \
            or "decryption failed" in peer.stderr.lower(), peer.stderr[-2000:]
        assert isinstance(err, pipetls.TLSAlertError) and err.alert == ALERT_BAD_RECORD_MAC, \
            repr(err)
        assert err.sent is False
    else:
        # gnutls-cli 3.7: "*** Fatal error: Decryption has failed." and it
        # closes without sending an alert, so pipetls sees the EOF
        assert "decryption has failed" in peer.stderr.lower(), peer.stderr[-2000:]
        assert isinstance(err, (pipetls.TLSAlertError, pipetls.TLSUnexpectedEOF,
                                ConnectionError)), repr(err)
