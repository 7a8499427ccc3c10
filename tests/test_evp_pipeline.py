"""pipetls.evp: seal_many / open_many through OpenSSL 3.5's cipher pipeline
API (EVP_CipherPipeline*) and the pipetls provider.

Two halves:

* this process (the machine's OpenSSL 3.0, the plain ``tox`` run): the
  package imports, the 3.5 prototypes are stubs, and every entry point says
  clearly what it needs (OpenSSL >= 3.5 and the provider); bad input is
  refused *before* OpenSSL is touched (on 3.0 a call that reached OpenSSL
  would raise ProviderError instead), with errors that name the limit.
* ``patched`` (``tox -e patched``): the patched OpenSSL 3.5 build runs in
  child processes of its own (invariant 7: ``LD_LIBRARY_PATH`` and
  ``PIPETLS_OPENSSL`` of its prefix; each child's /proc/self/maps is
  checked), with the provider built against it (conftest.py's
  ``module35``: ``cmake`` into ``build/provider-3.5``, or
  ``$PIPETLS_PROVIDER_BUILD``). Known answers for 1..32 pipes x 9 lengths, with
  and without AAD, and random mixes, each pipe equal to the default
  provider's one-at-a-time answer and decrypted by pyca/cryptography (in the
  child, and a sample again in this process); negative controls that must
  fail; the Provider handle; ``pipetls info``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipetls
from pipetls import _ffi, evp

from support.patched import assert_only_patched, penv

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "support" / "evp_pipeline_child.py"
CIPHERS = list(evp.CIPHERS)
ON_35 = _ffi.OpenSSL_version_num() >= _ffi.OPENSSL_3_5

# the package directory the tests import, for the children's sys.path
PKG_ROOT = str(Path(pipetls.__file__).resolve().parent.parent)


# ------------------------------------------------ this process (OpenSSL 3.0)

@pytest.mark.skipif(ON_35, reason="this process's libcrypto is >= 3.5: the 3.0 behaviour "
                    "is what the plain run (the system OpenSSL) checks")
def test_on_30_every_entry_point_says_what_it_needs():
    assert not _ffi.has_symbol("EVP_CipherPipelineEncryptInit")
    assert _ffi.has_symbol("EVP_CIPHER_fetch")
    key, ivs, pts = bytes(32), [bytes(12)], [b"data"]
    calls = {
        "seal_many": lambda: evp.seal_many("AES-256-GCM", key, ivs, None, pts),
        "open_many": lambda: evp.open_many("AES-256-GCM", key, ivs, None, pts, [bytes(16)]),
        "PipelineCipher": lambda: evp.PipelineCipher("ChaCha20-Poly1305", key),
        "Provider": lambda: pipetls.Provider(),
        "load_provider": lambda: pipetls.load_provider(),
    }
    for name, call in calls.items():
        with pytest.raises(pipetls.ProviderError) as info:
            call()
        msg = str(info.value)
        assert "OpenSSL >= 3.5" in msg and "pipetls provider" in msg, (name, msg)
        assert "PIPETLS_OPENSSL" in msg and _ffi.openssl_version() in msg, (name, msg)
    # the raw prototype is a stub that names what added it
    with pytest.raises(pipetls.errors.MissingSymbolError, match=r"needs OpenSSL 3\.5"):
        _ffi.EVP_CipherPipelineEncryptInit(None, None, None, 0, 1, None, 12)
    # the one-at-a-time reference works on 3.0 (the default provider)
    cts, tags = evp.seal_each("AES-256-GCM", key, ivs, None, pts)
    assert evp.open_each("AES-256-GCM", key, ivs, None, cts, tags) == pts


KEY32, IV = bytes(range(32)), bytes(12)

BAD_INPUT = [
    # (id, call arguments, exception class, words the message must hold)
    ("iv-11-bytes", ("AES-256-GCM", KEY32, [IV, b"x" * 11], None, [b"a", b"b"]),
     pipetls.ConfigError, ["ivs[1] is 11 bytes", "12-byte IVs"]),
    ("iv-16-bytes", ("ChaCha20-Poly1305", KEY32, [b"x" * 16], None, [b"a"]),
     pipetls.ConfigError, ["ivs[0] is 16 bytes", "12-byte IVs"]),
    ("33-pipes", ("AES-128-GCM", KEY32[:16], [IV] * 33, None, [b"a"] * 33),
     pipetls.ConfigError, ["33 pipes", "1 to 32"]),
    ("0-pipes", ("AES-128-GCM", KEY32[:16], [], None, []),
     pipetls.ConfigError, ["0 pipes", "1 to 32"]),
    ("counts", ("AES-256-GCM", KEY32, [IV] * 3, None, [b"a"] * 4),
     pipetls.ConfigError, ["3 ivs", "4 plaintexts"]),
    ("aad-count", ("AES-256-GCM", KEY32, [IV] * 2, [b"x"], [b"a"] * 2),
     pipetls.ConfigError, ["2 ivs", "1 aads"]),
    ("key-31", ("AES-256-GCM", KEY32[:31], [IV], None, [b"a"]),
     pipetls.ConfigError, ["key is 31 bytes", "32-byte key"]),
    ("key-32-for-128", ("AES-128-GCM", KEY32, [IV], None, [b"a"]),
     pipetls.ConfigError, ["key is 32 bytes", "16-byte key"]),
    ("cipher", ("AES-256-CBC", KEY32, [IV], None, [b"a"]),
     pipetls.ConfigError, ["AES-256-CBC", "AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305"]),
    ("cipher-type", (256, KEY32, [IV], None, [b"a"]), pipetls.ConfigTypeError, ["str"]),
    ("str-plaintext", ("AES-256-GCM", KEY32, [IV], None, ["a"]),
     pipetls.ConfigTypeError, ["plaintexts[0]", "not str"]),
    ("buffer-as-list", ("AES-256-GCM", KEY32, [IV], None, b"a"),
     pipetls.ConfigTypeError, ["plaintexts must be a list"]),
    ("none-iv", ("AES-256-GCM", KEY32, [None], None, [b"a"]),
     pipetls.ConfigTypeError, ["ivs[0]", "NoneType"]),
    ("strided-view", ("AES-256-GCM", KEY32, [IV], None, [memoryview(b"abcd")[::2]]),
     pipetls.ConfigTypeError, ["contiguous"]),
]


@pytest.mark.parametrize("args, exc, words", [b[1:] for b in BAD_INPUT],
                         ids=[b[0] for b in BAD_INPUT])
@pytest.mark.parametrize("fn", ["seal_many", "seal_each"])
def test_bad_input_is_refused_before_openssl(fn, args, exc, words):
    """Refused with an error naming the limit; on 3.0 this also shows the
    check comes first (reaching OpenSSL would raise ProviderError)."""
    with pytest.raises(exc) as info:
        getattr(evp, fn)(*args)
    assert isinstance(info.value, ValueError)  # ConfigError is a ValueError
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_bad_tags_are_refused_before_openssl():
    with pytest.raises(pipetls.ConfigError, match=r"tags\[1\] is 15 bytes; .* 16 bytes"):
        evp.open_many("AES-256-GCM", KEY32, [IV] * 2, None, [b"a"] * 2, [bytes(16), bytes(15)])
    with pytest.raises(pipetls.ConfigError, match="2 ciphertexts, 1 tags"):
        evp.open_many("AES-256-GCM", KEY32, [IV] * 2, None, [b"a"] * 2, [bytes(16)])


def test_control_good_input_passes_validation():
    """Control for the refusals: a valid call gets past validation (on 3.0
    to the clear ProviderError, on 3.5 to a result)."""
    args = ("AES-256-GCM", KEY32, [IV] * 32, [b""] * 32, [b"x" * 17] * 32)
    if ON_35:
        assert len(evp.seal_many(*args)[0]) == 32
    else:
        with pytest.raises(pipetls.ProviderError):
            evp.seal_many(*args)


def test_one_at_a_time_reference_matches_cryptography():
    """The reference the patched tests compare with (seal_each: the default
    provider, one message at a time) agrees with pyca/cryptography here."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    rnd = __import__("random").Random(5)
    for name, cls in (("AES-128-GCM", AESGCM), ("AES-256-GCM", AESGCM),
                      ("ChaCha20-Poly1305", ChaCha20Poly1305)):
        key = rnd.randbytes(evp.CIPHERS[name].key_size)
        ivs = [rnd.randbytes(12) for _ in range(5)]
        aads = [rnd.randbytes(k) for k in (0, 1, 13, 16, 100)]
        pts = [rnd.randbytes(k) for k in (0, 1, 17, 16384, 65536)]
        cts, tags = evp.seal_each(name, key, ivs, aads, pts)
        for i in range(5):
            assert cls(key).encrypt(ivs[i], pts[i], aads[i]) == bytes(cts[i]) + tags[i]
        bad = list(tags)
        bad[2] = bytes(16)
        with pytest.raises(pipetls.TagError) as info:
            evp.open_each(name, key, ivs, aads, cts, bad)
        assert info.value.pipes == [2]


def test_provider_path_is_clear_when_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPETLS_PROVIDER", str(tmp_path / "nope.so"))
    with pytest.raises(pipetls.ProviderError, match="PIPETLS_PROVIDER=.*nope.so: no such file"):
        pipetls.provider_path()
    real = tmp_path / "pipetls-provider.so"
    real.write_bytes(b"")
    monkeypatch.setenv("PIPETLS_PROVIDER", str(real))
    assert pipetls.provider_path() == str(real)


def test_info_lists_the_provider():
    """``pipetls info`` has a provider row; here (3.0) it says why it is not
    loaded."""
    proc = subprocess.run([sys.executable, "-m", "pipetls", "info"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COLUMNS="300",
                                                           PYTHONPATH=PKG_ROOT))
    out = proc.stdout + proc.stderr
    assert "provider" in out, out
    if not ON_35:
        assert "not loaded" in out and "OpenSSL >= 3.5" in out, out


# ------------------------------------------------- patched OpenSSL 3.5 (children)

@pytest.fixture(scope="session")
def provider35(module35) -> str:
    """The provider built against the patched prefix (build/provider-3.5,
    or $PIPETLS_PROVIDER_BUILD: conftest.py's fixture)."""
    return str(module35)


def child_env(prefix, provider35, **extra):
    return penv(prefix, None, PIPETLS_OPENSSL=prefix, PIPETLS_PROVIDER=provider35,
                PYTHONPATH=os.pathsep.join([PKG_ROOT, str(CHILD.parent.parent)]), **extra)


def run_child(prefix, provider35, *args, script=None, timeout=600):
    argv = [sys.executable] + (["-c", script] if script else [str(CHILD)]) + [str(a) for a in args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=child_env(prefix, provider35), cwd=str(CHILD.parent.parent))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.patched
@pytest.mark.parametrize("cipher", CIPHERS)
def test_known_answers(tmp_path, prefix, provider35, cipher):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    sample = tmp_path / "sample.json"
    doc = run_child(prefix, provider35, "kat", cipher, CIPHERS.index(cipher) + 11, sample)
    assert doc["openssl"].startswith("OpenSSL 3.5."), doc["openssl"]
    assert_only_patched(set(doc["libs"]), prefix)
    assert doc["n_mismatches"] == 0, doc["mismatches"]
    # the whole grid was done: 32 pipe counts x 9 lengths x (AAD, no AAD)
    assert doc["combinations"] >= 32 * 9 * 2, doc
    assert doc["pipes"] > 2 * 9 * (32 * 33 // 2), doc
    # it went through the provider's pipelines, 32 pipes at a time at most
    prov = doc["provider"]
    assert prov["pipelined_batches"] > 0 and prov["max_batch"] == 32, prov
    assert prov["records"] >= doc["pipes"], prov
    # and the sample decrypts here too, outside the patched process
    s = json.loads(sample.read_text())
    aead = (ChaCha20Poly1305 if cipher.startswith("ChaCha") else AESGCM)(bytes.fromhex(s["key"]))
    for iv, aad, ct, tag in zip(s["ivs"], s["aads"], s["cts"], s["tags"]):
        aead.decrypt(bytes.fromhex(iv), bytes.fromhex(ct) + bytes.fromhex(tag), bytes.fromhex(aad))
    assert len(s["cts"]) == 32


@pytest.mark.patched
@pytest.mark.parametrize("cipher", CIPHERS)
def test_negative_controls(prefix, provider35, cipher):
    doc = run_child(prefix, provider35, "negative", cipher, 7)
    assert_only_patched(set(doc.pop("libs")), prefix)
    assert doc.pop("control") is True  # the untouched batch opens
    assert doc.pop("after_refusal") is True
    assert doc.pop("leaked") == 0  # no failing open returned plaintext
    tampered = {"flipped_tag_3": [3], "flipped_tags_1_6": [1, 6], "flipped_ct_0": [0],
                "flipped_aad_7": [7], "wrong_iv_pipe_2": [2]}
    for key, pipes in tampered.items():
        err = doc.pop(key)
        assert err is not None and err["types"][0] == "TagError", (key, err)
        assert err["pipes"] == pipes, (key, err)
        assert "no plaintext" in err["message"], err
    refused = {"iv_11_bytes": "12-byte IVs", "iv_16_bytes": "12-byte IVs",
               "33_pipes": "1 to 32", "0_pipes": "1 to 32",
               "counts_3_ivs_4_plaintexts": "3 ivs, 4 plaintexts",
               "counts_aads": "3 aads", "counts_tags": "7 tags", "short_tag": "16 bytes",
               "short_key": "-byte key", "str_plaintext": "not str",
               "bytes_as_list": "must be a list", "unknown_cipher": "AES-192-GCM"}
    for key, words in refused.items():
        err = doc.pop(key)
        assert err is not None and "ValueError" in err["types"], (key, err)
        assert words in err["message"], (key, err)
    err = doc.pop("output_too_small")  # the provider's own refusal
    assert err is not None and err["types"][0] == "OpenSSLError", err
    assert "EVP_CipherPipelineUpdate" in err["message"], err
    assert not doc, doc  # every case was looked at


PROVIDER_SCRIPT = r"""
import json, os, pipetls
from pipetls import evp
out = {}
p = pipetls.Provider(threads=2, inline_below=4096)
out["threads"], out["inline_below"] = p.threads, p.inline_below
out["ciphers"] = p.ciphers()
out["path"] = p.path == os.path.realpath(os.environ["PIPETLS_PROVIDER"])
out["params"] = sorted(p.params())
before = p.stats()
key = bytes(32)
cts, tags = evp.seal_many("AES-256-GCM", key, [bytes(12)] * 32, None, [bytes(16384)] * 32,
                          provider=p)
d = p.stats() - before
out["delta"] = {"records": d.records, "bytes": d.bytes, "lanes": d.lanes,
                "crypto_ns": d.crypto_ns > 0, "hist": d.hist}
try:
    pipetls.Provider(threads=3)
except pipetls.ProviderError as e:
    out["second"] = str(e)
p.reset_stats()
out["after_reset"] = p.stats().records
p.close()
try:
    p.threads
except pipetls.ClosedError:
    out["closed"] = True
try:
    pipetls.Provider(threads=0)
except pipetls.ConfigError as e:
    out["threads0"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.patched
def test_provider_handle(prefix, provider35):
    doc = run_child(prefix, provider35, script=PROVIDER_SCRIPT)
    assert doc["threads"] == 2 and doc["inline_below"] == 4096, doc
    assert doc["ciphers"] == CIPHERS and doc["path"], doc
    assert {"stats", "threads", "inline_below"} <= set(doc["params"]), doc
    assert doc["delta"]["records"] == 32 and doc["delta"]["bytes"] >= 32 * 16384, doc
    assert doc["delta"]["hist"] == {"32": 1} and doc["delta"]["crypto_ns"], doc
    assert "threads=3 was asked but the provider reports 2" in doc["second"], doc
    assert doc["after_reset"] == 0 and doc["closed"], doc
    assert "threads" in doc["threads0"] and "1" in doc["threads0"], doc


@pytest.mark.patched
def test_info_lists_the_loaded_provider(prefix, provider35):
    proc = subprocess.run([sys.executable, "-m", "pipetls", "info"], capture_output=True,
                          text=True, timeout=120,
                          env=child_env(prefix, provider35, COLUMNS="400"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert provider35 in out.replace("\n", "") or "pipetls-provider.so" in out, out
    assert "loaded" in out and "not loaded" not in out, out
    for name in CIPHERS:
        assert name in out, out


# ------------------------------------------------------ pipetls bench --scenario evp

def test_bench_evp_on_30_says_what_it_needs():
    if ON_35:
        pytest.skip("this process's libcrypto is >= 3.5; the patched test runs the bench")
    proc = subprocess.run([sys.executable, "-m", "pipetls", "bench", "--scenario", "evp"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, COLUMNS="300", PYTHONPATH=PKG_ROOT))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "bench --scenario evp needs OpenSSL >= 3.5" in out and "PIPETLS_OPENSSL" in out, out


@pytest.mark.patched
def test_bench_evp_structure(prefix, provider35):
    """A tiny evp bench (never its timing): per cipher a seal and an open
    row, each followed by its plain-threads control row, the answers of
    every side compared by the bench itself (it fails otherwise), and
    numbers consistent with each other."""
    proc = subprocess.run([sys.executable, "-m", "pipetls", "bench", "--scenario", "evp",
                           "--pairs", "3", "--batches", "2", "--pipes", "8", "--pipe-size",
                           "4K", "--lanes", "2", "--json", "-"],
                          capture_output=True, text=True, timeout=600,
                          env=child_env(prefix, provider35, COLUMNS="200"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["machine"]["openssl"].startswith("OpenSSL 3.5."), doc["machine"]
    rows = doc["results"]
    assert [(r["cipher"], r["suite"].split()[1]) for r in rows] == [
        (c, d) for c in CIPHERS for d in ("seal", "seal", "open", "open")]
    assert [r["baseline"].split(":")[0] for r in rows] == [
        "default provider, one at a time", "control"] * 2 * len(CIPHERS)
    for r in rows:
        control = r["baseline"].startswith("control")
        assert r["scenario"] == "evp" and r["max_pipelines"] == 8 and r["lanes"] == 2, r
        assert r["write_size"] == 4096 and r["total_bytes"] == 8 * 4096 * 2, r
        assert len(r["stock_reps"]) == len(r["pipetls_reps"]) == 3, r
        assert r["speedup_lo"] <= r["speedup"] <= r["speedup_hi"], r
        assert r["interval_confidence"] == 0.95, r
        if control:
            assert r["bound"] == 2.0, r
        else:
            assert 1.0 <= r["bound"] <= 2.0 + 1e-9, r
            assert 0.0 <= r["serial_fraction"] <= 1.0, r
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["bound"], rel=1e-3, abs=1e-4), r
        # both loops are timed in C: nothing is subtracted
        assert r["raw_speedup"] == r["speedup"] and r["harness_s"] == [0.0, 0.0], r
