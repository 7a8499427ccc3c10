"""Load and safety: 16 concurrent pipelining connections through one shared
lane pool with every byte checked, then fork() with the pool running and
pipelining in parent and child (tests/c/pt_stress.c). Under
PIPETLS_SANITIZE=address,undefined or thread (the tox envs `sanitize` and
`tsan`) the harness is built with the same sanitizer as the engine."""
import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SANITIZE = os.environ.get("PIPETLS_SANITIZE", "")


@pytest.fixture(scope="module")
def stress_binary(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed to build tests/c/pt_stress.c"
    out = tmp_path_factory.mktemp("stress") / "pt_stress"
    flags = ["-O2"]
    if SANITIZE:
        flags = ["-O1", "-g", f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer"]
    subprocess.run([cc, *flags, "-Wall", "-o", str(out), os.path.join(HERE, "c", "pt_stress.c"),
                    "-lssl", "-lcrypto", "-lpthread"], check=True)
    return str(out)


def sanitizer_env(leaks=True):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # the harness links its sanitizer runtime itself
    env["ASAN_OPTIONS"] = "detect_leaks=%d:abort_on_error=1" % leaks
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    # TSan cannot follow a multi-threaded fork() by default; the child only
    # starts fresh lanes, which is what we test
    env["TSAN_OPTIONS"] = "halt_on_error=1:die_after_fork=0"
    return env


def run_stress(binary, engine_path, certs, conns, kib, *extra, leaks=True):
    p = subprocess.run([binary, engine_path, str(certs.cert), str(certs.key), str(conns), str(kib),
                        *extra], capture_output=True, text=True, timeout=600,
                       env=sanitizer_env(leaks))
    return p


def test_concurrent_connections_no_leaks(stress_binary, engine_path, certs):
    """16 connections, every byte checked; under ASan with leak detection."""
    p = run_stress(stress_binary, engine_path, certs, 16, 1024 if SANITIZE else 4096, "nofork")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr
    assert re.search(r"concurrent: 16 connections, 0 failed, pipelined_batches [1-9]", p.stdout)


def test_concurrent_connections_and_fork(stress_binary, engine_path, certs):
    kib = 1024 if SANITIZE else 4096
    # the forked child inherits the parent's worker threads' per-thread
    # OpenSSL state without the threads: LeakSanitizer would report it there
    p = run_stress(stress_binary, engine_path, certs, 16, kib, leaks=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "ThreadSanitizer" not in p.stderr and "AddressSanitizer" not in p.stderr
    assert "runtime error" not in p.stderr, p.stderr[-4000:]
    m = re.search(r"concurrent: 16 connections, 0 failed, pipelined_batches (\d+)", p.stdout)
    assert m and int(m.group(1)) > 0, p.stdout
    assert "fork child: ok" in p.stdout
    m = re.search(r"fork parent: pipelined_batches (\d+)", p.stdout)
    assert m and int(m.group(1)) > 0
    stats = dict(line.split(" ", 1) for line in p.stdout.splitlines()
                 if re.match(r"^[a-z_.0-9]+ \d+$", line))
    assert int(stats["failed_batches"]) == 0
    # the worker lanes did part of the records
    assert sum(int(v) for k, v in stats.items()
               if re.match(r"lane\.[1-9]\d*\.records", k)) > 0
    assert p.stdout.rstrip().endswith("OK")


def test_stress_harness_detects_a_broken_engine(stress_binary, certs, tmp_path):
    """Negative control: the harness fails when the engine does not load."""
    bogus = tmp_path / "not_an_engine.so"
    bogus.write_bytes(b"\x7fELF garbage")
    p = run_stress(stress_binary, str(bogus), certs, 2, 64)
    # the engine setup refuses it (exit 1 with OpenSSL's errors), before any
    # connection -- not a crash, not a failed connection
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert str(bogus) in p.stderr and "could not load the shared library" in p.stderr, \
        p.stderr[-2000:]
    assert "connections" not in p.stdout, p.stdout[-2000:]
