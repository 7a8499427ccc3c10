#!/usr/bin/env python3
"""TLS 1.3 on the patched OpenSSL 3.5 (patch 0002): the pipetls provider
against stock 3.5 (the same build, default provider, ``max_pipelines`` 1).

This is now ``pipetls bench --openssl patched --tls 1.3`` (docs/performance.md,
"TLS 1.3 (patch 0002)"); the script runs it with the rows it used to
measure: AES-256-GCM and ChaCha20-Poly1305, write and read, ``max_pipelines``
8 and 1, in interleaved pairs.

    [PIPETLS_OPENSSL=<prefix>] python3 bench/tls13_pairs.py \
        [--provider build/provider-3.5/pipetls-provider.so] [--pairs 41] [--json out.json]

Without PIPETLS_OPENSSL the prefix is the build that ``pipetls build-openssl``
cached.  Every other option of ``pipetls bench`` can follow ``--``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider", help="pipetls-provider.so built against the prefix "
                    "(default: pipetls.provider_path())")
    ap.add_argument("--pairs", type=int, default=41, help="interleaved pairs per row (default 41)")
    ap.add_argument("--pair-bytes", default="4M", help="bytes per side of a pair (default 4M)")
    ap.add_argument("--write-size", default="128K",
                    help="bytes per SSL_write (default 128K: 8 records of 16 KiB)")
    ap.add_argument("--lanes", type=int, default=None,
                    help="provider THREADS (default: the provider's, online CPUs)")
    ap.add_argument("--json", help="write the rows, every pair included, to this file")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- more pipetls bench options")
    args = ap.parse_args()
    argv = [sys.executable, "-m", "pipetls", "bench", "--openssl", "patched", "--tls", "1.3",
            "--scenario", "write,read", "--cipher", "AES-256-GCM,ChaCha20-Poly1305",
            "--max-pipelines", "8,1", "--pairs", str(args.pairs),
            "--pair-bytes", args.pair_bytes, "--write-size", args.write_size]
    if args.provider:
        argv += ["--provider", str(Path(args.provider).resolve())]
    if args.lanes is not None:
        argv += ["--lanes", str(args.lanes)]
    if args.json:
        argv += ["--json", args.json]
    argv += [a for a in args.rest if a != "--"]
    env = dict(os.environ)
    # a source checkout without the package installed
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "pybind")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.call(argv, env=env)


if __name__ == "__main__":
    sys.exit(main())
