"""Tampering while pipelining.

A pipetls client writes batches of n records (max_pipelines n, every write
n x split bytes, so record i carries bytes [i*split, (i+1)*split)); a relay
holds one batch, damages record k and sends the n records in one ``send``,
so the pipetls server (max_pipelines 32, read_ahead, 1 MiB read buffer)
decrypts them as one pipelined batch. Damage: one bit in the header (type,
version, length), the explicit nonce / CBC IV, the ciphertext, the tag /
MAC, the CBC padding; a truncated record; a truncated stream; a dropped,
repeated or reordered record. With the keys (tests/support/wire.py) the
relay also forges properly protected records: a ChangeCipherSpec, an
unknown content type, a 3-byte alert, a handshake message, a 16385-byte
record, an empty record.

Every damaged case must: fail on the pipetls side with exactly the alert
stock OpenSSL answers to the same damage in the same run (support.stock:
the same case in a child process without the engine; invariant 1), stock's
answer being held to the RFC's where an RFC fixes it (support.rfc, with the
documented stock deviations by version); hand up no plaintext of the bad
record (what was read is a prefix of what was sent that ends at or before
the record); show up in the engine's failed_batches when the engine did the
check; and leave the process serving the next connection normally.

The same damage on records written by pipetls (pipelined) and read by stock
``openssl s_client`` and ``gnutls-cli``: they refuse the record, hand up
nothing of it, and pipetls receives their alert -- the same reasons, the
same bytes and the same alert as when stock libssl wrote the records.
"""

from __future__ import annotations

import pytest

import pipetls
from support.proof import SUITES, PtServer, payload, pt_connect, pt_context, pt_exchange
from support.rfc import ALERT_BAD_RECORD_MAC, check_stock_against_rfc
from support.tamper import (DAMAGED_BATCH, FORGED, FORGED_AT, READER, SPLIT, STOCK_OPS, WRITER,
                            BatchTamper, N, reader_run, cases, forged_case, reader_case,
                            rfc_answer, stock_reader_case)


@pytest.fixture(scope="module")
def engine(engine_path):
    return pipetls.load_engine(engine_path, register=True)


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


def alert_of(answer):
    """The alert number of an error answer, "eof" / the error kind, or None."""
    if answer is None:
        return None
    return answer["alert"] if answer["kind"] == "alert" else answer["kind"]


CASES = cases()


@pytest.mark.parametrize("suite_id,name,k", CASES, ids=[f"{s}-{n}-k{k}" for s, n, k in CASES])
def test_tampered_record_in_a_batch(engine, certs, stock, suite_id, name, k):
    suite = SUITES[suite_id]
    want = stock.call("support.tamper:reader_case", certs=str(certs.dir), suite_id=suite_id,
                      name=name, k=k)
    got, extra = reader_case(engine, certs, suite_id, name, k)
    res, writer_error, delta, data = (extra["res"], extra["writer_error"], extra["delta"],
                                      extra["data"])
    assert got["damaged"] and want["damaged"], "the relay never damaged the batch"
    # invariant 1: the engine answers the damage exactly as stock libssl does
    # (the reader's error, and what the writer then got)
    assert (got["reader"], got["writer"]) == (want["reader"], want["writer"]), \
        (got, want, getattr(res.error, "errors", None))
    # and stock answers what the RFC fixes, up to the documented deviations
    check_stock_against_rfc(f"{suite_id}:{name}", rfc_answer(suite_id, name),
                            alert_of(want["reader"]), stock.version_tuple, stock.version["text"])
    # the engine writer pipelined every write into N records of SPLIT bytes;
    # the offsets below are each writer's own (support.tamper: layouts)
    assert got["layout"] == [SPLIT] * (DAMAGED_BATCH + 1) * N, got["layout"]
    bad_start = got["bad_start"]      # a dropped record never arrives
    assert bad_start == (DAMAGED_BATCH * N + k + (name == "duplicate")) * SPLIT
    assert res.error is not None, f"the reader accepted the damage ({len(res.received)} bytes)"
    assert want["reader"] is not None, f"stock accepted the damage: {want}"
    if want["reader"]["kind"] == "eof":
        assert isinstance(res.error, pipetls.TLSUnexpectedEOF), repr(res.error)
    else:
        assert isinstance(res.error, pipetls.TLSAlertError), repr(res.error)
        assert res.error.sent is True
        # the writer got the alert
        assert isinstance(writer_error, pipetls.TLSAlertError), repr(writer_error)
        assert writer_error.alert == res.error.alert and writer_error.sent is False
    assert_no_bad_plaintext(res.received, data, bad_start)
    assert want["intact"] and want["received"] <= want["bad_start"], want
    if name not in ("flip-type", "flip-version", "flip-length", "truncate-stream"):
        # DESIGN.md invariant 3: the damaged batch fails as a whole -- not
        # even its good records before k are handed up. (A header flip ends
        # the batch early instead: the records before it are a batch of
        # their own and may be handed up.)
        # (Stock libssl reads one record at a time: it hands up the good
        # records before k, so its count is only bounded by bad_start.)
        assert len(res.received) <= got["batch_start"], (len(res.received), got["batch_start"])
    engine_checks = suite.tls13 is None and (suite.id in ("aes128gcm", "chacha20")
                                             or not suite.etm)
    if engine_checks and alert_of(want["reader"]) == ALERT_BAD_RECORD_MAC \
            and name.startswith("flip-") and name not in ("flip-type", "flip-length"):
        assert delta.failed_batches >= 1, delta
    clean_connection_works(engine, certs, suite)


# --------------------------------------------------- forged (with keys)

@pytest.mark.parametrize("suite_id", ["aes128gcm", "chacha20", "cbcsha-noetm"])
@pytest.mark.parametrize("fid,rfc", [(f[0], f[2]) for f in FORGED], ids=[f[0] for f in FORGED])
def test_forged_record_in_a_batch(engine, certs, stock, suite_id, fid, rfc):
    """Properly protected records that must still be refused (or, when
    legal, accepted) in the middle of a pipelined stream -- as stock
    refuses or accepts them."""
    suite = SUITES[suite_id]
    want = stock.call("support.tamper:forged_case", certs=str(certs.dir), suite_id=suite_id,
                      fid=fid)
    got, extra = forged_case(engine, certs, suite_id, fid)
    res, data = extra["res"], extra["data"]
    assert got["damaged"] and want["damaged"]
    assert (got["reader"], got["writer"]) == (want["reader"], want["writer"]), \
        (got, want, getattr(res.error, "errors", None))
    stock_alert = alert_of(want["reader"])
    check_stock_against_rfc(f"{suite_id}:forged-{fid}", None if rfc == "accepted" else rfc,
                            stock_alert, stock.version_tuple, stock.version["text"])
    if rfc == "accepted":
        # the reader wanted len(data) bytes; it got them, the forged ones in place
        assert want["reader"] is None and want["as_forged"], want
        assert res.error is None, repr(res.error)
        assert got["as_forged"]
    else:
        assert want["reader"] is not None and want["reader"]["kind"] == "alert", want
        assert isinstance(res.error, pipetls.TLSAlertError), repr(res.error)
        assert res.error.sent is True
        assert got["forged_at"] == FORGED_AT * SPLIT, got
        assert_no_bad_plaintext(res.received, data, got["forged_at"])
        assert want["intact"] and want["received"] <= want["forged_at"], want
    clean_connection_works(engine, certs, suite)


def test_negative_control_identity_relay_passes(engine, certs):
    """The same harness with a relay that changes nothing: no error, all
    data -- so the failures above come from the damage, not the harness."""
    suite = SUITES["aes128gcm"]
    data = payload(N * SPLIT * 5, 30)
    ident = lambda recs, k: (recs, False)  # noqa: E731
    answer, extra = reader_run(
        engine, certs, suite, lambda _k: BatchTamper(N, 0, ident, batch=DAMAGED_BATCH), data)
    res, delta = extra["res"], extra["delta"]
    assert res.error is None and bytes(res.received) == data
    assert delta.failed_batches == 0 and delta.pipelined_batches > 0
    # and the batch really reached the reader as one pipelined batch of N
    assert delta.hist.get(N, 0) > 0, delta


@pytest.mark.parametrize("suite_id", ["cbcsha-noetm", "cbcsha256-noetm"])
def test_negative_control_mac_flip_hits_the_mac_of_any_record(suite_id):
    """flip-tag on a MAC-then-encrypt CBC record hits its MAC, not its
    padding, whatever the record's length (stock 3.5's MULTIBLOCK records
    are not SPLIT bytes long)."""
    from support.tamper import body_pos
    from support.wire import SUITES as WIRE_SUITES, Direction, Keys, WireError

    suite = SUITES[suite_id]
    info = next(i for i in WIRE_SUITES.values() if i.name == suite.cipher)
    d = Direction(info, Keys(b"\x01" * info.mac_len, b"\x02" * info.key_len, b""), etm=False)
    for plain_len in [2048, 3584, SPLIT, 1000, 16384] + list(range(3000, 3017)):
        body = d.encrypt(7, 23, 0x0303, bytes(plain_len))
        rec = bytes([23, 3, 3]) + len(body).to_bytes(2, "big") + body
        assert d.decrypt(7, 23, 0x0303, body)[0] == bytes(plain_len)
        pos = body_pos(suite, rec, "tag")
        # CBC: the flipped ciphertext byte flips plaintext byte q (counted
        # after the IV) one block on; q is in the MAC, not in the last block
        q, padded = pos - 5, len(body) - 16
        assert plain_len <= q < plain_len + info.mac_len and q < padded - 16, (plain_len, q)
        with pytest.raises(WireError, match="HMAC does not verify"):
            d.decrypt(7, 23, 0x0303, rec[5:pos] + bytes([rec[pos] ^ 1]) + rec[pos + 1:])


def test_negative_control_leak_check_can_fail():
    data = bytes(range(256)) * 64
    with pytest.raises(AssertionError, match="bad record"):
        assert_no_bad_plaintext(data[:5000], data, 4096)
    with pytest.raises(AssertionError, match="altered"):
        assert_no_bad_plaintext(b"\x01" + data[1:100], data, 4096)


# ------------------------------------------- stock readers of our records

# (ChaCha20-Poly1305 has no explicit nonce to flip)
STOCK_CASES = [(n, k, s) for s in ("aes128gcm", "chacha20", "cbcsha-noetm")
               for n, k in STOCK_OPS if not (n == "flip-nonce" and s == "chacha20")]


@pytest.mark.parametrize("reader", [
    pytest.param("openssl", marks=pytest.mark.needs_program("openssl")),
    pytest.param("gnutls", marks=pytest.mark.needs_program("gnutls-cli"))])
@pytest.mark.parametrize("name,k,suite_id", STOCK_CASES,
                         ids=[f"{n}-k{k}-{s}" for n, k, s in STOCK_CASES])
def test_stock_reader_refuses_tampered_pipelined_records(engine, certs, stock, reader,
                                                         suite_id, name, k):
    want = stock.call("support.tamper:stock_reader_case", certs=str(certs.dir), reader=reader,
                      suite_id=suite_id, name=name, k=k)
    got, extra = stock_reader_case(engine, certs, reader, suite_id, name, k)
    peer, data = extra["peer"], extra["data"]
    assert got["damaged"] and want["damaged"]
    assert extra["write_stats"].pipelined_batches > 0, extra["write_stats"]
    # the engine pipelined each write into N records of SPLIT bytes
    assert got["layout"] == [SPLIT] * (DAMAGED_BATCH + 1) * N, got["layout"]
    # what the stock reader does with records the engine wrote (pipelined)
    # is what it does with the same damage to records stock libssl wrote:
    # the same failure, reasons and alert, nothing altered handed up; the
    # byte count is that of the records before the damaged one, as each
    # writer laid them out (stock 3.5 writes this suite through MULTIBLOCK,
    # in other records than the engine: support.tamper), and the same count
    # wherever the two layouts are the same
    laid_out = ("received", "layout", "bad_start", "batch_start")
    assert ({key: v for key, v in got.items() if key not in laid_out}
            == {key: v for key, v in want.items() if key not in laid_out}), \
        (got, want, peer.stderr[-2000:])
    if got["layout"] == want["layout"]:
        assert got == want, (got, want, peer.stderr[-2000:])
    assert got["reader_failed"], f"{reader} accepted the damage: {peer.stderr[-2000:]}"
    bad_start = got["bad_start"]
    assert bad_start == (DAMAGED_BATCH * N + k + (name == "duplicate")) * SPLIT
    assert_no_bad_plaintext(peer.data, data, bad_start)
    # a stock reader takes one record at a time: everything before the bad
    # record was handed up, nothing from it on -- whoever wrote the records
    assert len(peer.data) == bad_start, (len(peer.data), bad_start)
    assert want["received"] == want["bad_start"], want
    assert got["reasons"], f"{reader} printed no reason: {peer.stderr[-2000:]}"
    if reader == "openssl":
        err = extra["error"]
        assert isinstance(err, pipetls.TLSAlertError) and err.sent is False, repr(err)


# -------------------------------------- negative controls of the stock oracle

def test_negative_control_stock_child_has_no_engine(engine, stock):
    """The stock answers come from a process without the engine, on the
    same libcrypto release as this one; this process has the engine."""
    from pipetls.engine import engine_path
    from support.stock import engine_mapped, libcrypto_version

    assert engine_mapped(engine_path())
    assert stock.query("support.stock:engine_mapped") is False
    assert stock.version == libcrypto_version()


def test_negative_control_engine_file_is_the_file_not_a_directory():
    """The stock child's engine check matches the engine file (by the name
    ``pipetls.so`` or as the file in use), never a directory called
    pipetls: the matrix releases live under ~/.cache/pipetls/."""
    from support.stock import is_engine_file, mapped_paths

    release = "/root/.cache/pipetls/openssl-matrix/3.0.17-1~deb12u2/root/usr/lib/" \
              "x86_64-linux-gnu/libcrypto.so.3"
    assert not is_engine_file(release)
    assert not is_engine_file("/var/cache/pipetls/openssl-3.5.7-x/prefix/lib/libssl.so.3")
    assert not is_engine_file("/opt/pipetls.so.d/libcrypto.so.3")
    assert is_engine_file("/usr/lib/python3/site-packages/pipetls/pipetls.so")
    assert is_engine_file("/work/build/asan/pipetls.so")
    assert not is_engine_file("/work/build/engine-x.so")
    assert is_engine_file("/work/build/engine-x.so", "/work/build/engine-x.so")
    # this process maps its libcrypto, and it is not taken for an engine
    crypto = [p for p in mapped_paths() if "libcrypto.so" in p]
    assert crypto and not any(is_engine_file(p) for p in crypto)


def test_negative_control_stock_answers_differ_by_damage(stock, certs):
    """Two damages stock answers differently (a wrong version, a bad tag):
    so an engine that answered one like the other would be caught by the
    engine == stock comparison."""
    version = stock.call("support.tamper:reader_case", certs=str(certs.dir),
                         suite_id="aes128gcm", name="flip-version", k=2)
    tag = stock.call("support.tamper:reader_case", certs=str(certs.dir),
                     suite_id="aes128gcm", name="flip-tag", k=2)
    assert version["reader"] != tag["reader"], (version, tag)


def test_negative_control_rfc_check_can_fail():
    """An undocumented deviation fails, and so does a documented one that a
    release in its range no longer shows."""
    from support.rfc import ALERT_INTERNAL_ERROR, deviation_for

    with pytest.raises(AssertionError, match="no entry of KNOWN_STOCK_DEVIATIONS"):
        check_stock_against_rfc("aes128gcm:flip-tag", ALERT_BAD_RECORD_MAC,
                                ALERT_INTERNAL_ERROR, (3, 0, 19))
    with pytest.raises(AssertionError, match="documented deviation no longer seen"):
        check_stock_against_rfc("aes128gcm:truncate-to-10", ALERT_BAD_RECORD_MAC,
                                ALERT_BAD_RECORD_MAC, (3, 0, 19))
    # outside the range the RFC's answer is required
    with pytest.raises(AssertionError, match="no entry of KNOWN_STOCK_DEVIATIONS"):
        check_stock_against_rfc("aes128gcm:truncate-to-10", ALERT_BAD_RECORD_MAC,
                                ALERT_INTERNAL_ERROR, (3, 0, 22))
    # the same for the 3.5 entry, measured on 3.5.7 alone
    assert deviation_for("chacha20:truncate-to-10", (3, 5, 7)) is not None
    with pytest.raises(AssertionError, match="documented deviation no longer seen"):
        check_stock_against_rfc("chacha20:truncate-to-10", ALERT_BAD_RECORD_MAC,
                                ALERT_BAD_RECORD_MAC, (3, 5, 7))
    for outside in ((3, 5, 6), (3, 5, 8), (3, 0, 21)):
        with pytest.raises(AssertionError, match="no entry of KNOWN_STOCK_DEVIATIONS"):
            check_stock_against_rfc("chacha20:truncate-to-10", ALERT_BAD_RECORD_MAC,
                                    ALERT_INTERNAL_ERROR, outside)
