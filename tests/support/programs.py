"""The external programs the tests talk to, and the one skip policy.

A test that needs a peer program (``gnutls-cli``, ``gnutls-serv``,
``curl``, ``openssl``) calls :func:`require` (or carries the
``needs_program`` marker, which conftest.py turns into that call):

* the program is on ``PATH``: its path is returned;
* it is missing and ``CI`` is set (``CI=true``, what CI runs with): the test
  **fails** -- a CI run must never pass by skipping its peers;
* it is missing locally: the test is skipped, and the reason names the
  exact command that installs it (``apt-get install gnutls-bin``).

``openssl`` is looked up through the environment, never at a fixed
``/usr/bin`` path: ``$PIPETLS_OPENSSL`` first (the OpenSSL prefix the
package itself loads libssl from: ``<prefix>/bin/openssl``; or the path of
an ``openssl`` program), then ``PATH``. A run against another OpenSSL
release (a private prefix used through ``LD_LIBRARY_PATH``) puts that
prefix's ``bin`` first on ``PATH`` (or sets ``PIPETLS_OPENSSL``), and every
peer these tests start then is that release's ``openssl``.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import pytest

# program -> the command that installs it on Debian/Ubuntu (what CI runs on)
INSTALL = {
    "gnutls-cli": "apt-get install gnutls-bin",
    "gnutls-serv": "apt-get install gnutls-bin",
    "curl": "apt-get install curl",
    "nginx": "apt-get install nginx",
    "openssl": "apt-get install openssl",
    "gcc": "apt-get install gcc",
    "cc": "apt-get install gcc",
}


def in_ci() -> bool:
    """True when the environment says this is a CI run (``CI`` set to
    anything but empty/0/false/no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find(program: str) -> Optional[str]:
    """Absolute path of ``program`` (``openssl``: ``$PIPETLS_OPENSSL``
    first), or None."""
    if program == "openssl":
        env = os.environ.get("PIPETLS_OPENSSL")
        if env:
            for candidate in (os.path.join(env, "bin", "openssl"), env):
                if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                    return os.path.abspath(candidate)
    return shutil.which(program)


def missing_message(program: str) -> str:
    how = INSTALL.get(program)
    return f"{program} is not installed" + (f"; install it with: {how}" if how else "")


def require(program: str) -> str:
    """The path of ``program``; else skip (locally, naming the install
    command) or fail (``CI=true``)."""
    path = find(program)
    if path is not None:
        return path
    msg = missing_message(program)
    if in_ci():
        pytest.fail(f"CI=true: a missing peer is a failure, not a skip: {msg}",
                    pytrace=False)
    pytest.skip(msg)


def openssl_program() -> str:
    """The ``openssl`` program every peer runs (``$PIPETLS_OPENSSL`` or
    ``PATH``); the bare name when none is found, so that the process that
    needs it fails with "No such file" (the tests that start it call
    :func:`require` first)."""
    return find("openssl") or "openssl"


def require_module(name: str, install: str):
    """The module ``name``; else skip (locally, naming ``install``) or fail
    (``CI=true``), like :func:`require`."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        msg = f"Python module {name} is not installed; install it with: {install}"
        if in_ci():
            pytest.fail(f"CI=true: a missing peer is a failure, not a skip: {msg}",
                        pytrace=False)
        pytest.skip(msg)
