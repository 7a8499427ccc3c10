"""A TLS 1.3 peer on Python's ``ssl`` (the system libssl), single-threaded.

    python3 -m support.py_tls_peer client PORT [DEADLINE_S]
    python3 -m support.py_tls_peer server PORT CERT KEY [DEADLINE_S]

Like ``openssl s_client -quiet`` / ``s_server -naccept 1 -quiet``: it sends
what arrives on stdin and writes what it receives to stdout, both at once.
One thread drives one SSL object: a selectors loop over the non-blocking
TLS socket and the non-blocking stdin, so reading and writing interleave
without two threads ever touching the SSL object (which OpenSSL does not
allow). A write that could not finish (SSLWantWrite/WantRead) is retried
with the same bytes, as SSL_write requires.

The client ends when the server closes the connection (close_notify, or
EOF as ``s_server`` leaves it at the end of its stdin); EOF on its stdin
does not end it. The server takes one connection and, at EOF
on its stdin once everything is sent, sends close_notify and ends when the
client closes (or after a bounded wait). The exit status is 0 only after a
clean close with nothing left unsent; every wait is bounded by DEADLINE_S
(default 300 s): past it the peer prints why and exits 3.

The negotiated version and suite, and the library, go to stderr as
``version=TLSv1.3 cipher=<suite> libssl=<OpenSSL version>``.
"""

from __future__ import annotations

import os
import selectors
import socket
import ssl
import sys
import time

CHUNK = 256 << 10          # bytes handed to one SSLSocket.send / recv
STDIN_ROOM = 4 << 20       # stdin is not read while this much waits to be sent


class Deadline(Exception):
    pass


class Peer:
    def __init__(self, tls: ssl.SSLSocket, server: bool, deadline: float):
        self.tls, self.server, self.deadline = tls, server, deadline
        self.out = sys.stdout.buffer
        self.stdin_eof = False
        self.pending = b""          # a send that must be retried as it is
        self.queue = bytearray()     # stdin data not yet handed to send
        self.peer_closed = False
        self.closed_cleanly = False  # the peer's close_notify arrived
        self.want_write = False      # the socket must become writable first
        self.received = self.sent = 0

    # ------------------------------------------------------------ pieces
    def _recv_all(self) -> None:
        try:
            self._recv_some()
        finally:
            self.out.flush()

    def _recv_some(self) -> None:
        while not self.peer_closed:
            try:
                data = self.tls.recv(CHUNK)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                self.want_write = True
                return
            except ssl.SSLZeroReturnError:
                self.peer_closed = self.closed_cleanly = True
                return
            if not data:
                self.peer_closed = True
                return
            self.received += len(data)
            self.out.write(data)

    def _send_some(self) -> None:
        while True:
            if not self.pending:
                if not self.queue:
                    return
                self.pending = bytes(self.queue[:CHUNK])
                del self.queue[:CHUNK]
            try:
                n = self.tls.send(self.pending)
            except ssl.SSLWantWriteError:
                self.want_write = True
                return
            except ssl.SSLWantReadError:
                return
            self.sent += n
            self.pending = self.pending[n:]

    def _read_stdin(self) -> None:
        while not self.stdin_eof and len(self.queue) < STDIN_ROOM:
            try:
                data = os.read(0, CHUNK)
            except BlockingIOError:
                return
            if not data:
                self.stdin_eof = True
                return
            self.queue += data

    def _wait(self, sel: selectors.BaseSelector) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Deadline(f"deadline passed: received {self.received}, sent {self.sent}, "
                           f"{len(self.pending) + len(self.queue)} unsent")
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.want_write else 0)
        sel.modify(self.tls, events)
        stdin_wanted = not self.stdin_eof and len(self.queue) < STDIN_ROOM
        if stdin_wanted:
            try:
                sel.register(0, selectors.EVENT_READ)
            except KeyError:
                pass
        elif 0 in sel.get_map():
            sel.unregister(0)
        self.want_write = False
        sel.select(min(1.0, left))

    # -------------------------------------------------------------- loop
    def run(self) -> int:
        os.set_blocking(0, False)
        self.tls.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(self.tls, selectors.EVENT_READ)
        while True:
            self._recv_all()
            self._send_some()
            self._read_stdin()
            self._send_some()
            unsent = len(self.pending) + len(self.queue)
            if self.peer_closed:
                self.out.flush()
                if unsent or (self.server and not self.stdin_eof):
                    print(f"the peer closed with {unsent} bytes unsent "
                          f"(stdin at EOF: {self.stdin_eof})", file=sys.stderr)
                    return 1
                if not self.closed_cleanly:
                    # what s_server does at EOF on its stdin (it marks the
                    # connection shut down without sending close_notify);
                    # s_client takes it as the end too
                    print("the peer closed without close_notify", file=sys.stderr)
                return 0
            if self.server and self.stdin_eof and not unsent:
                return self._close(sel)
            self._wait(sel)

    def _close(self, sel: selectors.BaseSelector) -> int:
        """The server's end: close_notify, then the client's close (its
        close_notify or EOF), data that still comes being written out."""
        self.out.flush()
        while True:
            try:
                self.tls.unwrap()
                return 0
            except ssl.SSLWantReadError:
                self.want_write = False
            except ssl.SSLWantWriteError:
                self.want_write = True
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionError):
                return 0            # the client closed without answering
            self._wait(sel)


def main(argv) -> int:
    role, port = argv[1], int(argv[2])
    rest = argv[3:]
    if role == "server":
        cert, key, rest = rest[0], rest[1], rest[2:]
    budget = float(rest[0]) if rest else 300.0
    deadline = time.monotonic() + budget
    if role == "client":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    elif role == "server":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        with socket.create_server(("127.0.0.1", port)) as lsock:
            lsock.settimeout(60)
            raw, _ = lsock.accept()
        raw.settimeout(60)
    else:
        print(f"role must be client or server, not {role!r}", file=sys.stderr)
        return 64
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # the handshake under the 60 s socket timeout; then non-blocking
    tls = ctx.wrap_socket(raw, server_side=role == "server",
                          server_hostname=None if role == "server" else "localhost")
    print(f"version={tls.version()} cipher={tls.cipher()[0]} libssl={ssl.OPENSSL_VERSION}",
          file=sys.stderr, flush=True)
    peer = Peer(tls, role == "server", deadline)
    try:
        rc = peer.run()
    except Deadline as exc:
        print(str(exc), file=sys.stderr)
        rc = 3
    except (ssl.SSLError, OSError) as exc:
        print(f"failed after receiving {peer.received}, sending {peer.sent}: {exc!r}",
              file=sys.stderr)
        rc = 1
    print(f"received={peer.received} sent={peer.sent} rc={rc}", file=sys.stderr, flush=True)
    tls.close()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
