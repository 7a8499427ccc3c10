"""Runs in a process of its own (LD_LIBRARY_PATH and PIPETLS_OPENSSL of the
libssl under test): one TLS 1.2 AES-128-GCM connection over a socketpair,
the pipetls engine registered, the sender with max_pipelines 8 and
split_send_fragment 4096.  The sender writes one 8-record batch (libssl then
holds 8 write buffers), shrinks its socket's send buffer, goes non-blocking
and writes 200 chunks of RECORDS records each, retrying the same buffer
after every SSL_ERROR_WANT_WRITE, while the receiver drains.  Prints one
JSON document for tests/test_partial_write_35.py.

    python support/partial_write_child.py RECORDS MODE CERT_DIR ENGINE

MODE ``raw``: every chunk is one SSL_write_ex on the libssl under test, as
nginx or curl call it (pipetls.Connection's record-by-record way round the
libssl 3.0 defect, see docs/knobs.md, is not used).  MODE ``connection``:
pipetls.Connection.write.  The receiver runs with max_pipelines 1, so every
engine batch of more than one record is one of the sender's writes.
"""
import ctypes
import json
import os
import socket
import sys
import threading

import pipetls  # first: it maps the libssl of PIPETLS_OPENSSL
from pipetls import _ffi

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.pki import Certs  # noqa: E402
from support.proof import SUITES, Knobs, pt_context  # noqa: E402

SPLIT = 4096
CHUNKS = 200


def mapped_libs():
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split(None, 5)[-1].strip()
            if "/libssl.so" in path or "/libcrypto.so" in path:
                libs.add(path)
    return sorted(libs)


def main():
    records, mode, cert_dir, engine_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    assert mode in ("raw", "connection"), mode
    engine = pipetls.load_engine(engine_path, register=True)
    certs = Certs.of(cert_dir)
    suite = SUITES["aes128gcm"]
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=Knobs(8, SPLIT, 1 << 20))
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=Knobs(1, SPLIT, 1 << 20))
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    srv = pipetls.Connection(sctx, a)
    cli = pipetls.Connection(cctx, b, server_hostname="localhost")
    t = threading.Thread(target=srv.do_handshake)
    t.start()
    cli.do_handshake()
    t.join(10)

    out = {"version": _ffi.OpenSSL_version(0).decode(), "libs": mapped_libs(),
           "records": records, "mode": mode, "cut": 0, "error": None}
    buf = bytearray(1 << 20)
    sent, got = bytearray(), bytearray()
    wbuf = (ctypes.c_char * (records * SPLIT))()

    def write(chunk):
        if mode == "connection":
            return srv.write(chunk)
        # the same buffer, the same length on every retry (SSL_write's rule)
        ctypes.memmove(wbuf, bytes(chunk), len(chunk))
        n = ctypes.c_size_t(0)
        srv._run(lambda ssl: _ffi.SSL_write_ex(ssl, ctypes.addressof(wbuf), len(chunk),
                                               ctypes.byref(n)), "write")
        return n.value

    def drain():
        while True:
            try:
                k = cli.readinto(buf)
            except pipetls.WantRead:
                return
            got.extend(buf[:k])

    try:
        first = os.urandom(8 * SPLIT)  # one full batch: 8 write buffers from here on
        srv.sendall(first)
        sent += first
        cli.settimeout(0)
        while len(got) < len(sent):
            try:
                got.extend(buf[:cli.readinto(buf)])
            except pipetls.WantRead:
                pass
        engine.reset_stats()
        srv.settimeout(0)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        for _ in range(CHUNKS):
            chunk = os.urandom(records * SPLIT)
            todo = memoryview(chunk)
            while todo:
                try:
                    n = write(todo)
                    sent += todo[:n]
                    todo = todo[n:]
                except pipetls.WantWrite:
                    out["cut"] += 1
                    drain()  # room again: retry the same write
        drain()
    except pipetls.TLSError as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    stats = engine.stats()
    out.update(sent=len(sent), got=len(got), intact=bytes(got) == bytes(sent[:len(got)]),
               hist={str(k): v for k, v in stats.hist.items()},
               failed_batches=stats.failed_batches)
    for obj in (srv, cli):
        try:
            obj.close()
        except pipetls.PipetlsError:
            pass  # after a failed run: the connection is already broken
    a.close()
    b.close()
    sctx.close()
    cctx.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
