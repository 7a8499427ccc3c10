"""Bad-input cases that test_badinput.py runs both in-process (engine
registered) and in the stock child (support.stock, engine not loaded), so
that the expected answer is stock libssl's in the same run."""

from __future__ import annotations

import ctypes

import pipetls
from pipetls import _ffi

from .pki import Certs
from .proof import SUITES, Knobs, pt_context
from .records import parse_records


def memory_pair(engine, certs, suite_id="aes128gcm", knobs=Knobs(4, 4096, 0)):
    """(server ctx, client ctx, server conn, client conn), handshake done
    over memory BIOs."""
    certs = Certs.of(certs)
    suite = SUITES[suite_id]
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=knobs)
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=knobs)
    s = pipetls.Connection(sctx)
    c = pipetls.Connection(cctx, server_hostname="localhost")
    pipetls.handshake_pair(s, c)
    return sctx, cctx, s, c


def zero_length_ssl_write_ex(engine, certs):
    """``SSL_write_ex`` of 0 bytes straight into libssl: its return value,
    the count it reports, the records it put on the wire (type, length),
    and whether the connection still carries data afterwards."""
    sctx, cctx, s, c = memory_pair(engine, certs)
    with sctx, cctx, s, c:
        n = ctypes.c_size_t(99)
        buf = ctypes.create_string_buffer(1)
        r = _ffi.SSL_write_ex(c.handle, buf, 0, ctypes.byref(n))
        _ffi.ERR_clear_error()
        recs, tail = parse_records(c.drain(), strict=False)
        after = pipetls.pump(c, s, b"still fine")
    return {"r": r, "n": n.value, "records": [[r.type, len(r.body)] for r in recs],
            "tail": len(tail), "after": after}
