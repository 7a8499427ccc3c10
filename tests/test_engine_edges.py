"""Corner cases the fuzzers (tests/fuzz/) found, each one answered by the
engine and by OpenSSL's own cipher in the same child process
(tests/support/evp_edge_worker.py): the engine must answer what OpenSSL answers.
A crash of the child is a failure with the signal named."""
import json
import os
import signal
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "support", "evp_edge_worker.py")


def run_case(engine_path, case):
    p = subprocess.run([sys.executable, WORKER, engine_path, case],
                       capture_output=True, text=True, timeout=120)
    if p.returncode < 0:
        pytest.fail(f"the worker died of {signal.Signals(-p.returncode).name}: {p.stderr[-2000:]}")
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def test_stitched_decrypt_final_after_init_is_openssls(engine_path):
    # OpenSSL's CBC-HMAC ciphers neither pad nor hold back a block
    cases = run_case(engine_path, "final_after_init")
    assert len(cases) == 4, cases
    for name, r in cases.items():
        assert r["openssl"] == [1, 0], (name, r)
        assert r["engine"] == r["openssl"], (name, r)


def test_gcm_record_with_the_last_sequence_number(engine_path):
    cases = run_case(engine_path, "gcm_last_sequence_number")
    assert len(cases) == 2, cases
    for name, r in cases.items():
        assert r["rc"] >= 0, (name, r)
        assert r["engine"] == r["openssl"], name
        assert r["engine"][:16] == "ff" * 8, name  # explicit nonce = sequence number


def test_cbc_chain_goes_on_after_empty_records(engine_path):
    cases = run_case(engine_path, "cbc_chain_after_empty_records")
    assert len(cases) == 2, cases
    for name, r in cases.items():
        assert r["rc"] == [1, 1], (name, r)
        assert r["engine"] == r["openssl"], name


def test_aad_update_after_tls_aad_is_refused(engine_path):
    # the engine took it for a record and wrote (or cleansed) through NULL
    cases = run_case(engine_path, "aad_update_after_tls_aad")
    assert len(cases) == 3, cases
    for name, r in cases.items():
        assert r["engine"] == [16, 0], (name, r)  # the AAD's answer, then refused
        if "GCM" in name:
            assert r["openssl"] == r["engine"], (name, r)
        else:
            # OpenSSL's ChaCha20-Poly1305 takes it as plain AAD after the
            # TLS AAD; the engine refuses (a known difference, README of
            # tests/fuzz)
            assert r["openssl"] == [16, 1], (name, r)
