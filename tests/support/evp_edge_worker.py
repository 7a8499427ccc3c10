"""Runs in its own process (like _evp_worker.py, whose ctypes setup it reuses):
the corner cases the fuzzers in tests/fuzz/ found, each answered by the
engine and by OpenSSL's own cipher; prints JSON for tests/test_engine_edges.py.

    python support/evp_edge_worker.py ENGINE.so CASE      (one case per process)
"""
import ctypes as C
import json
import os
import random
import sys

from evp_worker import FAMILIES, Fam, L, aad, ref_record, run_batch, vp  # noqa: E402

L.EVP_CipherFinal_ex.restype = C.c_int
L.EVP_CipherFinal_ex.argtypes = [vp, vp, C.POINTER(C.c_int)]
L.EVP_CipherUpdate.restype = C.c_int
L.EVP_CipherUpdate.argtypes = [vp, vp, C.POINTER(C.c_int), vp, C.c_int]
TLS1_AAD = 0x16


def final_after_init(f, rnd):
    """Decrypt Final right after key setup (stitched ciphers: no padding)."""
    out = {}
    for who, ctx in (("engine", f.engine_ctx(0)), ("openssl", f.ref_ctx(0, f.iv))):
        buf, n = C.create_string_buffer(32), C.c_int(-1)
        out[who] = [L.EVP_CipherFinal_ex(ctx, buf, C.byref(n)), n.value]
        L.EVP_CIPHER_CTX_free(ctx)
    L.ERR_clear_error()
    return out


def gcm_last_sequence_number(f, rnd):
    """A record with sequence number 2^64-1 (the engine's "unknown" mark)."""
    plain = rnd.randbytes(100)
    data, a = f.enc_input(2**64 - 1, plain, rnd)
    ctx = f.engine_ctx(1)
    res = run_batch(ctx, [data], [a], in_place=True)
    L.EVP_CIPHER_CTX_free(ctx)
    return {"rc": res["rc"], "engine": res["out"][0].hex(),
            "openssl": ref_record(f, 1, data, a, None).hex()}


def cbc_chain_after_empty_records(f, rnd):
    """Decrypt batches [32 bytes, empty] then [32 bytes]: the second starts
    from the first's last ciphertext block, as one EVP_Cipher after another."""
    ct = [rnd.randbytes(32), b"", rnd.randbytes(32)]
    ctx = f.engine_ctx(0)
    first = run_batch(ctx, ct[:2], None, in_place=False)
    second = run_batch(ctx, ct[2:], None, in_place=False)
    L.EVP_CIPHER_CTX_free(ctx)
    ref = f.ref_ctx(0, f.iv)
    whole = b"".join(ct)
    buf = C.create_string_buffer(whole, len(whole))
    assert L.EVP_Cipher(ref, C.cast(buf, vp), C.cast(buf, vp), len(whole)) >= 0
    L.EVP_CIPHER_CTX_free(ref)
    return {"rc": [first["rc"], second["rc"]],
            "engine": (first["out"][0] + second["out"][0]).hex(), "openssl": buf.raw.hex()}


def aad_update_after_tls_aad(f, rnd):
    """EVP_CipherUpdate(out NULL) after EVP_CTRL_AEAD_TLS1_AAD: refused, no
    record is made of it (the engine crashed here)."""
    out = {}
    rec = rnd.randbytes(40)
    for who, ctx in (("engine", f.engine_ctx(0)), ("openssl", f.ref_ctx(0))):
        b = C.create_string_buffer(aad(5, len(rec)), 13)
        pad = L.EVP_CIPHER_CTX_ctrl(ctx, TLS1_AAD, 13, b)
        src, n = C.create_string_buffer(rec, len(rec)), C.c_int(-1)
        out[who] = [pad, L.EVP_CipherUpdate(ctx, None, C.byref(n), C.cast(src, vp), len(rec))]
        L.EVP_CIPHER_CTX_free(ctx)
    L.ERR_clear_error()
    return out


CASES = {  # name: (function, the kinds of cipher it applies to)
    "final_after_init": (final_after_init, ("hmac",)),
    "gcm_last_sequence_number": (gcm_last_sequence_number, ("gcm",)),
    "cbc_chain_after_empty_records": (cbc_chain_after_empty_records, ("cbc",)),
    "aad_update_after_tls_aad": (aad_update_after_tls_aad, ("gcm", "chacha")),
}


def main():
    path, case = sys.argv[1], sys.argv[2]
    rnd = random.Random(11)
    e = L.ENGINE_by_id(b"dynamic")
    for k, v in [(b"SO_PATH", path.encode()), (b"LOAD", None)]:
        assert L.ENGINE_ctrl_cmd_string(e, k, v, 0) == 1, "engine load"
    assert L.ENGINE_init(e) == 1
    fn, kinds = CASES[case]
    out = {name: fn(Fam(name, e, rnd), rnd)
           for name, (_, kind, _, _) in FAMILIES.items() if kind in kinds}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
