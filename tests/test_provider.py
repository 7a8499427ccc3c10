"""The pipetls provider (provider/, OpenSSL >= 3.5): EVP_CipherPipeline*.

Built here against the patched OpenSSL 3.5 prefix (the ``prefix`` fixture
of conftest.py, support.patched) into ``build/provider-3.5`` (plus
``build/provider-3.5-asan`` / ``-tsan`` for the sanitizer runs), with
OpenSSL's own ``evp_test`` and ``test_evp_cipher_pipeline`` compiled from
the patched build's source tree (``<prefix>/../src``, CMake
``PIPETLS_OPENSSL_SRC``).  Every process that loads the provider runs on
the patched libcrypto alone (``penv``: LD_LIBRARY_PATH=<prefix>/lib,
invariant 7); the pytest process never loads it.  The one exception on
purpose is ``test_refuses_openssl_30``, a process of the system's 3.0.

What runs:
- provider/test/pt_prov_test.c: known answers (1..32 pipes x 0..65536
  bytes, with and without AAD, equal to the default provider pipe by pipe),
  random mixes, re-keying, negative controls, statistics; 16 threads and
  fork under ASan/UBSan and TSan builds;
- an independent decryption of pipelined seals with ``cryptography``;
- OpenSSL's evp_test vectors for AES-{128,256}-GCM and ChaCha20-Poly1305
  with ``-propquery provider=pipetls``; OpenSSL's test_evp_cipher_pipeline
  pointed at pipetls;
- the stock ``openssl`` of the 3.5 build with the provider from openssl.cnf.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support.patched import MODULE, cmake_build, penv

pytestmark = pytest.mark.patched

REPO = Path(__file__).resolve().parent.parent
ALGS = ("AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305")
VECTOR_FILES = ("evpciph_aes_common.txt", "evpciph_chacha.txt")
OUR_NAMES = {"aes-128-gcm", "aes-256-gcm", "chacha20-poly1305",
             "id-aes128-gcm", "id-aes256-gcm"}


# ------------------------------------------------------------------ helpers

def run35(prefix, argv, conf=None, timeout=600, **env):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          env=penv(prefix, conf, **env), timeout=timeout,
                          stdin=subprocess.DEVNULL)


def write_conf(path: Path, module: Path, *lines: str) -> Path:
    """openssl.cnf: the default provider and pipetls (module, activate,
    then `lines` in its section)."""
    path.write_text("\n".join([
        "config_diagnostics = 1",
        "openssl_conf = openssl_init", "",
        "[openssl_init]", "providers = provider_sect", "",
        "[provider_sect]", "default = default_sect", "pipetls = pipetls_sect", "",
        "[default_sect]", "activate = 1", "",
        "[pipetls_sect]", f"module = {module}", "activate = 1", *lines, ""]))
    return path


# --------------------------------------------------------- the C test suite

@pytest.mark.parametrize("test", ["kat", "mix", "rekey", "neg", "stats"])
def test_c_suite(prefix, build35, module35, test):
    proc = run35(prefix, [build35 / "pt_prov_test", module35, test])
    assert proc.returncode == 0 and f"ok {test}\n" in proc.stdout, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout


def test_c_suite_can_fail(prefix, build35, module35):
    """The harness reports failures: an unknown test and a missing module."""
    assert run35(prefix, [build35 / "pt_prov_test", module35, "nosuch"]).returncode == 2
    proc = run35(prefix, [build35 / "pt_prov_test", build35 / "nosuch.so", "kat"])
    assert proc.returncode == 1 and "FAIL load" in proc.stdout


SANITIZERS = {
    "asan": ("address,undefined",
             {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
              "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}),
    # die_after_fork=0: the fork test starts lanes in the child of a
    # multi-threaded parent, which is what it checks (invariant 6)
    "tsan": ("thread",
             {"TSAN_OPTIONS": "halt_on_error=1:die_after_fork=0:second_deadlock_stack=1:"
                              f"suppressions={REPO / 'tests' / 'tsan.supp'}"}),
}


@pytest.mark.parametrize("kind", sorted(SANITIZERS))
def test_concurrency_sanitized(prefix, kind):
    """16 threads with pipelines on their own contexts, and fork, plus a
    quick pass of everything else, on a sanitizer build of the provider."""
    sanitize, env = SANITIZERS[kind]
    build = cmake_build(REPO / "build" / f"provider-3.5-{kind}", prefix,
                   f"-DPIPETLS_SANITIZE={sanitize}", "-DPIPETLS_OPENSSL_SRC=")
    tests = ["threads", "fork", "quick", "kat", "mix", "neg", "rekey", "stats"]
    proc = run35(prefix, [build / "pt_prov_test", build / MODULE, *tests], **env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Sanitizer" not in out and "runtime error" not in out, out[-6000:]
    for t in tests:
        if t != "quick":
            assert f"ok {t}\n" in proc.stdout, out[-6000:]


# ------------------------------------------- decrypted by somebody else

def test_independent_decryption(prefix, build35, module35):
    """Pipelined seals (lengths 0..65536, AAD or none) opened by
    ``cryptography``; a flipped tag must fail there too."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    proc = run35(prefix, [build35 / "pt_prov_test", module35, "dump"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    seen = {a: 0 for a in ALGS}
    for line in proc.stdout.splitlines():
        if not line.startswith("vec "):
            continue
        alg, *fields = line.split()[1:]
        key, iv, aad, pt, ct, tag = (b"" if f == "-" else bytes.fromhex(f) for f in fields)
        aead = ChaCha20Poly1305(key) if alg.startswith("ChaCha") else AESGCM(key)
        assert aead.decrypt(iv, ct + tag, aad or None) == pt
        bad = bytes([tag[0] ^ 1]) + tag[1:]
        with pytest.raises(InvalidTag):
            aead.decrypt(iv, ct + bad, aad or None)
        seen[alg] += 1
    assert seen == {a: 9 for a in ALGS}, seen


# ------------------------------------------------------- OpenSSL's tests

def our_vectors(src: Path) -> str:
    """The stanzas of OpenSSL's cipher vectors for our three algorithms."""
    out = []
    for name in VECTOR_FILES:
        text = (src / "test" / "recipes" / "30-test_evp_data" / name).read_text()
        for stanza in re.split(r"\n\s*\n", text):
            lines = [x for x in stanza.splitlines() if x.strip() and not x.lstrip().startswith("#")]
            ciphers = [x.split("=", 1)[1].strip().lower() for x in lines
                       if x.split("=", 1)[0].strip() == "Cipher"]
            if ciphers and ciphers[0] in OUR_NAMES:
                out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def test_openssl_evp_test_vectors(prefix, build35, module35, tmp_path):
    evp_test = build35 / "ossl_evp_test"
    assert evp_test.is_file(), "no OpenSSL source tree at <prefix>/../src to build evp_test from"
    vectors = tmp_path / "vectors.txt"
    vectors.write_text(our_vectors(prefix.parent / "src"))
    n = vectors.read_text().count("\nCipher = ") + vectors.read_text().startswith("Cipher = ")
    assert n > 100, n
    conf = write_conf(tmp_path / "evp.cnf", module35)
    proc = run35(prefix, [evp_test, "-config", conf, "-propquery", "provider=pipetls", vectors])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert f"Completed {n} tests with 0 errors and 0 skipped" in out, out[-3000:]
    # control: the property is what selects us (a fetch nobody answers fails every test)
    proc = run35(prefix, [evp_test, "-config", conf, "-propquery", "provider=nosuch", vectors])
    assert proc.returncode != 0
    assert f"Completed {n} tests with {n} errors and 0 skipped" in proc.stdout + proc.stderr


def test_openssl_cipher_pipeline_test(prefix, build35, module35):
    """OpenSSL's test_evp_cipher_pipeline (1..32 pipes x 1..256 bytes),
    its fake provider replaced by pipetls (provider/test/ossl/)."""
    harness = build35 / "ossl_pipeline_test"
    assert harness.is_file(), "no OpenSSL source tree at <prefix>/../src to build it from"
    proc = run35(prefix, [harness], PIPETLS_PROVIDER=module35)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "ok 1 - test_evp_cipher_pipeline" in proc.stdout
    # control: without our provider OpenSSL's test fails
    proc = run35(prefix, [harness], PIPETLS_PROVIDER=module35.parent / "nosuch.so")
    assert proc.returncode != 0 and "not ok 1 - test_evp_cipher_pipeline" in proc.stdout


# ------------------------------------------------ the stock openssl program

def test_openssl_list_from_cnf(prefix, openssl35, module35, tmp_path):
    conf = write_conf(tmp_path / "openssl.cnf", module35)
    proc = run35(prefix, [openssl35, "list", "-cipher-algorithms", "-provider", "pipetls"], conf)
    assert proc.returncode == 0, proc.stderr
    ours = [x for x in proc.stdout.splitlines() if x.rstrip().endswith("@ pipetls")]
    assert len(ours) == 3, proc.stdout
    for name in ("aes-128-gcm", "aes-256-gcm", "ChaCha20-Poly1305"):
        assert any(name in x for x in ours), proc.stdout
    proc = run35(prefix, [openssl35, "list", "-providers"], conf)
    assert re.search(r"pipetls\n\s+name: pipetls.*\n(.*\n)*?\s+status: active", proc.stdout), \
        proc.stdout


def test_openssl_speed_from_cnf(prefix, openssl35, module35, tmp_path):
    """openssl speed -propquery provider=pipetls -evp aes-128-gcm: single-shot
    EVP through the provider (its statistics at unload count the calls)."""
    conf = write_conf(tmp_path / "openssl.cnf", module35)
    stats = tmp_path / "stats.txt"
    argv = [openssl35, "speed", "-propquery", "provider=pipetls", "-evp", "aes-128-gcm",
            "-seconds", "1", "-bytes", "16384", "-mr"]
    proc = run35(prefix, argv, conf, PIPETLS_STATS=stats)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"^\+F:\d+:AES-128-GCM:([0-9.]+)$", proc.stdout, re.M)
    assert m and float(m.group(1)) > 0, proc.stdout
    text = stats.read_text()
    calls = int(re.search(r"^stream_calls (\d+)$", text, re.M).group(1))
    assert calls > 100, text
    # control: a property nothing answers, and the fetch fails
    argv[3] = "provider=nosuch"
    assert run35(prefix, argv, conf).returncode != 0


def test_openssl_enc_refuses_aead_like_default(prefix, openssl35, module35, tmp_path):
    """openssl enc refuses every AEAD cipher ("AEAD ciphers not supported"),
    whoever provides it: ours answers as the default provider's does."""
    conf = write_conf(tmp_path / "openssl.cnf", module35)
    answers = []
    for prop in ("provider=pipetls", "provider=default"):
        proc = run35(prefix, [openssl35, "enc", "-propquery", prop, "-aes-128-gcm",
                              "-K", "00" * 16, "-iv", "00" * 12, "-in", os.devnull], conf)
        answers.append((proc.returncode, proc.stderr.splitlines()[:1]))
    assert answers[0] == answers[1] and answers[0][0] != 0, answers


def test_config_threads_inline_below(prefix, build35, module35, tmp_path):
    conf = write_conf(tmp_path / "openssl.cnf", module35, "THREADS = 3", "INLINE_BELOW = 100")
    proc = run35(prefix, [build35 / "pt_prov_test", "--conf", "params", "neg"], conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "param threads 3\n" in proc.stdout and "param inline_below 100\n" in proc.stdout
    # a bad value: the provider does not come up (OpenSSL drops the reason
    # of a failed activation from openssl.cnf; badconf shows it through
    # OSSL_PROVIDER_load_ex)
    bad = write_conf(tmp_path / "bad.cnf", module35, "THREADS = 0")
    proc = run35(prefix, [build35 / "pt_prov_test", "--conf", "params"], bad)
    assert proc.returncode != 0 and "FAIL load" in proc.stdout
    proc = run35(prefix, [build35 / "pt_prov_test", module35, "badconf"])
    assert proc.returncode == 0 and "ok badconf\n" in proc.stdout, proc.stdout


# -------------------------------------------- building and loading elsewhere

def test_cmake_skips_provider_with_30_headers(tmp_path):
    """With the system's 3.0 headers the provider is skipped, clearly."""
    proc = subprocess.run(["cmake", "-S", str(REPO), "-B", str(tmp_path / "b30")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"pipetls-provider: skipped, OpenSSL 3\.0\.\d+ headers found", proc.stdout)


LOAD_30 = r"""
import ctypes, sys
c = ctypes.CDLL("libcrypto.so.3")
c.OpenSSL_version_num.restype = ctypes.c_ulong
assert c.OpenSSL_version_num() >> 20 == 0x300, hex(c.OpenSSL_version_num())
c.OSSL_PROVIDER_load.restype = ctypes.c_void_p
c.OSSL_PROVIDER_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
c.ERR_get_error_all.restype = ctypes.c_ulong
c.ERR_get_error_all.argtypes = [ctypes.POINTER(ctypes.c_char_p)] * 2 + [
    ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int)]
c.ERR_reason_error_string.restype = ctypes.c_char_p
c.ERR_reason_error_string.argtypes = [ctypes.c_ulong]
print("loaded" if c.OSSL_PROVIDER_load(None, sys.argv[1].encode()) else "refused")
while True:
    data, flags = ctypes.c_char_p(), ctypes.c_int()
    e = c.ERR_get_error_all(None, None, None, ctypes.byref(data), ctypes.byref(flags))
    if not e:
        break
    print((c.ERR_reason_error_string(e) or b"").decode(), "|", (data.value or b"").decode())
"""


def test_refuses_openssl_30(module35):
    """Loaded into a 3.0 libcrypto (a process of the system's OpenSSL alone)
    the init fails with a reason that says what is needed."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "OPENSSL_CONF")}
    env["OPENSSL_CONF"] = os.devnull
    proc = subprocess.run(["python3", "-c", LOAD_30, str(module35)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused\n"), proc.stdout
    assert "OpenSSL version not supported | the pipetls provider needs OpenSSL 3.5 or later; " \
           "this process runs OpenSSL 3.0." in proc.stdout, proc.stdout
