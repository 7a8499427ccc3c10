"""An independent reading of TLS 1.3 records (RFC 8446), built from `cryptography`.

Nothing here uses libssl or pipetls: the record parser is support.records,
HKDF-Expand-Label (RFC 8446 section 7.1), the traffic keys (7.3), the
per-record nonce (5.3: the static IV XOR the sequence number) and the key
update (7.2) are written from the RFC on top of `cryptography`'s HKDF,
AESGCM and ChaCha20Poly1305.

Use: capture both directions of a connection (support.relay), collect the
SSLKEYLOGFILE lines of one end, then

    s = Session13.from_capture(c2s, s2c, keylog_lines)
    s.decrypt()                 # -> s.records["c2s"/"s2c"]: Record13 lists
    s.app_data("s2c")           # the application data, in order

``seal13`` / ``open13`` protect / open one record with a traffic secret
(to forge a record a peer with the keys could send).

Every protected record after the handshake is decrypted with the next
nonce of its direction (a failure raises WireError naming the direction
and the sequence number); a KeyUpdate moves that direction to the next
traffic secret. ``nonces`` holds every (key, nonce) pair used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .records import APPLICATION_DATA, HANDSHAKE, WireError, parse_records

# suite id -> (name, AEAD class, key length, hash)
SUITES13 = {
    0x1301: ("TLS_AES_128_GCM_SHA256", AESGCM, 16, hashes.SHA256),
    0x1302: ("TLS_AES_256_GCM_SHA384", AESGCM, 32, hashes.SHA384),
    0x1303: ("TLS_CHACHA20_POLY1305_SHA256", ChaCha20Poly1305, 32, hashes.SHA256),
}
KEY_UPDATE = 24
FINISHED = 20


def hkdf_expand_label(hash_cls, secret: bytes, label: bytes, context: bytes,
                      length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack(">HB", length, len(full)) + full + bytes([len(context)]) + context
    return HKDFExpand(hash_cls(), length, info).derive(secret)


def parse_keylog13(lines) -> Dict[str, bytes]:
    """label -> secret for the TLS 1.3 lines of an SSLKEYLOGFILE (one connection)."""
    out: Dict[str, bytes] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and "SECRET" in parts[0]:
            out[parts[0]] = bytes.fromhex(parts[2])
    return out


def server_hello_suite(s2c: bytes) -> int:
    recs, _ = parse_records(s2c, strict=False)
    for r in recs:
        if r.type == HANDSHAKE and r.body[:1] == b"\x02":
            body = r.body[4:]
            sid_len = body[34]
            return int.from_bytes(body[35 + sid_len:37 + sid_len], "big")
    raise WireError("no ServerHello in the server's records")


def _record_keys(suite: int, secret: bytes):
    _, aead, klen, h = SUITES13[suite]
    return (aead(hkdf_expand_label(h, secret, b"key", b"", klen)),
            hkdf_expand_label(h, secret, b"iv", b"", 12))


def _nonce(iv: bytes, seq: int) -> bytes:
    return bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big")))


def seal13(suite: int, secret: bytes, seq: int, inner: bytes) -> bytes:
    """A whole protected record (header and body) carrying ``inner`` (a
    TLSInnerPlaintext as it is: content, type byte, padding -- or anything
    else, to make a bad one) as record ``seq`` under the traffic secret
    ``secret``: what a peer holding the keys would send."""
    aead, iv = _record_keys(suite, secret)
    hdr = struct.pack(">BHH", APPLICATION_DATA, 0x0303, len(inner) + 16)
    return hdr + aead.encrypt(_nonce(iv, seq), inner, hdr)


def open13(suite: int, secret: bytes, seq: int, record: bytes) -> bytes:
    """The TLSInnerPlaintext of the whole protected ``record`` as record
    ``seq`` under ``secret``; WireError if it does not decrypt."""
    aead, iv = _record_keys(suite, secret)
    try:
        return aead.decrypt(_nonce(iv, seq), record[5:], record[:5])
    except InvalidTag:
        raise WireError(f"the record does not decrypt as record {seq}") from None


@dataclass
class Record13:
    seq: int
    generation: int          # 0: first application traffic secret, +1 per KeyUpdate
    inner_type: int
    plaintext: bytes         # the content, without inner type and padding
    padding: int
    wire_length: int         # the length field of the record header
    nonce: bytes


@dataclass
class Direction13:
    name: str
    suite: int
    hs_secret: bytes
    app_secret: bytes
    records: List[Record13] = field(default_factory=list)
    handshake_records: int = 0

    def _keys(self, secret: bytes) -> Tuple[object, bytes, bytes]:
        _, aead, klen, h = SUITES13[self.suite]
        key = hkdf_expand_label(h, secret, b"key", b"", klen)
        iv = hkdf_expand_label(h, secret, b"iv", b"", 12)
        return aead(key), key, iv

    def decrypt(self, stream: bytes, nonces: set, strict_end: bool = True) -> None:
        recs, rest = parse_records(stream, strict=False)
        if strict_end and rest:
            raise WireError(f"{self.name}: {len(rest)} bytes of a partial record at the end")
        h = SUITES13[self.suite][3]
        aead, key, iv = self._keys(self.hs_secret)
        secret, seq, gen, in_handshake = self.app_secret, 0, 0, True
        for r in recs:
            if r.type != APPLICATION_DATA:
                continue            # ServerHello, middlebox CCS, plaintext alerts
            hdr = struct.pack(">BHH", r.type, r.version, len(r.body))
            nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big")))
            try:
                pt = aead.decrypt(nonce, r.body, hdr)
            except InvalidTag:
                if not in_handshake:
                    raise WireError(f"{self.name}: record {seq} (keys {gen}) does not decrypt")
                # the first record under the application traffic keys
                in_handshake = False
                aead, key, iv = self._keys(secret)
                seq = 0
                nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big")))
                try:
                    pt = aead.decrypt(nonce, r.body, hdr)
                except InvalidTag:
                    raise WireError(f"{self.name}: first application record does not decrypt")
            if (key, nonce) in nonces:
                raise WireError(f"{self.name}: nonce reused at record {seq} (keys {gen})")
            nonces.add((key, nonce))
            end = len(pt)
            while end > 0 and pt[end - 1] == 0:
                end -= 1
            if end == 0:
                raise WireError(f"{self.name}: record {seq} has no inner content type")
            inner = pt[end - 1]
            if in_handshake:
                self.handshake_records += 1
                seq += 1
                continue
            self.records.append(Record13(seq, gen, inner, pt[:end - 1], len(pt) - end,
                                         len(r.body), nonce))
            seq += 1
            if inner == HANDSHAKE and pt[:1] == bytes([KEY_UPDATE]):
                secret = hkdf_expand_label(h, secret, b"traffic upd", b"",
                                           h.digest_size)
                aead, key, iv = self._keys(secret)
                seq, gen = 0, gen + 1


class Session13:
    def __init__(self, c2s: bytes, s2c: bytes, secrets: Dict[str, bytes]):
        self.streams = {"c2s": bytes(c2s), "s2c": bytes(s2c)}
        self.suite = server_hello_suite(self.streams["s2c"])
        if self.suite not in SUITES13:
            raise WireError(f"suite {self.suite:#06x} is not a TLS 1.3 AEAD suite")
        need = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")
        missing = [n for n in need if n not in secrets]
        if missing:
            raise WireError(f"key log lacks {missing}")
        self.dirs = {
            "c2s": Direction13("c2s", self.suite, secrets[need[0]], secrets[need[2]]),
            "s2c": Direction13("s2c", self.suite, secrets[need[1]], secrets[need[3]]),
        }
        self.nonces: set = set()

    @classmethod
    def from_capture(cls, c2s: bytes, s2c: bytes, keylog_lines) -> "Session13":
        return cls(c2s, s2c, parse_keylog13(keylog_lines))

    @property
    def suite_name(self) -> str:
        return SUITES13[self.suite][0]

    def decrypt(self, strict_end: bool = True) -> "Session13":
        for name, d in self.dirs.items():
            d.decrypt(self.streams[name], self.nonces, strict_end)
        return self

    @property
    def records(self) -> Dict[str, List[Record13]]:
        return {n: d.records for n, d in self.dirs.items()}

    def app_data(self, name: str) -> bytes:
        return b"".join(r.plaintext for r in self.dirs[name].records
                        if r.inner_type == APPLICATION_DATA)

    def app_sizes(self, name: str) -> List[int]:
        return [len(r.plaintext) for r in self.dirs[name].records
                if r.inner_type == APPLICATION_DATA]

    def alerts(self, name: str) -> List[Tuple[int, int]]:
        return [(r.plaintext[0], r.plaintext[1]) for r in self.dirs[name].records
                if r.inner_type == 21 and len(r.plaintext) == 2]


def first_alert(name: str, session: Optional[Session13]) -> Optional[Tuple[int, int]]:
    if session is None:
        return None
    got = session.alerts(name)
    return got[0] if got else None
