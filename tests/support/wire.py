"""An independent reading of TLS 1.2 records, built from `cryptography`.

Nothing here uses libssl or pipetls: the record parser, the TLS 1.2 PRF
(RFC 5246 section 5), the key block (section 6.3) and the record protection
(RFC 5288 AES-GCM, RFC 7905 ChaCha20-Poly1305, RFC 5246 6.2.3.2 CBC +
HMAC, RFC 7366 Encrypt-then-MAC) are written from the RFCs, on top of
`cryptography`'s AESGCM, ChaCha20Poly1305, AES-CBC and HMAC primitives.

Use: capture both directions of a connection (support.relay), collect the
SSLKEYLOGFILE lines of one end, then

    s = WireSession.from_capture(c2s, s2c, keylog_lines)
    s.decrypt()          # -> s.records["c2s"/"s2c"]: DecryptedRecord list

Every protected record is decrypted and checked (tag / MAC / padding); a
failure raises WireError naming the direction, the sequence number and why.
``encrypt_record`` is the inverse, used to forge valid records on purpose.
"""

from __future__ import annotations

import hmac as std_hmac
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .records import ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE  # noqa: F401
from .records import Record, WireError, parse_records  # noqa: F401 - this module's API
TLS12 = 0x0303


# --------------------------------------------------------------- suites

@dataclass(frozen=True)
class SuiteInfo:
    name: str           # OpenSSL's name
    kind: str           # "gcm" | "chacha" | "cbc"
    key_len: int
    fixed_iv_len: int   # implicit IV bytes in the key block (gcm 4, chacha 12, cbc 16)
    mac: Optional[str]  # HMAC hash for cbc ("sha1", "sha256", "sha384")
    prf: str            # PRF hash: "sha256" or "sha384"

    @property
    def mac_len(self) -> int:
        return {"sha1": 20, "sha256": 32, "sha384": 48}.get(self.mac, 0)


SUITES: Dict[int, SuiteInfo] = {
    0xC02F: SuiteInfo("ECDHE-RSA-AES128-GCM-SHA256", "gcm", 16, 4, None, "sha256"),
    0xC030: SuiteInfo("ECDHE-RSA-AES256-GCM-SHA384", "gcm", 32, 4, None, "sha384"),
    0x009C: SuiteInfo("AES128-GCM-SHA256", "gcm", 16, 4, None, "sha256"),
    0xCCA8: SuiteInfo("ECDHE-RSA-CHACHA20-POLY1305", "chacha", 32, 12, None, "sha256"),
    0xC013: SuiteInfo("ECDHE-RSA-AES128-SHA", "cbc", 16, 16, "sha1", "sha256"),
    0xC014: SuiteInfo("ECDHE-RSA-AES256-SHA", "cbc", 32, 16, "sha1", "sha256"),
    0xC027: SuiteInfo("ECDHE-RSA-AES128-SHA256", "cbc", 16, 16, "sha256", "sha256"),
    0xC028: SuiteInfo("ECDHE-RSA-AES256-SHA384", "cbc", 32, 16, "sha384", "sha384"),
    0x002F: SuiteInfo("AES128-SHA", "cbc", 16, 16, "sha1", "sha256"),
    0x0035: SuiteInfo("AES256-SHA", "cbc", 32, 16, "sha1", "sha256"),
    0x003C: SuiteInfo("AES128-SHA256", "cbc", 16, 16, "sha256", "sha256"),
    0x003D: SuiteInfo("AES256-SHA256", "cbc", 32, 16, "sha256", "sha256"),
}

_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384}


# ----------------------------------------------------------------- PRF

def _hmac(hash_name: str, key: bytes, data: bytes) -> bytes:
    h = c_hmac.HMAC(key, _HASHES[hash_name]())
    h.update(data)
    return h.finalize()


def p_hash(hash_name: str, secret: bytes, seed: bytes, n: int) -> bytes:
    """RFC 5246 section 5: P_hash(secret, seed) cut to n bytes."""
    out, a = b"", seed
    while len(out) < n:
        a = _hmac(hash_name, secret, a)
        out += _hmac(hash_name, secret, a + seed)
    return out[:n]


def prf(hash_name: str, secret: bytes, label: bytes, seed: bytes, n: int) -> bytes:
    """The TLS 1.2 PRF: P_<hash>(secret, label + seed)."""
    return p_hash(hash_name, secret, label + seed, n)


@dataclass(frozen=True)
class Keys:
    mac_key: bytes
    key: bytes
    iv: bytes


def key_block(suite: SuiteInfo, master: bytes, client_random: bytes,
              server_random: bytes) -> Tuple[Keys, Keys]:
    """(client_write, server_write) keys from the master secret (6.3)."""
    m, k, i = suite.mac_len, suite.key_len, suite.fixed_iv_len
    kb = prf(suite.prf, master, b"key expansion", server_random + client_random,
             2 * (m + k + i))
    parts, off = [], 0
    for n in (m, m, k, k, i, i):
        parts.append(kb[off:off + n])
        off += n
    cmac, smac, ckey, skey, civ, siv = parts
    return Keys(cmac, ckey, civ), Keys(smac, skey, siv)


# ------------------------------------------------------------- records

def _handshake_messages(records: List[Record]) -> List[Tuple[int, bytes]]:
    """Plaintext handshake messages before ChangeCipherSpec."""
    buf = b""
    for r in records:
        if r.type == CHANGE_CIPHER_SPEC:
            break
        if r.type == HANDSHAKE:
            buf += r.body
    msgs, i = [], 0
    while i + 4 <= len(buf):
        t = buf[i]
        ln = int.from_bytes(buf[i + 1:i + 4], "big")
        msgs.append((t, buf[i + 4:i + 4 + ln]))
        i += 4 + ln
    return msgs


def _hello(msg: bytes, server: bool) -> dict:
    """Random, cipher suite and extension types of a Client/ServerHello."""
    version = int.from_bytes(msg[0:2], "big")
    random = msg[2:34]
    i = 34
    sid_len = msg[i]
    i += 1 + sid_len
    if server:
        suite = int.from_bytes(msg[i:i + 2], "big")
        i += 2 + 1  # compression
        suites = [suite]
    else:
        n = int.from_bytes(msg[i:i + 2], "big")
        suites = [int.from_bytes(msg[i + 2 + j:i + 4 + j], "big") for j in range(0, n, 2)]
        i += 2 + n
        i += 1 + msg[i]  # compression methods
    exts = {}
    if i + 2 <= len(msg):
        total = int.from_bytes(msg[i:i + 2], "big")
        j, end = i + 2, i + 2 + total
        while j + 4 <= end:
            et = int.from_bytes(msg[j:j + 2], "big")
            el = int.from_bytes(msg[j + 2:j + 4], "big")
            exts[et] = msg[j + 4:j + 4 + el]
            j += 4 + el
    return {"version": version, "random": random, "suites": suites, "extensions": exts}


EXT_ENCRYPT_THEN_MAC = 0x0016
EXT_SUPPORTED_VERSIONS = 0x002B


def parse_keylog(lines) -> Dict[bytes, bytes]:
    """CLIENT_RANDOM <client_random hex> <master hex> lines -> {random: master}."""
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "CLIENT_RANDOM":
            out[bytes.fromhex(parts[1])] = bytes.fromhex(parts[2])
    return out


# ---------------------------------------------------------- protection

def _aad(seq: int, typ: int, version: int, length: int) -> bytes:
    return struct.pack("!QBHH", seq, typ, version, length)


class Direction:
    """The record protection of one direction (client->server or back)."""

    def __init__(self, suite: SuiteInfo, keys: Keys, etm: bool):
        self.suite, self.keys, self.etm = suite, keys, etm
        if suite.kind == "gcm":
            self._aead = AESGCM(keys.key)
        elif suite.kind == "chacha":
            self._aead = ChaCha20Poly1305(keys.key)

    # -- decrypt ------------------------------------------------------
    def decrypt(self, seq: int, typ: int, version: int, body: bytes) -> Tuple[bytes, bytes]:
        """(plaintext, explicit nonce or CBC IV); raises WireError."""
        s = self.suite
        if s.kind == "gcm":
            if len(body) < 8 + 16:
                raise WireError(f"seq {seq}: GCM record of {len(body)} bytes is too short")
            explicit = body[:8]
            nonce = self.keys.iv + explicit
            aad = _aad(seq, typ, version, len(body) - 24)
            try:
                return self._aead.decrypt(nonce, body[8:], aad), explicit
            except InvalidTag:
                raise WireError(f"seq {seq}: AES-GCM tag does not verify") from None
        if s.kind == "chacha":
            if len(body) < 16:
                raise WireError(f"seq {seq}: ChaCha20-Poly1305 record too short")
            nonce = bytes(a ^ b for a, b in zip(self.keys.iv, (0).to_bytes(4, "big")
                                                + seq.to_bytes(8, "big")))
            aad = _aad(seq, typ, version, len(body) - 16)
            try:
                return self._aead.decrypt(nonce, body, aad), b""
            except InvalidTag:
                raise WireError(f"seq {seq}: ChaCha20-Poly1305 tag does not verify") from None
        return self._cbc_decrypt(seq, typ, version, body)

    def _cbc_decrypt(self, seq, typ, version, body):
        m = self.suite.mac_len
        if self.etm:
            if len(body) < 16 + 16 + m or (len(body) - m) % 16:
                raise WireError(f"seq {seq}: EtM record length {len(body)} is wrong")
            ct, tag = body[:-m], body[-m:]
            want = _hmac(self.suite.mac, self.keys.mac_key,
                         _aad(seq, typ, version, len(ct)) + ct)
            if not std_hmac.compare_digest(want, tag):
                raise WireError(f"seq {seq}: EtM HMAC does not verify")
            padded = self._cbc(ct[:16], ct[16:], decrypt=True)
            pad = padded[-1]
            if pad + 1 > len(padded) or padded[-pad - 1:] != bytes([pad]) * (pad + 1):
                raise WireError(f"seq {seq}: bad CBC padding")
            return padded[:-pad - 1], ct[:16]
        if len(body) < 32 or len(body) % 16:
            raise WireError(f"seq {seq}: CBC record length {len(body)} is wrong")
        padded = self._cbc(body[:16], body[16:], decrypt=True)
        pad = padded[-1]
        if pad + 1 + m > len(padded) or padded[-pad - 1:] != bytes([pad]) * (pad + 1):
            raise WireError(f"seq {seq}: bad CBC padding")
        inner = padded[:-pad - 1]
        plain, tag = inner[:-m], inner[-m:]
        want = _hmac(self.suite.mac, self.keys.mac_key,
                     _aad(seq, typ, version, len(plain)) + plain)
        if not std_hmac.compare_digest(want, tag):
            raise WireError(f"seq {seq}: CBC HMAC does not verify")
        return plain, body[:16]

    def _cbc(self, iv, data, decrypt):
        c = Cipher(algorithms.AES(self.keys.key), modes.CBC(iv))
        op = c.decryptor() if decrypt else c.encryptor()
        return op.update(data) + op.finalize()

    # -- encrypt (to forge valid records) ------------------------------
    def encrypt(self, seq: int, typ: int, version: int, plain: bytes,
                explicit: Optional[bytes] = None) -> bytes:
        """The record body protecting ``plain`` at ``seq`` (GCM explicit
        nonce: ``explicit`` or the sequence number; CBC IV: ``explicit`` or
        16 zero bytes xor seq)."""
        s = self.suite
        aad = _aad(seq, typ, version, len(plain))
        if s.kind == "gcm":
            explicit = explicit if explicit is not None else seq.to_bytes(8, "big")
            return explicit + self._aead.encrypt(self.keys.iv + explicit, plain, aad)
        if s.kind == "chacha":
            nonce = bytes(a ^ b for a, b in zip(self.keys.iv, bytes(4) + seq.to_bytes(8, "big")))
            return self._aead.encrypt(nonce, plain, aad)
        iv = explicit if explicit is not None else seq.to_bytes(16, "big")
        m = s.mac_len
        if self.etm:
            padlen = 15 - (len(plain) % 16)
            ct = iv + self._cbc(iv, plain + bytes([padlen]) * (padlen + 1), decrypt=False)
            return ct + _hmac(s.mac, self.keys.mac_key, _aad(seq, typ, version, len(ct)) + ct)
        inner = plain + _hmac(s.mac, self.keys.mac_key, aad + plain)
        padlen = 15 - (len(inner) % 16)
        return iv + self._cbc(iv, inner + bytes([padlen]) * (padlen + 1), decrypt=False)


# ------------------------------------------------------------ sessions

@dataclass
class DecryptedRecord:
    seq: int
    type: int
    plaintext: bytes
    explicit: bytes     # GCM explicit nonce / CBC IV ("" for ChaCha)
    wire_len: int       # body length on the wire
    offset: int         # header offset in the captured stream


@dataclass
class WireSession:
    """One captured TLS 1.2 connection: both directions and the keys."""

    c2s: List[Record]
    s2c: List[Record]
    suite: SuiteInfo
    etm: bool
    client_random: bytes
    server_random: bytes
    master: bytes
    records: Dict[str, List[DecryptedRecord]] = field(default_factory=dict)

    @classmethod
    def from_capture(cls, c2s: bytes, s2c: bytes, keylog_lines,
                     master: Optional[bytes] = None, strict: bool = True) -> "WireSession":
        crecs, _ = parse_records(c2s, strict=strict)
        srecs, _ = parse_records(s2c, strict=strict)
        chello = [m for t, m in _handshake_messages(crecs) if t == 1]
        shello = [m for t, m in _handshake_messages(srecs) if t == 2]
        if not chello or not shello:
            raise WireError("no ClientHello/ServerHello in the capture")
        ch, sh = _hello(chello[0], False), _hello(shello[0], True)
        if EXT_SUPPORTED_VERSIONS in sh["extensions"]:
            raise WireError("TLS 1.3 connection: not a TLS 1.2 capture")
        suite_id = sh["suites"][0]
        if suite_id not in SUITES:
            raise WireError(f"cipher suite 0x{suite_id:04x} is not known here")
        suite = SUITES[suite_id]
        etm = suite.kind == "cbc" and EXT_ENCRYPT_THEN_MAC in sh["extensions"]
        if master is None:
            secrets = parse_keylog(keylog_lines)
            master = secrets.get(ch["random"])
            if master is None:
                raise WireError("the keylog has no CLIENT_RANDOM line for this connection")
        return cls(crecs, srecs, suite, etm, ch["random"], sh["random"], master)

    def directions(self) -> Dict[str, Direction]:
        cw, sw = key_block(self.suite, self.master, self.client_random, self.server_random)
        return {"c2s": Direction(self.suite, cw, self.etm),
                "s2c": Direction(self.suite, sw, self.etm)}

    def decrypt(self) -> Dict[str, List[DecryptedRecord]]:
        """Decrypt every record after ChangeCipherSpec in both directions.
        Sequence numbers start at 0 with the Finished message and go up by
        one per record: a record that was dropped, repeated or moved fails."""
        for name in ("c2s", "s2c"):
            self.decrypt_direction(name)
        return self.records

    def decrypt_direction(self, name: str) -> List[DecryptedRecord]:
        """Decrypt every record after ChangeCipherSpec in direction ``name``
        ("c2s" or "s2c") alone (as :meth:`decrypt` does for both)."""
        d = self.directions()[name]
        out, seq, active = [], 0, False
        for r in (self.c2s if name == "c2s" else self.s2c):
            if r.type == CHANGE_CIPHER_SPEC and not active:
                active = True
                continue
            if not active:
                continue
            try:
                plain, explicit = d.decrypt(seq, r.type, r.version, r.body)
            except WireError as e:
                raise WireError(f"{name}: {e}") from None
            out.append(DecryptedRecord(seq, r.type, plain, explicit, len(r.body), r.offset))
            seq += 1
        self.records[name] = out
        return out

    def app_data(self, name: str) -> bytes:
        return b"".join(r.plaintext for r in self.records[name]
                        if r.type == APPLICATION_DATA)
