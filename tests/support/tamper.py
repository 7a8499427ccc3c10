"""Damage to records of a pipelined batch, and the three tamper cases.

A writer sends batches of ``N`` records of ``SPLIT`` bytes (max_pipelines
N, every write N x SPLIT bytes); a relay holds batch ``DAMAGED_BATCH``,
damages record k and sends the group in one ``send``. Each case function
takes ``engine`` first: the pytest process passes the registered engine,
the stock child (support.stock) passes None and so runs the very same case
on stock libssl. Each returns ``(answer, extra)`` in-process; the child
sends only the JSON ``answer``.

    reader_case        pipetls writer -> relay(damage) -> pipetls reader
    forged_case        the same with properly protected forged records
    stock_reader_case  pipetls writer -> relay(damage) -> openssl / gnutls-cli

Where the records lie is the writer's choice, and writers differ: the
engine pipelines every N x SPLIT write into N records of SPLIT bytes, but
stock libssl 3.5 writes it, for a stitched CBC-HMAC suite without EtM,
through MULTIBLOCK (ssl/record/methods/tls_multib.c: four records of
SPLIT - 512 bytes, then one of 2048), where 3.0 writes N records of SPLIT.
So every answer carries the writer's own layout (``layout``: the plaintext
length of each application-data record up to the end of the damaged batch,
read from the relay's capture with the keys) and the offsets it implies
(``bad_start``: the first plaintext byte of the damaged record;
``batch_start``: of the damaged batch), and a damage is aimed at a field
of the record it hits whatever that record's length.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import pipetls
from .proof import (MIB, SUITES, Knobs, PtServer, StdioPeer, openssl_version_opts,
                            payload, pt_connect, pt_context, pt_read, pt_write_plan)
from .relay import BatchTamper, Forge, Relay, flip, set_len
from .wire import ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE, WireSession

from . import programs
from .pki import Certs
from .rfc import ALERT_BAD_RECORD_MAC, ALERT_RECORD_OVERFLOW, ALERT_UNEXPECTED_MESSAGE

N, SPLIT = 4, 4096          # batch of N records of SPLIT bytes
BATCHES = 5                 # batches written; the damaged one is batch 1
DAMAGED_BATCH = 1
READER = Knobs(32, 16384, MIB)
WRITER = Knobs(N, SPLIT, 0)
TAMPER_SUITES = ["aes128gcm", "chacha20", "cbcsha-noetm", "cbcsha256-etm"]


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
        # MAC-then-encrypt: the MAC is inside the encryption, before 1..16
        # bytes of padding, so plaintext byte T - mac - 1 (T: the plaintext,
        # MAC and padding, a whole number of blocks) is always a MAC byte,
        # and never in the last block (the padding stays valid). CBC: flip
        # it through the ciphertext byte one block before it, at record
        # offset 5 + 16 (IV) + (T - mac - 1) - 16.
        return len(rec) - 16 - mac - 1
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


def make_op(suite, name) -> Callable:
    if name.startswith("flip-"):
        return op_flip_field(suite, name[5:])
    return {"truncate-record": op_truncate_record, "truncate-stream": op_truncate_stream,
            "truncate-to-10": op_truncate_to_10, "drop": op_drop, "duplicate": op_duplicate,
            "reorder": op_reorder}[name]


def cases():
    """(suite id, damage name, k) of every reader case."""
    out = []
    for sid in TAMPER_SUITES:
        s = SUITES[sid]
        for field, k in (("type", 1), ("version", 2), ("length", 0), ("nonce", 3),
                         ("ciphertext", 0), ("ciphertext", 3), ("tag", 2), ("padding", 1)):
            if field in ("nonce", "padding") and body_pos(s, b"\0" * 9000, field) is None:
                continue
            out.append((sid, f"flip-{field}", k))
        for name, k in (("truncate-record", 2), ("truncate-stream", 2), ("drop", 1),
                        ("duplicate", 0), ("reorder", 2)):
            out.append((sid, name, k))
        out.append((sid, "truncate-to-10", 1))
    return out


def rfc_answer(suite_id: str, name: str) -> Optional[int]:
    """The alert an RFC fixes for this damage, or None where it fixes none.

    Every damage that leaves a record failing authentication (a flipped bit
    anywhere the MAC/tag covers -- the type and length are in the AAD --, a
    dropped, repeated or moved record, whose sequence number then differs,
    a truncated record) is ``bad_record_mac`` (RFC 5246 7.2.2); so is a
    record too short to hold its tag (RFC 5246 6.2.3.3) or, for MAC-then-
    encrypt CBC, one that is not a whole number of blocks ("decrypted in an
    invalid way"). The RFCs leave open the answer to a wrong record version,
    a connection cut inside a record, and an EtM record shorter than its MAC
    (RFC 7366 says nothing of it)."""
    suite = SUITES[suite_id]
    if name in ("flip-version", "truncate-stream"):
        return None
    if name == "truncate-to-10" and suite.etm and "cbc" in suite_id:
        return None
    return ALERT_BAD_RECORD_MAC


# ------------------------------------------------------------ answers

def app_layout(relay, direction: str, keylines) -> list:
    """The plaintext length of every application-data record that the writer
    sent in ``direction`` ("c2s"/"s2c"), as the relay received it (before
    any damage), decrypted with the connection's keylog lines."""
    sess = WireSession.from_capture(bytes(relay.captured["c2s"]), bytes(relay.captured["s2c"]),
                                    list(keylines), strict=False)
    return [len(r.plaintext) for r in sess.decrypt_direction(direction)
            if r.type == APPLICATION_DATA]


def layout_answer(layout: list, bad_record: int) -> dict:
    """``layout``, ``bad_start`` and ``batch_start`` of an answer (see the
    module's text); ``bad_record``: the index of the damaged record among
    the application-data records as the writer sent them."""
    first = DAMAGED_BATCH * N
    assert len(layout) >= first + N, f"the writer sent {len(layout)} records: {layout}"
    return {"layout": layout[:first + N], "bad_start": sum(layout[:bad_record]),
            "batch_start": sum(layout[:first])}


def bad_record_of(name: str, k: int) -> int:
    """The first record the damage ``name`` at ``k`` leaves wrong (a dropped
    one never arrives; a repeated one is wrong the second time)."""
    return DAMAGED_BATCH * N + k + (1 if name == "duplicate" else 0)


def error_answer(e) -> Optional[dict]:
    """What an error says, without its text: the class, and for an alert
    its number and direction."""
    if e is None:
        return None
    if isinstance(e, pipetls.TLSAlertError):
        return {"kind": "alert", "alert": e.alert, "sent": e.sent}
    if isinstance(e, pipetls.TLSUnexpectedEOF):
        return {"kind": "eof"}
    if isinstance(e, (ConnectionError, OSError)) and not isinstance(e, pipetls.PipetlsError):
        return {"kind": "closed"}
    return {"kind": type(e).__name__}


def _stats(engine):
    return engine.stats() if engine is not None else None


def _delta(engine, before):
    return engine.stats() - before if engine is not None else None


class _Reader:
    def __init__(self):
        self.received = bytearray()
        self.error = None


def reader_run(engine, certs, suite, hook_factory, data):
    """pipetls client (writer) -> relay(hook) -> pipetls server (reader)."""
    res = _Reader()
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

    before = _stats(engine)
    # The reader closes lingering, so its fatal alert reaches the writer
    # whether or not the writer was still sending: the writer's answer is
    # then the alert, never a race between the alert and a TCP reset.
    srv = PtServer(sctx, handler, timeout=20, linger=True)
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
            try:
                conn.read(1)
            except (pipetls.PipetlsError, OSError) as e:
                writer_error = e
        srv.join()
    finally:
        srv.join(raise_error=False)
        relay.kill()
        relay.join()
        sctx.close()
        cctx.close()
    answer = {"reader": error_answer(res.error), "writer": error_answer(writer_error),
              "received": len(res.received),
              "intact": bytes(res.received) == data[:len(res.received)]}
    return answer, {"res": res, "writer_error": writer_error,
                    "delta": _delta(engine, before), "data": data,
                    "layout": app_layout(relay, "c2s", keylines)}


def reader_case(engine, certs, suite_id: str, name: str, k: int):
    """Damage ``name`` to record ``k`` of batch DAMAGED_BATCH on its way
    to a pipetls reader. ``certs``: a Certs or its directory."""
    certs = Certs.of(certs)
    suite = SUITES[suite_id]
    data = payload(N * SPLIT * BATCHES, 30)
    box = {}

    def factory(_keylog):
        box["hook"] = BatchTamper(N, k, make_op(suite, name), batch=DAMAGED_BATCH)
        return box["hook"]

    answer, extra = reader_run(engine, certs, suite, factory, data)
    answer["damaged"] = box["hook"].done
    answer.update(layout_answer(extra["layout"], bad_record_of(name, k)))
    extra["hook"] = box["hook"]
    return (answer, extra) if engine is not None else answer


FORGED = [
    # (id, records to insert, the RFC's answer: an alert, "accepted", or None
    #  where no RFC fixes it)
    ("ccs", [(CHANGE_CIPHER_SPEC, b"\x01")], ALERT_UNEXPECTED_MESSAGE),
    ("unknown-type", [(0x30, b"hello")], ALERT_UNEXPECTED_MESSAGE),
    ("alert-3-bytes", [(ALERT, b"\x01\x00\x00")], None),
    ("handshake-finished", [(HANDSHAKE, b"\x14\x00\x00\x0c" + b"\0" * 12)],
     ALERT_UNEXPECTED_MESSAGE),
    ("oversized-16385", [(APPLICATION_DATA, b"\0" * 16385)], ALERT_RECORD_OVERFLOW),
    ("empty-record", [(APPLICATION_DATA, b"")], "accepted"),
    ("exactly-16384", [(APPLICATION_DATA, b"Z" * 16384)], "accepted"),
]
FORGED_BY_ID = {f[0]: f for f in FORGED}
FORGED_AT = DAMAGED_BATCH * N + 2     # before app record 6 (inside batch 1)


def forged_case(engine, certs, suite_id: str, fid: str):
    """Properly protected records ``FORGED_BY_ID[fid]`` inserted before
    application-data record FORGED_AT, on their way to a pipetls reader."""
    certs = Certs.of(certs)
    suite = SUITES[suite_id]
    inserts = FORGED_BY_ID[fid][1]
    data = payload(N * SPLIT * BATCHES, 32)
    box = {}

    def factory(keylog):
        box["hook"] = Forge("c2s", keylog, FORGED_AT, inserts)
        return box["hook"]

    answer, extra = reader_run(engine, certs, suite, factory, data)
    answer["damaged"] = box["hook"].inserted
    # the first plaintext byte of record FORGED_AT, as this writer laid it out
    at = sum(extra["layout"][:FORGED_AT])
    answer["forged_at"] = at
    extra_bytes = b"".join(p for _, p in inserts)
    want = (data[:at] + extra_bytes + data[at:])[:len(data)]
    answer["as_forged"] = bytes(extra["res"].received) == want
    return (answer, extra) if engine is not None else answer


# ------------------------------------------------ stock readers of records

STOCK_OPS = [("flip-ciphertext", 1), ("flip-tag", 3), ("flip-nonce", 0), ("drop", 2),
             ("duplicate", 1), ("reorder", 0), ("flip-type", 2)]

_OPENSSL_REASON = re.compile(r"error:[0-9A-Fa-f]+:[^:\n]*:[^:\n]*:([^:\n]+)")
_GNUTLS_FATAL = re.compile(r"\*\*\* Fatal error: ([^\n]+)")


def reader_reasons(reader: str, stderr: str) -> list:
    """The reasons a stock reader printed: OpenSSL's error-queue reason
    strings, or gnutls-cli's "Fatal error" lines."""
    pat = _OPENSSL_REASON if reader == "openssl" else _GNUTLS_FATAL
    return sorted({m.strip().lower() for m in pat.findall(stderr)})


def stock_reader_argv(reader, port, suite, certs):
    if reader == "openssl":
        return [programs.openssl_program(), "s_client", "-connect", f"127.0.0.1:{port}",
                "-quiet", "-CAfile", certs.ca, *openssl_version_opts(suite)]
    return ["gnutls-cli", "--x509cafile", str(certs.ca), "-p", str(port), "127.0.0.1",
            "--verify-hostname", "localhost", "--priority", suite.gnutls,
            "--logfile", "/dev/null"]


def stock_reader_case(engine, certs, reader: str, suite_id: str, name: str, k: int):
    """pipetls server (the writer, pipelined when ``engine``) -> relay(damage)
    -> ``reader`` ("openssl" s_client or "gnutls"-cli) in its own process."""
    certs = Certs.of(certs)
    suite = SUITES[suite_id]
    data = payload(N * SPLIT * BATCHES, 33)
    hook = BatchTamper(N, k, make_op(suite, name), batch=DAMAGED_BATCH)
    keylines: list = []
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=WRITER,
                      keylog=keylines.append)
    box = {}

    def handler(conn):
        before = _stats(engine)
        try:
            pt_write_plan(conn, data, [N * SPLIT] * BATCHES)
        except (pipetls.PipetlsError, OSError):
            pass
        box["write_stats"] = _delta(engine, before)
        try:
            conn.read(1)        # the reader's alert, or its EOF
        except (pipetls.PipetlsError, OSError) as e:
            box["error"] = e

    srv = PtServer(sctx, handler, timeout=20)
    relay = Relay(srv.port, s2c=hook, timeout=20).start()
    peer = StdioPeer(stock_reader_argv(reader, relay.port, suite, certs), b"",
                     expect=len(data), keep=True)
    try:
        srv.join()
        rc = peer.wait(20)
    finally:
        peer.kill()
        relay.kill()
        relay.join()
        sctx.close()
    answer = {"damaged": hook.done, "reader_failed": rc != 0, "received": len(peer.data),
              "intact": bytes(peer.data) == data[:len(peer.data)],
              "reasons": reader_reasons(reader, peer.stderr),
              "writer": error_answer(box.get("error"))}
    answer.update(layout_answer(app_layout(relay, "s2c", keylines), bad_record_of(name, k)))
    extra = {"peer": peer, "rc": rc, "data": data, "write_stats": box.get("write_stats"),
             "error": box.get("error")}
    return (answer, extra) if engine is not None else answer
