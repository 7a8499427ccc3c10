"""A loopback TCP relay that captures, and on request damages, TLS records.

    relay = Relay(upstream_port, c2s=hook, s2c=None).start()
    ... the client connects to 127.0.0.1:relay.port ...
    relay.join()
    relay.captured["c2s"], relay.forwarded["s2c"]   # bytes, as received / as sent

One connection per Relay. Each direction is pumped by its own thread; a hook
(an object with ``feed(bytes) -> bytes`` and ``finish() -> bytes``, and a
``close_now`` flag) sees every byte and decides what goes on. RecordHook
parses records; BatchTamper damages one record inside one batch of n
application-data records, and sends the whole batch in one ``send`` so the
receiver's read-ahead finds all n in its buffer (a pipelined read). Every
socket wait is bounded (``timeout``).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Callable, List, Optional

from .records import APPLICATION_DATA, CHANGE_CIPHER_SPEC, header, next_record
from .wire import Direction, WireSession


class Relay:
    def __init__(self, upstream_port: int, c2s=None, s2c=None, timeout: float = 30.0):
        self.upstream_port = upstream_port
        self.hooks = {"c2s": c2s, "s2c": s2c}
        self.timeout = timeout
        self.captured = {"c2s": bytearray(), "s2c": bytearray()}
        self.forwarded = {"c2s": bytearray(), "s2c": bytearray()}
        self.errors: List[BaseException] = []
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(1)
        self._lsock.settimeout(timeout)
        self.port = self._lsock.getsockname()[1]
        self._threads: List[threading.Thread] = []
        self._socks: List[socket.socket] = []
        self._main: Optional[threading.Thread] = None
        self.closed_early = threading.Event()
        for h in (c2s, s2c):
            if h is not None:
                h.relay = self

    def start(self) -> "Relay":
        self._main = threading.Thread(target=self._run, daemon=True)
        self._main.start()
        return self

    def _run(self) -> None:
        try:
            down, _ = self._lsock.accept()
            up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=self.timeout)
        except BaseException as e:  # reported by join()
            self.errors.append(e)
            return
        finally:
            self._lsock.close()
        for s in (down, up):
            s.settimeout(self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socks = [down, up]
        self._threads = [threading.Thread(target=self._pump, args=("c2s", down, up), daemon=True),
                         threading.Thread(target=self._pump, args=("s2c", up, down), daemon=True)]
        for t in self._threads:
            t.start()
        for t in self._threads:
            t.join(self.timeout + 5)
        for s in self._socks:
            s.close()

    def _send(self, name, dst, data):
        """``data``: bytes, or a list of bytes and pauses (floats, seconds)."""
        for part in (data if isinstance(data, list) else [data]):
            if isinstance(part, float):
                time.sleep(part)
            elif part:
                self.forwarded[name] += part
                dst.sendall(part)

    def _pump(self, name: str, src: socket.socket, dst: socket.socket) -> None:
        hook = self.hooks[name]
        try:
            while True:
                try:
                    chunk = src.recv(1 << 20)
                except (ConnectionResetError, OSError):
                    chunk = b""
                if not chunk:
                    break
                self.captured[name] += chunk
                out = hook.feed(chunk) if hook is not None else chunk
                self._send(name, dst, out)
                if hook is not None and hook.close_now:
                    # Cut the connection here: both ways, at once.
                    self.closed_early.set()
                    for s in self._socks:
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    return
            if hook is not None:
                self._send(name, dst, hook.finish())
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass  # the receiver gave up (e.g. after sending a fatal alert)
        except BaseException as e:
            self.errors.append(e)

    def join(self, timeout: Optional[float] = None) -> None:
        if self._main is not None:
            self._main.join(timeout if timeout is not None else self.timeout + 10)
            if self._main.is_alive():
                self.kill()
                self._main.join(5)
        if self.errors:
            raise self.errors[0]

    def kill(self) -> None:
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self._lsock.close()
        except OSError:
            pass


# ----------------------------------------------------------------- hooks

class RecordHook:
    """Parses the stream into records; ``on_record(header, body)`` returns
    the bytes to forward. ``app_index`` counts application-data records."""

    relay: Optional[Relay] = None

    def __init__(self):
        self._buf = bytearray()
        self.close_now = False
        self.app_index = 0
        self.seen_ccs = False

    def feed(self, data: bytes) -> list:
        """What to send for ``data``: a list of bytes and pauses (floats)."""
        self._buf += data
        out: list = [b""]
        while not self.close_now:
            got = next_record(self._buf)
            if got is None:
                break
            typ, ver, ln = got
            rec = bytes(self._buf[:5 + ln])
            del self._buf[:5 + ln]
            if typ == CHANGE_CIPHER_SPEC:
                self.seen_ccs = True
            got = self.on_record(typ, ver, rec)
            for part in (got if isinstance(got, list) else [got]):
                if isinstance(part, float) or isinstance(out[-1], float):
                    out.append(part)
                else:
                    out[-1] += part
        return out

    def finish(self) -> bytes:
        return self.flush() + bytes(self._buf)

    def flush(self) -> bytes:
        return b""

    def on_record(self, typ: int, ver: int, rec: bytes) -> bytes:
        return rec


def flip(rec: bytes, pos: int, bit: int = 0) -> bytes:
    b = bytearray(rec)
    b[pos] ^= 1 << bit
    return bytes(b)


def set_len(rec: bytes, body: bytes) -> bytes:
    return header(rec[0], int.from_bytes(rec[1:3], "big"), len(body)) + body


class BatchTamper(RecordHook):
    """Damage record ``k`` (0-based) of the ``batch``-th group of ``n``
    application-data records, then forward the group in one send, with a
    pause (``pause`` s) before and after it so that the receiver has
    drained what came before and reads the group alone, as one batch.

    ``op(records, k) -> (records, close)`` gets the group as a list of whole
    records (header + body) and returns what to send instead, and whether to
    cut the connection after it. ``done`` is set once the damage went out.

    ``lead``: the group before the damaged one (``batch`` >= 1) goes out the
    same way, undamaged, in one send between pauses: a batch of ``n`` whole
    records the receiver reads before the damage, whatever the damage does
    to the batching of its own group."""

    def __init__(self, n: int, k: int, op: Callable, batch: int = 1, pause: float = 0.05,
                 lead: bool = False):
        super().__init__()
        self.n, self.k, self.op, self.batch, self.pause = n, k, op, batch, pause
        self.lead = lead and batch >= 1
        self.lead_group: List[bytes] = []
        self.group: List[bytes] = []
        self.done = False
        self.group_start = None     # app_index of the damaged group's first record

    def on_record(self, typ, ver, rec):
        if typ != APPLICATION_DATA or self.done:
            return rec
        idx = self.app_index
        self.app_index += 1
        first = self.batch * self.n
        if self.lead and first - self.n <= idx < first:
            self.lead_group.append(rec)
            if len(self.lead_group) < self.n:
                return b""
            g, self.lead_group = self.lead_group, []
            return [self.pause, b"".join(g), self.pause]
        if idx < first:
            return rec
        self.group.append(rec)
        if len(self.group) < self.n:
            return b""
        self.group_start = first
        recs, close = self.op(list(self.group), self.k)
        self.group = []
        self.done = True
        self.close_now = close
        return [self.pause, b"".join(recs), self.pause]

    def flush(self):
        g, self.lead_group, self.group = self.lead_group + self.group, [], []
        return b"".join(g)


class Corrupt(RecordHook):
    """Flip one bit of the ``index``-th application-data record at body
    offset ``offset`` (negative counts from the end): a planted fault."""

    def __init__(self, index: int, offset: int, bit: int = 0):
        super().__init__()
        self.index, self.offset, self.bit = index, offset, bit

    def on_record(self, typ, ver, rec):
        if typ != APPLICATION_DATA:
            return rec
        i = self.app_index
        self.app_index += 1
        if i != self.index:
            return rec
        pos = 5 + (self.offset if self.offset >= 0 else len(rec) - 5 + self.offset)
        return flip(rec, pos, self.bit)


class Forge(RecordHook):
    """Man in the middle with the keys: re-protects every record after
    ChangeCipherSpec in this direction, and inserts ``inserts`` (a list of
    (type, plaintext) records, properly protected) before application-data
    record ``before``. Needs ``keylog()`` -> SSLKEYLOGFILE lines and the
    relay's capture of both directions (for the hello randoms)."""

    def __init__(self, name: str, keylog: Callable[[], list], before: int, inserts):
        super().__init__()
        self.name, self.keylog, self.before, self.inserts = name, keylog, before, inserts
        self.seq_in = self.seq_out = 0
        self.dir: Optional[Direction] = None
        self.inserted = False

    def _direction(self) -> Direction:
        r = self.relay
        sess = WireSession.from_capture(bytes(r.captured["c2s"]), bytes(r.captured["s2c"]),
                                        self.keylog(), strict=False)
        return sess.directions()[self.name]

    def on_record(self, typ, ver, rec):
        if not self.seen_ccs or typ == CHANGE_CIPHER_SPEC:
            return rec
        if self.dir is None:
            self.dir = self._direction()
        plain, _ = self.dir.decrypt(self.seq_in, typ, ver, rec[5:])
        self.seq_in += 1
        out = b""
        if typ == APPLICATION_DATA:
            if self.app_index == self.before and not self.inserted:
                for t, p in self.inserts:
                    out += self._protect(t, ver, p)
                self.inserted = True
            self.app_index += 1
        return out + self._protect(typ, ver, plain)

    def _protect(self, typ, ver, plain):
        body = self.dir.encrypt(self.seq_out, typ, ver, plain)
        self.seq_out += 1
        return header(typ, ver, len(body)) + body


__all__ = ["Relay", "RecordHook", "BatchTamper", "Corrupt", "Forge", "flip", "set_len"]
