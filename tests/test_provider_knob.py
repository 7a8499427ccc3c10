"""Context(provider=...) on the system's stock OpenSSL 3.0 (the plain tox
env): nothing changes by default, and asking for the provider is a clear
error naming what is needed (tests/test_python_tls13_patched.py is the
patched build's side)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pipetls
from pipetls import _ffi, paths

pytestmark = pytest.mark.skipif(
    _ffi.OpenSSL_version_num() >= _ffi.OPENSSL_3_5,
    reason="these are the stock OpenSSL 3.0 answers; this process runs %s"
    % _ffi.openssl_version())


def test_provider_true_names_what_is_needed():
    with pytest.raises(pipetls.ProviderError) as info:
        pipetls.Context(provider=True)
    msg = str(info.value)
    for needed in ("OpenSSL >= 3.5", "patch 0002", "PIPETLS_OPENSSL", "pipetls-provider.so",
                   _ffi.openssl_version()):
        assert needed in msg, msg


def test_provider_instance_needs_35_too():
    # a Provider cannot even be made here: the same kind of error, before OpenSSL is touched
    with pytest.raises(pipetls.ProviderError, match="OpenSSL >= 3.5"):
        pipetls.Provider()


@pytest.mark.parametrize("value", ["auto", False, None])
def test_auto_and_false_change_nothing(pt_certs, value):
    """The default ("auto"), False and None make the context as before:
    no provider, and a TLS 1.3 pair works."""
    kw = {} if value == "auto" else {"provider": value}
    s = pipetls.Context(server=True, certfile=pt_certs.cert, keyfile=pt_certs.key, **kw)
    c = pipetls.Context(verify=False, **kw)
    assert s.provider is None and c.provider is None
    a, b = pipetls.Connection(s), pipetls.Connection(c)
    pipetls.handshake_pair(a, b)
    assert a.tls_version == "TLSv1.3"
    assert pipetls.pump(a, b, 1 << 16) == 1 << 16


@pytest.mark.parametrize("bad", ["yes", 1, "True"])
def test_bad_values_are_type_errors(bad):
    with pytest.raises(pipetls.ConfigTypeError, match="provider must be"):
        pipetls.Context(provider=bad)


def test_probe_refuses_on_30():
    with pytest.raises(pipetls.ProviderError, match="OpenSSL >= 3.5"):
        paths.probe("1.3")



def test_bench_openssl_patched_without_a_build(tmp_path):
    """--openssl patched with neither PIPETLS_OPENSSL nor a cached build:
    exit status 1 and a message saying how to get one."""
    env = {k: v for k, v in os.environ.items() if k != "PIPETLS_OPENSSL"}
    env["PIPETLS_CACHE"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pipetls", "bench", "--openssl", "patched",
                           "--tls", "1.3", "--pairs", "1", "--pair-bytes", "64K"],
                          capture_output=True, text=True, env=env, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "PIPETLS_OPENSSL" in out and "build-openssl" in out, out


def test_stdlib_provider_on_30():
    """pipetls.stdlib on 3.0: prefer_provider() and enable_pipelining(...,
    provider=True) say what is needed; the default ("auto") is the engine,
    as before."""
    import ssl

    from pipetls import stdlib

    with pytest.raises(pipetls.ProviderError) as info:
        stdlib.prefer_provider()
    assert "OpenSSL >= 3.5" in str(info.value) and "patch 0002" in str(info.value)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(pipetls.ProviderError, match="patch 0002"):
        stdlib.enable_pipelining(ctx, provider=True)
    with pytest.raises(pipetls.ConfigTypeError, match="provider must be"):
        stdlib.enable_pipelining(ctx, provider="yes")
    assert not stdlib.provider_preferred()
    r = stdlib.enable_pipelining(ctx)
    assert r.engine is not None and r.provider is None
