"""The one TLS record framer of the tests.

``parse_records(stream)`` splits a byte stream into ``(type, version,
body)`` triples and returns them with the incomplete tail; everything that
needs record boundaries (the wire reader, the relay, the split checks)
uses it.
"""

from __future__ import annotations

import struct
from typing import List, Tuple

HEADER = 5
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23


def header(typ: int, version: int, length: int) -> bytes:
    return struct.pack("!BHH", typ, version, length)


def next_record(buf, offset: int = 0):
    """``(type, version, length)`` of the whole record at ``offset``, or
    None when ``buf`` does not hold all of it yet."""
    if len(buf) - offset < HEADER:
        return None
    typ, ver, ln = struct.unpack_from("!BHH", buf, offset)
    if len(buf) - offset < HEADER + ln:
        return None
    return typ, ver, ln


def parse_records(stream) -> Tuple[List[Tuple[int, int, bytes]], bytes]:
    """``([(type, version, body), ...], tail)``: every whole record of
    ``stream`` and the bytes after the last one."""
    out, i = [], 0
    while True:
        got = next_record(stream, i)
        if got is None:
            break
        typ, ver, ln = got
        out.append((typ, ver, bytes(stream[i + HEADER:i + HEADER + ln])))
        i += HEADER + ln
    return out, bytes(stream[i:])
