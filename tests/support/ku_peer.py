"""A TLS 1.3 client on the system's stock libssl (ctypes) that sends
KeyUpdates in the middle of bulk traffic; run as a child process:

    python3 -m support.ku_peer PORT NBYTES UPDATES SEED

Phase 1: sends NBYTES (random.Random(SEED)) in 16 KiB SSL_write calls and,
spread over them, UPDATES/2 KeyUpdates, alternately "update_requested"
(the peer must update its own sending keys too) and "update_not_requested".
Phase 2: reads NBYTES from the server, sending the other UPDATES/2
KeyUpdates (all requested) while the server's data is coming.
Prints one JSON line: the SHA-256 of what it read, the bytes read, the
KeyUpdates sent. It never loads pipetls; it is a stock peer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import random
import socket
import sys

SSL_CTRL_SET_MIN_PROTO_VERSION = 123
SSL_CTRL_SET_MAX_PROTO_VERSION = 124
TLS1_3_VERSION = 0x0304
SSL_KEY_UPDATE_NOT_REQUESTED, SSL_KEY_UPDATE_REQUESTED = 0, 1
CHUNK = 16384


def _lib(name: str):
    path = ctypes.util.find_library(name) or f"lib{name}.so.3"
    return ctypes.CDLL(path)


def main(argv) -> int:
    port, nbytes, updates, seed = (int(a) for a in argv[1:5])
    ssl = _lib("ssl")
    crypto = _lib("crypto")
    vp = ctypes.c_void_p
    for fn, res, args in (
            ("TLS_client_method", vp, []),
            ("SSL_CTX_new", vp, [vp]),
            ("SSL_CTX_ctrl", ctypes.c_long, [vp, ctypes.c_int, ctypes.c_long, vp]),
            ("SSL_new", vp, [vp]),
            ("SSL_set_fd", ctypes.c_int, [vp, ctypes.c_int]),
            ("SSL_connect", ctypes.c_int, [vp]),
            ("SSL_write", ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_int]),
            ("SSL_read", ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_int]),
            ("SSL_key_update", ctypes.c_int, [vp, ctypes.c_int]),
            ("SSL_do_handshake", ctypes.c_int, [vp]),
            ("SSL_get_error", ctypes.c_int, [vp, ctypes.c_int]),
            ("SSL_shutdown", ctypes.c_int, [vp]),
            ("SSL_free", None, [vp]),
            ("SSL_CTX_free", None, [vp])):
        f = getattr(ssl, fn)
        f.restype, f.argtypes = res, args
    crypto.ERR_get_error.restype = ctypes.c_ulong
    crypto.ERR_error_string_n.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]

    def fail(what: str, ret: int = 0, s=None) -> int:
        buf = ctypes.create_string_buffer(256)
        errs = []
        while True:
            e = crypto.ERR_get_error()
            if not e:
                break
            crypto.ERR_error_string_n(e, buf, 256)
            errs.append(buf.value.decode())
        code = ssl.SSL_get_error(s, ret) if s else None
        print(json.dumps({"error": what, "ssl_error": code, "queue": errs}), flush=True)
        return 1

    ctx = ssl.SSL_CTX_new(ssl.TLS_client_method())
    ssl.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_3_VERSION, None)
    ssl.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_PROTO_VERSION, TLS1_3_VERSION, None)
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.settimeout(None)  # a blocking descriptor: libssl reads it directly
    s = ssl.SSL_new(ctx)
    ssl.SSL_set_fd(s, sock.fileno())
    if ssl.SSL_connect(s) != 1:
        return fail("handshake", 0, s)

    data = random.Random(seed).randbytes(nbytes)
    half = updates // 2
    every = max(1, (nbytes // CHUNK) // max(1, half))
    sent_updates = 0
    for n, off in enumerate(range(0, nbytes, CHUNK)):
        if sent_updates < half and n % every == every // 2:
            kind = SSL_KEY_UPDATE_REQUESTED if sent_updates % 2 == 0 else SSL_KEY_UPDATE_NOT_REQUESTED
            if ssl.SSL_key_update(s, kind) != 1:
                return fail("SSL_key_update", 0, s)
            sent_updates += 1
        chunk = data[off:off + CHUNK]
        ret = ssl.SSL_write(s, chunk, len(chunk))
        if ret != len(chunk):
            return fail("SSL_write", ret, s)

    h = hashlib.sha256()
    got = 0
    buf = ctypes.create_string_buffer(CHUNK)
    every_read = max(1, nbytes // max(1, updates - half))
    next_update = every_read // 2
    while got < nbytes:
        if sent_updates < updates and got >= next_update:
            if ssl.SSL_key_update(s, SSL_KEY_UPDATE_REQUESTED) != 1 \
                    or ssl.SSL_do_handshake(s) != 1:
                return fail("SSL_key_update (reading)", 0, s)
            sent_updates += 1
            next_update += every_read
        ret = ssl.SSL_read(s, buf, CHUNK)
        if ret <= 0:
            return fail("SSL_read", ret, s)
        h.update(buf.raw[:ret])
        got += ret
    print(json.dumps({"sha256": h.hexdigest(), "received": got,
                      "key_updates": sent_updates}), flush=True)
    ssl.SSL_shutdown(s)
    ssl.SSL_free(s)
    ssl.SSL_CTX_free(ctx)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
