"""Known answers through EVP: every pipetls cipher, batches of 1..32 records
of lengths 0, 1, 15, 16, 17, 255, 16383, 16384 and random mixes, driven
through the pipeline ctrls, must equal what OpenSSL's own cipher produces
record by record (its TLS record mode), decrypt back, and - independently of
OpenSSL - decrypt with `cryptography`. Negative controls must fail.

The EVP work runs in a child process (tests/support/evp_worker.py) where the engine
is never the default for any cipher, so the reference really is OpenSSL's own
implementation."""
import hashlib
import hmac
import json
import os
import subprocess
import sys

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from support.peers import OPENSSL

WORKER = os.path.join(os.path.dirname(__file__), "support", "evp_worker.py")
FAMILIES = [
    "AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305",
    "AES-128-CBC-HMAC-SHA1", "AES-256-CBC-HMAC-SHA1",
    "AES-128-CBC-HMAC-SHA256", "AES-256-CBC-HMAC-SHA256",
    "AES-128-CBC", "AES-256-CBC",
]


def offered(engine_path):
    out = subprocess.run([OPENSSL, "engine", "-pre", "INFO", engine_path],
                         capture_output=True, text=True, timeout=30)
    # INFO without a buffer prints to stderr
    return {line.split(None, 1)[1] for line in out.stderr.splitlines()
            if line.startswith("cipher ")}


@pytest.fixture(scope="module")
def offered_ciphers(engine_path):
    names = offered(engine_path)
    assert "AES-128-GCM" in names, f"engine offers no AES-128-GCM: {names}"
    return names


def run_worker(engine_path, family, seed=7):
    p = subprocess.run([sys.executable, WORKER, engine_path, family, str(seed)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def check_independently(d, batch):
    """Decrypt the engine's records with cryptography, not OpenSSL."""
    key, fixed = bytes.fromhex(d["key"]), bytes.fromhex(d["fixed"])
    nonces = []
    for i, (p_hex, ct_hex) in enumerate(zip(batch["plain"], batch["engine"])):
        plain, ct, seq = bytes.fromhex(p_hex), bytes.fromhex(ct_hex), batch["seq"] + i
        hdr = seq.to_bytes(8, "big") + bytes([23, 3, 3]) + len(plain).to_bytes(2, "big")
        if d["kind"] == "gcm":
            eiv = ct[:8]
            assert eiv == seq.to_bytes(8, "big"), "explicit nonce is not the sequence number"
            nonces.append(eiv)
            assert AESGCM(key).decrypt(fixed + eiv, ct[8:], hdr) == plain
        elif d["kind"] == "chacha":
            nonce = xor(fixed, b"\0" * 4 + seq.to_bytes(8, "big"))
            nonces.append(nonce)
            assert ChaCha20Poly1305(key).decrypt(nonce, ct, hdr) == plain
        elif d["kind"] == "hmac":
            dec = Cipher(algorithms.AES(key), modes.CBC(ct[:16])).decryptor()
            body = dec.update(ct[16:]) + dec.finalize()
            pad = body[-1]
            assert body[-pad - 1:] == bytes([pad]) * (pad + 1), "bad TLS padding"
            mac_len = len(bytes.fromhex(d["mac_key"]))
            data, mac = body[: len(plain)], body[len(plain): len(plain) + mac_len]
            assert data == plain
            digest = hashlib.sha1 if mac_len == 20 else hashlib.sha256
            assert hmac.compare_digest(
                mac, hmac.new(bytes.fromhex(d["mac_key"]), hdr + plain, digest).digest())
        else:  # plain CBC: every record of a batch starts from the batch IV
            iv = bytes.fromhex(batch["iv"])
            dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            body = dec.update(ct) + dec.finalize()
            assert body == bytes.fromhex(batch["input"][i])
    return nonces


@pytest.mark.parametrize("family", FAMILIES)
def test_known_answers(engine_path, offered_ciphers, family):
    if family not in offered_ciphers:
        pytest.skip(f"OpenSSL's default provider offers no {family} on this CPU")
    d = run_worker(engine_path, family)
    sizes_seen, counts_seen, nonces, plain_batches = set(), set(), [], 0
    for b in d["batches"]:
        n = len(b["plain"])
        counts_seen.add(n)
        sizes_seen.update(len(bytes.fromhex(p)) for p in b["plain"])
        assert b["engine_rc"] > 0, "engine batch failed"
        assert b["engine"] == b["openssl"], f"batch of {n}: engine differs from OpenSSL"
        assert b["decrypt_rc"] > 0, "engine could not decrypt OpenSSL's records"
        for p_hex, out_hex in zip(b["plain"], b["decrypted"]):
            assert bytes.fromhex(p_hex) in bytes.fromhex(out_hex) or p_hex == ""
        if d["kind"] in ("gcm", "chacha"):
            assert b["pads"] == [16] * n
        # plaintexts handed over apart (the patched libssl's out-of-place
        # writes): taken by the AEAD and stitched CBC-HMAC families, refused
        # (EVP: 0) by plain CBC
        if b["plain_ctrl"] is not None:
            plain_batches += 1
            assert b["plain_ctrl"] == (0 if d["kind"] == "cbc" else 1), b["plain_ctrl"]
        nonces += check_independently(d, b)
    assert counts_seen >= set(range(1, 33))
    assert sizes_seen >= {0, 1, 15, 16, 17, 255, 16383, 16384}
    assert len(nonces) == len(set(nonces)), "a nonce repeated"
    assert plain_batches >= 12, plain_batches

    for b in d["multiblock"]:  # stitched ciphers, MULTIBLOCK groups per lane
        assert b["engine_rc"] > 0 and b["decrypt_rc"] > 0
        # the plaintexts apart (2 of the 4 shapes): taken, and read from there
        assert b["plain_ctrl"] in (None, 1), b["plain_ctrl"]
        for p_hex, out_hex in zip(b["plain"], b["decrypted"]):
            assert bytes.fromhex(p_hex) in bytes.fromhex(out_hex)
        check_independently(d, b)
    if d["kind"] == "hmac":
        assert len(d["multiblock"]) == 4
        assert [b["plain_ctrl"] for b in d["multiblock"]] == [1, None, 1, None]

    neg = d["negative"]
    fail = -1 if d["kind"] in ("gcm", "chacha") else 0
    assert neg["counts_disagree"] == fail
    assert neg["pipes_33_ctrl"] == 0 and neg["pipes_33_cipher"] == fail
    if d["kind"] != "cbc":
        # 3 plaintext buffers for 4 records: the batch fails
        assert neg["plain_counts_disagree"] == [1, fail]
        # OUT_OF_PLACE 0: refused, and the records come from the inputs
        assert neg["plain_when_off"] == [0, True]
    else:
        assert neg["plain_counts_disagree"][0] == 0 and neg["plain_when_off"][0] == 0
    assert neg["plain_when_decrypting"] == 0
    if d["kind"] != "cbc":
        assert neg["missing_aad"] == fail
        assert neg["extra_aad"] == fail
        # one flipped tag/MAC bit in record 2 of 4: the whole batch fails and
        # no plaintext of the batch is left in the output buffers
        assert neg["tamper_rc"] == fail
        assert not neg["tamper_record_leaked"] and not neg["tamper_plain_leaked"]
    assert neg["untampered_rc"] > 0 and neg["untampered_ok"]


def test_worker_detects_a_wrong_reference(engine_path, offered_ciphers, tmp_path):
    """Negative control for the known-answer check itself: a planted
    difference between engine and reference is seen."""
    d = run_worker(engine_path, "AES-128-GCM")
    b = d["batches"][3]
    ct = bytearray(bytes.fromhex(b["engine"][0]))
    ct[9] ^= 1
    b["engine"][0] = ct.hex()
    assert b["engine"] != b["openssl"]
    with pytest.raises(InvalidTag):
        check_independently(d, b)
