"""The patched OpenSSL 3.5 (openssl_patches/) and the provider built on it.

What tests/test_patched.py, tests/test_provider.py and
tests/test_evp_pipeline.py share; the fixtures over it (``prefix``,
``openssl35``, ``engine35``, ``build35``, ``module35``) are in conftest.py.

Invariant 7 (DESIGN.md): the patched OpenSSL runs only in processes of its
own. :func:`penv` is the environment of such a process
(``LD_LIBRARY_PATH=<prefix>/lib``, an explicit ``OPENSSL_CONF``);
:func:`mapped_ssl_libs` and :func:`assert_only_patched` check, from
/proc/<pid>/maps, that it mapped no other libssl/libcrypto.

The prefix (:func:`find_prefix`): ``$PIPETLS_PATCHED_PREFIX``; else, with
``PIPETLS_PATCHED_REQUIRED=1`` (what ``tox -e patched`` sets) the output of
``python3 openssl_patches/build.py`` (instant when the cache holds the
build).  Without either, the tests are skipped; with
``PIPETLS_PATCHED_REQUIRED=1`` a missing or broken build fails them.

The provider (:func:`provider_build`): ``cmake`` of the project against the
prefix into ``build/provider-3.5``, or ``$PIPETLS_PROVIDER_BUILD``
(:func:`cmake_build` also makes the sanitizer builds).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
MODULE = "pipetls-provider.so"


# ------------------------------------------------------------ the prefix

def _required() -> bool:
    return os.environ.get("PIPETLS_PATCHED_REQUIRED", "") not in ("", "0")


def _unavailable(msg: str):
    if _required():
        pytest.fail(msg + " (PIPETLS_PATCHED_REQUIRED is set)", pytrace=False)
    pytest.skip(msg + "; run 'tox -e patched' or set PIPETLS_PATCHED_PREFIX")


def find_prefix() -> Path:
    """The prefix of the patched OpenSSL build (skips or fails without one)."""
    env = os.environ.get("PIPETLS_PATCHED_PREFIX")
    if env:
        p = Path(env)
    elif _required():
        proc = subprocess.run(
            [sys.executable, str(REPO / "openssl_patches" / "build.py"), "-q"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=3 * 3600)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            pytest.fail("openssl_patches/build.py failed:\n" + proc.stderr[-3000:],
                        pytrace=False)
        p = Path(lines[-1])
    else:
        _unavailable("no patched OpenSSL build")
    if not (p / "bin" / "openssl").is_file() or not (p / "lib" / "libssl.so.3").is_file():
        _unavailable(f"{p} is not a patched OpenSSL prefix (bin/openssl, lib/libssl.so.3)")
    return p.resolve()


def openssl_program(prefix: Path) -> str:
    """The patched build's openssl program; checked to be 3.5 and patched."""
    prog = str(prefix / "bin" / "openssl")
    proc = subprocess.run([prog, "version"], capture_output=True, text=True,
                          env=penv(prefix, conf=None), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OpenSSL 3.5."), proc.stdout
    return prog


def engine_for_35(engine_path: str) -> str:
    """The engine loaded into the patched build: ``$PIPETLS_PATCHED_ENGINE``,
    else the one under test (built against the system's 3.0 headers)."""
    return os.environ.get("PIPETLS_PATCHED_ENGINE") or engine_path


# ------------------------------------------------- processes on the prefix

def penv(prefix: Path, conf, **extra) -> dict:
    """Environment of a process that runs on the patched OpenSSL only.

    ``conf``: the OPENSSL_CONF file, or None for an empty configuration (so
    neither the system's openssl.cnf nor a stray OPENSSL_CONF is read).
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
                        "PIPETLS_STATS", "LD_PRELOAD")}
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(prefix / "lib")] + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
    env["OPENSSL_CONF"] = str(conf) if conf is not None else os.devnull
    env.update({k: str(v) for k, v in extra.items()})
    return env


def mapped_ssl_libs(pid: int) -> set:
    """Paths of libssl/libcrypto mapped into process pid."""
    found = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                path = line.split(None, 5)[-1].strip()
                if re.search(r"/lib(ssl|crypto)\.so", path):
                    found.add(path)
    except OSError:
        pass
    return found


def assert_only_patched(libs: set, prefix: Path) -> None:
    assert libs, "no libssl/libcrypto mapping seen"
    foreign = {p for p in libs if not p.startswith(str(prefix / "lib") + "/")}
    assert not foreign, f"process mapped OpenSSL libraries outside {prefix}: {foreign}"


# ------------------------------------------------------------ the provider

def cmake_build(build: Path, prefix: Path, *extra: str) -> Path:
    """Configure and build the project into build (once per session)."""
    src = prefix.parent / "src"
    args = ["cmake", "-S", str(REPO), "-B", str(build),
            f"-DOPENSSL_ROOT_DIR={prefix}", "-DPIPETLS_WERROR=ON", *extra]
    if (src / "test" / "evp_test.c").is_file():
        args.append(f"-DPIPETLS_OPENSSL_SRC={src}")
    for argv in (args, ["cmake", "--build", str(build), "--parallel", "2"]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{argv}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert (build / MODULE).is_file(), f"{build / MODULE} was not built"
    return build


def provider_build(prefix: Path) -> Path:
    """The provider's build against the prefix: ``$PIPETLS_PROVIDER_BUILD``,
    else ``build/provider-3.5``."""
    env = os.environ.get("PIPETLS_PROVIDER_BUILD")
    return cmake_build(Path(env) if env else REPO / "build" / "provider-3.5", prefix)
