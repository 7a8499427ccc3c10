"""Loopback sockets: a free port, and waiting for a listener without
connecting to it (a probe would use up ``-naccept 1``)."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Optional


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    (The port is released before it is returned, so another process could
    take it in between; on a test machine that is rare enough.)
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_ports() -> Optional[set]:
    """Ports in LISTEN state on this host, from /proc (None if unavailable)."""
    ports = set()
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def wait_listening(port: int, timeout: float = 10.0,
                   proc: Optional[subprocess.Popen] = None) -> None:
    """Wait until something listens on ``port``, without connecting to it.

    Raises RuntimeError if ``proc`` exits first or ``timeout`` passes. Where
    /proc/net/tcp is unavailable it falls back to a connect probe (which an
    ``-naccept 1`` server would count as its one connection).
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before "
                               f"listening on port {port}")
        ports = _listening_ports()
        if ports is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                pass
        elif port in ports:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout}s")
        time.sleep(0.02)
