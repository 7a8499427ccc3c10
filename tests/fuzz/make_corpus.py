#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (deterministic):

    python3 tests/fuzz/make_corpus.py            -> tests/fuzz/corpus/<target>/

Each seed follows the input format read by fuzz_ops.c / fuzz_diff.c (see the
comments at the top of those files): one per cipher and direction for the
libssl-like batch, the single TLS record and the stream calls, and one per
cipher for each ctrl and each misuse the engine must refuse. The fuzzer
reads any bytes; the seeds only start it where the interesting paths are.
"""
import os
import struct
import sys

CIPHERS = [  # index in fz_ciphers: name, kind, key length, MAC length
    ("aes128gcm", "gcm", 16, 0), ("aes256gcm", "gcm", 32, 0), ("chacha20", "chacha", 32, 0),
    ("aes128sha1", "hmac", 16, 20), ("aes256sha1", "hmac", 32, 20),
    ("aes128sha256", "hmac", 16, 32), ("aes256sha256", "hmac", 32, 32),
    ("aes128cbc", "cbc", 16, 0), ("aes256cbc", "cbc", 32, 0),
]
KEY = bytes(range(1, 33))


def u16(v):
    return struct.pack(">H", v)


def u64(v):
    return struct.pack(">Q", v)


def length(n):
    """pick_len(): [how][u16]; how 3 = v % 16700 (ops) / v % 16385 (diff)."""
    return bytes([3]) + u16(n)


# ------------------------------------------------------------------ pipetls_ops
OP_INIT, OP_AAD, OP_MAC, OP_IVFIX, OP_IVLEN, OP_PIPES, OP_CIPHER, OP_UPDATE, OP_TAG, \
    OP_COPY, OP_RESET, OP_BATCH, OP_ENGINE = range(13)


def slots(kind, enc, size):
    """The 40 pipe slots (made by the first op that needs them): one record size
    that suits the cipher, contents from the seed."""
    if kind == "gcm":
        cap = size + (24 if enc else 24)
    elif kind == "chacha":
        cap = size + 16
    elif kind == "hmac":
        cap = (size + 16 + 32 + 16) & ~15
    else:
        cap = (size + 15) & ~15
    out = b""
    for i in range(40):
        out += length(cap) + bytes((i * 7 + k) & 255 for k in range(min(cap, 48)))
    return out


def seqs(kind, n):
    """derived_aad() reads an 8-byte sequence number per AAD."""
    return b"" if kind == "cbc" else b"".join(u64(1000 + i) for i in range(n))


def ops_seed(ci, enc, body):
    return bytes([ci, enc]) + KEY + body


def ops_seeds():
    seeds = {}
    for ci, (name, kind, klen, mac) in enumerate(CIPHERS):
        for enc in (1, 0):
            d = "enc" if enc else "dec"
            pre = b""
            if kind == "hmac":
                pre += bytes([OP_MAC, mac]) + bytes(range(mac))
            if kind == "gcm":
                pre += bytes([OP_IVFIX, 1]) + b"\x11\x22\x33\x44"  # arg 4
            # libssl's batch: n AADs describing the slots, the three ctrls, EVP_Cipher
            seeds[f"{name}-{d}-batch4"] = ops_seed(
                ci, enc, pre + bytes([OP_BATCH, 3, 4, 0]) + slots(kind, enc, 1000) + seqs(kind, 4)
                + bytes([OP_BATCH, 31, 4, 0x80]) + seqs(kind, 32))
            # one record: AAD of slot 0 then EVP_Cipher of the slot-sized buffer
            seeds[f"{name}-{d}-ctrls"] = ops_seed(
                ci, enc, pre + bytes([OP_AAD, 0]) + slots(kind, enc, 64) + seqs(kind, 1)
                + bytes([OP_PIPES, 0, 2, OP_PIPES, 1, 2, OP_PIPES, 2, 2, OP_CIPHER, 1]) + length(64)
                + bytes([OP_COPY, 1, OP_UPDATE, 0]) + length(100) + bytes([OP_UPDATE, 1]) + length(0)
                + bytes([OP_TAG, 16]) + bytes(16) + bytes([OP_RESET, 0, OP_INIT, 0x0b]) + bytes(16) + KEY
                + bytes([OP_CIPHER, 0]) + length(48))
        # what the engine must refuse: n-1 / n+1 AADs, a ctrl left out, 33+
        # pipes, NULL arrays, counts -2..0, a wrong AAD length
        seeds[f"{name}-refusals"] = ops_seed(
            ci, 1, bytes([OP_BATCH, 3, 0, 0]) + slots(kind, 1, 200) + seqs(kind, 3)
            + bytes([OP_BATCH, 3, 1, 0]) + seqs(kind, 5)
            + bytes([OP_BATCH, 3, 2 + 8, 0]) + seqs(kind, 4)
            + bytes([OP_BATCH, 3, 3, 0]) + seqs(kind, 32)
            + bytes([OP_PIPES, 0xc0, 4, OP_PIPES, 0xc1, 4, OP_PIPES, 0xc2, 4, OP_CIPHER, 0]) + length(32)
            + bytes([OP_PIPES, 0, 0, OP_PIPES, 1, 1, OP_PIPES, 2, 2, OP_CIPHER, 0]) + length(32)
            + bytes([OP_AAD, 0xb0, 14]) + bytes(14) + bytes([OP_CIPHER, 0]) + length(32)
            + bytes([OP_IVLEN, 16, OP_AAD, 0]) + seqs(kind, 1) + bytes([OP_CIPHER, 0]) + length(40)
            + bytes([OP_ENGINE, 0, OP_ENGINE, 2, OP_BATCH, 7, 4, 0]))
    return seeds


# ----------------------------------------------------------------- pipetls_diff
def diff_seeds():
    seeds = {}
    for ci, (name, kind, klen, mac) in enumerate(CIPHERS):
        for enc in (1, 0):
            d = "enc" if enc else "dec"
            # TLS mode: flags bit 7; bit 2 = every batch through the lanes
            for lanes in (0, 4):
                flags = 0x80 | enc | lanes
                body = u64(1) + bytes(range(12)) + bytes(range(16)) + bytes(range(32))
                for n, size in ((1, 100), (4, 1500), (32, 200)):
                    body += bytes([n - 1, 0, 0])  # a, b, t
                    for i in range(n):
                        body += length(size)
                        if kind == "hmac":
                            body += bytes(16)  # explicit IV
                        body += bytes((i + k) & 255 for k in range(min(size, 32)))
                seeds[f"{name}-{d}-tls{'-lanes' if lanes else ''}"] = bytes([ci, flags]) + KEY + body
            # stream mode: update, AAD update, final, tag, new IV, EVP_Cipher, copy
            body = bytes(range(16))
            body += bytes([1, 0]) + length(20) + bytes(20)  # AAD update (AEADs)
            body += bytes([0, 0]) + length(100) + bytes(range(32))  # update
            body += bytes([10, 1])  # copy, go on with it
            body += bytes([0, 0]) + length(64) + bytes(range(32))
            body += bytes([2, 0])  # final
            body += bytes([3, 15])  # get tag (16)
            body += bytes([5, 0]) + bytes(16)  # new IV
            body += bytes([7, 0]) + length(48) + bytes(range(32))  # EVP_Cipher
            body += bytes([8, 11])  # IV length 12
            seeds[f"{name}-{d}-stream"] = bytes([ci, enc]) + KEY + body
        if kind == "hmac":
            # MULTIBLOCK: equal records of 1024+ bytes, TLS 1.2, encrypt
            body = u64(7) + bytes(12) + bytes(16) + bytes(range(32))
            body += bytes([7, 2, 0]) + length(2000)
            for i in range(8):
                body += bytes(16) + bytes((i + k) & 255 for k in range(32))
            seeds[f"{name}-enc-multiblock"] = bytes([ci, 0x80 | 1 | 2]) + KEY + body
            # 16 equal records through the lanes, CBC_HMAC_MODE auto: 8-groups
            body = u64(7) + bytes(12) + bytes(16) + bytes(range(32))
            body += bytes([15, 2, 0]) + length(2000)
            for i in range(16):
                body += bytes(16) + bytes((i + k) & 255 for k in range(32))
            seeds[f"{name}-enc-multiblock16-auto"] = bytes([ci, 0x80 | 1 | 2 | 4 | 8]) + KEY + body
    return seeds


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    for target, seeds in (("pipetls_ops", ops_seeds()), ("pipetls_diff", diff_seeds())):
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for name, data in sorted(seeds.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds in {d}", file=sys.stderr)


if __name__ == "__main__":
    main()
