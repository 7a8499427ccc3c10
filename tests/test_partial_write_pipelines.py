"""A pipelined SSL_write cut short by a full socket, then retried.

With max_pipelines 8 a write of 8 records leaves libssl with 8 write
buffers; a later, shorter write (fewer records) that the kernel takes only
part of leaves a record of that batch half sent.  The retry of that
SSL_write must send the rest of that same record, not encrypt the batch
again into the buffers still being written (the peer would see the first
half of one record and the second half of another: bad_record_mac).
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

import pipetls
from support.proof import SUITES, Knobs, pt_context

KNOBS = Knobs(8, 4096, 1 << 20)


@pytest.fixture(scope="module")
def engine(engine_path):
    return pipetls.load_engine(engine_path, register=True)


def _pair(engine, certs):
    suite = SUITES["aes128gcm"]
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=KNOBS)
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=KNOBS)
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    srv = pipetls.Connection(sctx, a)
    cli = pipetls.Connection(cctx, b, server_hostname="localhost")
    t = threading.Thread(target=srv.do_handshake)
    t.start()
    cli.do_handshake()
    t.join(10)
    return sctx, cctx, a, b, srv, cli


def _drain(cli, buf, got):
    while True:
        try:
            k = cli.readinto(buf)
        except pipetls.WantRead:
            return
        got += buf[:k]


@pytest.mark.parametrize("records", [2, 3, 5, 7, 8])
def test_retried_short_pipelined_write_after_a_full_batch(engine, certs, records):
    sctx, cctx, a, b, srv, cli = _pair(engine, certs)
    try:
        buf = bytearray(1 << 20)
        sent, got = bytearray(), bytearray()
        # one full batch first: libssl now holds 8 write buffers
        first = os.urandom(8 * 4096)
        srv.sendall(first)
        sent += first
        cli.settimeout(0)
        while len(got) < len(sent):
            try:
                got += buf[:cli.readinto(buf)]
            except pipetls.WantRead:
                pass
        srv.settimeout(0)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        cut = 0
        for _ in range(200):
            chunk = os.urandom(records * 4096)
            while True:
                try:
                    n = srv.write(chunk)
                    sent += chunk[:n]
                    chunk = chunk[n:]
                    if not chunk:
                        break
                except pipetls.WantWrite:
                    cut += 1
                    _drain(cli, buf, got)  # room again: retry the same write
        _drain(cli, buf, got)
        assert cut > 0, "the socket never filled: nothing was tested"
        assert got == sent[:len(got)]
        assert len(got) == len(sent)
    finally:
        srv.close()
        cli.close()
        a.close()
        b.close()
        sctx.close()
        cctx.close()
