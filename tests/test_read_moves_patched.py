"""No moving of complete buffered records on the patched OpenSSL 3.5
(patch 0007).

With ``read_ahead`` libssl's read buffer holds as many records as the
transport gave it. Before 0007, every record (every batch, when
pipelining) began by moving everything the buffer still held to its front:
with pipetls's default read buffer (room for 2 x ``max_pipelines``
records) half a byte moved per byte read, with a 256 KiB buffer and no
pipelining about 7. With 0007 a record that is complete in the buffer is
read where it is; only the rest of a record cut by the end of a fill is
moved (less than 32 KiB).

An LD_PRELOAD shim (support/c/count_memmove.c, built here) counts the
memmove() calls of 32 KiB or more while the client reads 4 MiB from
memory (support/read_moves_child.py, a process on the patched build;
invariant 7): there must be none, and the data must be intact, pipelined
through the provider with pipetls's default buffer and OpenSSL's own, and
not pipelined (stock, ``max_pipelines`` 1) with ``read_ahead`` and a
256 KiB buffer. Against the build without 0007 the pipelined case with
pipetls's buffer (16 moves) and the stock one (208) fail; with OpenSSL's
own buffer there was nothing to save, and the case is the control that the
count works without false alarms.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.patched import penv

pytestmark = pytest.mark.patched

SUPPORT = Path(__file__).resolve().parent / "support"
CHILD = SUPPORT / "read_moves_child.py"
SHIM_SRC = SUPPORT / "c" / "count_memmove.c"


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc is not None, "no C compiler for the memmove shim"
    out = tmp_path_factory.mktemp("shim") / "count_memmove.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SRC), "-ldl"],
                   check=True, capture_output=True, timeout=120)
    return out


def moves(prefix, module35, certs, shim, version, suite, path, readbuf):
    env = penv(prefix, None, PIPETLS_OPENSSL=prefix, PIPETLS_PROVIDER=module35,
               LD_PRELOAD=shim, PIPETLS_MEMMOVE_SHIM=shim)
    proc = subprocess.run([sys.executable, str(CHILD), certs.cert, certs.key, version, suite,
                           path, readbuf], capture_output=True, text=True, timeout=300,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["openssl"].startswith("OpenSSL 3.5") and r["intact"], r
    assert r["version"] == "TLSv" + version and r["read_ahead"], r
    return r


CASES = [
    ("1.3", "TLS_AES_256_GCM_SHA384", "provider", "auto"),
    ("1.3", "TLS_CHACHA20_POLY1305_SHA256", "provider", "0"),
    ("1.2", "ECDHE-RSA-AES256-GCM-SHA384", "provider", "auto"),
    ("1.3", "TLS_AES_128_GCM_SHA256", "stock", "262144"),
    ("1.2", "ECDHE-RSA-AES128-GCM-SHA256", "stock", "262144"),
]


@pytest.mark.parametrize("version,suite,path,readbuf", CASES)
def test_complete_records_are_read_where_they_are(prefix, module35, certs, shim, version, suite,
                                                 path, readbuf):
    r = moves(prefix, module35, certs, shim, version, suite, path, readbuf)
    if path == "provider":
        # pipelined in full batches all the same
        assert r["hist"] == {"8": 32}, r
    assert r["big_moves"] == 0 and r["big_bytes"] == 0, r


def test_the_shim_counts(prefix, module35, certs, shim, tmp_path):
    """The count is real: a memmove of 64 KiB in the same process is seen."""
    code = ("import ctypes, os; s = ctypes.CDLL(os.environ['PIPETLS_MEMMOVE_SHIM']);"
            "s.pt_big_moves.restype = ctypes.c_size_t; libc = ctypes.CDLL(None);"
            "a = ctypes.create_string_buffer(1 << 17); s.pt_count_memmove(1);"
            "libc.memmove(a, ctypes.byref(a, 1024), 1 << 16); s.pt_count_memmove(0);"
            "print(s.pt_big_moves())")
    env = penv(prefix, None, LD_PRELOAD=shim, PIPETLS_MEMMOVE_SHIM=shim)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout.strip() == "1", proc.stdout + proc.stderr
