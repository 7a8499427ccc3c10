"""``pipetls build-openssl``: the patched OpenSSL 3.5 LTS of openssl_patches/.

The builder itself is ``openssl_patches/build.py`` of the pipetls source
checkout (stdlib-only Python; the patch series is its source of truth and
is not copied into the wheel).  This command finds it and runs it in a child
process with the same options; its last line on stdout is the prefix, its
progress goes to stderr.

Where the patch series is looked for, first found wins:

1. ``--patches DIR`` (a directory holding ``series`` and, unless
   ``build.py`` is beside it, the checkout's build.py is used);
2. ``$PIPETLS_PATCHES``;
3. ``openssl_patches/`` in the current directory or any parent;
4. ``openssl_patches/`` above this file (a source checkout, or an editable
   install).

From an installed wheel, run it inside the source checkout, or pass
``--patches /path/to/pipetls/openssl_patches``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

__all__ = ["add_parser", "main", "find_patch_dir", "patched_prefix", "cached_prefixes"]

_HELP = "build the patched OpenSSL 3.5 (openssl_patches/) into a cache; print its prefix"


def _is_patch_dir(d: Path) -> bool:
    return (d / "series").is_file() and (d / "build.py").is_file()


def find_patch_dir(explicit: Optional[str] = None) -> Optional[Path]:
    """The openssl_patches directory (with series and build.py), or None."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    env = os.environ.get("PIPETLS_PATCHES")
    if env:
        candidates.append(Path(env))
    for base in (Path.cwd(), Path(__file__).resolve().parent):
        for d in (base, *base.parents):
            candidates.append(d / "openssl_patches")
    for c in candidates:
        if _is_patch_dir(c):
            return c.resolve()
    return None


def _cache_dir() -> Path:
    """The cache of openssl_patches/build.py (its default_cache())."""
    env = os.environ.get("PIPETLS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "pipetls"


def cached_prefixes() -> list[tuple[Path, dict[str, Any]]]:
    """(prefix, BUILD-INFO) of every complete cached build whose series has a
    patch 0002 (TLS 1.3 through provider ciphers), newest first."""
    import json

    found = []
    cache = _cache_dir()
    try:
        dirs = sorted(cache.glob("openssl-*-*"))
    except OSError:
        return []
    for d in dirs:
        try:
            info = json.loads((d / "BUILD-INFO.json").read_text())
        except (OSError, ValueError):
            continue
        names = [str(p.get("name", "")) for p in info.get("patches", []) if isinstance(p, dict)]
        if any(n.startswith("0002-") for n in names) and (d / "prefix" / "bin" / "openssl").is_file():
            found.append((d / "prefix", info))
    found.sort(key=lambda pi: str(pi[1].get("built_at", "")), reverse=True)
    return found


def patched_prefix() -> str:
    """The patched OpenSSL for ``--openssl patched``: ``$PIPETLS_OPENSSL``,
    else the cached build of this checkout's patch series (the key
    openssl_patches/build.py gives it), else the newest cached build with
    patch 0002.  SystemExit saying how to get one when there is none."""
    env = os.environ.get("PIPETLS_OPENSSL")
    if env:
        if not os.path.isdir(env):
            raise SystemExit("pipetls: PIPETLS_OPENSSL=%s is not a directory" % env)
        return os.path.abspath(env)
    builds = cached_prefixes()
    patches = find_patch_dir()
    if patches is not None and builds:
        key = _series_key(patches)
        for prefix, info in builds:
            if key is not None and info.get("key") == key:
                return str(prefix)
    if builds:
        return str(builds[0][0])
    raise SystemExit(
        "pipetls: no patched OpenSSL: set PIPETLS_OPENSSL=<prefix of an OpenSSL 3.5 with "
        "patch 0002>, or build one with 'pipetls build-openssl' (cached in %s; "
        "$PIPETLS_CACHE)" % _cache_dir())


def _series_key(patch_dir: Path) -> Optional[str]:
    """build.py's key of the series in patch_dir (None if it cannot tell)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_pipetls_openssl_build", patch_dir / "build.py")
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        return str(mod.series_key(mod.read_series(patch_dir)))
    except Exception:  # an older or broken build.py: fall back to the newest build
        return None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``build-openssl`` on an argparse subparsers object."""
    p = subparsers.add_parser("build-openssl", help=_HELP, description=_HELP + ". "
                              "Progress goes to stderr; the last stdout line is the "
                              "prefix (bin/openssl, lib/libssl.so.3, ...). Run programs "
                              "on it with LD_LIBRARY_PATH=<prefix>/lib, in a process of "
                              "their own.")
    p.add_argument("--tarball", metavar="PATH",
                   help="OpenSSL 3.5.x source tarball (default: Debian trixie's source "
                        "via apt-get source)")
    p.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of --tarball")
    p.add_argument("--keyring", metavar="FILE",
                   help="armored OpenPGP keys to check TARBALL.asc with")
    p.add_argument("--debian-version", metavar="VERSION",
                   help="Debian source version to fetch (default: newest 3.5 listed)")
    p.add_argument("--cache", metavar="DIR",
                   help="cache directory (default: $PIPETLS_CACHE or ~/.cache/pipetls)")
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="parallel make jobs (default: number of CPUs)")
    p.add_argument("--patches", metavar="DIR",
                   help="the openssl_patches directory (default: found from the "
                        "current directory or the source checkout)")
    p.add_argument("--openssl-tests", action="store_true",
                   help="also build and run OpenSSL's own tests for the patches "
                        "(test_sslapi, test_ssl_new)")
    p.add_argument("--rebuild", action="store_true", help="ignore a cached build")
    p.add_argument("--update", action="store_true",
                   help="build the newest listed Debian version even if an older one "
                        "is cached")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=main)
    assert isinstance(p, argparse.ArgumentParser)
    return p


def builder_argv(args: argparse.Namespace, patch_dir: Path) -> list[str]:
    """The build.py command line for parsed ``args``."""
    argv = [sys.executable, str(patch_dir / "build.py"), "--patches", str(patch_dir)]
    for opt, attr in (("--tarball", "tarball"), ("--sha256", "sha256"),
                      ("--keyring", "keyring"), ("--version", "debian_version"),
                      ("--cache", "cache"), ("--jobs", "jobs")):
        value = getattr(args, attr, None)
        if value is not None:
            argv += [opt, str(value)]
    for opt, attr in (("--openssl-tests", "openssl_tests"), ("--rebuild", "rebuild"),
                      ("--update", "update"), ("--quiet", "quiet")):
        if getattr(args, attr, False):
            argv.append(opt)
    return argv


def main(args: argparse.Namespace) -> int:
    patch_dir = find_patch_dir(getattr(args, "patches", None))
    if patch_dir is None:
        print("pipetls build-openssl: openssl_patches/ (series, build.py) not found: "
              "run it inside the pipetls source checkout, or pass --patches DIR "
              "(or set PIPETLS_PATCHES)", file=sys.stderr)
        return 2
    try:
        return subprocess.call(builder_argv(args, patch_dir))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="pipetls")
    add_parser(_parser.add_subparsers(dest="command"))
    _args = _parser.parse_args(["build-openssl", *sys.argv[1:]])
    sys.exit(main(_args))
