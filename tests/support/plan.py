"""The one write planner: libssl's split of one ``SSL_write`` into
batches of records (the seed's rule, ../shared/seeds).

``expected_batches(n, split, maxp)``: each batch uses
``min(maxp, ceil(left / split))`` pipelines; when every pipeline can be
filled each record carries ``split`` bytes, otherwise what is left is spread
equally (sizes differ by at most one), the first ones one byte longer.

n = 0: no batch at all. The announcement's "SSL_write called with 0-2000
bytes == 1 pipeline used" gives the range an ``SSL_write`` of up to
``split`` bytes falls in; with nothing to write libssl writes no record:
``SSL_write_ex(ssl, buf, 0, &written)`` returns 1 with ``written`` 0 and
puts nothing on the wire -- test_badinput.py's
test_zero_length_ssl_write_ex_directly measures that on stock libssl in
the same run, and test_pipelining.py checks this planner against the
engine's batch histogram.
"""

from __future__ import annotations

from typing import List


def expected_batches(n: int, split: int, maxp: int) -> List[List[int]]:
    """The batches of one SSL_write of ``n`` bytes, each the list of its
    record payload sizes."""
    out: List[List[int]] = []
    while n:
        pipes = min((n - 1) // split + 1, maxp)
        if n // pipes >= split:
            lens = [split] * pipes
        else:
            q, r = divmod(n, pipes)
            lens = [q + (1 if j < r else 0) for j in range(pipes)]
        out.append(lens)
        n -= sum(lens)
    return out


def batch_histogram(plan: List[List[int]]) -> dict:
    """{records per batch: number of batches} of a plan (the engine's
    ``hist`` counters for the same writes)."""
    hist: dict = {}
    for b in plan:
        hist[len(b)] = hist.get(len(b), 0) + 1
    return hist
