"""The in-memory harness of ``pipetls bench``: one TLS connection over
memory BIOs built from the raw handles, and the timed write and read loops
(one reusable buffer, one ctypes call per SSL_write / SSL_read: the harness
stays out of the timed loop)."""

from __future__ import annotations

import ctypes
import time
from typing import Any, Optional

from .. import _ffi
from .._ffi import check_ptr
from ..context import Context
from ..engine import Engine
from .model import Pipetls, Measurement, Probe, Setup, contexts, use_engine

__all__ = ["one_run", "Conn", "handshake", "write_all", "read_all", "sink_writes",
           "ciphertext_to_reader", "BIO_CTRL_INFO"]

BIO_CTRL_INFO = 3  # bio.h: BIO_get_mem_data


class Conn:
    """One SSL* over two memory BIOs we own the handles of."""

    def __init__(self, ctx: Context) -> None:
        ssl = _ffi.SSL_new(ctx.handle)
        if not ssl:
            _ffi.ERR_clear_error()
            raise RuntimeError("SSL_new failed")
        self.ssl: Optional[int] = ssl
        rbio = _ffi.BIO_new(_ffi.BIO_s_mem())
        wbio = _ffi.BIO_new(_ffi.BIO_s_mem())
        if not rbio or not wbio:
            _ffi.BIO_free(rbio)  # not attached yet: ours to free
            _ffi.BIO_free(wbio)
            _ffi.SSL_free(ssl)
            _ffi.ERR_clear_error()
            raise RuntimeError("BIO_new failed")
        _ffi.SSL_set_bio(ssl, rbio, wbio)  # the SSL owns them now
        self.rbio: int = rbio
        self.wbio: int = wbio
        # one SSL_write writes everything, as in a C program: partial writes
        # (pipetls.Context's default) would cost stock one Python call per
        # record and pipetls one per batch, an unfair harness
        _ffi.SSL_ctrl(self.ssl, _ffi.SSL_CTRL_CLEAR_MODE, _ffi.SSL_MODE_ENABLE_PARTIAL_WRITE, None)

    def close(self) -> None:
        if self.ssl:
            _ffi.SSL_free(self.ssl)  # frees its BIOs
            self.ssl = None


def _shuttle(src: Conn, dst: Conn, buf: Any) -> int:
    moved = 0
    while True:
        n = _ffi.BIO_read(src.wbio, buf, len(buf))
        if n <= 0:
            return moved
        _ffi.BIO_write(dst.rbio, buf, n)
        moved += n


def handshake(server: Conn, client: Conn) -> None:
    assert server.ssl is not None and client.ssl is not None
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


def sink_writes(s: Conn) -> None:
    """The sender's write BIO becomes a null sink (the write scenarios)."""
    null = check_ptr(_ffi.BIO_new(_ffi.BIO_s_null()), "BIO_new failed")
    _ffi.SSL_set_bio(s.ssl, s.rbio, null)  # frees the old write BIO
    s.wbio = null


def ciphertext_to_reader(s: Conn, c: Conn, buf: Any, total: int, size: int) -> None:
    """The read scenarios' setup, untimed: ``s`` writes ``total`` bytes from
    ``buf`` in ``size``-byte calls, and ``c`` then reads that ciphertext
    from a read-only memory BIO over it (``s``'s write BIO keeps it)."""
    write_all(s.ssl, buf, total, size)
    ptr = ctypes.c_void_p()
    length = _ffi.BIO_ctrl(s.wbio, BIO_CTRL_INFO, 0, ctypes.byref(ptr))
    ro = check_ptr(_ffi.BIO_new_mem_buf(ptr, length), "BIO_new_mem_buf failed")
    _ffi.SSL_set_bio(c.ssl, ro, c.wbio)  # frees the client's old read BIO
    c.rbio = ro


def write_all(ssl: Optional[int], buf: Any, total: int, size: int) -> None:
    """SSL_write total bytes from buf in size-byte calls (the timed loop)."""
    written = ctypes.c_size_t()
    done = 0
    write_ex = _ffi.SSL_write_ex
    while done < total:
        n = min(size, total - done)
        if write_ex(ssl, buf, n, ctypes.byref(written)) != 1:
            raise RuntimeError("bench: SSL_write failed")
        done += written.value


def _harness_time(calls: int, buf: Any, size: int) -> float:
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


def read_all(ssl: Optional[int], buf: Any, total: int) -> int:
    got = ctypes.c_size_t()
    done = 0
    read_ex = _ffi.SSL_read_ex
    size = len(buf)
    while done < total:
        if read_ex(ssl, buf, size, ctypes.byref(got)) != 1:
            raise RuntimeError("bench: SSL_read failed after %d of %d bytes" % (done, total))
        done += got.value
    return done


def one_run(st: Setup, engine: Pipetls, pipelined: bool, scenario: str, total: int,
            lanes: int) -> Measurement:
    """One side of a pair: seconds, bytes and (pipetls) the engine's counters."""
    use_engine(engine, pipelined, lanes)
    sctx, cctx = contexts(st, pipelined)
    probe = Probe(engine, pipelined)
    s, c = Conn(sctx), Conn(cctx)
    try:
        handshake(s, c)
        wbuf = ctypes.create_string_buffer(max(st.write_size, 1))
        ctypes.memset(wbuf, 0x5A, len(wbuf))
        if scenario == "write" or scenario == "latency":
            sink_writes(s)
            write_all(s.ssl, wbuf, min(total, 4 * st.write_size), st.write_size)  # warm
            probe.start()
            t0 = time.perf_counter()
            write_all(s.ssl, wbuf, total, st.write_size)
            dt = time.perf_counter() - t0
            m = probe.measurement(dt, total)
            if scenario == "latency":  # small writes: take the harness out
                calls = -(-total // st.write_size)
                m.seconds = max(dt - _harness_time(calls, wbuf, st.write_size), dt * 0.05)
            return m
        # read: ciphertext produced untimed, then read from a read-only BIO
        ciphertext_to_reader(s, c, wbuf, total, st.write_size)
        rbuf = ctypes.create_string_buffer(1 << 18)
        probe.start()
        t0 = time.perf_counter()
        got = read_all(c.ssl, rbuf, total)
        return probe.measurement(time.perf_counter() - t0, got)
    finally:
        c.close()
        s.close()
        sctx.close()
        cctx.close()
