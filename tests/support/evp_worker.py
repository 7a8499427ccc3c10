"""Runs in its own process (the engine is never the default for any cipher
here, so OpenSSL's own cipher answers the reference calls): drives one
pipetls cipher through EVP with the pipeline ctrls and OpenSSL's own cipher
record by record, and prints JSON for tests/test_engine_evp.py to check.

    python support/evp_worker.py ENGINE.so FAMILY SEED
"""
import ctypes
import json
import os
import random
import sys

import _ssl  # noqa: F401  -- maps the libcrypto that Python's ssl uses

C = ctypes


def _libcrypto():
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "libcrypto.so" in os.path.basename(p):
                return C.CDLL(p)
    raise RuntimeError("libcrypto is not mapped")


L = _libcrypto()
vp, ci, cc = C.c_void_p, C.c_int, C.c_char_p
for name, res, args in [
    ("ENGINE_by_id", vp, [cc]), ("ENGINE_ctrl_cmd_string", ci, [vp, cc, cc, ci]),
    ("ENGINE_init", ci, [vp]), ("ENGINE_get_cipher", vp, [vp, ci]),
    ("EVP_CIPHER_CTX_new", vp, []), ("EVP_CIPHER_CTX_free", None, [vp]),
    ("EVP_CipherInit_ex", ci, [vp, vp, vp, cc, cc, ci]),
    ("EVP_CipherInit_ex2", ci, [vp, vp, cc, cc, ci, vp]),
    ("EVP_CIPHER_CTX_ctrl", ci, [vp, ci, ci, vp]),
    ("EVP_Cipher", ci, [vp, vp, vp, C.c_uint]),
    ("EVP_CIPHER_fetch", vp, [vp, cc, cc]), ("OBJ_sn2nid", ci, [cc]),
    ("ENGINE_get_cipher_engine", vp, [ci]), ("ERR_clear_error", None, []),
    ("EVP_CIPHER_CTX_set_padding", ci, [vp, ci]),
]:
    fn = getattr(L, name)
    fn.restype, fn.argtypes = res, args

TLS1_AAD, MAC_KEY, IV_FIXED = 0x16, 0x17, 0x12
OUT_BUFS, IN_BUFS, IN_LENS = 0x22, 0x23, 0x24
# EVP_CTRL_SET_PIPELINE_PLAINTEXT_BUFS of the patched libssl (openssl_patches/0004)
PLAIN_BUFS = 0x2B

FAMILIES = {
    # name: (nid short name, kind, key length, mac length)
    "AES-128-GCM": ("id-aes128-GCM", "gcm", 16, 0),
    "AES-256-GCM": ("id-aes256-GCM", "gcm", 32, 0),
    "ChaCha20-Poly1305": ("ChaCha20-Poly1305", "chacha", 32, 0),
    "AES-128-CBC-HMAC-SHA1": ("AES-128-CBC-HMAC-SHA1", "hmac", 16, 20),
    "AES-256-CBC-HMAC-SHA1": ("AES-256-CBC-HMAC-SHA1", "hmac", 32, 20),
    "AES-128-CBC-HMAC-SHA256": ("AES-128-CBC-HMAC-SHA256", "hmac", 16, 32),
    "AES-256-CBC-HMAC-SHA256": ("AES-256-CBC-HMAC-SHA256", "hmac", 32, 32),
    "AES-128-CBC": ("AES-128-CBC", "cbc", 16, 0),
    "AES-256-CBC": ("AES-256-CBC", "cbc", 32, 0),
}
SIZES = [0, 1, 15, 16, 17, 255, 16383, 16384]


def aad(seq, length):
    return seq.to_bytes(8, "big") + bytes([23, 3, 3]) + length.to_bytes(2, "big")


class Fam:
    def __init__(self, family, engine, rnd):
        self.name = family
        sn, self.kind, klen, self.mac_len = FAMILIES[family]
        self.nid = L.OBJ_sn2nid(sn.encode())
        self.key = rnd.randbytes(klen)
        self.fixed = rnd.randbytes(12 if self.kind == "chacha" else 4)
        self.mac_key = rnd.randbytes(self.mac_len)
        self.iv = rnd.randbytes(16)
        self.engine = engine
        self.ours = L.ENGINE_get_cipher(engine, self.nid)
        assert self.ours, f"engine offers no {family}"
        self.impl = L.EVP_CIPHER_fetch(None, family.encode(), None)
        assert self.impl, f"OpenSSL offers no {family}"
        assert not L.ENGINE_get_cipher_engine(self.nid), "an ENGINE is the default here"

    # -- contexts --------------------------------------------------------
    def engine_ctx(self, enc):
        ctx = L.EVP_CIPHER_CTX_new()
        iv = self.fixed if self.kind == "chacha" else (self.iv if self.kind in ("hmac", "cbc") else None)
        assert L.EVP_CipherInit_ex(ctx, self.ours, self.engine, self.key, iv, enc) == 1
        self._tls_setup(ctx)
        return ctx

    def ref_ctx(self, enc, iv=None):
        ctx = L.EVP_CIPHER_CTX_new()
        if self.kind == "chacha":
            iv = self.fixed
        assert L.EVP_CipherInit_ex2(ctx, self.impl, self.key, iv, enc, None) == 1
        if self.kind == "cbc":
            L.EVP_CIPHER_CTX_set_padding(ctx, 0)
        self._tls_setup(ctx)
        return ctx

    def _tls_setup(self, ctx):
        if self.kind == "gcm":
            b = C.create_string_buffer(self.fixed, 4)
            assert L.EVP_CIPHER_CTX_ctrl(ctx, IV_FIXED, 4, b) == 1
        if self.kind == "hmac":
            b = C.create_string_buffer(self.mac_key, self.mac_len)
            assert L.EVP_CIPHER_CTX_ctrl(ctx, MAC_KEY, self.mac_len, b) == 1

    # -- record layouts -------------------------------------------------------
    def enc_input(self, seq, plain, rnd):
        """(input bytes, aad or None) for encrypting one record."""
        p = len(plain)
        if self.kind == "gcm":
            return b"\0" * 8 + plain + b"\0" * 16, aad(seq, 8 + p)
        if self.kind == "chacha":
            return plain + b"\0" * 16, aad(seq, p)
        if self.kind == "hmac":
            a = aad(seq, 16 + p)
            pad = ((p + self.mac_len + 16) & ~15) - p
            return rnd.randbytes(16) + plain + b"\0" * pad, a
        blocks = plain + b"\0" * (-p % 16)
        return rnd.randbytes(16) + blocks, None

    def pad_for(self, a, enc):
        ctx = self.engine_ctx(enc)
        b = C.create_string_buffer(a, 13)
        r = L.EVP_CIPHER_CTX_ctrl(ctx, TLS1_AAD, 13, b)
        L.EVP_CIPHER_CTX_free(ctx)
        return r


# where a record's plaintext starts in its input (after the explicit nonce
# or IV block)
PLAIN_AT = {"gcm": 8, "hmac": 16}


def run_batch(ctx, inputs, aads, in_place, n_aads=None, n_lens=None, extra_aads=0,
              plains=None, plain_at=0, n_plains=None, contiguous=False):
    """Runs one pipelined batch on ctx; returns (rc, outputs, pads).

    plains: also hand the plaintexts over apart (PLAIN_BUFS, as the patched
    libssl does); when the cipher takes them, the plaintext room of the
    input buffers (at plain_at) is overwritten with 0xA5 first, so a cipher
    that read it there would give other records. contiguous: the
    plaintexts are consecutive pieces of one buffer, as in an SSL_write."""
    n = len(inputs)
    plain_ctrl = None
    if plains is not None:
        m = n if n_plains is None else n_plains
        if contiguous:
            whole = C.create_string_buffer(b"".join(plains), max(sum(map(len, plains)), 1))
            offs = [sum(len(p) for p in plains[:i]) for i in range(m)]
            ptrs = [C.c_void_p(C.addressof(whole) + o) for o in offs]
            keep = [whole]
        else:
            keep = [C.create_string_buffer(p, max(len(p), 1)) for p in plains]
            ptrs = [C.cast(b, vp) for b in keep[:m]]
        plain_ctrl = L.EVP_CIPHER_CTX_ctrl(ctx, PLAIN_BUFS, m, (vp * m)(*ptrs))
        L.ERR_clear_error()
        if plain_ctrl == 1:
            inputs = [x[:plain_at] + b"\xa5" * len(p) + x[plain_at + len(p):]
                      for x, p in zip(inputs, plains)]
    ins = [C.create_string_buffer(x, max(len(x), 1)) for x in inputs]
    outs = ins if in_place else [C.create_string_buffer(max(len(x), 1)) for x in inputs]
    pads = []
    if aads is not None:
        for a in (aads[: n_aads] if n_aads is not None else aads) + [aads[0]] * extra_aads:
            b = C.create_string_buffer(a, 13)
            pads.append(L.EVP_CIPHER_CTX_ctrl(ctx, TLS1_AAD, 13, b))
    P = vp * n
    lens = (C.c_size_t * n)(*[len(x) for x in inputs])
    r1 = L.EVP_CIPHER_CTX_ctrl(ctx, OUT_BUFS, n, P(*[C.cast(o, vp) for o in outs]))
    r2 = L.EVP_CIPHER_CTX_ctrl(ctx, IN_BUFS, n, P(*[C.cast(i, vp) for i in ins]))
    r3 = L.EVP_CIPHER_CTX_ctrl(ctx, IN_LENS, n if n_lens is None else n_lens, lens)
    rc = L.EVP_Cipher(ctx, C.cast(outs[0], vp), C.cast(ins[0], vp), len(inputs[0]))
    L.ERR_clear_error()
    return {"rc": rc, "ctrl": [r1, r2, r3], "pads": pads, "plain_ctrl": plain_ctrl,
            "out": [o.raw[: len(x)] for o, x in zip(outs, inputs)]}


def ref_record(f, enc, data, a, iv):
    """OpenSSL's own cipher, one record (its TLS record mode where it has one)."""
    ctx = f.ref_ctx(enc, iv)
    buf = C.create_string_buffer(data, max(len(data), 1))
    if f.kind == "gcm":
        full = C.create_string_buffer(f.fixed + a[:8], 12)
        assert L.EVP_CIPHER_CTX_ctrl(ctx, IV_FIXED, -1, full) == 1
    if a is not None:
        b = C.create_string_buffer(a, 13)
        assert L.EVP_CIPHER_CTX_ctrl(ctx, TLS1_AAD, 13, b) > 0
    rc = L.EVP_Cipher(ctx, C.cast(buf, vp), C.cast(buf, vp), len(data))
    L.EVP_CIPHER_CTX_free(ctx)
    assert rc >= 0, f"reference {f.name} failed"
    return buf.raw[: len(data)]


def main():
    path, family, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rnd = random.Random(seed)
    e = L.ENGINE_by_id(b"dynamic")
    for k, v in [(b"SO_PATH", path.encode()), (b"LOAD", None)]:
        assert L.ENGINE_ctrl_cmd_string(e, k, v, 0) == 1, "engine load"
    assert L.ENGINE_ctrl_cmd_string(e, b"THREADS", b"3", 0) == 1
    assert L.ENGINE_ctrl_cmd_string(e, b"INLINE_BELOW", b"0", 0) == 1
    # bit-exact comparison with OpenSSL's record mode: one record at a time
    assert L.ENGINE_ctrl_cmd_string(e, b"MULTIBLOCK", b"0", 0) == 1
    assert L.ENGINE_init(e) == 1
    f = Fam(family, e, rnd)

    # batch shapes: every count 1..32; fixed sizes cycled; random mixes
    shapes = []
    for n in range(1, 33):
        shapes.append([SIZES[(n + i) % len(SIZES)] for i in range(n)])
    for _ in range(6):
        n = rnd.randint(1, 32)
        shapes.append([rnd.choice(SIZES + [rnd.randint(0, 16384)]) for _ in range(n)])

    out = {"family": family, "kind": f.kind, "key": f.key.hex(), "fixed": f.fixed.hex(),
           "mac_key": f.mac_key.hex(), "batches": [], "negative": {}}
    enc_ctx, dec_ctx = f.engine_ctx(1), f.engine_ctx(0)
    seq, iv_enc, iv_dec = 0, f.iv, f.iv
    for bi, sizes in enumerate(shapes):
        plains = [rnd.randbytes(s) for s in sizes]
        recs = [f.enc_input(seq + i, p, rnd) for i, p in enumerate(plains)]
        inputs = [r[0] for r in recs]
        aads = [r[1] for r in recs] if recs[0][1] is not None else None
        # every third batch hands the plaintexts over apart (taken by the
        # AEAD families, refused by the others)
        use_plain = bi % 3 == 2
        res = run_batch(enc_ctx, inputs, aads, in_place=bi % 2 == 0,
                        plains=plains if use_plain else None,
                        plain_at=PLAIN_AT.get(f.kind, 0))
        ref = [ref_record(f, 1, x, a, iv_enc) for x, a in zip(inputs, aads or [None] * len(inputs))]
        if f.kind in ("hmac", "cbc"):
            iv_enc = ref[-1][-16:]
        # decrypt what OpenSSL produced, as one batch
        if f.kind in ("gcm", "chacha"):
            daads = [aad(seq + i, len(c)) for i, c in enumerate(ref)]
        elif f.kind == "hmac":
            daads = [aad(seq + i, len(c)) for i, c in enumerate(ref)]
        else:
            daads = None
        dres = run_batch(dec_ctx, ref, daads, in_place=bi % 2 == 1)
        out["batches"].append({
            "seq": seq, "plain": [p.hex() for p in plains], "input": [x.hex() for x in inputs],
            "aad": [a.hex() for a in aads] if aads else None,
            "engine": [o.hex() for o in res["out"]], "engine_rc": res["rc"],
            "plain_ctrl": res["plain_ctrl"],
            "pads": res["pads"], "openssl": [o.hex() for o in ref],
            "decrypted": [o.hex() for o in dres["out"]], "decrypt_rc": dres["rc"],
            "iv": iv_dec.hex(),
        })
        if f.kind in ("hmac", "cbc"):
            iv_dec = ref[-1][-16:]
        seq += len(sizes)

    # stitched ciphers with MULTIBLOCK on: groups of four equal records per
    # lane; OpenSSL's multiblock code picks its own explicit IVs, so these are
    # checked by decryption (engine and cryptography), not byte for byte
    out["multiblock"] = []
    if f.kind == "hmac":
        assert L.ENGINE_ctrl_cmd_string(e, b"MULTIBLOCK", b"1", 0) == 1
        mctx, mdec = f.engine_ctx(1), f.engine_ctx(0)
        for sizes in ([16384] * 8, [4096] * 5, [2000] * 4, [1500] * 9):
            plains = [rnd.randbytes(s) for s in sizes]
            recs = [f.enc_input(seq + i, p, rnd) for i, p in enumerate(plains)]
            inputs, aads = [r[0] for r in recs], [r[1] for r in recs]
            # two of the four shapes hand the plaintexts over apart, one of
            # them as consecutive pieces of one buffer (as libssl does)
            apart = len(sizes) in (8, 4)
            res = run_batch(mctx, inputs, aads, in_place=True,
                            plains=plains if apart else None, plain_at=PLAIN_AT["hmac"],
                            contiguous=len(sizes) == 8)
            daads = [aad(seq + i, len(c)) for i, c in enumerate(res["out"])]
            dres = run_batch(mdec, res["out"], daads, in_place=True)
            out["multiblock"].append({
                "seq": seq, "plain": [p.hex() for p in plains], "input": [x.hex() for x in inputs],
                "engine": [o.hex() for o in res["out"]], "engine_rc": res["rc"],
                "plain_ctrl": res["plain_ctrl"],
                "decrypted": [o.hex() for o in dres["out"]], "decrypt_rc": dres["rc"]})
            seq += len(sizes)
        assert L.ENGINE_ctrl_cmd_string(e, b"MULTIBLOCK", b"0", 0) == 1

    # negative controls, on fresh contexts
    neg = out["negative"]
    plains = [rnd.randbytes(1000) for _ in range(4)]
    recs = [f.enc_input(i, p, rnd) for i, p in enumerate(plains)]
    inputs, aads = [r[0] for r in recs], ([r[1] for r in recs] if recs[0][1] else None)
    if aads is not None:
        ctx = f.engine_ctx(1)
        neg["missing_aad"] = run_batch(ctx, inputs, aads, True, n_aads=3)["rc"]
        L.EVP_CIPHER_CTX_free(ctx)
        ctx = f.engine_ctx(1)
        neg["extra_aad"] = run_batch(ctx, inputs, aads, True, extra_aads=1)["rc"]
        L.EVP_CIPHER_CTX_free(ctx)
    ctx = f.engine_ctx(1)
    r = run_batch(ctx, inputs, aads, True, n_lens=3)
    neg["counts_disagree"] = r["rc"]
    L.EVP_CIPHER_CTX_free(ctx)
    at = PLAIN_AT.get(f.kind, 0)
    ctx = f.engine_ctx(1)
    r = run_batch(ctx, inputs, aads, False, plains=plains, plain_at=at, n_plains=3)
    neg["plain_counts_disagree"] = [r["plain_ctrl"], r["rc"]]
    L.EVP_CIPHER_CTX_free(ctx)
    ctx = f.engine_ctx(0)  # decrypting: the plaintext is what comes out
    r = run_batch(ctx, inputs, aads, False, plains=plains, plain_at=at)
    neg["plain_when_decrypting"] = r["plain_ctrl"]
    L.EVP_CIPHER_CTX_free(ctx)
    assert L.ENGINE_ctrl_cmd_string(e, b"OUT_OF_PLACE", b"0", 0) == 1
    ctx = f.engine_ctx(1)
    r = run_batch(ctx, inputs, aads, False, plains=plains, plain_at=at)
    ref = [ref_record(f, 1, x, a, f.iv) for x, a in zip(inputs, aads or [None] * len(inputs))]
    neg["plain_when_off"] = [r["plain_ctrl"], r["rc"] > 0 and r["out"] == ref if f.kind != "cbc" else None]
    L.EVP_CIPHER_CTX_free(ctx)
    assert L.ENGINE_ctrl_cmd_string(e, b"OUT_OF_PLACE", b"1", 0) == 1
    ctx = f.engine_ctx(1)
    P = vp * 33
    bufs = [C.create_string_buffer(16) for _ in range(33)]
    neg["pipes_33_ctrl"] = L.EVP_CIPHER_CTX_ctrl(ctx, OUT_BUFS, 33, P(*[C.cast(b, vp) for b in bufs]))
    neg["pipes_33_cipher"] = L.EVP_Cipher(ctx, C.cast(bufs[0], vp), C.cast(bufs[0], vp), 16)
    L.EVP_CIPHER_CTX_free(ctx)
    L.ERR_clear_error()
    # tamper: flip one bit in the tag/MAC area of record k of a decrypt batch
    ctx = f.engine_ctx(1)
    good = run_batch(ctx, inputs, aads, False)
    L.EVP_CIPHER_CTX_free(ctx)
    cts = list(good["out"])
    k = 2
    bad = bytearray(cts[k])
    bad[-1 if f.kind != "cbc" else -20] ^= 0x01
    cts[k] = bytes(bad)
    daads = [aad(i, len(c)) for i, c in enumerate(cts)] if aads is not None else None
    ctx = f.engine_ctx(0)
    t = run_batch(ctx, cts, daads, False)
    L.EVP_CIPHER_CTX_free(ctx)
    neg["tamper_rc"] = t["rc"]
    neg["tamper_plain_leaked"] = any(p in o for p, o in zip(plains, t["out"]) if len(p) > 0)
    neg["tamper_record_leaked"] = plains[k] in t["out"][k]
    # the same batch untampered decrypts
    ctx = f.engine_ctx(0)
    ok = run_batch(ctx, list(good["out"]), daads, False)
    L.EVP_CIPHER_CTX_free(ctx)
    neg["untampered_rc"] = ok["rc"]
    neg["untampered_ok"] = all(p in o for p, o in zip(plains, ok["out"]))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
