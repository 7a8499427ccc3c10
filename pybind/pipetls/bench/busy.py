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
import threading
import time
from typing import Optional

from .. import _ffi
from .._ffi import check_ptr
from ..engine import Engine
from .harness import BIO_CTRL_INFO, Conn, handshake, read_all, write_all
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
            null = check_ptr(_ffi.BIO_new(_ffi.BIO_s_null()), "BIO_new failed")
            _ffi.SSL_set_bio(s.ssl, s.rbio, null)  # frees the old write BIO
            s.wbio = null
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


def control_run(st: Setup, engine: Pipetls, scenario: str, total: int, threads: int) -> Measurement:
    """The control side of a write or read pair (``pipetls bench
    --control``): stock (max_pipelines 1, no engine, the default provider)
    on ``threads`` connections at once, one thread each, each moving its
    share of ``total`` bytes; the time is from the barrier's release to the
    last thread's end. Two whole connections on two cores is the most any
    pipelining of one connection could get from them: the ceiling this
    machine allows in the same pairs."""
    if scenario == "write":
        return busy_run(st, engine, False, threads, per_connection_bytes(total, threads,
                        st.write_size), threads)
    if scenario != "read":
        raise ValueError("control_run: write or read, not %r" % scenario)
    use_engine(engine, False, threads)
    sctx, cctx = contexts(st, False)
    pairs: list[tuple[Conn, Conn]] = []
    errors: list[BaseException] = []
    share = per_connection_bytes(total, threads, st.write_size)
    try:
        wbuf = ctypes.create_string_buffer(st.write_size)
        ctypes.memset(wbuf, 0x5A, len(wbuf))
        for _ in range(threads):
            s, c = Conn(sctx), Conn(cctx)
            pairs.append((s, c))
            handshake(s, c)
            # the ciphertext, untimed, then read from a read-only BIO (as one_run)
            write_all(s.ssl, wbuf, share, st.write_size)
            ptr = ctypes.c_void_p()
            length = _ffi.BIO_ctrl(s.wbio, BIO_CTRL_INFO, 0, ctypes.byref(ptr))
            ro = check_ptr(_ffi.BIO_new_mem_buf(ptr, length), "BIO_new_mem_buf failed")
            _ffi.SSL_set_bio(c.ssl, ro, c.wbio)  # frees the client's old read BIO
            c.rbio = ro
        bufs = [ctypes.create_string_buffer(1 << 18) for _ in range(threads)]
        barrier = threading.Barrier(threads + 1)

        def reader(c: Conn, buf: ctypes.Array[ctypes.c_char]) -> None:
            try:
                barrier.wait()
                read_all(c.ssl, buf, share)
            except BaseException as e:  # reported by the caller
                errors.append(e)

        workers = [threading.Thread(target=reader, args=(c, buf), daemon=True)
                   for (_, c), buf in zip(pairs, bufs)]
        try:
            for t in workers:
                t.start()
            probe = Probe(engine, False)
            probe.start()
            barrier.wait()
        except BaseException:
            barrier.abort()
            for t in workers:
                if t.is_alive():
                    t.join()
            raise
        t0 = time.perf_counter()
        for t in workers:
            t.join()
        dt = time.perf_counter() - t0
        m = probe.measurement(dt, share * threads)
        if errors:
            raise RuntimeError("bench control: a reader failed: %s" % errors[0])
        return m
    finally:
        for s, c in pairs:
            c.close()
            s.close()
        sctx.close()
        cctx.close()
