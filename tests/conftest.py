"""The fixtures of the pipetls tests. Helpers live in tests/support/
(``from support.peers import OpenSSLServer`` ...); nothing imports this
file. pytest puts ``tests/`` on ``sys.path`` because it holds this conftest
and no ``__init__.py``, so ``support`` is importable from every test module.

Fixtures
    engine_path   (session) ``str`` path of the ``pipetls.so`` under test:
                  ``$PIPETLS_ENGINE``, else ``pipetls.engine_path()``, else
                  ``<repo>/build/pipetls.so``. Fails (never skips) if none.
    certs         (session) the RSA test PKI (support.pki.Certs)
    pt_certs      (session) the same PKI with P-256 keys (ECDSA suites)
    pt_engine     (session) the process-wide shared engine, registered
    stock         (session) the stock oracle: the same case in a child
                  process without the engine (support.stock)

    The patched OpenSSL 3.5 (support.patched; skipped without a build,
    failed with PIPETLS_PATCHED_REQUIRED=1, what ``tox -e patched`` sets):
    prefix        (session) ``Path`` of the patched build's prefix
    openssl35     (session) ``str`` its openssl program, checked to be 3.5
    engine35      (session) ``str`` the engine loaded into it:
                  ``$PIPETLS_PATCHED_ENGINE``, else ``engine_path``
    build35       (session) ``Path`` the provider built against the prefix
                  (``build/provider-3.5``, or ``$PIPETLS_PROVIDER_BUILD``)
    module35      (session) ``Path`` the provider module in ``build35``

Every test, automatically:
    * OpenSSL's error queue (this thread) is empty before and after it
      (as pyca/cryptography's conftest checks);
    * the shared engine's process-wide settings (threads, inline_below) are
      the same after it as before (a test that changes them restores them:
      support.api.engine_settings).

Markers: ``needs_program(name, ...)`` -- see support.programs (a missing
program skips locally naming its install command, and fails under CI=true).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
try:
    import pipetls
except ModuleNotFoundError as exc:   # a source tree without `pip install .`: the
    if exc.name != "pipetls":        # one place the tests' import path is set
        raise
    sys.path.insert(0, str(REPO / "pybind"))
    import pipetls
from pipetls import _ffi
from support import patched, programs, rfc
from support.pki import Certs, make_certs
from support.stock import StockOracle


# -------------------------------------------------------------------- engine

@pytest.fixture(scope="session")
def engine_path() -> str:
    """Absolute path of the pipetls.so under test.

    Order: ``$PIPETLS_ENGINE`` (what ``tox -e sanitize``/``tsan`` set);
    ``pipetls.engine_path()`` of the installed package; ``build/pipetls.so``
    of a standalone cmake build when the package is not installed.
    """
    env = os.environ.get("PIPETLS_ENGINE")
    if env:
        if not Path(env).is_file():
            pytest.fail(f"PIPETLS_ENGINE={env!r} is not a file")
        return str(Path(env).resolve())

    notes = []
    try:
        import pipetls  # noqa: PLC0415 - optional at collection time
    except ModuleNotFoundError as exc:
        if exc.name != "pipetls":
            raise
        notes.append("the pipetls package is not installed")
    else:
        finder = getattr(pipetls, "engine_path", None)
        if finder is None:
            notes.append("pipetls has no engine_path()")
        else:
            try:
                found = finder()
            except pipetls.EngineError as exc:
                notes.append(f"pipetls.engine_path(): {exc}")
            else:
                if found and Path(found).is_file():
                    return str(Path(found).resolve())
                notes.append(f"pipetls.engine_path() returned {found!r}, not a file")

    built = REPO / "build" / "pipetls.so"
    if built.is_file():
        return str(built)
    notes.append(f"{built} does not exist")
    pytest.fail(
        "pipetls.so not found (" + "; ".join(notes) + "). Build it with "
        "'cmake -S . -B build && cmake --build build', install the package "
        "with 'pip install .', or set PIPETLS_ENGINE=/path/to/pipetls.so."
    )


@pytest.fixture(scope="session")
def pt_engine():
    """The process-wide shared engine, registered for its ciphers."""
    return pipetls.load_engine(register=True)


# --------------------------------------------------------------------- certs

@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    """The RSA test PKI (see support.pki), made once per test session."""
    return make_certs(tmp_path_factory.mktemp("certs"), key="rsa")


@pytest.fixture(scope="session")
def pt_certs(tmp_path_factory) -> Certs:
    """The P-256 test PKI (see support.pki), made once per test session."""
    return make_certs(tmp_path_factory.mktemp("pt_certs"), key="ec")


# ---------------------------------------------------- patched OpenSSL 3.5

@pytest.fixture(scope="session")
def prefix() -> Path:
    """The prefix of the patched OpenSSL build."""
    return patched.find_prefix()


@pytest.fixture(scope="session")
def openssl35(prefix) -> str:
    """The patched build's openssl program; checked to be 3.5 and patched."""
    return patched.openssl_program(prefix)


@pytest.fixture(scope="session")
def engine35(engine_path) -> str:
    return patched.engine_for_35(engine_path)


@pytest.fixture(scope="session")
def build35(prefix) -> Path:
    return patched.provider_build(prefix)


@pytest.fixture(scope="session")
def module35(build35) -> Path:
    return build35 / patched.MODULE


# -------------------------------------------------------------- stock, peers

@pytest.fixture(scope="session")
def stock():
    """The stock oracle (support.stock): one child process without the
    engine that answers the same cases as the engine, in this run."""
    oracle = StockOracle()
    yield oracle
    oracle.close()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_program(name, ...): the test runs these programs; missing "
        "ones skip it locally (naming the install command) and fail it under CI=true")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_program"):
        for program in mark.args:
            programs.require(program)


def pytest_terminal_summary(terminalreporter):
    if rfc.SEEN:
        terminalreporter.section("stock OpenSSL deviations from the RFCs (documented)")
        for line in sorted(set(rfc.SEEN)):
            terminalreporter.write_line(line)


# ------------------------------------------------------- around every test

@pytest.fixture(autouse=True)
def clean_error_queue():
    """OpenSSL's error queue (this thread) is empty before and after every
    test; what a test leaves there would confuse the next user."""
    before = _ffi.ERR_peek_error()
    _ffi.ERR_clear_error()
    assert before == 0, "OpenSSL's error queue was not empty before the test: 0x%x" % before
    yield
    leftover = _ffi.ERR_peek_error()
    _ffi.ERR_clear_error()
    assert leftover == 0, "the test left errors in OpenSSL's queue: 0x%x" % leftover


def _engine_settings():
    e = pipetls.shared_engine()
    if e is None or e.closed:
        return None
    st = e.stats()
    return {"threads": st.lanes, "inline_below": st.inline_below, "adaptive": st.adaptive,
            "cpus": st.cpus}


@pytest.fixture(autouse=True)
def engine_settings_restored():
    """The shared engine's process-wide settings are the same after every
    test as before it (a test or module that changes them restores them)."""
    before = _engine_settings()
    yield
    after = _engine_settings()
    if before is not None and after is not None:
        assert after == before, f"the test changed the shared engine's settings: {before} -> {after}"
