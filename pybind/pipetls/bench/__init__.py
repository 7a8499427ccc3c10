"""``pipetls bench``: one TLS connection, stock OpenSSL against pipetls, in
the same run, on the same data (see :mod:`pipetls.bench.cli` for the
scenarios and how to read a row).

One concern per module:

* :mod:`.model`     the cipher table, :class:`BenchResult`, the Amdahl bound,
                    the bootstrap interval and its verdict
* :mod:`.harness`   the in-memory write / read / latency measurements
* :mod:`.loopback`  the TCP scenario (a receiver process)
* :mod:`.busy`      N connections written at once by N threads
* :mod:`.runner`    the plan: interleaved stock/pipetls pairs, one row each
* :mod:`.report`    the table and the plot
* :mod:`.cli`       ``pipetls bench`` arguments and ``main``
"""

from __future__ import annotations

from .cli import add_parser, main
from .model import (CIPHERS, SCENARIOS, TLS13_SUITES, BenchResult, amdahl_bound, bootstrap_median,
                    serial_time, verdict)
from .report import plot
from .runner import machine_info, run

__all__ = ["add_parser", "main", "run", "CIPHERS", "TLS13_SUITES", "SCENARIOS", "BenchResult",
           "amdahl_bound", "bootstrap_median", "verdict", "serial_time", "machine_info", "plot"]
