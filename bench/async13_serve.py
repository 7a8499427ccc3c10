#!/usr/bin/env python3
"""Bench (not a test): one thread serving N TLS 1.3 connections through the
pipetls provider on the patched OpenSSL 3.5, async on and off, in the same
run -- the provider's counterpart of ``python -m pipetls.bench.async_serve``
(the engine, TLS 1.2).

    PIPETLS_OPENSSL=<prefix> python3 bench/async13_serve.py \\
        --provider build/provider-3.5/pipetls-provider.so \\
        [--conns 1,8,64] [--reps 5] [--response 262144] [--total 33554432] [--json]

The server is this process, on the patched libssl: ONE thread, the
``selectors`` loop of pipetls.bench.async_serve over N non-blocking
pipetls Connections, TLS 1.3 AES-128-GCM, ``max_pipelines`` 8, the
provider loaded by an openssl.cnf written here (``ASYNC = 2``,
``THREADS`` = ``--lanes``, ``default_properties = ?provider=pipetls``) and
``Context(async_mode=True)`` or not. The clients are one other process on
the system's stock OpenSSL 3.0 (pipetls.Connection, no engine, no
provider): each connection asks for ``--response`` bytes (a 4-byte
request), reads them, asks again, until ``--total`` bytes have crossed;
the client times each request (send to last byte) and the whole run.

Reported per N and mode, over ``--reps`` interleaved runs (off, on, off,
on ...): median aggregate GB/s with min..max, per-request latency
p50/p90/p99 over all requests, and the provider's counters of the server
(updates posted to the lanes while their job paused, pauses). Timing on a
shared machine is noisy: compare on/off of the same run only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "pybind"))

SUITE = "TLS_AES_128_GCM_SHA256"
REQ = 4


def conf_text(module: Path, lanes: int) -> str:
    return "\n".join([
        "openssl_conf = openssl_init", "",
        "[openssl_init]", "providers = provider_sect", "alg_section = evp_props", "",
        "[provider_sect]", "default = default_sect", "pipetls = pipetls_sect", "",
        "[default_sect]", "activate = 1", "",
        "[pipetls_sect]", f"module = {module}", "activate = 1", f"THREADS = {lanes}",
        "ASYNC = 2", "",
        "[evp_props]", "default_properties = ?provider=pipetls", ""])


# ------------------------------------------------------------------ client

def client_main(port: int, n: int, total: int, size: int) -> None:
    """The client process (stock OpenSSL 3.0): n connections, requests
    until total bytes; prints {"wall", "bytes", "lat"}."""
    from pipetls import Connection, Context, WantRead

    ctx = Context(verify=False, check_hostname=False, min_version="TLSv1.3",
                  max_version="TLSv1.3", ciphersuites=SUITE)
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(ctx, sock, timeout=None)
        conn.do_handshake()
        sock.setblocking(False)
        conn.timeout = 0
        conns.append((conn, sock))
    requests = max(1, total // size)
    issued = 0
    lat: list = []
    buf = bytearray(1 << 18)
    state: dict = {}
    t_start = time.perf_counter()
    for conn, sock in conns:
        if issued < requests:
            conn.write(b"\0" * REQ)
            issued += 1
            state[sock.fileno()] = [conn, sock, size, time.perf_counter()]
            sel.register(sock, selectors.EVENT_READ, sock.fileno())
    while state:
        for key, _ in sel.select(30.0):
            st = state[key.data]
            try:
                while st[2] > 0:
                    st[2] -= st[0].readinto(buf)
            except WantRead:
                continue
            lat.append(time.perf_counter() - st[3])
            if issued < requests:
                st[0].write(b"\0" * REQ)
                issued += 1
                st[2], st[3] = size, time.perf_counter()
            else:
                sel.unregister(st[1])
                del state[key.data]
    wall = time.perf_counter() - t_start
    for conn, sock in conns:
        conn.close()
        sock.close()
    json.dump({"wall": wall, "bytes": len(lat) * size, "lat": lat}, sys.stdout)


# ------------------------------------------------------------------ server

class _Param(ctypes.Structure):  # OSSL_PARAM
    _fields_ = [("key", ctypes.c_char_p), ("data_type", ctypes.c_uint),
                ("data", ctypes.c_void_p), ("data_size", ctypes.c_size_t),
                ("return_size", ctypes.c_size_t)]


class ProviderCounters:
    """The provider's async counters (OSSL_PROVIDER_get_params)."""

    KEYS = (b"async_batches", b"async_pauses", b"async_resumes")

    def __init__(self) -> None:
        prefix = Path(os.environ["PIPETLS_OPENSSL"])
        lib = next(p for p in (prefix / "lib64" / "libcrypto.so.3",
                               prefix / "lib" / "libcrypto.so.3") if p.exists())
        self.crypto = ctypes.CDLL(str(lib))
        self.crypto.OSSL_PROVIDER_load.restype = ctypes.c_void_p
        self.crypto.OSSL_PROVIDER_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.crypto.OSSL_PROVIDER_get_params.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.prov = self.crypto.OSSL_PROVIDER_load(None, b"pipetls")
        if not self.prov:
            raise SystemExit("the pipetls provider is not loaded (see the openssl.cnf)")

    def read(self) -> dict:
        vals = [ctypes.c_uint64(0) for _ in self.KEYS]
        params = (_Param * (len(self.KEYS) + 1))()
        for i, k in enumerate(self.KEYS):
            params[i] = _Param(k, 2, ctypes.cast(ctypes.byref(vals[i]), ctypes.c_void_p), 8,
                               0)
        if self.crypto.OSSL_PROVIDER_get_params(self.prov, params) != 1:
            raise SystemExit("OSSL_PROVIDER_get_params failed")
        return {k.decode(): v.value for k, v in zip(self.KEYS, vals)}


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def one_run(cert: str, key: str, n: int, async_mode: bool, args, response: bytes,
            counters: ProviderCounters) -> dict:
    from pipetls import Context
    from pipetls.bench.async_serve import serve

    ctx = Context(server=True, certfile=cert, keyfile=key, min_version="TLSv1.3",
                  max_version="TLSv1.3", ciphersuites=SUITE, max_pipelines=args.pipelines,
                  async_mode=async_mode)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(n)
    port = lsock.getsockname()[1]
    before = counters.read()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIPETLS_OPENSSL", "LD_LIBRARY_PATH", "OPENSSL_CONF")}
    env["OPENSSL_CONF"] = os.devnull
    cli = subprocess.Popen([sys.executable, __file__, "--client", str(port), str(n),
                            str(args.total), str(len(response))], stdout=subprocess.PIPE,
                           env=env)
    try:
        serve(lsock, ctx, n, response)
        out, _ = cli.communicate(timeout=300)
    finally:
        if cli.poll() is None:
            cli.kill()
        lsock.close()
        ctx.close()
    after = counters.read()
    if cli.returncode != 0:
        raise SystemExit(f"the client failed (rc {cli.returncode})")
    r = json.loads(out)
    return {"gbps": r["bytes"] / r["wall"] / 1e9, "lat": r["lat"],
            **{k: after[k] - before[k] for k in after}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider", help="pipetls-provider.so built against the prefix")
    ap.add_argument("--conns", default="1,8,64")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--response", type=int, default=256 * 1024)
    ap.add_argument("--total", type=int, default=32 << 20)
    ap.add_argument("--pipelines", type=int, default=8)
    ap.add_argument("--lanes", type=int, default=2, help="provider THREADS (default 2)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--client", nargs=4, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(*args.client)
        return 0
    if not args.provider or "PIPETLS_OPENSSL" not in os.environ:
        ap.error("--provider and PIPETLS_OPENSSL=<patched prefix> are needed")
    module = Path(args.provider).resolve()
    if not module.is_file():
        ap.error(f"--provider {module}: no such file")
    tmp = tempfile.mkdtemp(prefix="async13-")
    conf = Path(tmp) / "openssl.cnf"
    conf.write_text(conf_text(module, args.lanes))
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OPENSSL_CONF": os.devnull})
    os.environ["OPENSSL_CONF"] = str(conf)  # before libcrypto is mapped
    import pipetls  # noqa: F401  (maps the libssl of PIPETLS_OPENSSL)

    counters = ProviderCounters()
    response = os.urandom(args.response)
    rows = []
    for n in [int(x) for x in args.conns.split(",")]:
        runs: dict = {False: [], True: []}
        for _ in range(args.reps):
            for mode in (False, True):
                runs[mode].append(one_run(cert, key, n, mode, args, response, counters))
        for mode in (False, True):
            rs = runs[mode]
            lat = [x for r in rs for x in r["lat"]]
            gb = [r["gbps"] for r in rs]
            rows.append({
                "conns": n, "async": mode,
                "gbps_median": statistics.median(gb), "gbps_min": min(gb), "gbps_max": max(gb),
                "lat_ms_p50": pct(lat, 0.50) * 1e3, "lat_ms_p90": pct(lat, 0.90) * 1e3,
                "lat_ms_p99": pct(lat, 0.99) * 1e3,
                "async_batches": sum(r["async_batches"] for r in rs),
                "async_pauses": sum(r["async_pauses"] for r in rs),
            })
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print("load average:", " ".join(open("/proc/loadavg").read().split()[:3]))
    print("conns async  GB/s (min..max)        p50 ms  p90 ms  p99 ms  posted  pauses")
    for r in rows:
        print("%5d %5s  %.3f (%.3f..%.3f)  %7.2f %7.2f %7.2f  %6d  %6d" % (
            r["conns"], "on" if r["async"] else "off", r["gbps_median"], r["gbps_min"],
            r["gbps_max"], r["lat_ms_p50"], r["lat_ms_p90"], r["lat_ms_p99"],
            r["async_batches"], r["async_pauses"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
