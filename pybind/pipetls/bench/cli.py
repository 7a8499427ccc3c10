"""``pipetls bench``: one TLS connection, stock OpenSSL against pipetls, in
the same run, on the same data.

Scenarios (see docs/performance.md for how to read the output):

``write``
    handshake over in-memory BIOs, then the sender's write BIO becomes a null
    sink and ``SSL_write`` of ``--total`` bytes in ``--write-size`` calls is
    timed.  One reusable buffer, one ctypes call per write: the harness is
    not in the timed loop.
``read``
    the sender's ciphertext is produced untimed into a memory BIO; the
    receiver's ``SSL_read`` of all of it from a read-only memory BIO is timed
    (``read_ahead`` and a read buffer of ``--read-buf`` bytes for pipetls).
``latency``
    one ``--latency-size`` (1 KiB) record per ``SSL_write``: mean time per
    write, stock against the engine with ``max_pipelines`` 1.  The Python
    loop's own time per call (measured around a trivial libcrypto call) is
    subtracted from both.
``loopback``
    a real TCP connection on 127.0.0.1; the receiver is a second process.
``busy``
    ``--connections`` (1,2,4,16,64) connections written at once, one thread
    each (in-memory BIOs, null sinks; the handshakes untimed), aggregate GB/s;
    one row per connection count, with the engine's counters (batches,
    records, inline batches and every counter its STATS reports).  Cipher:
    ``--cipher`` or AES-128-GCM.
``evp`` (OpenSSL >= 3.5: run under ``PIPETLS_OPENSSL=<prefix>``)
    no TLS: ``--pipes`` (32) messages of ``--pipe-size`` (16 KiB) through
    ``EVP_CipherPipeline*`` with the pipetls provider against the default
    provider's one-at-a-time loop (``EVP_EncryptInit_ex`` / ``Update`` /
    ``Final_ex`` per message), AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305;
    ``--pairs`` interleaved pairs of ``--batches`` batches each, the median
    ratio with its interval (see :mod:`pipetls.bench.evp`).

``--openssl patched`` (TLS 1.3 through the provider, patch 0002)
    the same scenarios on the patched OpenSSL 3.5 ($PIPETLS_OPENSSL, else
    the build ``pipetls build-openssl`` cached), run in a process of its
    own on it: the pipetls side's SSL_CTX prefers the provider's ciphers
    (``?provider=pipetls``; ``--path`` chooses engine or provider), the
    stock side is that build's default provider with max_pipelines 1.

``--control`` (write and read rows with more than one lane and
``max_pipelines`` above 1)
    a third side in every pair: stock on LANES connections at once, each
    in a process of its own (forked once the handshakes are done; for
    reads each connection's ciphertext is made untimed), each moving
    ``--pair-bytes``, compared per byte.  Its row
    (baseline "control: N stock connections in N processes") is the ceiling
    those cores give a pipelining of one connection in the same pairs: N
    whole connections share nothing.  The pipetls row gets ``of_control``,
    the median of control time / pipetls time with its interval.

Every row is ``--pairs`` (40) interleaved pairs: stock then pipetls, then
pipetls then stock, and so on, each side moving ``--pair-bytes`` (16 MiB;
``small`` 1 MiB, ``medium`` 16 MiB, ``large`` 32 MiB).  The speedup is the
median of the pairs' ratios with a 95 % bootstrap interval (2000 resamples,
``random.Random(20261201)``) and a verdict: "faster" / "slower" when the
interval lies above / below 1.0 and is at most 25 % of the median wide,
"faster, wide" / "slower, wide" when only the direction is known,
"straddles 1.0" (a narrow interval holding 1.0: no difference resolved) and
"too wide" (nothing to conclude).  The JSON carries every pair.

For every row: GB/s stock, GB/s pipetls, speedup, and the Amdahl bound
``L*T / (L*T_serial + T_crypto)`` with ``T`` the stock time of the same
work, ``T_serial`` the serial part the engine measured (the time its caller
spent outside record batches: libssl's copies, headers, IVs) and
``T_crypto = T - T_serial``, the part lanes can share; efficiency =
speedup / bound, computed pair by pair (each pair's ratio over its own
bound), the median of those, and never above 100 %: a higher median is
clamped and marked (its value kept as ``efficiency_raw``).
``crypto_fraction`` is the engine's own record-crypto time
(summed over lanes) over ``T``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from typing import Any, Callable, Optional

from .._argtypes import parse_size
from .model import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CIPHERS, MAX_REL_WIDTH,
                    PAIR_BYTES_PRESETS, SCENARIOS, BenchResult)
from .report import plot, plot_check, print_results, row_line
from .runner import DEFAULT_CONNECTIONS, DEFAULT_PAIR_BYTES, DEFAULT_PAIRS, machine_info, run

__all__ = ["add_parser", "main"]


def _size(text: str) -> int:
    """--total / --write-size / --read-buf: '4096', '256K', '64M' (> 0)."""
    return parse_size(text, minimum=1)


def _pair_bytes(text: str) -> int:
    """--pair-bytes: a size, or small / medium / large."""
    preset = PAIR_BYTES_PRESETS.get(text.strip().lower())
    if preset is not None:
        return preset
    try:
        return parse_size(text, minimum=1)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError("%s, or one of %s" % (e, ", ".join(PAIR_BYTES_PRESETS)))



def _int_list(lo: int, hi: int, what: str) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            vals = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                "%s: comma-separated integers, e.g. 1,2,8" % what) from None
        for v in vals:
            if not lo <= v <= hi:
                raise argparse.ArgumentTypeError("%s must be %d..%d, got %d" % (what, lo, hi, v))
        if not vals:
            raise argparse.ArgumentTypeError("%s: empty list" % what)
        return vals
    return parse


def _cipher_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    lookup = {k.lower(): k for k in CIPHERS}
    out = []
    for n in names:
        if n.lower() not in lookup:
            raise argparse.ArgumentTypeError("unknown cipher %r; choose from %s"
                                             % (n, ", ".join(CIPHERS)))
        out.append(lookup[n.lower()])
    return out


def _scenario_list(text: str) -> list[str]:
    vals = [x.strip() for x in text.split(",") if x.strip()]
    for v in vals:
        if v not in SCENARIOS:
            raise argparse.ArgumentTypeError("unknown scenario %r; choose from %s"
                                             % (v, ", ".join(SCENARIOS)))
    return vals


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="measure pipetls against stock OpenSSL (ratios in the same run)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", type=_scenario_list, default=["write", "read", "latency"],
                   help="comma list of %s (default: write,read,latency)" % ",".join(SCENARIOS))
    p.add_argument("--cipher", type=_cipher_list, default=None,
                   help="comma list of %s (default: all)" % ", ".join(CIPHERS))
    p.add_argument("--pairs", type=int, default=None,
                   help="interleaved stock/pipetls pairs per row (default %d; evp: 21)"
                   % DEFAULT_PAIRS)
    p.add_argument("--pair-bytes", type=_pair_bytes, default=None, metavar="BYTES",
                   help="bytes per side of a pair: a size or small (1M), medium (16M), "
                   "large (32M) (default 16M)")
    p.add_argument("--total", type=_size, default=None,
                   help="the older name of --pair-bytes")
    p.add_argument("--write-size", type=_size, default=256 << 10,
                   help="bytes per SSL_write (default 256K)")
    p.add_argument("--max-pipelines", type=_int_list(1, 32, "max_pipelines"), default=[8],
                   help="comma list, 1..32 (default 8)")
    p.add_argument("--lanes", type=_int_list(1, 256, "lanes"), default=None,
                   help="comma list of engine THREADS (default: online CPUs)")
    p.add_argument("--reps", type=int, default=None, help="the older name of --pairs")
    p.add_argument("--connections", type=_int_list(1, 1024, "connections"),
                   default=list(DEFAULT_CONNECTIONS),
                   help="busy: comma list of connection counts, one thread each "
                   "(default 1,2,4,16,64)")
    p.add_argument("--tls", choices=("1.2", "1.3"), default="1.2", help="TLS version (default 1.2)")
    p.add_argument("--openssl", choices=("system", "patched"), default="system",
                   help="patched: measure on the patched OpenSSL 3.5 (openssl_patches/; "
                   "$PIPETLS_OPENSSL, else the build 'pipetls build-openssl' cached), in a "
                   "process of its own; the pipetls side is then the provider where that "
                   "libssl pipelines --tls through it, the stock side its default provider "
                   "with max_pipelines 1 (default: system, this process's libssl)")
    p.add_argument("--path", choices=("auto", "engine", "provider"), default="auto",
                   help="what pipelines the pipetls side: the engine, or the provider "
                   "(OpenSSL >= 3.5; refused where libssl does not pipeline --tls through "
                   "it). auto: the provider with --openssl patched where the libssl "
                   "pipelines --tls through it, else the engine")
    p.add_argument("--read-buf", type=_size, default=None,
                   help="pipetls read buffer (default: pipetls's own, room for 2 x "
                   "max_pipelines records)")
    p.add_argument("--control", action="store_true",
                   help="write and read rows (lanes > 1, max_pipelines > 1): a third side in "
                   "every pair, stock on LANES connections at once, one process each, and a "
                   "control row: the ceiling these cores give in the same pairs")
    p.add_argument("--engine", default=None, help="engine .so (default: the bundled one)")
    e = p.add_argument_group("evp scenario")
    e.add_argument("--pipes", type=int, choices=range(1, 33), default=32, metavar="N",
                   help="messages per pipeline, 1..32 (default 32)")
    e.add_argument("--pipe-size", type=_size, default=16 << 10, metavar="BYTES",
                   help="bytes per message (default 16K)")
    e.add_argument("--batches", type=int, default=32,
                   help="pipelines per measurement (default 32)")
    e.add_argument("--provider", default=None,
                   help="provider .so (default: pipetls.provider_path())")
    p.add_argument("--cert", default=None, help="server certificate (default: a throwaway one)")
    p.add_argument("--key", default=None, help="server key")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the results as JSON to FILE (or stdout)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="plot speedup against lanes and max_pipelines: FILE.svg (no dependency) or FILE.png (needs matplotlib)")
    p.set_defaults(func=main)
    assert isinstance(p, argparse.ArgumentParser)
    return p


def _bench_argv(args: argparse.Namespace) -> list[str]:
    """The command line after ``bench`` (pipetls.cli.main keeps it in args.argv)."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    return argv[argv.index("bench") + 1:] if "bench" in argv else argv


def _on_prefix(prefix: str) -> bool:
    """Whether this process's libcrypto is the one under ``prefix``."""
    from .. import _ffi

    root = os.path.realpath(prefix) + os.sep
    return os.path.realpath(_ffi.LIBCRYPTO_PATH).startswith(root)


def _reexec(prefix: str, args: argparse.Namespace) -> int:
    """``pipetls bench`` again, in a process on ``prefix`` alone (invariant 7:
    libssl is loaded once per process)."""
    from .._libload import prefix_library_env

    env = prefix_library_env(prefix)
    env["PIPETLS_OPENSSL"] = prefix
    # the system's openssl.cnf is 3.0's (an engine section ...): none here
    env.setdefault("OPENSSL_CONF", os.devnull)
    argv = [sys.executable, "-m", "pipetls", "bench"] + _bench_argv(args)
    return subprocess.call(argv, env=env)


def _choose_provider(args: argparse.Namespace, lanes: Optional[list[int]]) -> Any:
    """The Provider of the pipetls side, or None for the engine (see --path)."""
    from ..errors import ProviderError
    from ..paths import probe
    from ..provider import load_provider

    if args.path == "engine":
        return None
    if args.path == "auto" and args.openssl != "patched":
        return None  # as before: the engine
    if lanes is not None and len(lanes) > 1:
        raise SystemExit("pipetls bench: the provider's lanes are its THREADS, set when it is "
                         "loaded: give one --lanes value with the provider path")
    try:
        provider = load_provider(args.provider, threads=lanes[0] if lanes else None)
        found = probe(args.tls)
    except ProviderError as exc:
        if args.path == "provider":
            raise SystemExit("pipetls bench --path provider: %s" % exc) from None
        return None
    if found.pipelined:
        return provider
    if args.path == "provider" or args.tls == "1.3":
        raise SystemExit("pipetls bench: this libssl does not pipeline TLS %s through the "
                         "provider: %s" % (args.tls, found.reason))
    return None  # TLS 1.2 on a libssl without provider pipelining there: the engine


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if args.openssl == "patched":
        from ..build_openssl import patched_prefix

        prefix = patched_prefix()  # SystemExit with how to get one
        if not _on_prefix(prefix):
            return _reexec(prefix, args)

    pairs = args.pairs if args.pairs is not None else args.reps
    if pairs is not None and pairs < 1:
        raise SystemExit("pipetls bench: --pairs (--reps) must be >= 1")
    if args.batches < 1:
        raise SystemExit("pipetls bench: --batches must be >= 1")
    pair_bytes = args.pair_bytes or args.total or DEFAULT_PAIR_BYTES
    tls_pairs = pairs if pairs is not None else DEFAULT_PAIRS
    evp_pairs = pairs if pairs is not None else 21
    if (args.cert is None) != (args.key is None):
        raise SystemExit("pipetls bench: give both --cert and --key, or neither")
    if args.plot:
        plot_check(args.plot)
    if args.control:
        lane_values = args.lanes or [os.cpu_count() or 1]
        if (not {"write", "read"} & set(args.scenario) or max(lane_values) < 2
                or max(args.max_pipelines) < 2):
            raise SystemExit("pipetls bench --control: it measures write and read rows with "
                             "more than one lane (--lanes, default the online CPUs: %d) and "
                             "--max-pipelines above 1; this run has none"
                             % (os.cpu_count() or 1))
    provider = None
    if "evp" not in args.scenario or len(args.scenario) > 1:
        provider = _choose_provider(args, args.lanes)
    json_to_stdout = args.json == "-"
    console = Console(stderr=json_to_stdout)
    if not console.is_terminal:  # a log or a pipe: room for the whole table
        console = Console(stderr=json_to_stdout, width=200)
    with Progress(TextColumn("[bold]bench[/] {task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task("starting", total=1)

        def progress(i: int, n: int, what: str) -> None:
            prog.update(task, completed=i, total=n, description=what)

        def row_done(r: BenchResult) -> None:
            # one line per finished row, kept above the bar (and in a log)
            prog.console.print(row_line(r))

        results = run(scenarios=args.scenario, ciphers=args.cipher, total=pair_bytes,
                      provider=provider,
                      write_size=args.write_size, max_pipelines=args.max_pipelines,
                      lanes=args.lanes, pairs=tls_pairs, tls=args.tls, read_buf=args.read_buf,
                      engine_path=args.engine, certfile=args.cert, keyfile=args.key,
                      progress=progress, connections=args.connections, row_done=row_done,
                      control=args.control,
                      evp={"pipes": args.pipes, "size": args.pipe_size, "pairs": evp_pairs,
                           "batches": args.batches, "provider_path": args.provider})
    doc: dict[str, Any] = {"machine": machine_info(),
           "config": {"total": pair_bytes, "pair_bytes": pair_bytes,
                      "write_size": args.write_size, "reps": tls_pairs, "pairs": tls_pairs,
                      "evp_pairs": evp_pairs, "connections": args.connections,
                      "interval": {"method": "bootstrap of the median pair ratio",
                                   "confidence": 0.95, "resamples": BOOTSTRAP_RESAMPLES,
                                   "seed": BOOTSTRAP_SEED, "max_rel_width": MAX_REL_WIDTH},
                      "pipes": args.pipes, "pipe_size": args.pipe_size,
                      "batches": args.batches,
                      "tls": args.tls, "openssl": args.openssl, "control": args.control,
                      "path": "provider" if provider is not None else "engine",
                      "command": " ".join(["pipetls", "bench"] + sys.argv[2:])},
           "results": [asdict(r) for r in results]}
    if args.json is not None:
        text = json.dumps(doc, indent=2)
        if json_to_stdout:
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    only_evp = bool(results) and all(r.scenario == "evp" for r in results)
    print_results(console, doc, results, args.tls, evp_pairs if only_evp else tls_pairs)
    if args.plot:
        plot(results, args.plot)
        console.print("plot written to %s" % args.plot)
    return 0
