#!/usr/bin/env python3
"""Fetch, check, patch, build and cache OpenSSL 3.5 LTS with openssl_patches/.

    python3 openssl_patches/build.py [--tarball PATH [--sha256 HEX]]
                                     [--cache DIR] [--jobs N] [--patches DIR]
                                     [--openssl-tests] [--rebuild] [--update]

The last line on standard output is the prefix of the build; everything else
(progress, notes) goes to standard error, so ``PREFIX=$(python3 build.py)``
works.  The prefix holds ``bin/openssl``, ``lib/libssl.so.3``,
``lib/libcrypto.so.3``, ``lib/engines-3``, ``lib/ossl-modules``, ``include``
and ``ssl/`` (its OPENSSLDIR).  The program and the libraries carry a RUNPATH
to ``<prefix>/lib``; any other program (Python, curl, ...) needs
``LD_LIBRARY_PATH=<prefix>/lib`` to run on the patched libraries, in a process
of its own (DESIGN.md, invariant 7).

Source.  Without ``--tarball`` the OpenSSL 3.5.x source comes from Debian's
archive (trixie): ``apt-get source --download-only openssl=<version>`` for the
newest 3.5 version listed that the archive serves.  Running as root with no
trixie ``deb-src`` entry, one is added
(/etc/apt/sources.list.d/pipetls-trixie-src.sources) and ``apt-get update``
run.  The download is checked: size and SHA-256 of the orig tarball against
the .dsc (which apt checked against the signed Sources index), and, when gpg
and gpgv are installed, OpenSSL's signature (orig.tar.gz.asc) against the
signing keys Debian ships in debian/upstream/signing-key.asc.  With
``--tarball`` (an openssl-3.5.x.tar.gz from openssl.org, or Debian's orig
tarball) the tarball is checked to be a 3.5 source tree, against ``--sha256``
when given, and against ``PATH.asc`` when that file, ``--keyring`` and gpgv
are there.

Patches.  ``series`` in the patch directory (default: the directory of this
script; ``--patches``) lists the patches, one file name a line, applied in
order with ``patch -p1 --fuzz=0``.  A patch that does not apply stops the
build, naming it.

Cache.  ``<cache>/openssl-<version>-<key>``, where <cache> is ``--cache``,
else ``$PIPETLS_CACHE``, else ``~/.cache/pipetls``, and <key> hashes the
patch series (names and contents) and this script's build recipe.  The
directory holds ``src/`` (the patched tree, built in place), ``prefix/``,
``build.log``, and ``BUILD-INFO.json``, written last: a run that finds it,
matching, returns at once.  Downloads are kept in ``<cache>/downloads``.
Without ``--tarball``, a complete build of any listed 3.5 version is reused;
``--update`` builds the newest listed one instead.

``--openssl-tests`` also builds OpenSSL's test programs and runs the subset
that concerns the patches (``make run_tests TESTS="test_sslapi
test_ssl_new"``: sslapitest, including test_pipelining with the dasync engine
and test_ssl_conf_pipelining_cmds, and the SSL_CONF driven ssl_test suites).
The static libraries and test programs roughly double the build time.

Needs: python3 (stdlib only), perl (with IPC::Cmd; Debian: perl), make, a C
compiler, patch, tar/gzip (Python's tarfile), apt-get (for the archive), gpg
and gpgv (optional, for the upstream signature).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

# Bump when the configuration or the build steps change: it is part of the
# cache key, so an old build is never mistaken for a new one.
RECIPE = "pipetls-openssl-build/1"
CONFIGURE_OPTIONS = ["shared", "no-docs"]
# What the prefix needs (no static libraries, no test or fuzz programs).
BUILD_TARGETS = ["libcrypto.so", "libssl.so", "apps/openssl",
                 "build_modules_nodep", "libcrypto.pc", "libssl.pc", "openssl.pc"]
# OpenSSL's own tests that concern the patch series.
OPENSSL_TESTS = ["test_sslapi", "test_ssl_new"]
# util/shlib_wrap.sh matters: without it wrap.pl runs the test programs that
# link libssl.so dynamically on whatever libssl.so.3 the loader finds.
OPENSSL_TEST_TARGETS = ["util/wrap.pl", "util/shlib_wrap.sh", "test/sslapitest",
                        "test/ssl_handshake_rtt_test", "test/ssl_test",
                        "build_modules_nodep"]

DEBIAN_SOURCE_SUITE = "trixie"
DEBIAN_SOURCES_FILE = "/etc/apt/sources.list.d/pipetls-trixie-src.sources"
DEBIAN_SOURCES_TEXT = """\
# Added by pipetls (openssl_patches/build.py): OpenSSL 3.5 LTS source from
# Debian trixie. Source entries only: no binary package comes from here.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


class BuildError(Exception):
    """A failure with a message for the user (no traceback)."""


# --------------------------------------------------------------------- output

_T0 = time.monotonic()
_QUIET = False


def note(msg: str) -> None:
    if not _QUIET:
        print(f"[build-openssl {time.monotonic() - _T0:6.0f}s] {msg}",
              file=sys.stderr, flush=True)


def _fmt_secs(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s"


def run_logged(argv, *, cwd: Path, log: Path, what: str, total: int = 0,
               env=None) -> None:
    """Run argv, output appended to log; show progress (compiled files)."""
    tty = sys.stderr.isatty() and not _QUIET
    started = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        start_pos = out.tell()
        proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    count = 0
    pos = start_pos
    last_report = started
    try:
        while True:
            try:
                rc = proc.wait(1.0)
            except subprocess.TimeoutExpired:
                rc = None
            with open(log, "rb") as f:
                f.seek(pos)
                chunk = f.read()
            # count whole lines only
            cut = chunk.rfind(b"\n") + 1
            count += chunk[:cut].count(b" -c -o ") + chunk[:cut].count(b" -c  -o ")
            pos += cut
            now = time.monotonic()
            if not _QUIET:
                done = f"{count}/{total}" if total else str(count)
                line = f"[build-openssl] {what}: " + (
                    f"{done} files compiled, " if count or total else "") + \
                    _fmt_secs(now - started)
                if tty:
                    print("\r" + line, end="", file=sys.stderr, flush=True)
                elif now - last_report >= 30 or rc is not None:
                    print(line, file=sys.stderr, flush=True)
                    last_report = now
            if rc is not None:
                break
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    if tty:
        print(file=sys.stderr, flush=True)
    if rc != 0:
        tail = log.read_bytes()[-4000:].decode(errors="replace")
        raise BuildError(f"{what} failed (exit {rc}); last lines of {log}:\n{tail}")


def run_checked(argv, *, what: str, cwd=None, env=None) -> str:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n"
                         f"$ {' '.join(map(str, argv))}\n"
                         f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


# -------------------------------------------------------------------- patches

def read_series(patch_dir: Path) -> list:
    series = patch_dir / "series"
    if not series.is_file():
        raise BuildError(f"no patch series: {series} does not exist")
    patches = []
    for n, raw in enumerate(series.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        p = patch_dir / line
        if not p.is_file():
            raise BuildError(f"{series}:{n}: patch {line!r} does not exist")
        patches.append(p)
    return patches


def series_key(patches: list) -> str:
    h = hashlib.sha256()
    h.update(RECIPE.encode() + b"\0")
    h.update(json.dumps([CONFIGURE_OPTIONS, BUILD_TARGETS]).encode() + b"\0")
    for p in patches:
        h.update(p.name.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"\0")
    return h.hexdigest()[:12]


def apply_patches(src: Path, patches: list, version: str) -> None:
    for p in patches:
        base = ["patch", "-p1", "--forward", "--batch", "--fuzz=0",
                "--no-backup-if-mismatch", "-d", str(src), "-i", str(p)]
        dry = subprocess.run(base + ["--dry-run"], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL)
        if dry.returncode != 0:
            raise BuildError(
                f"patch {p.name} does not apply to OpenSSL {version}:\n"
                f"{dry.stdout}{dry.stderr}")
        run_checked(base, what=f"applying {p.name}")
        note(f"applied {p.name}")


# --------------------------------------------------------------------- source

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tarball_version(tarball: Path) -> tuple:
    """(version, top directory) of an OpenSSL source tarball, from VERSION.dat."""
    try:
        with tarfile.open(tarball) as tf:
            for m in tf:
                parts = m.name.split("/")
                if len(parts) == 2 and parts[1] == "VERSION.dat" and m.isfile():
                    text = tf.extractfile(m).read().decode()
                    top = parts[0]
                    break
            else:
                raise BuildError(f"{tarball}: no <dir>/VERSION.dat: not an "
                                 "OpenSSL 3 source tarball")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BuildError(f"{tarball}: not a readable tarball ({exc})") from None
    fields = dict(re.findall(r"^([A-Z_]+)=\"?([^\"\n]*)\"?$", text, re.M))
    try:
        major, minor, patch = (int(fields[k]) for k in ("MAJOR", "MINOR", "PATCH"))
    except (KeyError, ValueError):
        raise BuildError(f"{tarball}: VERSION.dat is not understood") from None
    if (major, minor) != (3, 5):
        raise BuildError(f"{tarball} holds OpenSSL {major}.{minor}.{patch}: "
                         "the patch series is for OpenSSL 3.5 LTS")
    version = f"{major}.{minor}.{patch}"
    if fields.get("PRE_RELEASE_TAG"):
        version += "-" + fields["PRE_RELEASE_TAG"]
    return version, top


def verify_signature(tarball: Path, asc: Path, key_asc_text: str) -> bool:
    """Check tarball against asc with the armored keys; False if gpg is missing."""
    if not (shutil.which("gpg") and shutil.which("gpgv")):
        return False
    with tempfile.TemporaryDirectory(prefix="pipetls-gpg-") as home:
        keys = Path(home, "keys.asc")
        keys.write_text(key_asc_text)
        keyring = Path(home, "keys.gpg")
        run_checked(["gpg", "--batch", "--homedir", home, "--yes", "--dearmor",
                     "-o", keyring, keys], what="reading OpenSSL's signing keys")
        proc = subprocess.run(["gpgv", "--homedir", home, "--keyring", keyring,
                               asc, tarball], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BuildError(f"BAD SIGNATURE: {tarball} does not match {asc}:\n"
                             f"{proc.stderr}")
        signer = re.search(r"Good signature from \"([^\"]*)\"", proc.stderr)
        note(f"upstream signature good ({signer.group(1) if signer else 'gpgv'})")
    return True


def debian_versions() -> list:
    """OpenSSL 3.5 source versions apt knows, newest first."""
    if not shutil.which("apt-cache"):
        return []
    proc = subprocess.run(["apt-cache", "showsrc", "openssl"],
                          capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    versions = set()
    package = None
    for line in proc.stdout.splitlines():
        if line.startswith("Package:"):
            package = line.split(":", 1)[1].strip()
        elif line.startswith("Version:") and package == "openssl":
            v = line.split(":", 1)[1].strip()
            if re.match(r"^(\d+:)?3\.5\.", v):
                versions.add(v)

    def newer(a, b):
        return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0

    ordered = []
    for v in versions:  # insertion sort with dpkg's ordering
        i = 0
        while i < len(ordered) and newer(ordered[i], v):
            i += 1
        ordered.insert(i, v)
    return ordered


def upstream_of(debver: str) -> str:
    v = debver.split(":", 1)[-1]
    return v.rsplit("-", 1)[0] if "-" in v else v


def ensure_deb_src() -> None:
    """Add a trixie deb-src entry (root only) when apt knows no 3.5 source."""
    if os.geteuid() != 0:
        raise BuildError(
            "apt knows no OpenSSL 3.5 source. As root, add a deb-src entry for "
            "Debian trixie, e.g. this file as " + DEBIAN_SOURCES_FILE + ":\n\n"
            + DEBIAN_SOURCES_TEXT + "\nthen run 'apt-get update'; or pass "
            "--tarball openssl-3.5.x.tar.gz (from openssl.org).")
    if not Path("/usr/share/keyrings/debian-archive-keyring.gpg").is_file():
        raise BuildError("debian-archive-keyring is not installed; install it or "
                         "pass --tarball")
    note(f"adding {DEBIAN_SOURCES_FILE} (deb-src trixie) and running apt-get update")
    Path(DEBIAN_SOURCES_FILE).write_text(DEBIAN_SOURCES_TEXT)
    run_checked(["apt-get", "update"], what="apt-get update")


def parse_dsc(dsc: Path) -> dict:
    """{file name: (size, sha256)} from the Checksums-Sha256 field."""
    files = {}
    in_field = False
    for line in dsc.read_text(errors="replace").splitlines():
        if line.startswith("Checksums-Sha256:"):
            in_field = True
            continue
        if in_field:
            if not line.startswith(" "):
                break
            digest, size, name = line.split()
            files[name] = (int(size), digest)
    if not files:
        raise BuildError(f"{dsc}: no Checksums-Sha256 field")
    return files


def fetch_debian(debver: str, downloads: Path) -> dict:
    """Download (or reuse) the Debian source of debver; check it; return info."""
    upstream = upstream_of(debver)
    dest = downloads / f"openssl_{debver.replace(':', '%3a')}"
    dsc_name = f"openssl_{debver.split(':', 1)[-1]}.dsc"
    dsc = dest / dsc_name
    if not dsc.is_file():
        note(f"downloading the source of openssl {debver} (apt-get source)")
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=downloads))
        try:
            os.chmod(tmp, 0o755)
            proc = subprocess.run(
                ["apt-get", "source", "--download-only", f"openssl={debver}"],
                cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if proc.returncode != 0 or not (tmp / dsc_name).is_file():
                raise BuildError(f"apt-get source openssl={debver} failed:\n"
                                 f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    files = parse_dsc(dsc)
    for name, (size, digest) in files.items():
        f = dest / name
        if not f.is_file() or f.stat().st_size != size or sha256_file(f) != digest:
            shutil.rmtree(dest, ignore_errors=True)
            raise BuildError(f"{name} does not match {dsc_name} (size/SHA-256); "
                             "the download was removed, run again")
    orig = dest / f"openssl_{upstream}.orig.tar.gz"
    if not orig.is_file():
        raise BuildError(f"{dest}: no {orig.name}")
    info = {"origin": f"debian:{debver}", "tarball": str(orig),
            "sha256": files[orig.name][1], "checked": ["sha256 against .dsc"]}
    asc = dest / (orig.name + ".asc")
    debian_tar = next(iter(sorted(dest.glob("*.debian.tar.*"))), None)
    key_text = None
    if debian_tar is not None:
        try:
            with tarfile.open(debian_tar) as tf:
                m = tf.getmember("debian/upstream/signing-key.asc")
                key_text = tf.extractfile(m).read().decode()
        except (KeyError, tarfile.TarError):
            key_text = None
    if asc.is_file() and key_text:
        if verify_signature(orig, asc, key_text):
            info["checked"].append("upstream OpenPGP signature")
        else:
            note("gpg/gpgv not installed: upstream signature not checked "
                 "(archive hashes were)")
    return info


# ---------------------------------------------------------------------- build

def build_info_matches(d: Path, key: str, sha: str = None) -> dict:
    try:
        info = json.loads((d / "BUILD-INFO.json").read_text())
    except (OSError, ValueError):
        return {}
    if info.get("key") != key:
        return {}
    if sha is not None and info.get("source_sha256") != sha:
        return {}
    if not (d / "prefix" / "bin" / "openssl").is_file():
        return {}
    return info


def check_tools() -> None:
    missing = [t for t in ("perl", "make", "patch") if not shutil.which(t)]
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc.split()[0]) and not shutil.which("gcc"):
        missing.append("a C compiler (gcc)")
    if shutil.which("perl"):
        if subprocess.run(["perl", "-MIPC::Cmd", "-MFile::Compare", "-e", "1"],
                          capture_output=True).returncode != 0:
            missing.append("perl modules IPC::Cmd, File::Compare (Debian: perl)")
    if missing:
        raise BuildError("missing: " + ", ".join(missing) + ". On Debian: "
                         "apt-get install perl make gcc libc6-dev patch")


def install_prefix(src: Path, prefix: Path) -> None:
    """Copy what the prefix needs out of the built tree (no test programs)."""
    tmp = prefix.with_name("prefix.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    lib, bindir = tmp / "lib", tmp / "bin"
    for d in (lib / "engines-3", lib / "ossl-modules", lib / "pkgconfig", bindir,
              tmp / "include" / "openssl", tmp / "ssl"):
        d.mkdir(parents=True)
    for so in ("libcrypto.so.3", "libssl.so.3"):
        shutil.copy2(src / so, lib / so)
        os.symlink(so, lib / so.rsplit(".", 1)[0])
    shutil.copy2(src / "apps" / "openssl", bindir / "openssl")
    for h in sorted((src / "include" / "openssl").glob("*.h")):
        shutil.copy2(h, tmp / "include" / "openssl" / h.name)
    # installable engines and providers (not the test engines dasync/ossltest)
    noinst = {"dasync.so", "ossltest.so"}
    for so in sorted((src / "engines").glob("*.so")):
        if so.name not in noinst:
            shutil.copy2(so, lib / "engines-3" / so.name)
    for so in sorted((src / "providers").glob("*.so")):
        shutil.copy2(so, lib / "ossl-modules" / so.name)
    for pc in ("libcrypto.pc", "libssl.pc", "openssl.pc"):
        if (src / pc).is_file():
            shutil.copy2(src / pc, lib / "pkgconfig" / pc)
    # OPENSSLDIR: the system's CA certificates, no default openssl.cnf
    if Path("/etc/ssl/certs").is_dir():
        os.symlink("/etc/ssl/certs", tmp / "ssl" / "certs")
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        os.symlink("/etc/ssl/certs/ca-certificates.crt", tmp / "ssl" / "cert.pem")
    if prefix.exists():
        shutil.rmtree(prefix)
    tmp.rename(prefix)


def count_compiles(src: Path, targets: list) -> int:
    """How many files make would compile for targets (for the progress line)."""
    proc = subprocess.run(["make", "-n", *targets], cwd=src, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    return proc.stdout.count(" -c -o ") if proc.returncode == 0 else 0


def build(args, patches: list, key: str, source: dict, version: str,
          topdir: str, build_dir: Path) -> dict:
    src, prefix, log = build_dir / "src", build_dir / "prefix", build_dir / "build.log"
    (build_dir / "BUILD-INFO.json").unlink(missing_ok=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp = src / ".pipetls-configured"
    started = time.monotonic()
    if stamp.is_file() and stamp.read_text() == key + " " + source["sha256"] \
            and not args.rebuild:
        note(f"resuming the build in {src}")
    else:
        if src.exists():
            note(f"removing the old tree {src}")
            shutil.rmtree(src)
        log.write_text("")
        note(f"extracting {Path(source['tarball']).name}")
        tmp = Path(tempfile.mkdtemp(prefix=".x-", dir=build_dir))
        with tarfile.open(source["tarball"]) as tf:
            try:
                tf.extractall(tmp, filter="tar")
            except TypeError:  # Python < 3.12 without the filter argument
                tf.extractall(tmp)
        (tmp / topdir).rename(src)
        shutil.rmtree(tmp)
        apply_patches(src, patches, version)
        note("configuring")
        configure = ["perl", "./Configure", f"--prefix={prefix}", "--libdir=lib",
                     f"--openssldir={prefix / 'ssl'}", *CONFIGURE_OPTIONS,
                     f"-Wl,-rpath,{prefix / 'lib'}", "-Wl,--enable-new-dtags"]
        run_logged(configure, cwd=src, log=log, what="Configure")
        stamp.write_text(key + " " + source["sha256"])
    jobs = str(args.jobs)
    run_logged(["make", "build_generated"], cwd=src, log=log,
               what="make build_generated")
    total = count_compiles(src, BUILD_TARGETS)
    note(f"building libcrypto, libssl, openssl, engines and providers "
         f"(make -j{jobs}; log: {log})")
    run_logged(["make", f"-j{jobs}", *BUILD_TARGETS], cwd=src, log=log,
               what="make", total=total)
    run_logged(["make", "depend"], cwd=src, log=log, what="make depend")
    install_prefix(src, prefix)
    seconds = time.monotonic() - started
    env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
    env.pop("OPENSSL_CONF", None)
    ver = run_checked([prefix / "bin" / "openssl", "version"], env=env,
                      what="running the built openssl").strip()
    if "3.5." not in ver:
        raise BuildError(f"the built openssl says {ver!r}")
    note(f"built {ver} in {_fmt_secs(seconds)} with {jobs} jobs")
    return {"seconds": round(seconds, 1), "openssl_version": ver}


def run_openssl_tests(args, build_dir: Path) -> None:
    src, log = build_dir / "src", build_dir / "openssl-tests.log"
    log.write_text("")
    total = count_compiles(src, OPENSSL_TEST_TARGETS)
    note(f"building OpenSSL's test programs for {' '.join(OPENSSL_TESTS)}")
    run_logged(["make", f"-j{args.jobs}", *OPENSSL_TEST_TARGETS], cwd=src,
               log=log, what="make tests", total=total)
    note(f"running OpenSSL's tests: make run_tests TESTS=\"{' '.join(OPENSSL_TESTS)}\" "
         f"(log: {log})")
    env = dict(os.environ, HARNESS_JOBS=str(args.jobs))
    for var in ("OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
                "LD_LIBRARY_PATH", "PIPETLS_STATS"):
        env.pop(var, None)
    t0 = time.monotonic()
    try:
        run_logged(["make", "run_tests", f"TESTS={' '.join(OPENSSL_TESTS)}"],
                   cwd=src, log=log, what="OpenSSL tests", env=env)
    finally:
        summary = [line for line in log.read_text(errors="replace").splitlines()
                   if re.match(r"^(\d+-test_\S+ \.+|All tests|Files=|Result:)", line)]
        for line in summary:
            note(line)
    note(f"OpenSSL tests passed in {_fmt_secs(time.monotonic() - t0)}")


# ----------------------------------------------------------------------- main

def default_cache() -> Path:
    env = os.environ.get("PIPETLS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "pipetls"


def build_parser(parser=None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="build.py",
        description="Build OpenSSL 3.5 LTS with the pipetls patch series "
                    "(openssl_patches/series) into a cache; print its prefix.")
    p.add_argument("--tarball", type=Path,
                   help="OpenSSL 3.5.x source tarball to use instead of "
                        "Debian's archive")
    p.add_argument("--sha256", help="expected SHA-256 of --tarball")
    p.add_argument("--keyring", type=Path,
                   help="OpenPGP keys (armored) to check TARBALL.asc with")
    p.add_argument("--version", dest="debian_version",
                   help="Debian source version to fetch (default: the newest "
                        "3.5 one listed, e.g. 3.5.7-1~deb13u2)")
    p.add_argument("--cache", type=Path, default=None,
                   help="cache directory (default: $PIPETLS_CACHE or "
                        "~/.cache/pipetls)")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 2,
                   help="parallel make jobs (default: CPUs, %(default)s)")
    p.add_argument("--patches", type=Path, default=None,
                   help="patch directory with 'series' (default: "
                        "openssl_patches/ of the source checkout)")
    p.add_argument("--openssl-tests", action="store_true",
                   help="also build and run OpenSSL's own tests for the patches "
                        f"({', '.join(OPENSSL_TESTS)})")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild even if the cache holds a complete build")
    p.add_argument("--update", action="store_true",
                   help="build the newest listed Debian version even if an "
                        "older one is cached")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress output")
    return p


def main(args) -> int:
    global _QUIET
    _QUIET = bool(getattr(args, "quiet", False))
    try:
        prefix = run(args)
    except BuildError as exc:
        print(f"build-openssl: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(prefix, flush=True)
    return 0


def run(args) -> Path:
    patch_dir = (args.patches or Path(__file__).resolve().parent).resolve()
    patches = read_series(patch_dir)
    key = series_key(patches)
    cache = (args.cache or default_cache()).expanduser().resolve()
    downloads = cache / "downloads"
    note(f"patch series {patch_dir / 'series'}: {len(patches)} patch(es), "
         f"key {key}")

    if args.tarball is not None:
        tarball = args.tarball.expanduser().resolve()
        if not tarball.is_file():
            raise BuildError(f"{tarball} does not exist")
        version, topdir = tarball_version(tarball)
        sha = sha256_file(tarball)
        if args.sha256 and args.sha256.lower() != sha:
            raise BuildError(f"{tarball}: SHA-256 is {sha}, expected {args.sha256}")
        source = {"origin": f"tarball:{tarball}", "tarball": str(tarball),
                  "sha256": sha, "checked": ["OpenSSL 3.5 VERSION.dat"]}
        if args.sha256:
            source["checked"].append("sha256 as given")
        asc = Path(str(tarball) + ".asc")
        if args.keyring and asc.is_file():
            if verify_signature(tarball, asc, args.keyring.read_text()):
                source["checked"].append("OpenPGP signature")
        build_dir = cache / f"openssl-{version}-{key}"
        info = build_info_matches(build_dir, key, sha)
        if info and not args.rebuild:
            note(f"cached: {info['openssl_version']} ({build_dir})")
            if args.openssl_tests:
                run_openssl_tests(args, build_dir)
            return build_dir / "prefix"
    else:
        versions = [args.debian_version] if args.debian_version else debian_versions()
        if not versions:
            ensure_deb_src()
            versions = debian_versions()
            if not versions:
                raise BuildError("apt still lists no OpenSSL 3.5 source after "
                                 "adding trixie; pass --tarball")
        note("Debian OpenSSL 3.5 sources listed: " + ", ".join(versions))
        if not args.rebuild and not args.update:
            for v in versions:
                d = cache / f"openssl-{upstream_of(v)}-{key}"
                info = build_info_matches(d, key)
                if info:
                    if v != versions[0]:
                        note(f"{versions[0]} is listed; using the cached "
                             f"{info['openssl_version']} (--update to build it)")
                    note(f"cached: {info['openssl_version']} ({d})")
                    if args.openssl_tests:
                        run_openssl_tests(args, d)
                    return d / "prefix"
        downloads.mkdir(parents=True, exist_ok=True)
        source = None
        errors = []
        for v in versions:
            try:
                source = fetch_debian(v, downloads)
                break
            except BuildError as exc:
                errors.append(str(exc))
                note(f"openssl {v} is not available: {str(exc).splitlines()[0]}")
        if source is None:
            raise BuildError("no OpenSSL 3.5 source could be fetched:\n"
                             + "\n".join(errors))
        version, topdir = tarball_version(Path(source["tarball"]))
        build_dir = cache / f"openssl-{version}-{key}"
        info = build_info_matches(build_dir, key, source["sha256"])
        if info and not args.rebuild:
            note(f"cached: {info['openssl_version']} ({build_dir})")
            if args.openssl_tests:
                run_openssl_tests(args, build_dir)
            return build_dir / "prefix"
    note(f"source: {source['origin']} (OpenSSL {version}, sha256 "
         f"{source['sha256'][:16]}..., checked: {', '.join(source['checked'])})")
    result = build(args, patches, key, source, version, topdir, build_dir)
    info = {"key": key, "recipe": RECIPE, "openssl_version": result["openssl_version"],
            "version": version, "source": source["origin"],
            "source_sha256": source["sha256"], "checked": source["checked"],
            "patches": [{"name": p.name, "sha256": sha256_file(p)} for p in patches],
            "configure": CONFIGURE_OPTIONS, "jobs": args.jobs,
            "build_seconds": result["seconds"], "built_at": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (build_dir / "BUILD-INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    if args.openssl_tests:
        run_openssl_tests(args, build_dir)
    return build_dir / "prefix"


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
