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

For every row: GB/s stock, GB/s pipetls, speedup, and the Amdahl bound
``L*T / (L*T_serial + T_crypto)`` with ``T`` the stock time of the same
work, ``T_serial`` the serial part the engine measured (the time its caller
spent outside record batches: libssl's copies, headers, IVs) and
``T_crypto = T - T_serial``, the part lanes can share; efficiency =
speedup / bound.  Medians of ``--reps`` repetitions, stock and pipetls
interleaved.  ``crypto_fraction`` is the engine's own record-crypto time
(summed over lanes) over ``T``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from . import _ffi
from .context import Context
from .engine import load_engine

__all__ = ["add_parser", "main", "run", "CIPHERS", "BenchResult"]

# name -> (TLS 1.2 suite, Encrypt-then-MAC, stock baseline label)
CIPHERS = {
    "AES-128-GCM": ("ECDHE-RSA-AES128-GCM-SHA256", True, "stock"),
    "AES-256-GCM": ("ECDHE-RSA-AES256-GCM-SHA384", True, "stock"),
    "ChaCha20-Poly1305": ("ECDHE-RSA-CHACHA20-POLY1305", True, "stock"),
    "AES-128-CBC-HMAC-SHA1": ("AES128-SHA", False, "stock MULTIBLOCK"),
    "AES-256-CBC-HMAC-SHA256": ("AES256-SHA256", False, "stock MULTIBLOCK"),
    "AES-256-CBC+HMAC-SHA256-EtM": ("AES256-SHA256", True, "stock"),
}
TLS13_SUITES = {
    "AES-128-GCM": "TLS_AES_128_GCM_SHA256",
    "AES-256-GCM": "TLS_AES_256_GCM_SHA384",
    "ChaCha20-Poly1305": "TLS_CHACHA20_POLY1305_SHA256",
}
SCENARIOS = ("write", "read", "latency", "loopback")
BIO_CTRL_INFO = 3


@dataclass
class BenchResult:
    scenario: str
    cipher: str
    suite: str
    etm: bool
    tls: str
    max_pipelines: int
    lanes: int
    baseline: str
    total_bytes: int
    write_size: int
    stock_gbps: float
    pipetls_gbps: float
    speedup: float
    bound: float
    efficiency: float
    crypto_fraction: float
    serial_fraction: float = 0.0
    batches: int = 0
    mean_batch: float = 0.0
    stock_reps: list = field(default_factory=list)
    pipetls_reps: list = field(default_factory=list)
    unit: str = "GB/s"


def amdahl_bound(lanes, t_total, t_crypto):
    """L*T / (L*T_serial + T_crypto), T_serial = T - T_crypto (>= 0)."""
    if t_total <= 0:
        return 1.0
    t_crypto = min(max(t_crypto, 0.0), t_total)
    t_serial = t_total - t_crypto
    return lanes * t_total / (lanes * t_serial + t_crypto)


def serial_time(t_pipetls, delta):
    """The serial part of a pipetls run: its time outside record batches."""
    if delta is None:
        return t_pipetls
    return min(max(t_pipetls - delta.batch_ns / 1e9, 0.0), t_pipetls)


# --------------------------------------------------------------------------
# connections over memory BIOs, built from the raw handles
# --------------------------------------------------------------------------
class _Conn:
    """One SSL* over two memory BIOs we own the handles of."""

    def __init__(self, ctx):
        self.ssl = _ffi.SSL_new(ctx.handle)
        if not self.ssl:
            raise RuntimeError("SSL_new failed")
        self.rbio = _ffi.BIO_new(_ffi.BIO_s_mem())
        self.wbio = _ffi.BIO_new(_ffi.BIO_s_mem())
        _ffi.SSL_set_bio(self.ssl, self.rbio, self.wbio)  # the SSL owns them now
        # one SSL_write writes everything, as in a C program: partial writes
        # (pipetls.Context's default) would cost stock one Python call per
        # record and pipetls one per batch, an unfair harness
        _ffi.SSL_ctrl(self.ssl, _ffi.SSL_CTRL_CLEAR_MODE, _ffi.SSL_MODE_ENABLE_PARTIAL_WRITE, None)

    def close(self):
        if self.ssl:
            _ffi.SSL_free(self.ssl)  # frees its BIOs
            self.ssl = None


def _shuttle(src, dst, buf):
    moved = 0
    while True:
        n = _ffi.BIO_read(src.wbio, buf, len(buf))
        if n <= 0:
            return moved
        _ffi.BIO_write(dst.rbio, buf, n)
        moved += n


def _handshake(server, client):
    _ffi.SSL_set_accept_state(server.ssl)
    _ffi.SSL_set_connect_state(client.ssl)
    buf = ctypes.create_string_buffer(1 << 16)
    for _ in range(50):
        _ffi.SSL_do_handshake(client.ssl)
        _shuttle(client, server, buf)
        _ffi.SSL_do_handshake(server.ssl)
        _shuttle(server, client, buf)
        if _ffi.SSL_is_init_finished(server.ssl) and _ffi.SSL_is_init_finished(client.ssl):
            # TLS 1.3: let the client take the session tickets
            one = ctypes.c_size_t()
            _ffi.SSL_read_ex(client.ssl, buf, 1, ctypes.byref(one))
            _ffi.ERR_clear_error()
            return
    raise RuntimeError("bench: handshake did not complete")


@dataclass
class _Setup:
    cipher: str
    tls: str
    max_pipelines: int
    write_size: int
    read_buf: int
    certfile: str
    keyfile: str


def _contexts(st: _Setup, pipelined: bool):
    suite, etm, _ = CIPHERS[st.cipher]
    knobs = {}
    if pipelined:
        knobs = {"max_pipelines": st.max_pipelines}
        if st.max_pipelines > 1:
            knobs["default_read_buffer_len"] = st.read_buf
    common = dict(max_version="TLSv1.3" if st.tls == "1.3" else "TLSv1.2",
                  min_version="TLSv1.3" if st.tls == "1.3" else "TLSv1.2",
                  encrypt_then_mac=etm, **knobs)
    if st.tls == "1.3":
        common["ciphersuites"] = TLS13_SUITES[st.cipher]
    else:
        common["ciphers"] = suite
    server = Context(server=True, certfile=st.certfile, keyfile=st.keyfile, **common)
    client = Context(server=False, verify=False, **common)
    return server, client


def _write_all(ssl, buf, total, size):
    """SSL_write total bytes from buf in size-byte calls (the timed loop)."""
    written = ctypes.c_size_t()
    done = 0
    write_ex = _ffi.SSL_write_ex
    while done < total:
        n = min(size, total - done)
        if write_ex(ssl, buf, n, ctypes.byref(written)) != 1:
            raise RuntimeError("bench: SSL_write failed")
        done += written.value


def _harness_time(calls, buf, size):
    """Seconds the timed loop's Python and ctypes work takes for ``calls``
    iterations without TLS: the same loop around a write of ``size`` bytes
    into a null BIO (which itself costs a little: the correction errs
    against pipetls). The latency scenario subtracts it from both sides."""
    written = ctypes.c_size_t()
    sink = _ffi.BIO_new(_ffi.BIO_s_null())
    write = _ffi.BIO_write
    try:
        done, t0 = 0, time.perf_counter()
        while done < calls:
            write(sink, buf, size)
            ctypes.byref(written)
            done += 1
        return time.perf_counter() - t0
    finally:
        _ffi.BIO_free(sink)


def _read_all(ssl, buf, total):
    got = ctypes.c_size_t()
    done = 0
    read_ex = _ffi.SSL_read_ex
    size = len(buf)
    while done < total:
        if read_ex(ssl, buf, size, ctypes.byref(got)) != 1:
            raise RuntimeError("bench: SSL_read failed after %d of %d bytes" % (done, total))
        done += got.value
    return done


def _one_run(st: _Setup, engine, pipelined, scenario, total, lanes):
    """One repetition; returns (seconds, stats delta or None)."""
    if engine is not None:
        if pipelined:
            engine.threads = lanes
            engine.register_default()
        else:
            engine.unregister()
    sctx, cctx = _contexts(st, pipelined)
    s, c = _Conn(sctx), _Conn(cctx)
    try:
        _handshake(s, c)
        wbuf = ctypes.create_string_buffer(max(st.write_size, 1))
        ctypes.memset(wbuf, 0x5A, len(wbuf))
        if scenario == "write" or scenario == "latency":
            null = _ffi.BIO_new(_ffi.BIO_s_null())
            _ffi.SSL_set_bio(s.ssl, s.rbio, null)  # frees the old write BIO
            s.wbio = null
            _write_all(s.ssl, wbuf, min(total, 4 * st.write_size), st.write_size)  # warm
            before = engine.stats() if pipelined else None
            t0 = time.perf_counter()
            _write_all(s.ssl, wbuf, total, st.write_size)
            dt = time.perf_counter() - t0
            delta = engine.stats() - before if pipelined else None
            if scenario == "latency":  # small writes: take the harness out
                calls = -(-total // st.write_size)
                dt = max(dt - _harness_time(calls, wbuf, st.write_size), dt * 0.05)
            return dt, delta
        # read: ciphertext produced untimed, then read from a read-only BIO
        _write_all(s.ssl, wbuf, total, st.write_size)
        ptr = ctypes.c_void_p()
        length = _ffi.BIO_ctrl(s.wbio, BIO_CTRL_INFO, 0, ctypes.byref(ptr))
        ro = _ffi.BIO_new_mem_buf(ptr, length)
        _ffi.SSL_set_bio(c.ssl, ro, c.wbio)  # frees the client's old read BIO
        c.rbio = ro
        rbuf = ctypes.create_string_buffer(1 << 18)
        before = engine.stats() if pipelined else None
        t0 = time.perf_counter()
        _read_all(c.ssl, rbuf, total)
        dt = time.perf_counter() - t0
        delta = engine.stats() - before if pipelined else None
        return dt, delta
    finally:
        c.close()
        s.close()
        sctx.close()
        cctx.close()


# --------------------------------------------------------------------------
# loopback: a receiver process on 127.0.0.1
# --------------------------------------------------------------------------
_RECEIVER = r"""
import socket, sys
import pipetls
from pipetls import Context, Connection
port, total, pipelined, mp, rb, cipher, etm, tls, engine = sys.argv[1:10]
total, mp, rb = int(total), int(mp), int(rb)
if pipelined == "1":
    pipetls.load_engine(engine, register=True)
knobs = {"max_pipelines": mp, "default_read_buffer_len": rb} if pipelined == "1" else {}
kw = dict(verify=False, encrypt_then_mac=etm == "1", **knobs)
if tls == "1.3":
    kw.update(min_version="TLSv1.3", max_version="TLSv1.3", ciphersuites=cipher)
else:
    kw.update(max_version="TLSv1.2", ciphers=cipher)
ctx = Context(server=False, **kw)
sock = socket.create_connection(("127.0.0.1", int(port)), timeout=60)
conn = Connection(ctx, sock, timeout=60)
conn.do_handshake()
buf = bytearray(1 << 20)
got = 0
while got < total:
    got += conn.readinto(buf)
conn.write(b"k")
conn.close()
"""


def _loopback_run(st: _Setup, engine, pipelined, total, lanes, engine_file):
    from .connection import Connection

    suite, etm, _ = CIPHERS[st.cipher]
    if st.tls == "1.3":
        suite = TLS13_SUITES[st.cipher]
    if pipelined:
        engine.threads = lanes
        engine.register_default()
    else:
        engine.unregister()
    sctx, _ = _contexts(st, pipelined)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER, str(port), str(total), "1" if pipelined else "0",
         str(st.max_pipelines), str(st.read_buf), suite, "1" if etm else "0", st.tls, engine_file])
    try:
        lsock.settimeout(60)
        sock, _ = lsock.accept()
        conn = Connection(sctx, sock, timeout=60)
        conn.do_handshake()
        buf = bytearray(st.write_size)
        before = engine.stats() if pipelined else None
        t0 = time.perf_counter()
        sent = 0
        view = memoryview(buf)
        while sent < total:
            n = min(len(buf), total - sent)
            conn.sendall(view[:n])
            sent += n
        conn.read(1)
        dt = time.perf_counter() - t0
        delta = engine.stats() - before if pipelined else None
        conn.close()
    finally:
        lsock.close()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        sctx.close()
    if child.returncode != 0:
        raise RuntimeError("bench: loopback receiver failed")
    return dt, delta


# --------------------------------------------------------------------------
def _throwaway_cert(tmp):
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("bench needs the openssl program to make a throwaway certificate "
                           "(or pass --cert and --key)")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=pipetls-bench"],
                   check=True, capture_output=True)
    return cert, key


def run(scenarios=("write", "read"), ciphers=None, total=256 << 20, write_size=256 << 10,
        max_pipelines=(8,), lanes=None, reps=3, tls="1.2", read_buf=None, engine_path=None,
        certfile=None, keyfile=None, latency_size=1024, progress=None):
    """Runs the benchmark and returns a list of BenchResult."""
    engine = load_engine(engine_path, register=False)
    lanes = list(lanes or [os.cpu_count() or 1])
    ciphers = list(ciphers or CIPHERS)
    if tls == "1.3":
        ciphers = [c for c in ciphers if c in TLS13_SUITES]
    tmp = None
    if certfile is None:
        tmp = tempfile.mkdtemp(prefix="pipetls-bench-")
        certfile, keyfile = _throwaway_cert(tmp)
    saved_threads = engine.threads
    plan = []
    for scenario in scenarios:
        for cipher in ciphers:
            if scenario == "latency":
                plan.append((scenario, cipher, 1, lanes[0]))
                continue
            for mp in max_pipelines:
                for lane in lanes:
                    plan.append((scenario, cipher, mp, lane))
    results = []
    try:
        # warm up (engine pool, page faults, CPU clocks): one small untimed run
        if plan:
            warm = _Setup(plan[0][1], tls, 8, write_size, read_buf or 200000, certfile, keyfile)
            for piped in (False, True):
                _one_run(warm, engine, piped, "write", min(total, 16 << 20), lanes[0])
        for i, (scenario, cipher, mp, lane) in enumerate(plan):
            if progress:
                progress(i, len(plan), "%s %s mp=%d lanes=%d" % (scenario, cipher, mp, lane))
            size = latency_size if scenario == "latency" else write_size
            n_bytes = min(total, 16 << 20) if scenario == "latency" else total
            rb = read_buf or max(8 * 16384 + 16384, mp * (16384 + 512) + 16384)
            st = _Setup(cipher, tls, mp, size, rb, certfile, keyfile)
            stock, pipe, deltas = [], [], []
            for _ in range(reps):
                if scenario == "loopback":
                    a = _loopback_run(st, engine, False, n_bytes, lane, engine.path)
                    b = _loopback_run(st, engine, True, n_bytes, lane, engine.path)
                else:
                    a = _one_run(st, engine, False, scenario, n_bytes, lane)
                    b = _one_run(st, engine, True, scenario, n_bytes, lane)
                stock.append(a[0])
                pipe.append(b[0])
                deltas.append(b[1])
            t_stock, t_pipe = statistics.median(stock), statistics.median(pipe)
            mid = pipe.index(sorted(pipe)[len(pipe) // 2])
            d = deltas[mid]
            t_crypto = d.crypto_ns / 1e9 if d is not None else 0.0
            t_serial = serial_time(pipe[mid], d)
            bound = amdahl_bound(lane, t_stock, t_stock - t_serial) if mp > 1 else 1.0
            speedup = t_stock / t_pipe
            if scenario == "latency":
                per = lambda t: t / (n_bytes / size) * 1e6  # noqa: E731  (us per write)
                s_val, p_val, unit = per(t_stock), per(t_pipe), "us/write"
            else:
                s_val, p_val, unit = n_bytes / t_stock / 1e9, n_bytes / t_pipe / 1e9, "GB/s"
            results.append(BenchResult(
                scenario=scenario, cipher=cipher, suite=CIPHERS[cipher][0] if tls == "1.2"
                else TLS13_SUITES[cipher], etm=CIPHERS[cipher][1], tls=tls, max_pipelines=mp,
                lanes=lane, baseline=(CIPHERS[cipher][2] if tls == "1.2" and scenario != "latency"
                                      else "stock"),
                total_bytes=n_bytes, write_size=size, stock_gbps=round(s_val, 4),
                pipetls_gbps=round(p_val, 4), speedup=round(speedup, 4), bound=round(bound, 4),
                efficiency=round(speedup / bound, 4),
                crypto_fraction=round(t_crypto / t_stock, 4) if t_stock else 0.0,
                serial_fraction=round(min(t_serial / t_stock, 1.0), 4) if t_stock else 0.0,
                batches=d.batches if d else 0,
                mean_batch=round(d.records / d.batches, 3) if d and d.batches else 0.0,
                stock_reps=[round(x, 6) for x in stock], pipetls_reps=[round(x, 6) for x in pipe],
                unit=unit))
        if progress:
            progress(len(plan), len(plan), "done")
    finally:
        engine.threads = saved_threads
        engine.unregister()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def machine_info():
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "processor": _cpu_model(), "openssl": _ffi.OpenSSL_version(0).decode(),
            "python": platform.python_version()}


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------
def _size(text):
    t = text.strip().lower().rstrip("b").rstrip("i")
    mult = 1
    for suffix, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
    try:
        v = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError("not a size: %r (e.g. 4096, 256K, 64M)" % text) from None
    if v <= 0:
        raise argparse.ArgumentTypeError("size must be > 0")
    return v


def _int_list(lo, hi, what):
    def parse(text):
        try:
            vals = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError("%s: comma-separated integers, e.g. 1,2,8" % what)
        for v in vals:
            if not lo <= v <= hi:
                raise argparse.ArgumentTypeError("%s must be %d..%d, got %d" % (what, lo, hi, v))
        if not vals:
            raise argparse.ArgumentTypeError("%s: empty list" % what)
        return vals
    return parse


def _cipher_list(text):
    names = [x.strip() for x in text.split(",") if x.strip()]
    lookup = {k.lower(): k for k in CIPHERS}
    out = []
    for n in names:
        if n.lower() not in lookup:
            raise argparse.ArgumentTypeError("unknown cipher %r; choose from %s"
                                             % (n, ", ".join(CIPHERS)))
        out.append(lookup[n.lower()])
    return out


def _scenario_list(text):
    vals = [x.strip() for x in text.split(",") if x.strip()]
    for v in vals:
        if v not in SCENARIOS:
            raise argparse.ArgumentTypeError("unknown scenario %r; choose from %s"
                                             % (v, ", ".join(SCENARIOS)))
    return vals


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="measure pipetls against stock OpenSSL (ratios in the same run)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", type=_scenario_list, default=["write", "read", "latency"],
                   help="comma list of %s (default: write,read,latency)" % ",".join(SCENARIOS))
    p.add_argument("--cipher", type=_cipher_list, default=None,
                   help="comma list of %s (default: all)" % ", ".join(CIPHERS))
    p.add_argument("--total", type=_size, default=256 << 20,
                   help="bytes per measurement (default 256M)")
    p.add_argument("--write-size", type=_size, default=256 << 10,
                   help="bytes per SSL_write (default 256K)")
    p.add_argument("--max-pipelines", type=_int_list(1, 32, "max_pipelines"), default=[8],
                   help="comma list, 1..32 (default 8)")
    p.add_argument("--lanes", type=_int_list(1, 256, "lanes"), default=None,
                   help="comma list of engine THREADS (default: online CPUs)")
    p.add_argument("--reps", type=int, default=3, help="repetitions, median reported (default 3)")
    p.add_argument("--tls", choices=("1.2", "1.3"), default="1.2", help="TLS version (default 1.2)")
    p.add_argument("--read-buf", type=_size, default=None,
                   help="pipetls read buffer (default: room for max_pipelines records)")
    p.add_argument("--engine", default=None, help="engine .so (default: the bundled one)")
    p.add_argument("--cert", default=None, help="server certificate (default: a throwaway one)")
    p.add_argument("--key", default=None, help="server key")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the results as JSON to FILE (or stdout)")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="plot speedup against lanes and max_pipelines (needs matplotlib)")
    p.set_defaults(func=main)
    return p


def main(args):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    if args.reps < 1:
        raise SystemExit("pipetls bench: --reps must be >= 1")
    if (args.cert is None) != (args.key is None):
        raise SystemExit("pipetls bench: give both --cert and --key, or neither")
    json_to_stdout = args.json == "-"
    console = Console(stderr=json_to_stdout)
    if not console.is_terminal:  # a log or a pipe: room for the whole table
        console = Console(stderr=json_to_stdout, width=150)
    with Progress(TextColumn("[bold]bench[/] {task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task("starting", total=1)

        def progress(i, n, what):
            prog.update(task, completed=i, total=n, description=what)

        results = run(scenarios=args.scenario, ciphers=args.cipher, total=args.total,
                      write_size=args.write_size, max_pipelines=args.max_pipelines,
                      lanes=args.lanes, reps=args.reps, tls=args.tls, read_buf=args.read_buf,
                      engine_path=args.engine, certfile=args.cert, keyfile=args.key,
                      progress=progress)
    doc = {"machine": machine_info(),
           "config": {"total": args.total, "write_size": args.write_size, "reps": args.reps,
                      "tls": args.tls, "command": " ".join(["pipetls", "bench"] + sys.argv[2:])},
           "results": [asdict(r) for r in results]}
    if args.json is not None:
        text = json.dumps(doc, indent=2)
        if json_to_stdout:
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    table = Table(title="pipetls bench (%s, %d CPUs, TLS %s; medians of %d)"
                  % (doc["machine"]["openssl"], doc["machine"]["cpus"], args.tls, args.reps))
    for col in ("scenario", "cipher", "mp", "lanes", "baseline", "stock", "pipetls",
                "speedup", "bound", "eff."):
        table.add_column(col, justify="right" if col not in ("scenario", "cipher", "baseline")
                         else "left")
    for r in results:
        table.add_row(r.scenario, r.cipher, str(r.max_pipelines), str(r.lanes), r.baseline,
                      "%.3f %s" % (r.stock_gbps, r.unit), "%.3f %s" % (r.pipetls_gbps, r.unit),
                      "%.2fx" % r.speedup, "%.2fx" % r.bound, "%.0f%%" % (100 * r.efficiency))
    console.print(table)
    console.print("speedup = stock time / pipetls time (latency: stock us / pipetls us); "
                  "bound = Amdahl bound L*T/(L*T_serial + T - T_serial), T = stock time, "
                  "T_serial = the engine's time outside record batches; eff. = speedup / bound")
    if args.plot:
        plot(results, args.plot)
        console.print("plot written to %s" % args.plot)
    return 0


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("pipetls bench --plot needs matplotlib: pip install 'pipetls[plot]'")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = [r for r in results if r.scenario in ("write", "read", "loopback")]
    if not rows:
        raise SystemExit("pipetls bench --plot: no write/read/loopback rows to plot")
    top_mp = max(r.max_pipelines for r in rows)
    top_lanes = max(r.lanes for r in rows)
    # left: against lanes at the largest max_pipelines; right: against
    # max_pipelines at the most lanes; one line per scenario and cipher
    for key, fixed, value, ax in (("lanes", "max_pipelines", top_mp, axes[0]),
                                  ("max_pipelines", "lanes", top_lanes, axes[1])):
        series = {}
        for r in rows:
            if getattr(r, fixed) == value:
                series.setdefault((r.scenario, r.cipher), []).append((getattr(r, key), r.speedup))
        for (scen, cipher), pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="%s %s" % (scen, cipher))
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel("speedup vs stock")
        ax.set_title("%s = %d" % (fixed, value), fontsize=9)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
