"""Every failure of the engine leaves a pipetls reason on OpenSSL's error
queue: a pipelined batch with a bad tag or MAC, a lone record with a bad tag,
pipeline ctrls that disagree, a control command out of range. Successful
calls leave the queue empty. And a failure the engine survives - worker
threads that cannot be started - is reported and not retried on every batch
(tests/c/pt_nothreads.c).

The EVP work runs in a child process (this file run as a script) where the
engine is never the default for any cipher, as in tests/support/evp_worker.py."""
import ctypes as C
import json
import os
import shutil
import subprocess
import sys

import pytest

TLS1_AAD, MAC_KEY, IV_FIXED = 0x16, 0x17, 0x12
OUT_BUFS, IN_BUFS, IN_LENS = 0x22, 0x23, 0x24
REJECTED = "record rejected: bad tag, MAC or padding"
BAD_PIPELINE = "pipeline ctrls missing or inconsistent"
BAD_ARGUMENT = "argument out of range"


# ---------------------------------------------------------------- the child
def _libcrypto():
    import _ssl  # noqa: F401  -- maps the libcrypto that Python's ssl uses

    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "libcrypto.so" in os.path.basename(p):
                return C.CDLL(p)
    raise RuntimeError("libcrypto is not mapped")


def _child(engine_path):
    L = _libcrypto()
    vp, ci, cc, ul = C.c_void_p, C.c_int, C.c_char_p, C.c_ulong
    for name, res, args in [
        ("ENGINE_by_id", vp, [cc]), ("ENGINE_ctrl_cmd_string", ci, [vp, cc, cc, ci]),
        ("ENGINE_init", ci, [vp]), ("ENGINE_get_cipher", vp, [vp, ci]),
        ("EVP_CIPHER_CTX_new", vp, []), ("EVP_CIPHER_CTX_free", None, [vp]),
        ("EVP_CipherInit_ex", ci, [vp, vp, vp, cc, cc, ci]),
        ("EVP_CIPHER_CTX_ctrl", ci, [vp, ci, ci, vp]),
        ("EVP_Cipher", ci, [vp, vp, vp, C.c_uint]), ("OBJ_sn2nid", ci, [cc]),
        ("ERR_clear_error", None, []),
        ("ERR_get_error_all", ul, [C.POINTER(cc), C.POINTER(ci), C.POINTER(cc),
                                   C.POINTER(cc), C.POINTER(ci)]),
        ("ERR_lib_error_string", cc, [ul]), ("ERR_reason_error_string", cc, [ul]),
    ]:
        fn = getattr(L, name)
        fn.restype, fn.argtypes = res, args

    def drain():
        out = []
        while True:
            data, flags = cc(), ci()
            e = L.ERR_get_error_all(None, None, None, C.byref(data), C.byref(flags))
            if e == 0:
                return out
            out.append({"lib": (L.ERR_lib_error_string(e) or b"").decode(),
                        "reason": (L.ERR_reason_error_string(e) or b"").decode(),
                        "data": (data.value or b"").decode() if flags.value & 1 else ""})

    e = L.ENGINE_by_id(b"dynamic")
    for k, v in [(b"SO_PATH", engine_path.encode()), (b"LOAD", None)]:
        assert L.ENGINE_ctrl_cmd_string(e, k, v, 0) == 1
    assert L.ENGINE_init(e) == 1
    L.ERR_clear_error()
    result = {}

    def aad(seq, length):
        return C.create_string_buffer(seq.to_bytes(8, "big") + bytes([23, 3, 3])
                                      + length.to_bytes(2, "big"), 13)

    def context(sn, key, enc, fixed=None, mac_key=None, iv=None):
        ours = L.ENGINE_get_cipher(e, L.OBJ_sn2nid(sn))
        assert ours, sn
        ctx = L.EVP_CIPHER_CTX_new()
        assert L.EVP_CipherInit_ex(ctx, ours, e, key, iv, enc) == 1
        if fixed is not None:
            assert L.EVP_CIPHER_CTX_ctrl(ctx, IV_FIXED, len(fixed),
                                         C.create_string_buffer(fixed, len(fixed))) == 1
        if mac_key is not None:
            assert L.EVP_CIPHER_CTX_ctrl(ctx, MAC_KEY, len(mac_key),
                                         C.create_string_buffer(mac_key, len(mac_key))) == 1
        return ctx

    def batch(ctx, records, aads, n_lens=None):
        """One pipelined batch in place; returns (rc, outputs, errors)."""
        n = len(records)
        bufs = [C.create_string_buffer(r, len(r)) for r in records]
        for a in aads:
            L.EVP_CIPHER_CTX_ctrl(ctx, TLS1_AAD, 13, a)
        ptrs = (C.c_void_p * n)(*[C.cast(b, C.c_void_p) for b in bufs])
        lens = (C.c_size_t * n)(*[len(r) for r in records])
        L.EVP_CIPHER_CTX_ctrl(ctx, OUT_BUFS, n, ptrs)
        L.EVP_CIPHER_CTX_ctrl(ctx, IN_BUFS, n, ptrs)
        L.EVP_CIPHER_CTX_ctrl(ctx, IN_LENS, n if n_lens is None else n_lens, lens)
        rc = L.EVP_Cipher(ctx, ptrs[0], ptrs[0], 0)
        return rc, [b.raw for b in bufs], drain()

    def one(ctx, record, a):
        buf = C.create_string_buffer(record, len(record))
        pad = L.EVP_CIPHER_CTX_ctrl(ctx, TLS1_AAD, 13, a)
        rc = L.EVP_Cipher(ctx, buf, buf, len(record))
        return pad, rc, buf.raw, drain()

    # AES-128-GCM: four records of 20000 bytes (a pipelined batch over the lanes)
    key, fixed = os.urandom(16), os.urandom(4)
    plains = [os.urandom(20000) for _ in range(4)]
    enc = context(b"id-aes128-GCM", key, 1, fixed=fixed)
    sealed = []
    for seq, p in enumerate(plains):
        _, rc, out, errs = one(enc, b"\0" * 8 + p + b"\0" * 16, aad(seq, 8 + len(p)))
        assert rc == len(p) + 24 and not errs, (rc, errs)
        sealed.append(out)
    dec = context(b"id-aes128-GCM", key, 0, fixed=fixed)
    rc, outs, errs = batch(dec, sealed, [aad(s, len(r)) for s, r in enumerate(sealed)])
    result["gcm_good"] = {"rc": rc, "errors": errs,
                          "plain_ok": all(o[8:-16] == p for o, p in zip(outs, plains))}
    bad = list(sealed)
    bad[2] = bad[2][:-1] + bytes([bad[2][-1] ^ 1])  # one bit of record 3's tag
    dec = context(b"id-aes128-GCM", key, 0, fixed=fixed)
    rc, outs, errs = batch(dec, bad, [aad(s, len(r)) for s, r in enumerate(bad)])
    result["gcm_bad_tag_batch"] = {"rc": rc, "errors": errs}
    dec = context(b"id-aes128-GCM", key, 0, fixed=fixed)
    _, rc, _, errs = one(dec, bad[2], aad(2, len(bad[2])))
    result["gcm_bad_tag_one"] = {"rc": rc, "errors": errs}
    dec = context(b"id-aes128-GCM", key, 0, fixed=fixed)
    rc, _, errs = batch(dec, sealed, [aad(s, len(r)) for s, r in enumerate(sealed)], n_lens=3)
    result["counts_disagree"] = {"rc": rc, "errors": errs}

    # AES-128-CBC-HMAC-SHA1 (MAC-then-encrypt): a bad MAC in a batch of 4
    key, mac_key, iv = os.urandom(16), os.urandom(20), os.urandom(16)
    enc = context(b"AES-128-CBC-HMAC-SHA1", key, 1, mac_key=mac_key, iv=iv)
    sealed = []
    for seq in range(4):
        p = os.urandom(20000)
        pad = ((len(p) + 20 + 16) & ~15) - len(p)
        _, rc, out, errs = one(enc, os.urandom(16) + p + b"\0" * pad, aad(seq, 16 + len(p)))
        assert rc == 1 and not errs, (rc, errs)
        sealed.append(out)
    dec = context(b"AES-128-CBC-HMAC-SHA1", key, 0, mac_key=mac_key, iv=iv)
    bad = list(sealed)
    bad[1] = bad[1][:100] + bytes([bad[1][100] ^ 1]) + bad[1][101:]
    rc, outs, errs = batch(dec, bad, [aad(s, len(r)) for s, r in enumerate(bad)])
    result["hmac_bad_mac_batch"] = {"rc": rc, "errors": errs}

    # a control command out of range
    rc = L.ENGINE_ctrl_cmd_string(e, b"THREADS", b"0", 0)
    result["threads_0"] = {"rc": rc, "errors": drain()}
    print(json.dumps(result))


# ---------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def outcome(engine_path):
    p = subprocess.run([sys.executable, __file__, engine_path], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def reasons(case):
    return [(x["lib"], x["reason"]) for x in case["errors"]]


def ours(case):
    """The pipetls entries (OpenSSL's own cipher may have raised one before,
    when the failing record ran in the calling thread)."""
    return [x for x in case["errors"] if x["lib"] == "pipetls"]


def test_a_good_batch_leaves_the_queue_empty(outcome):
    case = outcome["gcm_good"]
    assert case["rc"] == 4 and case["plain_ok"]
    assert case["errors"] == []


def test_bad_tag_in_a_batch_names_the_record(outcome):
    case = outcome["gcm_bad_tag_batch"]
    assert case["rc"] == -1
    assert [x["reason"] for x in ours(case)] == [REJECTED], case["errors"]
    assert "record 3 of 4" in ours(case)[0]["data"]


def test_bad_tag_in_a_lone_record(outcome):
    case = outcome["gcm_bad_tag_one"]
    assert case["rc"] == -1
    assert ("pipetls", REJECTED) in reasons(case), case["errors"]


def test_bad_mac_in_a_cbc_hmac_batch(outcome):
    case = outcome["hmac_bad_mac_batch"]
    assert case["rc"] == 0
    assert [x["reason"] for x in ours(case)] == [REJECTED], case["errors"]
    assert "record 2 of 4" in ours(case)[0]["data"]


def test_pipeline_ctrls_that_disagree(outcome):
    case = outcome["counts_disagree"]
    assert case["rc"] == -1
    assert ("pipetls", BAD_PIPELINE) in reasons(case), case["errors"]
    assert any("pipe counts disagree" in x["data"] for x in case["errors"])


def test_control_command_out_of_range(outcome):
    case = outcome["threads_0"]
    assert case["rc"] == 0
    assert ("pipetls", BAD_ARGUMENT) in reasons(case), case["errors"]
    assert any("THREADS must be 1..256" in x["data"] for x in case["errors"])


HERE = os.path.dirname(os.path.abspath(__file__))
SANITIZE = os.environ.get("PIPETLS_SANITIZE", "")


@pytest.fixture(scope="module")
def nothreads_binary(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed to build tests/c/pt_nothreads.c"
    out = tmp_path_factory.mktemp("nothreads") / "pt_nothreads"
    flags = ["-O2"]
    if SANITIZE:
        flags = ["-O1", "-g", f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer"]
    subprocess.run([cc, *flags, "-Wall", "-rdynamic", "-o", str(out),
                    os.path.join(HERE, "c", "pt_nothreads.c"), "-lcrypto", "-ldl"], check=True)
    return str(out)


def test_workers_that_cannot_start_are_reported_not_retried(nothreads_binary, engine_path):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # the harness links its sanitizer runtime itself
    p = subprocess.run([nothreads_binary, engine_path], capture_output=True, text=True,
                       timeout=120, env=env)
    out = dict(line.split(" ", 1) for line in p.stdout.splitlines() if " " in line)
    assert p.returncode == 0 and p.stdout.rstrip().endswith("OK"), p.stdout + p.stderr[-3000:]
    # THREADS 3: two workers wanted, one pthread_create tried in five batches
    assert out["attempts"] == "1" and out["stats.worker_start_failures"] == "2"
    assert out["info.worker_start_failures"] == "2" and out["inline_batches"] == "5"
    assert out["after_threads.workers"] == "1"


if __name__ == "__main__":
    _child(sys.argv[1])
