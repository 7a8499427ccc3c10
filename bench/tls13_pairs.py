#!/usr/bin/env python3
"""TLS 1.3 on the patched OpenSSL 3.5 (patch 0002): the pipetls provider with
``max_pipelines`` 8 against stock 3.5 (the same build, default provider,
``max_pipelines`` 1), in one process, in many short interleaved pairs.

    PIPETLS_OPENSSL=<prefix> python3 bench/tls13_pairs.py \
        --provider build/provider-3.5/pipetls-provider.so [--pairs 41] [--json out.json]

Both sides run in this process on the patched libssl (``pipetls.Context``
over memory BIOs, the harness of ``pipetls bench``: one ctypes call per
SSL_write / SSL_read). The provider is loaded by an openssl.cnf written
here (``THREADS`` = ``--lanes``, ``ADAPTIVE`` = ``--adaptive``) without default properties; each side
sets the default property query before it makes its SSL_CTX, which is
when libssl fetches its record ciphers: ``provider=default`` (stock) or
``?provider=pipetls`` (pipetls). The provider's statistics
(``PIPETLS_STATS``, written at exit) are printed so that the pipelined rows
can be seen to have batched (a first, empty block may come from the
``openssl`` run that makes the throwaway certificate).

Rows: AES-256-GCM write, ChaCha20-Poly1305 write, AES-256-GCM read
(``max_pipelines`` 8, a read buffer for 8 records), and AES-256-GCM write
with the provider but ``max_pipelines`` 1 (the cost of the provider when it
does not pipeline). Each pair is one stock run and one pipetls run of
``--pair-bytes`` in ``--write-size`` writes, the order alternating pair by
pair; the figure is the median of the pairs' ratios (stock seconds /
pipetls seconds) with a 95 % bootstrap interval and the verdict of
``pipetls.bench.model``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "pybind"))

ROWS = [  # name, cipher, scenario, max_pipelines
    ("AES-256-GCM write", "AES-256-GCM", "write", 8),
    ("ChaCha20-Poly1305 write", "ChaCha20-Poly1305", "write", 8),
    ("AES-256-GCM read", "AES-256-GCM", "read", 8),
    ("AES-256-GCM write, max_pipelines 1", "AES-256-GCM", "write", 1),
]


def conf_text(module: Path, lanes: int, adaptive: int) -> str:
    return "\n".join([
        "openssl_conf = openssl_init", "",
        "[openssl_init]", "providers = provider_sect", "",
        "[provider_sect]", "default = default_sect", "pipetls = pipetls_sect", "",
        "[default_sect]", "activate = 1", "",
        "[pipetls_sect]", f"module = {module}", "activate = 1", f"THREADS = {lanes}",
        f"ADAPTIVE = {adaptive}", ""])


def child(args: argparse.Namespace) -> int:
    """The measuring process (OPENSSL_CONF and PIPETLS_STATS set by main)."""
    from pipetls import _ffi
    from pipetls.bench.harness import Conn, _read_all, handshake, write_all
    from pipetls.bench.model import Setup, bootstrap_median, contexts, verdict
    from pipetls.bench.runner import _throwaway_cert, default_read_buf

    version = _ffi.OpenSSL_version(0).decode()
    if not version.startswith("OpenSSL 3.5"):
        raise SystemExit(f"tls13_pairs: needs the patched 3.5 (PIPETLS_OPENSSL), got {version}")
    crypto = ctypes.CDLL(_ffi.libcrypto_path() if hasattr(_ffi, "libcrypto_path")
                         else str(Path(os.environ["PIPETLS_OPENSSL"]) / "lib" / "libcrypto.so.3"))
    set_props = crypto.EVP_set_default_properties
    set_props.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    set_props.restype = ctypes.c_int
    tmp = tempfile.mkdtemp(prefix="tls13_pairs-")
    cert, key = _throwaway_cert(tmp)

    def one(cipher: str, scenario: str, mp: int, pipelined: bool) -> float:
        if set_props(None, b"?provider=pipetls" if pipelined else b"provider=default") != 1:
            raise SystemExit("EVP_set_default_properties failed")
        st = Setup(cipher=cipher, tls="1.3", max_pipelines=mp, write_size=args.write_size,
                   read_buf=default_read_buf(mp), certfile=cert, keyfile=key)
        sctx, cctx = contexts(st, pipelined)
        s, c = Conn(sctx), Conn(cctx)
        try:
            handshake(s, c)
            wbuf = ctypes.create_string_buffer(args.write_size)
            ctypes.memset(wbuf, 0x5A, args.write_size)
            total = args.pair_bytes
            if scenario == "write":
                null = _ffi.BIO_new(_ffi.BIO_s_null())
                _ffi.SSL_set_bio(s.ssl, s.rbio, null)
                s.wbio = null
                write_all(s.ssl, wbuf, 4 * args.write_size, args.write_size)  # warm
                t0 = time.perf_counter()
                write_all(s.ssl, wbuf, total, args.write_size)
                return time.perf_counter() - t0
            write_all(s.ssl, wbuf, total, args.write_size)
            ptr = ctypes.c_void_p()
            length = _ffi.BIO_ctrl(s.wbio, 3, 0, ctypes.byref(ptr))
            ro = _ffi.BIO_new_mem_buf(ptr, length)
            _ffi.SSL_set_bio(c.ssl, ro, c.wbio)
            c.rbio = ro
            rbuf = ctypes.create_string_buffer(1 << 18)
            t0 = time.perf_counter()
            got = _read_all(c.ssl, rbuf, total)
            dt = time.perf_counter() - t0
            assert got == total
            return dt
        finally:
            c.close()
            s.close()
            sctx.close()
            cctx.close()

    results = []
    for name, cipher, scenario, mp in ROWS:
        if args.rows and name not in args.rows:
            continue
        ratios, t_stock, t_pt = [], [], []
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            t = {p: one(cipher, scenario, mp, p) for p in order}
            t_stock.append(t[False])
            t_pt.append(t[True])
            ratios.append(t[False] / t[True])
        med = statistics.median(ratios)
        lo, hi = bootstrap_median(ratios)
        word, _ = verdict(med, lo, hi)
        gb = args.pair_bytes / 1e9
        row = {"row": name, "pairs": args.pairs, "ratio": med, "lo": lo, "hi": hi,
               "verdict": word, "stock_GBps": gb / statistics.median(t_stock),
               "pipetls_GBps": gb / statistics.median(t_pt), "ratios": ratios}
        results.append(row)
        print(f"{name:38s} stock {row['stock_GBps']:.2f} GB/s  pipetls "
              f"{row['pipetls_GBps']:.2f} GB/s  ratio {med:.3f} [{lo:.3f}, {hi:.3f}]  {word}",
              flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "openssl": version, "cpus": os.cpu_count(), "lanes": args.lanes,
           "adaptive": args.adaptive, "load_average": os.getloadavg(),
           "pair_bytes": args.pair_bytes, "write_size": args.write_size, "rows": results}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider", required=True, help="pipetls-provider.so built against the prefix")
    ap.add_argument("--pairs", type=int, default=41, help="interleaved pairs per row (default 41)")
    ap.add_argument("--pair-bytes", type=int, default=4 << 20, help="bytes per side of a pair (4 MiB)")
    ap.add_argument("--write-size", type=int, default=128 << 10,
                    help="bytes per SSL_write (default 128 KiB: 8 records of 16 KiB)")
    ap.add_argument("--lanes", type=int, default=2, help="provider THREADS (default 2)")
    ap.add_argument("--adaptive", type=int, choices=(0, 1), default=1,
                    help="provider ADAPTIVE (default 1, the provider's default; 0: every "
                         "batch goes to the lanes even when no core looks free)")
    ap.add_argument("--row", dest="rows", action="append", help="only this row (repeatable)")
    ap.add_argument("--json", help="write every pair to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pairs < 1 or args.pair_bytes < 1 or args.write_size < 1 or args.lanes < 1:
        ap.error("--pairs, --pair-bytes, --write-size and --lanes must be >= 1")
    if args.child:
        return child(args)
    prefix = os.environ.get("PIPETLS_OPENSSL")
    if not prefix:
        ap.error("set PIPETLS_OPENSSL to the prefix of the patched OpenSSL 3.5 build")
    module = Path(args.provider).resolve()
    if not module.is_file():
        ap.error(f"--provider {module}: no such file")
    with tempfile.TemporaryDirectory(prefix="tls13_pairs-") as tmp:
        conf = Path(tmp) / "prov.cnf"
        conf.write_text(conf_text(module, args.lanes, args.adaptive))
        stats = Path(tmp) / "stats.txt"
        env = dict(os.environ, OPENSSL_CONF=str(conf), PIPETLS_STATS=str(stats))
        libs = [f"{prefix}/lib64", f"{prefix}/lib"]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
        rc = subprocess.call([sys.executable, __file__, "--child", *sys.argv[1:]], env=env)
        if stats.is_file():
            print("provider statistics at exit:\n" + stats.read_text().strip())
        return rc


if __name__ == "__main__":
    sys.exit(main())
