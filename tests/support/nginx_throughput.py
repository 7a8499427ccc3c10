"""nginx -> curl on loopback: pipelining on vs off, in one run (a
measurement, not a test; docs/performance.md, "nginx -> curl").

    cd tests && python -m support.nginx_throughput --prefix <patched prefix> \
        [--engine pipetls.so] [--size 256M] [--rounds 7] [--suite aes128gcm]

Three instances of Debian's nginx on the patched OpenSSL 3.5, started side
by side, serve the same file from the page cache:

* ``stock``: no engine, no pipelining (OpenSSL 3.5's own ciphers);
* ``engine``: the pipetls engine loaded (OPENSSL_CONF), no MaxPipelines;
* ``pipelined``: the engine and ``MaxPipelines 8`` (the server block of
  ``pipetls config --nginx``: ssl_buffer_size 128k).

All three have ``ssl_buffer_size 128k``.  The client is stock curl on the
system's libraries (``-o /dev/null``).  Each round downloads the file once
from each, in a shuffled order; the figure of a download is curl's own
``size_download / time_total``.  Printed: the median GB/s of each and the
median of the per-round ratios against ``stock`` with their range.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pipetls._argtypes import parse_size  # noqa: E402
from pipetls.cli import config_text  # noqa: E402
from pipetls.nginx import SslConfCommands, nginx_text  # noqa: E402
from support.net import free_port  # noqa: E402
from support.nginx import Nginx  # noqa: E402
from support.patched import penv  # noqa: E402
from support.pki import make_certs  # noqa: E402

CIPHERS = {"aes128gcm": "ECDHE-RSA-AES128-GCM-SHA256",
           "aes256gcm": "ECDHE-RSA-AES256-GCM-SHA384",
           "chacha20": "ECDHE-RSA-CHACHA20-POLY1305"}


def stock_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "OPENSSL_CONF", "PIPETLS_STATS")}
    env["OPENSSL_CONF"] = os.devnull
    return env


def download(port: int, ca: str) -> float:
    """GB/s of one download to /dev/null, as curl measured it."""
    r = subprocess.run(["curl", "-sS", "--fail", "--cacert", ca, "--resolve",
                        f"localhost:{port}:127.0.0.1", "-o", os.devnull, "-w",
                        "%{size_download} %{time_total}", f"https://localhost:{port}/file"],
                       capture_output=True, text=True, timeout=600, env=stock_env())
    if r.returncode != 0:
        raise SystemExit(f"curl failed ({r.returncode}): {r.stderr}")
    size, seconds = r.stdout.split()
    return int(size) / float(seconds) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", required=True, help="the patched OpenSSL 3.5 prefix")
    ap.add_argument("--engine", help="pipetls.so (default: pipetls.engine_path())")
    ap.add_argument("--size", type=lambda t: parse_size(t, minimum=1), default=256 << 20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--suite", choices=sorted(CIPHERS), default="aes128gcm")
    ap.add_argument("--threads", type=int, help="engine THREADS (default: online CPUs)")
    args = ap.parse_args()
    if args.engine is None:
        from pipetls import engine_path
        args.engine = engine_path()
    prefix = Path(args.prefix).resolve()
    with tempfile.TemporaryDirectory(prefix="pipetls-nginx-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        certs = make_certs(work / "certs", key="rsa")
        root = work / "www"
        root.mkdir()
        with open(root / "file", "wb") as f:
            for _ in range(0, args.size, 1 << 22):
                f.write(os.urandom(min(1 << 22, args.size - f.tell())))
        cnf = work / "pipetls.cnf"
        cnf.write_text(config_text(args.engine, args.threads))
        servers = {}
        for name in ("stock", "engine", "pipelined"):
            port = free_port()
            pipes = 8 if name == "pipelined" else 1
            block = nginx_text(SslConfCommands(max_pipelines=8), openssl_conf=str(cnf),
                               listen=f"127.0.0.1:{port}", cert=str(certs.cert),
                               key=str(certs.key), root=str(root), ciphers=CIPHERS[args.suite],
                               buffer_size=128 << 10)
            if pipes == 1:
                block = block.replace("    ssl_conf_command MaxPipelines 8;\n", "")
            env = penv(prefix, cnf if name != "stock" else None)
            servers[name] = Nginx(work / name, block, env=env, port=port, stats=False).start()
        try:
            for s in servers.values():   # warm the page cache and the sessions
                download(s.port, str(certs.ca))
            results = {name: [] for name in servers}
            for _ in range(args.rounds):
                order = list(servers)
                random.shuffle(order)
                for name in order:
                    results[name].append(download(servers[name].port, str(certs.ca)))
        finally:
            for s in servers.values():
                s.stop()
    print(f"nginx -> curl, {args.suite}, {args.size >> 20} MiB, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs")
    for name, v in results.items():
        line = f"  {name:10s} median {statistics.median(v):.3f} GB/s " \
               f"(min {min(v):.3f}, max {max(v):.3f})"
        if name != "stock":
            ratios = [a / b for a, b in zip(v, results["stock"])]
            line += f"; vs stock: median {statistics.median(ratios):.2f}x " \
                    f"(range {min(ratios):.2f}-{max(ratios):.2f})"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
