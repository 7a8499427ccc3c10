"""The ``busy`` scenario of ``pipetls bench``: N connections written at once
by N threads, as on a server whose cores are all busy with its connections.

Each connection is the in-memory harness's (handshake over memory BIOs, then
the sender's write BIO a null sink); all N handshakes are done before the
clock starts.  The threads wait at a barrier, then each ``SSL_write``\\ s its
share in ``write_size`` calls; the time is from the barrier's release to the
last thread's end, the figure the aggregate bytes over that time.

Threads, not processes: the write loop is libssl's (one ctypes call per
``SSL_write`` of ``write_size`` bytes), and ctypes releases the GIL for the
whole call, so the threads' C work runs in parallel; what holds the GIL is
one Python loop step per call (about a microsecond per 256 KiB write).
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import threading
import time
import warnings
from typing import Optional

from ..engine import Engine
from .harness import Conn, ciphertext_to_reader, handshake, read_all, sink_writes, write_all
from .model import Pipetls, Measurement, Probe, Setup, contexts, use_engine

__all__ = ["busy_run", "control_run", "per_connection_bytes"]


def per_connection_bytes(pair_bytes: int, connections: int, write_size: int) -> int:
    """Each connection's share of ``pair_bytes``, at least four writes (so
    that the threads overlap for longer than they take to start)."""
    return max(pair_bytes // connections, 4 * write_size)


def busy_run(st: Setup, engine: Pipetls, pipelined: bool, connections: int,
             per_conn: int, lanes: int) -> Measurement:
    """One side of a pair: ``connections`` threads each writing ``per_conn``
    bytes on its own connection; the measurement's bytes are the aggregate."""
    use_engine(engine, pipelined, lanes)
    sctx, cctx = contexts(st, pipelined)
    pairs: list[tuple[Conn, Conn]] = []
    errors: list[BaseException] = []
    try:
        for _ in range(connections):
            s, c = Conn(sctx), Conn(cctx)
            pairs.append((s, c))
            handshake(s, c)
            sink_writes(s)
        bufs = [ctypes.create_string_buffer(st.write_size) for _ in range(connections)]
        for (s, _), buf in zip(pairs, bufs):
            ctypes.memset(buf, 0x5A, len(buf))
            write_all(s.ssl, buf, 2 * st.write_size, st.write_size)  # warm
        barrier = threading.Barrier(connections + 1)

        def writer(s: Conn, buf: ctypes.Array[ctypes.c_char]) -> None:
            try:
                barrier.wait()
                write_all(s.ssl, buf, per_conn, st.write_size)
            except BaseException as e:  # reported by the caller
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(s, buf), daemon=True)
                   for (s, _), buf in zip(pairs, bufs)]
        try:
            for t in threads:
                t.start()
            probe = Probe(engine, pipelined)
            probe.start()
            barrier.wait()
        except BaseException:
            barrier.abort()  # the writers waiting at it stop (BrokenBarrierError)
            for t in threads:
                if t.is_alive():
                    t.join()
            raise
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
        m = probe.measurement(dt, per_conn * connections)
        if errors:
            raise RuntimeError("bench busy: a writer failed: %s" % errors[0])
        return m
    finally:
        for s, c in pairs:
            c.close()
            s.close()
        sctx.close()
        cctx.close()



def control_run(st: Setup, engine: Pipetls, scenario: str, total: int, workers: int) -> Measurement:
    """The control side of a write or read pair (``pipetls bench
    --control``): stock (max_pipelines 1, no engine, the default provider)
    on ``workers`` connections at once, each moving its share of ``total``
    bytes in a process of its own; the time is from the first one's start
    to the last one's end. Whole connections on as many cores share nothing:
    the most any pipelining of one connection could get from those cores,
    the ceiling this machine allows in the same pairs.

    Processes, not threads: the timed loops make one ctypes call per
    ``SSL_write`` (50-100 us) or ``SSL_read`` (one record), and between two
    calls a thread needs the GIL back; on this VM a thread that has to wait
    for it sleeps and is woken late, and two threads measured 1.1-1.4 cores
    (CPU time / wall time) where the processes get two. The connections
    are set up here (handshake, and for reads the ciphertext, untimed),
    then each child of a fork() runs one of them: an SSL over memory BIOs
    is plain memory, whole in the child. The children wait on a pipe, the
    parent starts them all at once; each reports its CLOCK_MONOTONIC start
    and end."""
    if scenario not in ("write", "read"):
        raise ValueError("control_run: write or read, not %r" % scenario)
    use_engine(engine, False, workers)
    sctx, cctx = contexts(st, False)
    pairs: list[tuple[Conn, Conn]] = []
    share = per_connection_bytes(total, workers, st.write_size)
    children: list[tuple[int, int]] = []  # (pid, result pipe)
    go_r, go_w = os.pipe()
    try:
        wbuf = ctypes.create_string_buffer(st.write_size)
        ctypes.memset(wbuf, 0x5A, len(wbuf))
        rbuf = ctypes.create_string_buffer(1 << 18)
        for _ in range(workers):
            s, c = Conn(sctx), Conn(cctx)
            pairs.append((s, c))
            handshake(s, c)
            if scenario == "write":
                sink_writes(s)
                write_all(s.ssl, wbuf, 2 * st.write_size, st.write_size)  # warm
            else:  # the ciphertext, untimed (as one_run)
                ciphertext_to_reader(s, c, wbuf, share, st.write_size)
        for s, c in pairs:
            res_r, res_w = os.pipe()
            with warnings.catch_warnings():
                # Python >= 3.12 warns of fork() beside other threads (the
                # lanes'): the child touches no lock of theirs, it runs one
                # stock connection over memory BIOs and _exits
                warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                        category=DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the child: one connection, then _exit (no cleanup of the parent's)
                code = 1
                try:
                    os.close(res_r)
                    os.close(go_w)
                    os.read(go_r, 1)
                    t0 = time.perf_counter()
                    if scenario == "write":
                        write_all(s.ssl, wbuf, share, st.write_size)
                    else:
                        read_all(c.ssl, rbuf, share)
                    t1 = time.perf_counter()
                    os.write(res_w, struct.pack("dd", t0, t1))
                    code = 0
                finally:
                    os._exit(code)
            os.close(res_w)
            children.append((pid, res_r))
        os.close(go_r)
        go_r = -1
        os.write(go_w, b"g" * workers)  # one byte each: all start at once
        starts, ends, cpu, failed = [], [], 0.0, 0
        for pid, res_r in children:
            with os.fdopen(res_r, "rb") as f:
                got = f.read()
            _, status, usage = os.wait4(pid, 0)
            cpu += usage.ru_utime + usage.ru_stime
            if len(got) != 16 or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                failed += 1
                continue
            t0, t1 = struct.unpack("dd", got)
            starts.append(t0)
            ends.append(t1)
        children = []
        if failed:
            raise RuntimeError("bench control: %d of %d connections failed in their process"
                               % (failed, workers))
        return Measurement(max(ends) - min(starts), share * workers, cpu_seconds=cpu)
    finally:
        for pid, res_r in children:  # only on an error before they were collected
            os.close(res_r)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for fd in (go_r, go_w):
            if fd >= 0:
                os.close(fd)
        for s, c in pairs:
            c.close()
            s.close()
        sctx.close()
        cctx.close()
