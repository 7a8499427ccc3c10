"""A TLS client on Python's ``ssl`` (the system libssl), for stream tests.

``python py_tls_client.py PORT [MIN_VERSION]``: connects to 127.0.0.1:PORT
(no certificate check: the peer under test is the server), sends what
arrives on stdin, writes what it receives to stdout, and exits 0 when the
server closes the connection with close_notify (as ``s_client -quiet``
does: EOF on stdin does not end the connection). The negotiated version
and suite go to stderr.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading


def main() -> int:
    port = int(sys.argv[1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    raw = socket.create_connection(("127.0.0.1", port), timeout=300)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    print(f"version={tls.version()} cipher={tls.cipher()[0]} "
          f"libssl={ssl.OPENSSL_VERSION}", file=sys.stderr, flush=True)
    errors: list[BaseException] = []

    def pump() -> None:
        try:
            for chunk in iter(lambda: os.read(0, 1 << 16), b""):
                tls.sendall(chunk)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    out = sys.stdout.buffer
    while True:
        try:
            data = tls.recv(1 << 18)
        except ssl.SSLZeroReturnError:
            break
        if not data:
            break
        out.write(data)
    out.flush()
    if errors:
        print(f"send failed: {errors[0]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
