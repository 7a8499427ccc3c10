"""pipetls.enable_pipelining(): Python's own ssl module, pipelined."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl

import pytest

from support.api import stats_delta

import pipetls
from pipetls import ConfigError, PipetlsError, StdlibError, _ffi
from pipetls import stdlib as pt_stdlib



def _contexts(pt_certs):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pt_certs.cert, pt_certs.key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(pt_certs.ca)
    for c in (sctx, cctx):
        # Stock OpenSSL pipelines TLS 1.2 records only.
        c.maximum_version = ssl.TLSVersion.TLSv1_2
        c.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    return sctx, cctx


class _MemoryPair:
    """Two ssl.SSLObjects over ssl.MemoryBIOs, ciphertext moved by hand."""

    def __init__(self, sctx, cctx):
        self.bios = [ssl.MemoryBIO() for _ in range(4)]
        s_in, s_out, c_in, c_out = self.bios
        self.s = sctx.wrap_bio(s_in, s_out, server_side=True)
        self.c = cctx.wrap_bio(c_in, c_out, server_hostname="localhost")
        for _ in range(20):
            done = 0
            for obj in (self.c, self.s):
                try:
                    obj.do_handshake()
                    done += 1
                except ssl.SSLWantReadError:
                    pass
            self.c_to_s()
            self.s_to_c()
            if done == 2:
                return
        raise AssertionError("stdlib handshake did not complete")

    def c_to_s(self):
        self.bios[0].write(self.bios[3].read())

    def s_to_c(self):
        self.bios[2].write(self.bios[1].read())

    def send(self, data):
        """Client -> server; returns what the server read."""
        n = self.c.write(data)
        assert n == len(data)
        self.c_to_s()
        out = bytearray()
        while len(out) < len(data):
            out += self.s.read(1 << 20)
        return bytes(out)


def test_enable_pipelining_memory_pair(pt_engine, pt_certs):
    sctx, cctx = _contexts(pt_certs)
    options = (sctx.options, cctx.options)
    info = pipetls.enable_pipelining(cctx, max_pipelines=8)
    pipetls.enable_pipelining(sctx, max_pipelines=8)
    assert (sctx.options, cctx.options) == options  # the proof restored them
    assert info.max_pipelines == 8 and info.engine is pt_engine and info.ssl_ctx
    pair = _MemoryPair(sctx, cctx)
    assert pair.c.version() == "TLSv1.2"
    data = os.urandom(4 << 20)
    with stats_delta(pt_engine) as d:
        assert pair.send(data) == data
    st = d.stats
    writes = (4 << 20) // 16384 // 8  # 256 records written 8 at a time
    assert st.hist.get(8, 0) > writes, st.hist  # ... and the reads pipelined too
    assert st.failed_batches == 0


def test_without_enable_pipelining_no_batches(pt_engine, pt_certs):
    # Negative control: same engine, same data, knobs not applied.
    sctx, cctx = _contexts(pt_certs)
    pair = _MemoryPair(sctx, cctx)
    data = os.urandom(1 << 20)
    with stats_delta(pt_engine) as d:
        assert pair.send(data) == data
    assert d.stats.records > 0  # the engine served the ciphers ...
    assert set(d.stats.hist) == {1}  # ... one record at a time


def test_split_send_fragment_lands_on_the_right_context(pt_engine, pt_certs):
    sctx, cctx = _contexts(pt_certs)
    pipetls.enable_pipelining(cctx, max_pipelines=4, split_send_fragment=2000)
    pair = _MemoryPair(sctx, cctx)
    with stats_delta(pt_engine) as d:
        pair.c.write(os.urandom(4001))
    assert d.stats.hist == {3: 1}  # DESIGN: 4001..6000 bytes -> 3 records
    pair.c_to_s()
    assert len(pair.s.read(10000)) > 0


def test_asyncio_server_pipelines(pt_engine, pt_certs):
    sctx, cctx = _contexts(pt_certs)
    pipetls.enable_pipelining(sctx, max_pipelines=8)
    pipetls.enable_pipelining(cctx, max_pipelines=8)
    data = os.urandom(8 << 20)

    async def main():
        got = hashlib.sha256()
        count = [0]
        done = asyncio.Event()

        async def handle(reader, writer):
            while True:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                got.update(chunk)
                count[0] += len(chunk)
            writer.write(b"%d" % count[0])
            await writer.drain()
            writer.close()
            done.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=cctx,
                                                       server_hostname="localhost")
        writer.write(data)
        await writer.drain()
        writer.write_eof() if writer.can_write_eof() else None
        # TLS has no half-close: end the stream with close_notify.
        writer.transport.close()
        await asyncio.wait_for(done.wait(), 60)
        server.close()
        await server.wait_closed()
        return count[0], got.digest()

    with stats_delta(pt_engine) as d:
        n, digest = asyncio.run(main())
    assert n == len(data)
    assert digest == hashlib.sha256(data).digest()
    st = d.stats
    assert st.pipelined_batches > 0 and st.max_batch > 1, st.hist
    assert st.failed_batches == 0


# --------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------
@pytest.mark.parametrize("obj", [object(), "ctx", None, 42])
def test_refuses_non_sslcontext(obj):
    with pytest.raises(StdlibError, match="ssl.SSLContext") as ei:
        pipetls.enable_pipelining(obj)
    assert isinstance(ei.value, TypeError) and isinstance(ei.value, PipetlsError)


def test_refuses_pipetls_context():
    with pipetls.Context() as ctx:
        with pytest.raises(StdlibError):
            pipetls.enable_pipelining(ctx)


def test_refuses_when_the_proof_fails(monkeypatch, pt_engine):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    options = sctx.options
    with pipetls.Context() as decoy:
        # A real SSL_CTX, but not this SSLContext's: the proof must catch it
        # and leave both untouched.
        decoy_options = decoy.options
        monkeypatch.setattr(pt_stdlib, "_read_candidate_pointer", lambda c: decoy.handle)
        with pytest.raises(StdlibError, match="could not prove"):
            pipetls.enable_pipelining(sctx, max_pipelines=8)
        assert decoy.options == decoy_options
        assert decoy.max_pipelines == 1 and not decoy.read_ahead
    assert sctx.options == options


def test_refuses_null_pointer(monkeypatch):
    monkeypatch.setattr(pt_stdlib, "_read_candidate_pointer", lambda c: None)
    with pytest.raises(StdlibError, match="no SSL_CTX"):
        pipetls.enable_pipelining(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


def test_refuses_a_different_libssl(monkeypatch):
    monkeypatch.setattr(_ffi, "stdlib_shares_openssl", lambda: False)
    with pytest.raises(StdlibError, match="invariant 7"):
        pipetls.enable_pipelining(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


def test_proof_flips_and_restores(pt_engine):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    sctx.options |= ssl.OP_NO_TICKET
    before = sctx.options
    ptr = pt_stdlib.ssl_ctx_pointer(sctx)
    assert _ffi.SSL_CTX_get_options(ptr) == int(before)
    assert sctx.options == before
    assert pt_stdlib._prove(sctx, ptr)
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert not pt_stdlib._prove(other, ptr)  # another context's SSL_CTX


@pytest.mark.parametrize("kw,knob", [
    ({"max_pipelines": 0}, "max_pipelines"), ({"max_pipelines": 33}, "max_pipelines"),
    ({"split_send_fragment": 100}, "split_send_fragment"),
    ({"split_send_fragment": 20000}, "split_send_fragment"),
    ({"read_buffer_len": -1}, "default_read_buffer_len"),
])
def test_bad_knobs_before_anything(monkeypatch, kw, knob):
    touched = []
    monkeypatch.setattr(pt_stdlib, "ssl_ctx_pointer", lambda c: touched.append(c))
    with pytest.raises(ConfigError, match=knob):
        pipetls.enable_pipelining(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), **kw)
    assert touched == []


def test_engine_argument(pt_engine):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(StdlibError, match="pipetls.Engine"):
        pipetls.enable_pipelining(sctx, engine="pipetls")
    info = pipetls.enable_pipelining(sctx, engine=pt_engine, max_pipelines=2, read_buffer_len=0)
    assert info.engine is pt_engine and info.read_buffer_len == 0
