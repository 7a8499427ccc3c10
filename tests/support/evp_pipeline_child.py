"""Runs in a process of its own on an OpenSSL >= 3.5 (LD_LIBRARY_PATH and
PIPETLS_OPENSSL of its prefix, PIPETLS_PROVIDER the provider under test):
pipetls.evp's seal_many / open_many through the pipetls provider, checked
pipe by pipe against the default provider's one-at-a-time answer
(pipetls.evp.seal_each) and against pyca/cryptography (its own OpenSSL,
linked into its extension). Prints one JSON document for
tests/test_evp_pipeline.py.

    python support/evp_pipeline_child.py kat CIPHER SEED SAMPLE_FILE
    python support/evp_pipeline_child.py negative CIPHER SEED
"""
import contextlib
import json
import os
import random
import sys

import pipetls  # first: it maps the libcrypto of PIPETLS_OPENSSL
from pipetls import evp

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

LENGTHS = [0, 1, 15, 16, 17, 255, 16383, 16384, 65536]
AEAD = {"AES-128-GCM": AESGCM, "AES-256-GCM": AESGCM, "ChaCha20-Poly1305": ChaCha20Poly1305}


def mapped_libs():
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split(None, 5)[-1].strip()
            if "/libssl.so" in path or "/libcrypto.so" in path:
                libs.add(path)
    return sorted(libs)


class Checker:
    """Every batch: pipetls (pipelined) == default provider (one at a time)
    == cryptography, and open_many gives the plaintexts back."""

    def __init__(self, cipher, rnd):
        self.cipher, self.rnd = cipher, rnd
        self.spec = evp.CIPHERS[cipher]
        self.key = rnd.randbytes(self.spec.key_size)
        self.pc = evp.PipelineCipher(cipher, self.key)
        self.aead = AEAD[cipher](self.key)
        self.pipes = self.batches = 0
        self.mismatches = []
        self.seen = set()  # (pipes, length, aad?) combinations done

    def batch(self, lengths, aad_lengths, kind):
        r = self.rnd
        n = len(lengths)
        ivs = [r.randbytes(12) for _ in range(n)]
        # the inputs in several buffer types: all are passed without a copy
        types = (bytes, bytearray, lambda b: memoryview(bytearray(b)))
        pts = [types[(i + n) % 3](r.randbytes(k)) for i, k in enumerate(lengths)]
        aads = None if aad_lengths is None else [r.randbytes(k) for k in aad_lengths]
        cts, tags = self.pc.seal_many(ivs, aads, pts)
        ref_cts, ref_tags = evp.seal_each(self.cipher, self.key, ivs, aads, pts)
        back = self.pc.open_many(ivs, aads, cts, tags)
        for i in range(n):
            what = "%s n=%d pipe=%d len=%d aad=%s" % (kind, n, i, lengths[i],
                                                     None if aads is None else len(aads[i]))
            if len(cts[i]) != lengths[i] or len(tags[i]) != 16:
                self.mismatches.append(what + ": sizes")
            if cts[i] != ref_cts[i] or tags[i] != ref_tags[i]:
                self.mismatches.append(what + ": differs from the default provider")
            try:
                plain = self.aead.decrypt(ivs[i], bytes(cts[i]) + tags[i],
                                          None if aads is None else aads[i])
                if plain != bytes(pts[i]):
                    self.mismatches.append(what + ": cryptography decrypts something else")
            except InvalidTag:
                self.mismatches.append(what + ": cryptography rejects the tag")
            if back[i] != pts[i]:
                self.mismatches.append(what + ": open_many gives something else back")
            self.seen.add((n, lengths[i], aads is not None))
        self.pipes += n
        self.batches += 1
        return ivs, aads, pts, cts, tags


def kat(cipher, seed, sample_file):
    rnd = random.Random(seed)
    ck = Checker(cipher, rnd)
    # every pipe count 1..32 x every length, with and without AAD (a
    # 13-byte TLS-like AAD, and empty AADs in some pipes)
    for with_aad in (False, True):
        for n in range(1, evp.MAX_PIPES + 1):
            for length in LENGTHS:
                aad_lengths = [13 if i % 4 else 0 for i in range(n)] if with_aad else None
                ck.batch([length] * n, aad_lengths, "grid")
    # random mixes: lengths and AAD lengths differ from pipe to pipe
    for _ in range(60):
        n = rnd.randint(1, evp.MAX_PIPES)
        lengths = [rnd.choice(LENGTHS + [rnd.randint(0, 70000)]) for _ in range(n)]
        aad_lengths = None if rnd.random() < 0.3 else [rnd.randint(0, 64) for _ in range(n)]
        ck.batch(lengths, aad_lengths, "mix")
    # a sample for the test process to decrypt with its own cryptography
    ivs, aads, _, cts, tags = ck.batch([16384] * 32, [13] * 32, "sample")
    with open(sample_file, "w") as f:
        json.dump({"key": ck.key.hex(), "ivs": [x.hex() for x in ivs],
                   "aads": [x.hex() for x in aads], "cts": [bytes(x).hex() for x in cts],
                   "tags": [x.hex() for x in tags]}, f)
    st = ck.pc.provider.stats()
    ck.pc.close()
    return {"openssl": pipetls.openssl_version(), "libs": mapped_libs(),
            "pipes": ck.pipes, "batches": ck.batches, "combinations": len(ck.seen),
            "mismatches": ck.mismatches[:20], "n_mismatches": len(ck.mismatches),
            "provider": {"records": st.records, "batches": st.batches,
                         "pipelined_batches": st.pipelined_batches, "lanes": st.lanes,
                         "max_batch": st.max_batch}}


def _error(fn):
    """(exception class names, message, .pipes) of what fn raises; None if nothing."""
    try:
        fn()
    except Exception as e:  # the test asserts the class
        return {"types": [c.__name__ for c in type(e).__mro__], "message": str(e),
                "pipes": getattr(e, "pipes", None)}
    return None


def negative(cipher, seed):
    rnd = random.Random(seed)
    spec = evp.CIPHERS[cipher]
    key = rnd.randbytes(spec.key_size)
    n = 8
    ivs = [rnd.randbytes(12) for _ in range(n)]
    aads = [rnd.randbytes(13) for _ in range(n)]
    pts = [rnd.randbytes(4096 + i) for i in range(n)]
    cts, tags = evp.seal_many(cipher, key, ivs, aads, pts)
    out = {}

    def flip(seq, i, at=0):
        b = bytearray(seq[i])
        b[at] ^= 0x01
        return [bytes(b) if j == i else seq[j] for j in range(len(seq))]

    # what the caller gets back from a failing open (must be nothing)
    leaked = []

    def open_and_keep(*args):
        leaked.append(evp.open_many(cipher, key, *args))

    out["flipped_tag_3"] = _error(lambda: open_and_keep(ivs, aads, cts, flip(tags, 3)))
    out["flipped_tags_1_6"] = _error(lambda: open_and_keep(ivs, aads, cts,
                                                           flip(flip(tags, 1), 6, 15)))
    out["flipped_ct_0"] = _error(lambda: open_and_keep(ivs, aads, flip(cts, 0, 100), tags))
    out["flipped_aad_7"] = _error(lambda: open_and_keep(ivs, flip(aads, 7), cts, tags))
    out["wrong_iv_pipe_2"] = _error(lambda: open_and_keep(flip(ivs, 2), aads, cts, tags))
    out["leaked"] = len(leaked)
    # the control: the untouched batch opens
    out["control"] = [bytes(x) for x in evp.open_many(cipher, key, ivs, aads, cts, tags)] == pts
    # bad input, refused before OpenSSL is touched
    out["iv_11_bytes"] = _error(lambda: evp.seal_many(cipher, key, ivs[:2] + [b"x" * 11],
                                                      None, pts[:3]))
    out["iv_16_bytes"] = _error(lambda: evp.seal_many(cipher, key, [b"x" * 16], None, [b"a"]))
    out["33_pipes"] = _error(lambda: evp.seal_many(cipher, key, [ivs[0]] * 33, None, [b"a"] * 33))
    out["0_pipes"] = _error(lambda: evp.seal_many(cipher, key, [], None, []))
    out["counts_3_ivs_4_plaintexts"] = _error(lambda: evp.seal_many(cipher, key, ivs[:3], None,
                                                                     pts[:4]))
    out["counts_aads"] = _error(lambda: evp.seal_many(cipher, key, ivs[:4], aads[:3], pts[:4]))
    out["counts_tags"] = _error(lambda: evp.open_many(cipher, key, ivs, aads, cts, tags[:7]))
    out["short_tag"] = _error(lambda: evp.open_many(cipher, key, ivs, aads, cts,
                                                    tags[:7] + [tags[7][:12]]))
    out["short_key"] = _error(lambda: evp.seal_many(cipher, key[:-1], ivs[:1], None, pts[:1]))
    out["str_plaintext"] = _error(lambda: evp.seal_many(cipher, key, ivs[:1], None, ["text"]))
    out["bytes_as_list"] = _error(lambda: evp.seal_many(cipher, key, ivs[:1], None, b"abc"))
    out["unknown_cipher"] = _error(lambda: evp.seal_many("AES-192-GCM", key, ivs[:1], None,
                                                         pts[:1]))
    # the provider itself refuses an output buffer one byte too small (the
    # Python API always sizes them: here through its internals), and the
    # same PipelineCipher works afterwards
    pc = evp.PipelineCipher(cipher, key)
    a = evp._Arrays(2, spec.tag_size)
    with contextlib.ExitStack() as stack:
        outs, tag_bufs = [bytearray(len(p)) for p in pts[:2]], [bytearray(16), bytearray(16)]
        pc._fill(stack, a, ivs[:2], None, pts[:2], outs, tag_bufs, True)
        a.out_size[1] -= 1
        out["output_too_small"] = _error(lambda: pc._run(1, a))
    again = pc.seal_many(ivs[:2], None, pts[:2])
    out["after_refusal"] = again == evp.seal_each(cipher, key, ivs[:2], None, pts[:2])
    pc.close()
    out["libs"] = mapped_libs()
    return out


def main():
    mode, cipher, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "kat":
        doc = kat(cipher, seed, sys.argv[4])
    elif mode == "negative":
        doc = negative(cipher, seed)
    else:
        raise SystemExit("unknown mode %r" % mode)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
