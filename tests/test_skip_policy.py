"""The skip policy of support.programs, end to end: a pytest run of a real
test that needs ``gnutls-cli``, with a PATH that lacks it.

* with ``CI=true`` the test fails, naming the program and the command that
  installs it -- a CI run never passes by skipping its peers;
* without ``CI`` it is skipped, and the reason is that command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import programs

HERE = Path(__file__).resolve().parent
# one gnutls case of a real test (the reader is a needs_program parameter)
NODE = ("test_tamper.py::test_stock_reader_refuses_tampered_pipelined_records"
        "[flip-type-k2-aes128gcm-gnutls]")


def run_without_gnutls(tmp_path, ci):
    """pytest on NODE with a PATH holding only openssl (no gnutls-cli)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "openssl").symlink_to(programs.require("openssl"))
    env = dict(os.environ, PATH=str(bindir))
    env.pop("CI", None)
    env.pop("PIPETLS_OPENSSL", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rfEs", str(HERE / NODE)],
                          capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(HERE.parent))


@pytest.mark.parametrize("ci", [True, False], ids=["CI=true", "local"])
def test_missing_peer(tmp_path, ci):
    """CI=true: the run fails (refused in setup, pytest reports an error);
    locally: the test is skipped. Either way the message is the command."""
    r = run_without_gnutls(tmp_path, ci=ci)
    out = r.stdout + r.stderr
    assert r.returncode == (1 if ci else 0), out[-3000:]
    if ci:
        assert "1 error" in out and "skipped" not in out, out[-3000:]
    else:
        assert "1 skipped" in out and "error" not in out and "failed" not in out, out[-3000:]
    assert "gnutls-cli is not installed; install it with: apt-get install gnutls-bin" in out


@pytest.mark.parametrize("value,ci", [("true", True), ("1", True), ("", False),
                                      ("false", False), ("0", False)])
def test_ci_values(monkeypatch, value, ci):
    monkeypatch.setenv("CI", value)
    assert programs.in_ci() is ci


def test_openssl_comes_from_the_environment(tmp_path, monkeypatch):
    """``$PIPETLS_OPENSSL`` (a prefix, as the package reads it, or the
    program) wins over PATH; PATH otherwise -- never a fixed path."""
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    prog = prefix / "bin" / "openssl"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    monkeypatch.setenv("PIPETLS_OPENSSL", str(prefix))
    assert programs.find("openssl") == str(prog)
    monkeypatch.setenv("PIPETLS_OPENSSL", str(prog))
    assert programs.find("openssl") == str(prog)
    monkeypatch.delenv("PIPETLS_OPENSSL")
    monkeypatch.setenv("PATH", str(prefix / "bin"))
    assert programs.find("openssl") == str(prog)
