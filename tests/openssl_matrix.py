#!/usr/bin/env python3
"""Run the engine-level, tamper and bad-input tests on several OpenSSL releases.

    python tests/openssl_matrix.py [--versions V[,V...]] [--include-installed]
                                   [--no-archive] [--no-patched] [--cache DIR]
                                   [--timeout S] [--list] [-- PYTEST-ARGS...]
    tox -e openssl-matrix [-- OPTIONS... [-- PYTEST-ARGS...]]

Which releases:

* every ``libssl3`` 3.0.x package that apt lists for this machine's
  architecture (``apt-cache madison libssl3``: Debian 12 serves several, from
  bookworm, bookworm-updates and bookworm-security), except the version
  installed on the machine, which the plain ``tox`` run already tests
  (``--include-installed`` runs it here too, from the archive);
* the patched OpenSSL 3.5 of openssl_patches/ (``openssl_patches/build.py``
  builds it or returns the cached build; ``$PIPETLS_PATCHED_PREFIX`` names a
  prefix instead).

Each archive version is fetched with ``apt-get download libssl3=<v>
openssl=<v>`` (apt checks the files against the signed archive index) and
unpacked with ``dpkg-deb -x`` into ``<cache>/openssl-matrix/<v>/root``, where
<cache> is ``--cache``, else ``$PIPETLS_CACHE``, else ``~/.cache/pipetls``.
A complete unpack is marked by ``DONE.json``, written last, and reused.

Each release runs in a pytest process of its own (DESIGN.md invariant 7: one
libcrypto per process) with ``LD_LIBRARY_PATH`` = the release's library
directory, ``PATH`` starting with its ``bin`` (the ``openssl`` program that
the tests run is that release's), ``OPENSSL_MODULES``/``OPENSSL_ENGINES`` =
its own provider and engine directories, and ``OPENSSL_CONF`` = its own
default openssl.cnf (the Debian packages' ``etc/ssl/openssl.cnf``; for the
patched build, which ships none, an empty configuration).  Python's ``_ssl``
links ``libssl.so.3`` dynamically, so it maps the release's libraries, and
pipetls (``PIPETLS_OPENSSL`` unset) binds the very libraries ``_ssl`` mapped.
Before any test, the pytest process checks that it mapped exactly one
libcrypto, from the release's directory, that ``ssl.OPENSSL_VERSION``,
pipetls's ``OpenSSL_version()`` and ``openssl version`` all name the
requested version, and stops with an error otherwise.

The engine is the one installed with the package (built once, against the
system's OpenSSL 3.0 headers); ``$PIPETLS_ENGINE`` overrides it.

Output: each release's mapped version and its counts (passed, failed,
skipped, errors) with the failed test ids, then one summary.  Exit status 0
only if every release that ran passed with at least one test; a release that
could not be fetched or prepared fails the run when ``CI`` is set to a true
value (``CI=true``), and otherwise is reported as not run with the reason
(e.g. no apt-get on this machine).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
TEST_FILES = ["tests/test_engine_evp.py", "tests/test_tamper.py", "tests/test_badinput.py"]
DEFAULT_MARKERS = "not full and not patched"
PACKAGES = ("libssl3", "openssl")
# Variables that would make a child use another OpenSSL than the one chosen.
SCRUB = ("PIPETLS_OPENSSL", "OPENSSL_CONF", "OPENSSL_MODULES", "OPENSSL_ENGINES",
         "LD_PRELOAD", "PIPETLS_PATCHED_PREFIX", "PIPETLS_PATCHED_ENGINE",
         "PIPETLS_PATCHED_REQUIRED", "PIPETLS_STATS")
CHILD_FLAG = "--child-of-openssl-matrix"
SUMMARY_FAILURES = 12   # failed test ids per release in the summary


class MatrixError(Exception):
    """A release could not be prepared (message for the user)."""


class UsageError(Exception):
    """The command line asks for something that does not exist."""


def say(msg: str = "") -> None:
    print(msg, flush=True)


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, **kw)


# ------------------------------------------------------------------ releases

@dataclass
class Release:
    """One OpenSSL to test: where its files are and what it must report."""

    name: str                 # "3.0.17-1~deb12u2" or "3.5.7 (patched)"
    expect: str               # upstream version: "3.0.17"
    libdir: Optional[Path] = None
    bindir: Optional[Path] = None
    modules: Optional[Path] = None
    engines: Optional[Path] = None
    conf: Optional[Path] = None
    problem: Optional[str] = None   # why it could not be prepared


@dataclass
class Outcome:
    release: Release
    counts: Dict[str, int] = field(default_factory=dict)
    failed: List[str] = field(default_factory=list)
    mapped: Optional[dict] = None
    returncode: Optional[int] = None
    seconds: float = 0.0
    error: Optional[str] = None   # the run itself went wrong

    @property
    def ok(self) -> bool:
        return (self.error is None and self.returncode == 0 and not self.failed
                and self.counts.get("passed", 0) > 0)


def _load_builder():
    """openssl_patches/build.py as a module: one cache rule, one version rule."""
    path = REPO / "openssl_patches" / "build.py"
    spec = importlib.util.spec_from_file_location("pipetls_openssl_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_builder = _load_builder()
default_cache = _builder.default_cache   # $PIPETLS_CACHE, else ~/.cache/pipetls
upstream_of = _builder.upstream_of       # "3.0.17-1~deb12u2" -> "3.0.17"


def dpkg_arch() -> str:
    p = run(["dpkg", "--print-architecture"])
    if p.returncode != 0 or not p.stdout.strip():
        raise MatrixError("dpkg --print-architecture failed: " + p.stderr.strip())
    return p.stdout.strip()


def installed_version(package: str) -> Optional[str]:
    if not shutil.which("dpkg-query"):
        return None
    p = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package])
    fields = p.stdout.split()
    if p.returncode == 0 and len(fields) == 2 and fields[0].startswith("ii"):
        return fields[1]
    return None


def madison(package: str, arch: str) -> List[str]:
    """Binary versions of ``package`` for ``arch`` that apt can download."""
    p = run(["apt-cache", "madison", package])
    versions = []
    for line in p.stdout.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) != 3 or cols[0] != package:
            continue
        where = cols[2].split()
        # "http://... bookworm/main amd64 Packages"; Sources lines are not binaries
        if where[-1:] == ["Packages"] and arch in where and cols[1] not in versions:
            versions.append(cols[1])
    return versions


def dpkg_order(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version a sorts before, with or after b."""
    if a == b:
        return 0
    return 1 if run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0 else -1


def archive_versions(arch: str) -> List[str]:
    """libssl3 3.0.x versions served (with an openssl of the same version), oldest first."""
    def listed():
        ssl = [v for v in madison("libssl3", arch) if upstream_of(v).startswith("3.0.")]
        return ssl, set(madison("openssl", arch))

    ssl, cli = listed()
    if not ssl and os.geteuid() == 0:
        say("openssl-matrix: apt lists no libssl3 3.0.x; running apt-get update")
        p = run(["apt-get", "update"])
        if p.returncode != 0:
            raise MatrixError("apt-get update failed:\n" + p.stderr[-2000:])
        ssl, cli = listed()
    if not ssl:
        raise MatrixError("apt lists no libssl3 3.0.x package (apt-cache madison libssl3); "
                          "run 'apt-get update' as root on a Debian 12 machine")
    missing = [v for v in ssl if v not in cli]
    if missing:
        raise MatrixError("apt lists libssl3 " + ", ".join(missing)
                          + " without an openssl package of the same version")
    return sorted(ssl, key=functools.cmp_to_key(dpkg_order))


def fetch_archive(version: str, arch: str, cache: Path) -> Release:
    """Download and unpack libssl3/openssl ``version`` (or reuse the cache)."""
    rel = Release(name=version, expect=upstream_of(version))
    base = cache / "openssl-matrix" / version
    root = base / "root"
    done = base / "DONE.json"
    if not done.is_file():
        debs = base / "debs"
        if base.exists():
            shutil.rmtree(base)
        debs.mkdir(parents=True)
        specs = [f"{p}={version}" for p in PACKAGES]
        say(f"openssl-matrix: apt-get download {' '.join(specs)}")
        p = run(["apt-get", "download", *specs], cwd=debs)
        if p.returncode != 0:
            raise MatrixError(f"apt-get download {' '.join(specs)} failed "
                              f"(exit {p.returncode}):\n{p.stderr[-2000:]}")
        files = {}
        for pkg in PACKAGES:
            found = sorted(debs.glob(f"{pkg}_*_{arch}.deb"))
            if len(found) != 1:
                raise MatrixError(f"apt-get download left {found} for {pkg} in {debs}")
            got = run(["dpkg-deb", "-f", found[0], "Version"]).stdout.strip()
            if got != version:
                raise MatrixError(f"{found[0].name} is version {got!r}, not {version}")
            files[pkg] = found[0]
        tmp = Path(tempfile.mkdtemp(prefix="root.", dir=base))
        for pkg, deb in files.items():
            p = run(["dpkg-deb", "-x", deb, tmp])
            if p.returncode != 0:
                raise MatrixError(f"dpkg-deb -x {deb} failed: {p.stderr.strip()}")
        tmp.rename(root)
        done.write_text(json.dumps({"version": version, "arch": arch, "debs":
                                    {k: v.name for k, v in files.items()}}, indent=2) + "\n")
    triplet = _multiarch_dir(root)
    rel.libdir = triplet
    rel.bindir = root / "usr" / "bin"
    rel.modules = triplet / "ossl-modules"
    rel.engines = triplet / "engines-3"
    conf = root / "etc" / "ssl" / "openssl.cnf"
    rel.conf = conf if conf.is_file() else None
    for need in (rel.libdir / "libcrypto.so.3", rel.libdir / "libssl.so.3",
                 rel.bindir / "openssl"):
        if not need.is_file():
            raise MatrixError(f"{need} missing after unpacking {version} "
                              f"(remove {base} to fetch again)")
    return rel


def _multiarch_dir(root: Path) -> Path:
    found = sorted(root.glob("usr/lib/*/libcrypto.so.3"))
    if len(found) != 1:
        raise MatrixError(f"{root}: expected one usr/lib/<triplet>/libcrypto.so.3, found {found}")
    return found[0].parent


def patched_release() -> Release:
    """The patched OpenSSL 3.5 build (built now if the cache lacks it)."""
    env_prefix = os.environ.get("PIPETLS_PATCHED_PREFIX")
    if env_prefix:
        prefix = Path(env_prefix).resolve()
    else:
        say("openssl-matrix: python openssl_patches/build.py (builds the patched "
            "OpenSSL 3.5 unless it is cached; progress on stderr)")
        p = subprocess.run([sys.executable, str(REPO / "openssl_patches" / "build.py")],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        lines = p.stdout.strip().splitlines()
        if p.returncode != 0 or not lines:
            raise MatrixError(f"openssl_patches/build.py failed (exit {p.returncode})")
        prefix = Path(lines[-1]).resolve()
    info_file = prefix.parent / "BUILD-INFO.json"
    version = None
    if info_file.is_file():
        version = json.loads(info_file.read_text()).get("version")
    if not version:
        m = re.match(r"openssl-(\d+\.\d+\.\d+)", prefix.parent.name)
        version = m.group(1) if m else None
    if not version:
        raise MatrixError(f"{prefix}: cannot tell the OpenSSL version (no BUILD-INFO.json)")
    rel = Release(name=f"{version} (patched)", expect=version, libdir=prefix / "lib",
                  bindir=prefix / "bin", modules=prefix / "lib" / "ossl-modules",
                  engines=prefix / "lib" / "engines-3")
    for need in (rel.libdir / "libcrypto.so.3", rel.libdir / "libssl.so.3",
                 rel.bindir / "openssl"):
        if not need.is_file():
            raise MatrixError(f"{prefix} is not an OpenSSL prefix: {need} is missing")
    return rel


# ------------------------------------------------------------------ running

def child_env(rel: Release, report: Path, conf: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    old = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(rel.libdir)] + old)
    env["PATH"] = os.pathsep.join([str(rel.bindir), os.environ.get("PATH", "")])
    if rel.modules and rel.modules.is_dir():
        env["OPENSSL_MODULES"] = str(rel.modules)
    if rel.engines and rel.engines.is_dir():
        env["OPENSSL_ENGINES"] = str(rel.engines)
    env["OPENSSL_CONF"] = str(rel.conf or conf)
    env["PIPETLS_MATRIX_EXPECT"] = rel.expect
    env["PIPETLS_MATRIX_LIBDIR"] = str(rel.libdir)
    env["PIPETLS_MATRIX_REPORT"] = str(report)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_release(rel: Release, pytest_args: List[str], timeout: float, work: Path) -> Outcome:
    out = Outcome(release=rel)
    report = work / f"report-{re.sub(r'[^A-Za-z0-9.]+', '_', rel.name)}.json"
    empty_conf = work / "empty-openssl.cnf"
    empty_conf.write_text("# openssl-matrix: no configuration (built-in defaults)\n")
    env = child_env(rel, report, empty_conf)
    argv = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, *pytest_args]
    say("")
    say(f"==== OpenSSL {rel.name}: {rel.libdir}")
    say(f"     LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']} OPENSSL_CONF={env['OPENSSL_CONF']}")
    say(f"     OPENSSL_MODULES={env.get('OPENSSL_MODULES', '-')}")
    started = time.monotonic()
    try:
        p = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                           timeout=timeout)
        out.returncode = p.returncode
    except subprocess.TimeoutExpired:
        out.error = f"pytest did not finish within {timeout:.0f} s"
    out.seconds = time.monotonic() - started
    if report.is_file():
        data = json.loads(report.read_text())
        out.counts = data.get("counts", {})
        out.failed = data.get("failed", [])
        out.mapped = data.get("mapped")
        if data.get("mismatch"):
            out.error = data["mismatch"]
    elif out.error is None:
        out.error = f"pytest wrote no report (exit {out.returncode})"
    if out.error is None and out.returncode not in (0, 1):
        out.error = f"pytest exited with status {out.returncode}"
    if out.error is None and out.counts.get("passed", 0) == 0:
        out.error = "no test passed"
    say(f"---- OpenSSL {rel.name}: " + describe(out))
    for nodeid in out.failed:
        say(f"     FAILED {nodeid}")
    return out


def describe(out: Outcome) -> str:
    if out.release.problem:
        return "NOT RUN: " + out.release.problem.splitlines()[0]
    c = out.counts
    mapped = (out.mapped or {}).get("ssl.OPENSSL_VERSION", "?")
    text = (f"mapped '{mapped}': {c.get('passed', 0)} passed, {c.get('failed', 0)} failed, "
            f"{c.get('skipped', 0)} skipped, {c.get('error', 0)} errors"
            + (f", {c['xfailed']} xfailed" if c.get("xfailed") else "")
            + (f", {c['xpassed']} xpassed" if c.get("xpassed") else "")
            + f" in {out.seconds:.0f} s")
    if out.error:
        text += f" -- ERROR: {out.error}"
    return text


def summary(outcomes: List[Outcome], strict: bool, seconds: float) -> int:
    say("")
    say(f"==== openssl-matrix summary ({seconds:.0f} s; CI={'true' if strict else 'unset'})")
    status = 0
    for out in outcomes:
        if out.release.problem:
            verdict = "FAIL" if strict else "not run"
            if strict:
                status = 1
        else:
            verdict = "ok" if out.ok else "FAIL"
            if not out.ok:
                status = 1
        say(f"  {verdict:8} OpenSSL {out.release.name:24} {describe(out)}")
        for nodeid in out.failed[:SUMMARY_FAILURES]:
            say(f"           FAILED {nodeid}")
        if len(out.failed) > SUMMARY_FAILURES:
            say(f"           ... and {len(out.failed) - SUMMARY_FAILURES} more (listed above)")
    if not any(out.release.problem is None for out in outcomes):
        say("  no release was tested")
        status = 1
    say("openssl-matrix: " + ("all releases passed" if status == 0 else "FAILED"))
    return status


# ----------------------------------------------------------- the child side

def mapped_files(prefix: str) -> List[str]:
    """Real paths of the files named ``prefix``* mapped into this process."""
    found = set()
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and os.path.basename(fields[5].strip()).startswith(prefix):
                found.add(os.path.realpath(fields[5].strip()))
    return sorted(found)


class MatrixPlugin:
    """Loaded into the child pytest: check the mapped OpenSSL, count outcomes."""

    def __init__(self) -> None:
        self.expect = os.environ["PIPETLS_MATRIX_EXPECT"]
        self.libdir = os.path.realpath(os.environ["PIPETLS_MATRIX_LIBDIR"])
        self.report = Path(os.environ["PIPETLS_MATRIX_REPORT"])
        self.counts: Dict[str, int] = {}
        self.failed: List[str] = []
        self.mapped: dict = {}
        self.mismatch: Optional[str] = None

    def _check(self) -> None:
        try:
            self._compare()
        except Exception as exc:  # noqa: BLE001 - reported, and the run stops
            self.mismatch = f"cannot check the mapped OpenSSL: {exc!r}"

    def _compare(self) -> None:
        import ssl  # noqa: PLC0415 - maps the release's libssl/libcrypto

        from pipetls import _ffi  # noqa: PLC0415

        # the library pipetls bound, asked through a handle of our own
        version = ctypes.CDLL(_ffi.LIBCRYPTO_PATH).OpenSSL_version
        version.restype, version.argtypes = ctypes.c_char_p, [ctypes.c_int]
        cli = run(["openssl", "version"])
        self.mapped = {
            "ssl.OPENSSL_VERSION": ssl.OPENSSL_VERSION,
            "pipetls": version(0).decode(),
            "openssl version": cli.stdout.strip(),
            "openssl": shutil.which("openssl"),
            "libcrypto": mapped_files("libcrypto.so"),
            "libssl": mapped_files("libssl.so"),
            "pipetls libcrypto": os.path.realpath(_ffi.LIBCRYPTO_PATH),
        }
        want = f"OpenSSL {self.expect} "
        problems = []
        for key in ("ssl.OPENSSL_VERSION", "pipetls"):
            if not self.mapped[key].startswith(want):
                problems.append(f"{key} is {self.mapped[key]!r}")
        if not self.mapped["openssl version"].startswith(want):
            problems.append(f"'openssl version' says {self.mapped['openssl version']!r}")
        for key in ("libcrypto", "libssl"):
            paths = self.mapped[key]
            if len(paths) != 1 or os.path.dirname(paths[0]) != self.libdir:
                problems.append(f"mapped {key}: {paths} (want one, in {self.libdir})")
        if self.mapped["pipetls libcrypto"] not in self.mapped["libcrypto"]:
            problems.append(f"pipetls bound {self.mapped['pipetls libcrypto']}")
        if problems:
            self.mismatch = f"not OpenSSL {self.expect} from {self.libdir}: " + "; ".join(problems)

    def pytest_configure(self, config) -> None:
        self._check()

    def pytest_report_header(self, config):
        m = self.mapped
        if not m:
            return []
        return [f"openssl-matrix: ssl.OPENSSL_VERSION = {m['ssl.OPENSSL_VERSION']}; "
                f"pipetls = {m['pipetls']}; CLI = {m['openssl version']} ({m['openssl']})",
                f"openssl-matrix: libcrypto {', '.join(m['libcrypto'])}"]

    def pytest_sessionstart(self, session) -> None:
        if self.mismatch:
            self._write()
            import pytest  # noqa: PLC0415
            pytest.exit("openssl-matrix: " + self.mismatch, returncode=4)

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            if hasattr(report, "wasxfail"):
                key = "xfailed" if report.skipped else "xpassed"
            elif report.failed:
                key = "failed" if report.when == "call" else "error"
                self.failed.append(report.nodeid + ("" if report.when == "call"
                                                    else f" ({report.when})"))
            elif report.skipped:
                key = "skipped"
            else:
                key = "passed"
            self.counts[key] = self.counts.get(key, 0) + 1

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.counts["error"] = self.counts.get("error", 0) + 1
            self.failed.append(f"{report.nodeid} (collection)")

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        self._write()

    def _write(self) -> None:
        self.report.write_text(json.dumps({"counts": self.counts, "failed": self.failed,
                                           "mapped": self.mapped,
                                           "mismatch": self.mismatch}, indent=2) + "\n")


def child_main(pytest_args: List[str]) -> int:
    import pytest  # noqa: PLC0415

    return int(pytest.main(pytest_args, plugins=[MatrixPlugin()]))


# ------------------------------------------------------------------- driver

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openssl_matrix.py",
        description="Run " + ", ".join(TEST_FILES) + " on every libssl3 3.0.x that "
        "Debian's archive serves (apt-get download + dpkg-deb -x into a cache) and "
        "on the patched OpenSSL 3.5 of openssl_patches/, each in a pytest process "
        "of its own with LD_LIBRARY_PATH set to that release (invariant 7).",
        epilog="Arguments after '--' go to pytest instead of the default "
        f"-m \"{DEFAULT_MARKERS}\" {' '.join(TEST_FILES)}. With CI=true a release "
        "that cannot be fetched fails the run; otherwise it is reported as not run. "
        "Exit status 0 only if every release that ran passed.")
    p.add_argument("--versions", metavar="V[,V...]",
                   help="archive versions to test (e.g. 3.0.17-1~deb12u2, or just "
                        "3.0.17); default: all 3.0.x that apt lists, but the installed one")
    p.add_argument("--include-installed", action="store_true",
                   help="also test the installed libssl3 version (fetched from the "
                        "archive like the others)")
    p.add_argument("--no-archive", action="store_true",
                   help="skip the archive's 3.0.x releases")
    p.add_argument("--no-patched", action="store_true",
                   help="skip the patched OpenSSL 3.5")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="cache directory (default: $PIPETLS_CACHE, else ~/.cache/pipetls); "
                        "releases go to DIR/openssl-matrix/<version>")
    p.add_argument("--timeout", type=float, default=1800, metavar="S",
                   help="time limit of each release's pytest run (default 1800 s)")
    p.add_argument("--list", action="store_true",
                   help="print the releases that would run, and exit")
    return p


def choose_archive(args, arch: str) -> List[str]:
    served = archive_versions(arch)
    installed = installed_version("libssl3")
    if args.versions:
        chosen = []
        for want in (w.strip() for w in args.versions.split(",") if w.strip()):
            match = [v for v in served if want in (v, upstream_of(v))]
            if not match:
                raise UsageError(f"--versions: libssl3 {want} is not served by the "
                                 f"archive (apt lists {', '.join(served)})")
            chosen += [v for v in match if v not in chosen]
        return chosen
    chosen = [v for v in served if args.include_installed or v != installed]
    if args.include_installed and installed and installed not in served:
        say(f"openssl-matrix: --include-installed: libssl3 {installed} is not served "
            "any more; only the plain tox run tests it")
    say(f"openssl-matrix: apt serves libssl3 {', '.join(served)}; installed: "
        f"{installed or 'none'}" + ("" if args.include_installed or installed not in served
                                    else " (tested by the plain tox run, not here)"))
    return chosen


def main(argv: List[str]) -> int:
    if argv[:1] == [CHILD_FLAG]:
        return child_main(argv[1:])
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1:]
    else:
        pytest_args = ["-m", DEFAULT_MARKERS, *TEST_FILES]
    args = build_parser().parse_args(argv)
    strict = ci()
    cache = (args.cache or default_cache()).expanduser().resolve()
    for t in TEST_FILES:
        if not (REPO / t).is_file() and t in pytest_args:
            say(f"openssl-matrix: {t} does not exist")
            return 1

    releases: List[Release] = []
    if not args.no_archive:
        try:
            if not (shutil.which("apt-get") and shutil.which("apt-cache")
                    and shutil.which("dpkg-deb")):
                raise MatrixError("apt-get, apt-cache and dpkg-deb are needed to fetch "
                                  "Debian's libssl3 releases (a Debian/Ubuntu machine)")
            arch = dpkg_arch()
            versions = choose_archive(args, arch)
        except UsageError as exc:
            say(f"openssl-matrix: {exc}")
            return 2
        except MatrixError as exc:
            releases.append(Release(name="3.0.x (archive)", expect="3.0", problem=str(exc)))
            versions, arch = [], ""
        for v in versions:
            if args.list:
                releases.append(Release(name=v, expect=upstream_of(v)))
                continue
            try:
                releases.append(fetch_archive(v, arch, cache))
            except MatrixError as exc:
                releases.append(Release(name=v, expect=upstream_of(v), problem=str(exc)))
    if not args.no_patched:
        if args.list:
            releases.append(Release(name="3.5 (patched)", expect="3.5"))
        else:
            try:
                releases.append(patched_release())
            except MatrixError as exc:
                releases.append(Release(name="3.5 (patched)", expect="3.5", problem=str(exc)))

    if args.list:
        for rel in releases:
            say(f"{rel.name}" + (f"  NOT AVAILABLE: {rel.problem}" if rel.problem else ""))
        return 0
    for rel in releases:
        if rel.problem:
            say(f"openssl-matrix: OpenSSL {rel.name} not run: {rel.problem}")

    started = time.monotonic()
    outcomes: List[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="pipetls-matrix-") as work:
        for rel in releases:
            if rel.problem:
                outcomes.append(Outcome(release=rel))
            else:
                outcomes.append(run_release(rel, pytest_args, args.timeout, Path(work)))
    return summary(outcomes, strict, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
