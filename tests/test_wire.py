"""Independent wire verification of what pipetls puts on the wire.

A loopback relay (tests/support/relay.py) captures both directions of a real TCP
connection; the secrets come from the SSLKEYLOGFILE lines pipetls logs; the
TLS 1.2 key block is derived with a PRF built from `cryptography` HMAC; every
record after ChangeCipherSpec is decrypted with `cryptography` (AESGCM,
ChaCha20Poly1305, AES-CBC + HMAC, EtM or not) -- tests/support/wire.py, no
libssl involved. Shown for every TLS 1.2 family:

* the plaintext is what was written, each way;
* sequence numbers are consecutive (records decrypt at seq 0, 1, 2, ...: a
  dropped, repeated or moved record would fail);
* every AES-GCM explicit nonce is unique -- and, for records pipetls wrote,
  equal to the record's sequence number (DESIGN.md invariant 2); CBC IVs
  are unique too;
* a record the relay damaged is refused with the alert stock libssl gives
  the same damage in the same run (support.stock);
* record sizes follow the seed's rule: each write of n bytes becomes
  min(max_pipelines, ceil(n / split_send_fragment)) records per batch, the
  data spread equally over the pipelines used (sizes differ by <= 1).

Negative controls show each check can fail: a relay that flips one bit,
a wrong master secret, a swapped pair of records, a wrong split rule, a
repeated nonce.
"""

from __future__ import annotations

import threading

import pytest

import pipetls
from support.proof import (MIB, SUITES, Knobs, PtServer, StdioPeer, expected_batches,
                            openssl_version_opts, payload, pt_connect, pt_context,
                            pt_exchange)
from support.relay import Relay
from support.rfc import ALERT_BAD_RECORD_MAC, check_stock_against_rfc
from support.wirecases import Keylog, corrupted_relay_case, pipetls_pair_through_relay
from support.wire import (APPLICATION_DATA, WireError, WireSession, parse_records)
from support.peers import OPENSSL

TLS12 = ["aes128gcm", "aes256gcm", "chacha20", "cbcsha-etm", "cbcsha-noetm",
         "cbcsha256-etm", "cbcsha256-noetm"]
PLAN_C = [1, 2000, 2001, 4001, 6001, 16385, 100000]
PLAN_S = [100000, 6001, 1, 0, 16384, 2001, 65536]


@pytest.fixture(scope="module")
def engine(engine_path):
    e = pipetls.load_engine(engine_path, register=True)
    return e


def plan_records(plan, knobs):
    """The application-data record sizes the seed's rule gives for a plan."""
    return [n for w in plan for b in expected_batches(w, knobs.split, knobs.max_pipelines)
            for n in b]


def verify(sess: WireSession, name: str, data: bytes, plan=None, knobs=None,
           pipetls_wrote=True):
    """All the wire checks for one direction of a decrypted session."""
    recs = sess.records[name]
    # consecutive sequence numbers (decrypt() used 0, 1, 2, ... to succeed)
    assert [r.seq for r in recs] == list(range(len(recs)))
    app = [r for r in recs if r.type == APPLICATION_DATA]
    assert b"".join(r.plaintext for r in app) == data, f"{name}: plaintext differs"
    kind = sess.suite.kind
    if kind == "gcm":
        nonces = [r.explicit for r in recs]
        assert len(set(nonces)) == len(nonces), f"{name}: a GCM explicit nonce repeats"
        if pipetls_wrote:
            assert all(int.from_bytes(r.explicit, "big") == r.seq for r in recs), \
                f"{name}: explicit nonce is not the sequence number"
        assert all(r.wire_len == len(r.plaintext) + 24 for r in recs)
    elif kind == "chacha":
        assert all(r.wire_len == len(r.plaintext) + 16 for r in recs)
    else:
        ivs = [r.explicit for r in recs]
        assert len(set(ivs)) == len(ivs), f"{name}: a CBC IV repeats"
    if plan is not None:
        sizes = [len(r.plaintext) for r in app]
        assert sizes == plan_records(plan, knobs), f"{name}: record sizes break the rule"
        # equal spreading inside every batch
        for w in plan:
            for b in expected_batches(w, knobs.split, knobs.max_pipelines):
                assert max(b) - min(b) <= 1
    return app


CASES = [(s, Knobs(4, 2000, MIB)) for s in TLS12] + \
        [(s, Knobs(32, 4096, 0)) for s in ("aes128gcm", "chacha20", "cbcsha-noetm")] + \
        [("aes256gcm", Knobs(8, 512, MIB)), ("cbcsha256-etm", Knobs(1, 16384, 0))]


@pytest.mark.parametrize("suite_id,knobs", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_wire_pipetls_both_ends(engine, certs, suite_id, knobs):
    """pipetls writes both directions with pipelining; every record checks
    out independently and the sizes follow the seed's rule."""
    suite = SUITES[suite_id]
    before = engine.stats()
    relay, klog, s_data, c_data = pipetls_pair_through_relay(
        engine, certs, suite, knobs, knobs, PLAN_S, PLAN_C)
    delta = engine.stats() - before
    assert relay.captured == relay.forwarded  # the relay only watched
    sess = WireSession.from_capture(bytes(relay.captured["c2s"]),
                                    bytes(relay.captured["s2c"]), klog.get())
    assert sess.suite.name == suite.cipher
    assert sess.etm == (suite.etm and sess.suite.kind == "cbc")
    sess.decrypt()
    app_c = verify(sess, "c2s", c_data, PLAN_C, knobs)
    verify(sess, "s2c", s_data, PLAN_S, knobs)
    if knobs.max_pipelines > 1:
        assert delta.pipelined_batches > 0, delta
        # a batch of max_pipelines records happened, as the sizes say
        assert max(len(b) for w in PLAN_C
                   for b in expected_batches(w, knobs.split, knobs.max_pipelines)) > 1
        assert len(app_c) > len(PLAN_C)


def test_wire_stock_openssl_client_keylog_agrees(engine, certs, tmp_path):
    """Against stock ``openssl s_client -keylogfile``: both ends log the
    same master secret; pipetls's records (server -> client) follow the rule
    and decrypt; s_client's decrypt too (sizes are its own)."""
    suite, knobs = SUITES["aes128gcm"], Knobs(8, 4096, MIB)
    klog = Keylog()
    s_data, c_data = payload(sum(PLAN_S), 21), payload(300000, 22)
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=knobs, keylog=klog)
    peer_box = {}
    ready = threading.Event()

    def handler(conn):
        got = pt_exchange(conn, s_data, PLAN_S, expect=len(c_data), keep=True)
        ready.wait(30)
        peer_box["p"].got_all.wait(30)
        conn.shutdown(timeout=5)
        return got

    srv = PtServer(sctx, handler, timeout=30)
    relay = Relay(srv.port, timeout=30).start()
    keyfile = tmp_path / "sclient.keys"
    peer = StdioPeer([OPENSSL, "s_client", "-connect", f"127.0.0.1:{relay.port}", "-quiet",
                      "-CAfile", certs.ca, "-keylogfile", keyfile,
                      *openssl_version_opts(suite)], c_data, expect=len(s_data), keep=True)
    peer_box["p"] = peer
    ready.set()
    try:
        got = srv.join()
        peer.got_all.wait(30)
    finally:
        peer.wait(30)
        relay.join()
        sctx.close()
    assert got.data == c_data and bytes(peer.data) == s_data, peer.stderr
    theirs = [ln for ln in keyfile.read_text().splitlines() if ln.startswith("CLIENT_RANDOM")]
    ours = [ln for ln in klog.get() if ln.startswith("CLIENT_RANDOM")]
    assert theirs == ours and len(ours) == 1
    sess = WireSession.from_capture(bytes(relay.captured["c2s"]),
                                    bytes(relay.captured["s2c"]), theirs)
    sess.decrypt()
    verify(sess, "s2c", s_data, PLAN_S, knobs)
    verify(sess, "c2s", c_data, pipetls_wrote=False)


# ------------------------------------------------------ negative controls

@pytest.fixture(scope="module")
def good_capture(engine, certs):
    """One verified GCM capture to plant faults in."""
    suite, knobs = SUITES["aes128gcm"], Knobs(4, 2000, 0)
    relay, klog, s_data, c_data = pipetls_pair_through_relay(
        engine, certs, suite, knobs, knobs, [6001, 6001], [8000, 1])
    c2s, s2c = bytes(relay.captured["c2s"]), bytes(relay.captured["s2c"])
    sess = WireSession.from_capture(c2s, s2c, klog.get())
    sess.decrypt()
    verify(sess, "c2s", c_data, [8000, 1], knobs)
    return c2s, s2c, klog.get(), c_data, knobs


def _app_record(stream, index):
    recs, _ = parse_records(stream)
    return [r for r in recs if r.type == APPLICATION_DATA][index]


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_negative_flipped_bit_fails_decryption(good_capture, where):
    c2s, s2c, keys, *_ = good_capture
    r = _app_record(c2s, 2)
    pos = r.offset + 5 + {"nonce": 3, "ciphertext": 20, "tag": len(r.body) - 1}[where]
    bad = bytearray(c2s)
    bad[pos] ^= 0x10
    sess = WireSession.from_capture(bytes(bad), s2c, keys)
    with pytest.raises(WireError, match="tag does not verify"):
        sess.decrypt()


def test_negative_wrong_master_secret(good_capture):
    c2s, s2c, keys, *_ = good_capture
    sess = WireSession.from_capture(c2s, s2c, keys)
    sess.master = bytes([sess.master[0] ^ 1]) + sess.master[1:]
    with pytest.raises(WireError):
        sess.decrypt()


def test_negative_swapped_records_break_sequence(good_capture):
    c2s, s2c, keys, *_ = good_capture
    a, b = _app_record(c2s, 0), _app_record(c2s, 1)
    ra, rb = a.raw(), b.raw()
    assert b.offset == a.offset + len(ra)
    bad = c2s[:a.offset] + rb + ra + c2s[b.offset + len(rb):]
    with pytest.raises(WireError, match="seq"):
        WireSession.from_capture(bad, s2c, keys).decrypt()


def test_negative_size_rule_and_nonce_checks_can_fail(good_capture):
    c2s, s2c, keys, c_data, knobs = good_capture
    sess = WireSession.from_capture(c2s, s2c, keys)
    sess.decrypt()
    # the record sizes do not fit a different rule (max_pipelines 2 / split 4000)
    with pytest.raises(AssertionError, match="record sizes break the rule"):
        verify(sess, "c2s", c_data, [8000, 1], Knobs(2, 4000, 0))
    # a repeated nonce is seen
    sess.records["c2s"][2].explicit = sess.records["c2s"][1].explicit
    with pytest.raises(AssertionError, match="nonce repeats"):
        verify(sess, "c2s", c_data)


def test_negative_corrupting_relay_is_caught(engine, certs, stock):
    """A relay that flips one ciphertext bit of the 3rd client record: the
    receiver rejects it exactly as stock libssl does in the same run, and
    the wire check on the forwarded bytes fails at that record while the
    captured original still verifies."""
    want = stock.call("support.wirecases:corrupted_relay_case", certs=str(certs.dir))
    got, (relay, klog, s_data, c_data) = corrupted_relay_case(engine, certs)
    assert got == want
    assert got["server"] is not None and got["server"]["kind"] == "alert", got
    check_stock_against_rfc("chacha20:flip-ciphertext", ALERT_BAD_RECORD_MAC,
                            want["server"]["alert"], stock.version_tuple,
                            stock.version["text"])
    good = WireSession.from_capture(bytes(relay.captured["c2s"]),
                                    bytes(relay.captured["s2c"]), klog.get(), strict=False)
    good.directions()  # keys derive
    bad = WireSession.from_capture(bytes(relay.forwarded["c2s"]),
                                   bytes(relay.forwarded["s2c"]), klog.get(), strict=False)
    with pytest.raises(WireError, match="c2s: seq 3"):  # Finished is seq 0
        bad.decrypt()
    good.decrypt()
    assert good.app_data("c2s") == c_data
