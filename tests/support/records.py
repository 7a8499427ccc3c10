"""The one TLS record framer of the tests.

``next_record(buf, offset)`` reads one header and says whether the whole
record is there; ``parse_records(stream)`` splits a byte stream into
:class:`Record` objects and the incomplete tail. Everything that needs
record boundaries (the wire reader, the relay, the split checks) uses
these two.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Tuple

HEADER = 5
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23


class WireError(AssertionError):
    """The captured stream does not check out (bad tag, MAC, padding, order)."""


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


@dataclass
class Record:
    type: int
    version: int
    body: bytes
    offset: int         # of the 5-byte header in the captured stream

    @property
    def header(self) -> bytes:
        return header(self.type, self.version, len(self.body))

    def raw(self) -> bytes:
        return self.header + self.body


def parse_records(stream: bytes, strict: bool = True) -> Tuple[List[Record], bytes]:
    """Split a byte stream into records; returns (records, incomplete tail).
    With ``strict`` a tail is an error."""
    out, i = [], 0
    while True:
        got = next_record(stream, i)
        if got is None:
            break
        t, v, ln = got
        out.append(Record(t, v, bytes(stream[i + 5:i + 5 + ln]), i))
        i += 5 + ln
    tail = bytes(stream[i:])
    if strict and tail:
        raise WireError(f"stream ends inside a record ({len(tail)} bytes left)")
    return out, tail
