"""A TLS 1.3 server on Python's ``ssl`` (the system libssl), for stream tests.

``python py_tls_server.py PORT CERT KEY``: listens on 127.0.0.1:PORT, takes
one connection, writes what it receives to stdout, sends what arrives on
stdin, and at EOF on stdin ends the connection with close_notify and exits
0 (as ``s_server -naccept 1`` does). The negotiated version and suite go to
stderr.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading


def main() -> int:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    lsock = socket.create_server(("127.0.0.1", port))
    raw, _ = lsock.accept()
    lsock.close()
    raw.settimeout(300)
    tls = ctx.wrap_socket(raw, server_side=True)
    print(f"version={tls.version()} cipher={tls.cipher()[0]} "
          f"libssl={ssl.OPENSSL_VERSION}", file=sys.stderr, flush=True)
    errors: list[BaseException] = []

    def reader() -> None:
        out = sys.stdout.buffer
        try:
            while True:
                data = tls.recv(1 << 18)
                if not data:
                    break
                out.write(data)
                out.flush()
        except (ssl.SSLZeroReturnError, OSError):
            pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for chunk in iter(lambda: os.read(0, 1 << 16), b""):
            tls.sendall(chunk)
    except BaseException as exc:
        errors.append(exc)
    try:
        tls.unwrap()  # close_notify; the peer's answer ends the reader
    except (ssl.SSLError, OSError):
        pass
    t.join(30)
    tls.close()
    if errors:
        print(f"send failed: {errors[0]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
