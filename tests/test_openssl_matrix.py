"""The driver of ``tox -e openssl-matrix`` (tests/openssl_matrix.py) checks
what it runs: a release's pytest process must map exactly that release's
libcrypto and report its version, else the release fails before any test;
and the counts it reports are pytest's.  Here the "release" is the OpenSSL
this process runs on (no download), once as it is and twice misdescribed."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import textwrap
from pathlib import Path

import pytest

import openssl_matrix
from pipetls import _ffi


@pytest.fixture
def this_release(tmp_path) -> openssl_matrix.Release:
    """This process's OpenSSL as a release: copies of its libssl/libcrypto in
    a directory of their own (the system's library directory would also put
    another libpython first on LD_LIBRARY_PATH), its openssl program."""
    m = re.match(r"OpenSSL (\d+\.\d+\.\d+)", ssl.OPENSSL_VERSION)
    assert m, ssl.OPENSSL_VERSION
    openssl = shutil.which("openssl")
    assert openssl, "no openssl program on PATH"
    libdir, bindir = tmp_path / "lib", tmp_path / "bin"
    libdir.mkdir()
    bindir.mkdir()
    for lib in (_ffi.LIBCRYPTO_PATH, _ffi.LIBSSL_PATH):
        shutil.copy(os.path.realpath(lib), libdir / os.path.basename(lib))
    (bindir / "openssl").symlink_to(os.path.realpath(openssl))
    return openssl_matrix.Release(name="this process's OpenSSL", expect=m.group(1),
                                  libdir=libdir, bindir=bindir)


@pytest.fixture
def tiny_suite(tmp_path) -> list:
    d = tmp_path / "suite"
    d.mkdir()
    (d / "test_three.py").write_text(textwrap.dedent("""\
        import pytest

        def test_passes():
            pass

        def test_fails():
            assert False

        def test_skips():
            pytest.skip("on purpose")
        """))
    return ["-q", "-p", "no:cacheprovider", str(d / "test_three.py")]


def test_counts_and_failures_are_pytest_s(this_release, tiny_suite, tmp_path):
    out = openssl_matrix.run_release(this_release, tiny_suite, 120, tmp_path)
    assert out.error is None, out.error
    assert out.counts == {"passed": 1, "failed": 1, "skipped": 1}
    assert [f.rsplit("::", 1)[1] for f in out.failed] == ["test_fails"]
    assert out.returncode == 1 and not out.ok
    assert out.mapped["ssl.OPENSSL_VERSION"] == ssl.OPENSSL_VERSION


def test_a_wrong_version_stops_the_run(this_release, tiny_suite, tmp_path):
    this_release.expect = "3.0.999"
    out = openssl_matrix.run_release(this_release, tiny_suite, 120, tmp_path)
    assert not out.ok
    assert out.counts == {}, "tests ran although the version was wrong"
    assert "not OpenSSL 3.0.999" in out.error and "ssl.OPENSSL_VERSION is" in out.error


def test_libraries_from_elsewhere_stop_the_run(this_release, tiny_suite, tmp_path):
    empty = tmp_path / "empty-libdir"
    empty.mkdir()
    this_release.libdir = empty        # LD_LIBRARY_PATH finds nothing there
    out = openssl_matrix.run_release(this_release, tiny_suite, 120, tmp_path)
    assert not out.ok
    assert out.counts == {}, "tests ran on libraries from another directory"
    assert f"want one, in {empty}" in out.error
