"""argparse types shared by the ``pipetls`` command and ``pipetls bench``."""

from __future__ import annotations

import argparse

__all__ = ["parse_size"]

_SUFFIXES = (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40))


def parse_size(text: str, minimum: int = 0) -> int:
    """'64M', '1G', '4096', '1.5k' -> bytes (binary multiples); at least
    ``minimum``, else argparse.ArgumentTypeError."""
    t = text.strip().lower().rstrip("b").rstrip("i")
    mult = 1
    for suffix, m in _SUFFIXES:
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        v = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "not a size: %r (e.g. 4096, 256K, 64M, 1G)" % text) from None
    if v < minimum:
        raise argparse.ArgumentTypeError("size must be >= %d" % minimum)
    return v
