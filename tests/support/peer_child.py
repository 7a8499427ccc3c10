"""A TLS peer in its own process: Python's ``ssl`` or tlslite-ng.

It never imports pipetls, so the engine (registered process-wide in the
pytest process) does not touch it. Protocol, for both roles:

1. handshake (client: connect to 127.0.0.1:PORT; server: listen on it);
2. receive exactly ``--expect`` bytes, writing them to stdout;
3. send ``sum(--plan)`` bytes read from stdin, one TLS write per plan entry;
4. close_notify, exit 0.  Any failure: a message on stderr, exit 1.

``--corrupt-at N`` flips one bit of byte N of what it sends (after reading
it from stdin): a planted fault for the negative controls.

    python3 support/peer_child.py pyssl|tlslite client|server --port P --ca CA
        [--cert C --key K] [--cipher OPENSSL_NAME] [--tls13] --expect N
        --plan 0,1,2000,...
"""

import argparse
import socket
import sys
import time

TLSLITE_SUITES = {  # OpenSSL name -> (cipherNames, macNames)
    "ECDHE-RSA-AES128-GCM-SHA256": (["aes128gcm"], ["aead"]),
    "ECDHE-RSA-AES256-GCM-SHA384": (["aes256gcm"], ["aead"]),
    "ECDHE-RSA-CHACHA20-POLY1305": (["chacha20-poly1305"], ["aead"]),
    "ECDHE-RSA-AES128-SHA": (["aes128"], ["sha"]),
    "ECDHE-RSA-AES256-SHA": (["aes256"], ["sha"]),
    "ECDHE-RSA-AES128-SHA256": (["aes128"], ["sha256"]),
    "ECDHE-RSA-AES256-SHA384": (["aes256"], ["sha384"]),
}
TLSLITE_TLS13 = {
    "TLS_AES_128_GCM_SHA256": ["aes128gcm"],
    "TLS_AES_256_GCM_SHA384": ["aes256gcm"],
    "TLS_CHACHA20_POLY1305_SHA256": ["chacha20-poly1305"],
}


def read_exact(f, n):
    out = bytearray()
    while len(out) < n:
        b = f.read(n - len(out))
        if not b:
            raise EOFError("stdin ended after %d of %d bytes" % (len(out), n))
        out += b
    return bytes(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("lib", choices=["pyssl", "tlslite"])
    p.add_argument("role", choices=["client", "server"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--cipher")
    p.add_argument("--tls13", action="store_true")
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--plan", default="")
    p.add_argument("--corrupt-at", type=int, default=-1)
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()
    plan = [int(x) for x in a.plan.split(",") if x]

    if a.role == "server":
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", a.port))
        lsock.listen(1)
        lsock.settimeout(a.timeout)
        raw, _ = lsock.accept()
        lsock.close()
    else:
        raw = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
    raw.settimeout(a.timeout)

    if a.lib == "pyssl":
        import ssl
        if a.role == "server":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(a.cert, a.key)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(a.ca)
        if a.tls13:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        else:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            if a.cipher:
                ctx.set_ciphers(a.cipher)
        conn = ctx.wrap_socket(raw, server_side=a.role == "server",
                               server_hostname="localhost" if a.role == "client" else None)
        recv = lambda: conn.recv(1 << 20)  # noqa: E731
        send = conn.sendall

        def close():
            try:
                conn.unwrap()
            except (ssl.SSLError, OSError):
                pass
            conn.close()
    else:
        from tlslite.api import HandshakeSettings, TLSConnection, X509CertChain, parsePEMKey
        s = HandshakeSettings()
        if a.tls13:
            s.minVersion = s.maxVersion = (3, 4)
            if a.cipher:
                s.cipherNames = TLSLITE_TLS13[a.cipher]
        else:
            s.maxVersion = (3, 3)
            if a.cipher:
                s.cipherNames, s.macNames = TLSLITE_SUITES[a.cipher]
                s.keyExchangeNames = ["ecdhe_rsa"]
        conn = TLSConnection(raw)
        if a.role == "server":
            chain = X509CertChain()
            with open(a.cert) as f:
                chain.parsePemList(f.read())
            with open(a.key) as f:
                key = parsePEMKey(f.read(), private=True)
            conn.handshakeServer(certChain=chain, privateKey=key, settings=s)
        else:
            conn.handshakeClientCert(settings=s, serverName="localhost")
        recv = lambda: conn.read(max=1 << 20)  # noqa: E731
        send = conn.write

        def close():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass

    out = sys.stdout.buffer
    got = 0
    deadline = time.monotonic() + a.timeout
    while got < a.expect:
        if time.monotonic() > deadline:
            raise TimeoutError("received %d of %d bytes" % (got, a.expect))
        b = recv()
        if not b:
            raise EOFError("the peer closed after %d of %d bytes" % (got, a.expect))
        out.write(b)
        got += len(b)
    out.flush()

    data = bytearray(read_exact(sys.stdin.buffer, sum(plan)))
    if 0 <= a.corrupt_at < len(data):
        data[a.corrupt_at] ^= 1
    off = 0
    for n in plan:
        if n:
            send(bytes(data[off:off + n]))
        off += n
    close()
    raw.close()


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - report and fail
        print("peer_child: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
