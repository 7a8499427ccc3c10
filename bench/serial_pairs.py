#!/usr/bin/env python3
"""libssl's serial time per pipelined write (or read) batch, on two or more
builds of the patched OpenSSL 3.5, in many short interleaved runs.

    python3 bench/serial_pairs.py --provider build/provider-3.5/pipetls-provider.so \
        --build before=/path/prefix-a --build after=/path/prefix-b \
        [--tls 1.2|1.3] [--cipher AES-256-GCM] [--scenario write|read] \
        [--rounds 21] [--json out.json]
    python3 bench/serial_pairs.py --engine path/to/pipetls.so --build final=/path/prefix

With ``--engine`` (TLS 1.2) the pipetls engine's ciphers do the work, and
every build is run twice, as ``NAME/copy`` (the engine's ``OUT_OF_PLACE 0``:
libssl copies the plaintext into its write buffer first, as stock libssl
does) and ``NAME/lanes`` (``OUT_OF_PLACE 1``, patch 0004: the lanes copy
it); ``batch_ns`` is then the engine's.

Each run is a process of its own on one build (``LD_LIBRARY_PATH``,
``PIPETLS_OPENSSL``; invariant 7): a TLS connection over memory BIOs (the
harness of ``pipetls bench``), the server's write BIO a null sink, the
pipetls provider's ciphers (``?provider=pipetls``) with ``max_pipelines``
8, and ``--writes`` SSL_writes of ``--write-size`` bytes (128 KiB: one batch
of 8 records of 16 KiB each). It reads the provider's statistics before and
after (``stats_reset``, then ``stats``) and prints

    serial per batch = (wall time of the writes - batch_ns) / writes

With ``--scenario read`` the server's ciphertext of the same writes is
made untimed, and the client's ``SSL_read`` of it from a read-only memory
BIO with reads of ``--write-size`` bytes is timed instead (pipetls's default
read buffer); "writes" below are then reads of one batch each.

where ``batch_ns`` is the provider's wall time inside its pipeline updates
(the lane batches): what is left is the time libssl, the EVP layer and the
provider's init and final spend outside the lanes, serially, per batch.
The builds alternate run by run (the order reversed every round); each
build's figure is the median over the rounds, with its spread (min-max).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def conf_text(module: Path, lanes: int) -> str:
    return "\n".join([
        "openssl_conf = openssl_init", "",
        "[openssl_init]", "providers = provider_sect", "alg_section = evp_props", "",
        "[provider_sect]", "default = default_sect", "pipetls = pipetls_sect", "",
        "[default_sect]", "activate = 1", "",
        "[pipetls_sect]", f"module = {module}", "activate = 1", f"THREADS = {lanes}", "",
        "[evp_props]", "default_properties = ?provider=pipetls", ""])


def child(args: argparse.Namespace) -> int:
    """One run (OPENSSL_CONF, PIPETLS_OPENSSL and LD_LIBRARY_PATH set by main)."""
    sys.path.insert(0, str(REPO / "pybind"))
    import ctypes

    from pipetls import _ffi
    from pipetls.bench.harness import Conn, ciphertext_to_reader, handshake, read_all, write_all
    from pipetls.bench.model import Setup, contexts
    from pipetls.bench.runner import _throwaway_cert, default_read_buf
    from pipetls.provider import Provider

    tmp = tempfile.mkdtemp(prefix="serial_pairs-")
    cert, key = _throwaway_cert(tmp)
    if args.engine is not None:
        from pipetls import Engine
        prov = Engine(str(args.engine), threads=args.lanes)
        prov.register_default()
        prov.out_of_place = bool(args.out_of_place)
    else:
        prov = Provider(args.provider)
    st = Setup(cipher=args.cipher, tls=args.tls, max_pipelines=8, write_size=args.write_size,
               read_buf=default_read_buf(8), certfile=cert, keyfile=key)
    sctx, cctx = contexts(st, True)
    s, c = Conn(sctx), Conn(cctx)
    try:
        handshake(s, c)
        wbuf = ctypes.create_string_buffer(args.write_size)
        ctypes.memset(wbuf, 0x5A, args.write_size)
        if args.scenario == "read":
            ciphertext_to_reader(s, c, wbuf, (args.writes + 8) * args.write_size,
                                 args.write_size)
            rbuf = ctypes.create_string_buffer(args.write_size)

            def run(total: int) -> None:
                got = read_all(c.ssl, rbuf, total)
                if got != total:
                    raise SystemExit(f"read {got} bytes, not {total}")
        else:
            null = _ffi.BIO_new(_ffi.BIO_s_null())
            _ffi.SSL_set_bio(s.ssl, s.rbio, null)
            s.wbio = null

            def run(total: int) -> None:
                write_all(s.ssl, wbuf, total, args.write_size)
        run(8 * args.write_size)  # warm
        prov.reset_stats()
        t0 = time.perf_counter_ns()
        run(args.writes * args.write_size)
        wall = time.perf_counter_ns() - t0
        stats = prov.stats()
    finally:
        c.close()
        s.close()
        sctx.close()
        cctx.close()
    pipelined = sum(n for k, n in stats.hist.items() if k > 1)
    print(json.dumps({"wall_ns": wall, "batch_ns": stats.batch_ns, "crypto_ns": stats.crypto_ns,
                      "writes": args.writes, "pipelined_updates": pipelined,
                      "records": stats.records,
                      "plaintext_records": getattr(stats, "plaintext_records", 0),
                      "contiguous_records": getattr(stats, "contiguous_records", 0)}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider", type=Path,
                    help="pipetls-provider.so built against the builds' headers")
    ap.add_argument("--engine", type=Path,
                    help="pipetls.so (the engine) instead of the provider: TLS 1.2, each build "
                         "as NAME/copy and NAME/lanes (OUT_OF_PLACE 0 and 1)")
    ap.add_argument("--out-of-place", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--build", action="append", required=True, metavar="NAME=PREFIX",
                    help="a build of the patched OpenSSL (repeatable)")
    ap.add_argument("--tls", choices=("1.2", "1.3"), default="1.2")
    ap.add_argument("--cipher", default="AES-256-GCM",
                    choices=("AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305"))
    ap.add_argument("--scenario", choices=("write", "read"), default="write",
                    help="time the writes (default) or the reads of the same stream")
    ap.add_argument("--rounds", type=int, default=21, help="runs per build (default 21)")
    ap.add_argument("--writes", type=int, default=64, help="SSL_writes per run (default 64)")
    ap.add_argument("--write-size", type=int, default=128 << 10,
                    help="bytes per SSL_write (default 128 KiB: 8 records of 16 KiB)")
    ap.add_argument("--lanes", type=int, default=2, help="provider THREADS (default 2)")
    ap.add_argument("--json", help="write every run to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if (args.provider is None) == (args.engine is None):
        ap.error("one of --provider and --engine")
    if args.engine is not None and args.tls != "1.2":
        ap.error("--engine: TLS 1.2 only (the engine does not pipeline TLS 1.3)")
    builds = []
    for spec in args.build:
        name, sep, prefix = spec.partition("=")
        if not sep or not (Path(prefix) / "lib" / "libssl.so.3").is_file():
            ap.error(f"--build {spec}: NAME=PREFIX with PREFIX/lib/libssl.so.3")
        if args.engine is None:
            builds.append((name, Path(prefix).resolve(), []))
        else:
            builds += [(f"{name}/copy", Path(prefix).resolve(), ["--out-of-place", "0"]),
                       (f"{name}/lanes", Path(prefix).resolve(), ["--out-of-place", "1"])]
    module = (args.provider if args.engine is None else args.engine).resolve()
    if not module.is_file():
        ap.error(f"{module}: no such file")
    runs: dict = {name: [] for name, _, _ in builds}
    with tempfile.TemporaryDirectory(prefix="serial_pairs-") as tmp:
        conf = Path(tmp) / "prov.cnf"
        conf.write_text(conf_text(module, args.lanes))
        argv = [sys.executable, __file__, "--child",
                "--engine" if args.engine is not None else "--provider", str(module),
                "--lanes", str(args.lanes), "--build", "x=/", "--tls", args.tls, "--cipher", args.cipher,
                "--writes", str(args.writes), "--write-size", str(args.write_size),
                "--scenario", args.scenario]
        for r in range(args.rounds):
            for name, prefix, extra in (builds if r % 2 == 0 else builds[::-1]):
                env = dict(os.environ, PIPETLS_OPENSSL=str(prefix),
                           LD_LIBRARY_PATH=str(prefix / "lib"),
                           OPENSSL_CONF=str(conf) if args.engine is None else os.devnull)
                env.pop("PIPETLS_STATS", None)
                out = subprocess.run(argv + extra, env=env, capture_output=True, text=True, timeout=300)
                if out.returncode != 0:
                    raise SystemExit(f"{name}: run failed\n{out.stderr}")
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"TLS {args.tls} {args.cipher}, {args.writes} {args.scenario}s of {args.write_size} bytes a run, "
          f"{args.rounds} runs a build, load average {os.getloadavg()[0]:.1f}")
    summary = {}
    for name, rs in runs.items():
        serial = [(r["wall_ns"] - r["batch_ns"]) / r["writes"] / 1e3 for r in rs]
        wall = [r["wall_ns"] / r["writes"] / 1e3 for r in rs]
        if any(r["pipelined_updates"] == 0 for r in rs):
            raise SystemExit(f"{name}: a run had no pipelined batch")
        summary[name] = {"serial_us": statistics.median(serial), "serial_min": min(serial),
                         "serial_max": max(serial), "batch_us": statistics.median(wall)}
        print(f"{name:10s} serial per batch {summary[name]['serial_us']:6.2f} us "
              f"[{min(serial):.2f}-{max(serial):.2f}]  wall per batch "
              f"{summary[name]['batch_us']:6.2f} us [{min(wall):.2f}-{max(wall):.2f}]")
    # run r of every build was taken in the same round: the ratio of the
    # first build's wall time to each other's, pair by pair, with a 95 %
    # bootstrap interval of the median
    names = list(runs)
    rnd = random.Random(1)
    for name in names[1:]:
        ratio = [a["wall_ns"] / b["wall_ns"] for a, b in zip(runs[names[0]], runs[name])]
        meds = sorted(statistics.median(rnd.choices(ratio, k=len(ratio))) for _ in range(2000))
        summary[name]["wall_ratio"] = statistics.median(ratio)
        summary[name]["wall_ratio_ci"] = [meds[50], meds[1949]]
        print(f"wall per batch, {names[0]} / {name}: {statistics.median(ratio):.3f} "
              f"[{meds[50]:.3f}-{meds[1949]:.3f}] (median of {len(ratio)} pairs, 95 % bootstrap)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args) | {"provider": str(module)},
                                               "summary": summary, "runs": runs}, indent=1,
                                              default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
