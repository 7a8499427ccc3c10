"""Debian's nginx, unmodified, run by the tests on 127.0.0.1.

    ng = Nginx(workdir, server_block, env=penv(prefix, cnf)).start()
    ... clients connect to 127.0.0.1:ng.port ...
    ng.stop()                    # SIGQUIT: the workers finish and exit
    ng.worker_stats()            # the worker's PIPETLS_STATS block(s)

Everything lives under ``workdir`` (``-p``): nginx.conf, the pid file, the
error log, the temporary directories nginx insists on, and the worker's
statistics file.  The master runs with ``daemon off; master_process on;
worker_processes 1``.  nginx hands its workers only the environment
variables named by ``env`` directives, so the statistics path reaches the
worker as ``env PIPETLS_STATS=<workdir>/worker.stats``; the master gets no
PIPETLS_STATS of its own (:func:`support.patched.penv` removes it).  Run as
root, nginx would start its workers as ``nobody``, who can read neither
pytest's temporary directories nor write the statistics file: the
configuration then says ``user root``.

A clean stop (SIGQUIT) lets the worker exit through ``exit()``: OpenSSL's
cleanup unloads the engine, which appends its statistics (one block) to
the file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import List, Optional

from . import programs
from .net import free_port, wait_listening
from .stats import read_stats_file

TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_program() -> str:
    """Debian's nginx (``/usr/sbin`` is not on every PATH); skips or fails
    (CI=true) like every other peer when it is missing."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is not None:
        return found
    return programs.require("nginx")


def nginx_conf(workdir: Path, server_block: str, *, stats: Optional[Path],
               log_level: str = "info") -> str:
    """A whole nginx.conf around ``server_block`` (which goes in http {});
    ``log_level`` "debug" needs an nginx built --with-debug (Debian's is)."""
    main = ["daemon off;", "master_process on;", "worker_processes 1;",
            f"pid {workdir / 'nginx.pid'};",
            f"error_log {workdir / 'error.log'} {log_level};"]
    if os.geteuid() == 0:
        main.append("user root;  # the default worker user cannot read pytest's tmp dirs")
    if stats is not None:
        main.append(f"env PIPETLS_STATS={stats};")
    http = ["access_log off;", "keepalive_timeout 5s;"]
    http += [f"{name}_temp_path {workdir / ('tmp_' + name)};" for name in TEMP_DIRS]
    return "\n".join(main + ["events { worker_connections 64; }", "http {"]
                     + ["    " + line for line in http]
                     + ["    " + line for line in server_block.splitlines()]
                     + ["}", ""])


class Nginx:
    def __init__(self, workdir: Path, server_block: str, *, env: dict, port: int,
                 stats: bool = True, log_level: str = "info"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.env = env
        self.stats_file: Optional[Path] = self.workdir / "worker.stats" if stats else None
        self.conf = self.workdir / "nginx.conf"
        self.conf.write_text(nginx_conf(self.workdir, server_block, stats=self.stats_file,
                                        log_level=log_level))
        self.program = nginx_program()
        self.proc: Optional[subprocess.Popen] = None
        self.stderr_path = self.workdir / "master.stderr"

    def argv(self, *extra: str) -> List[str]:
        return [self.program, "-p", str(self.workdir), "-c", str(self.conf),
                "-e", str(self.workdir / "error.log"), *extra]

    def test(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on this configuration."""
        return subprocess.run(self.argv("-t"), capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, env=self.env)

    def start(self) -> "Nginx":
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, env=self.env)
        try:
            wait_listening(self.port, 30.0, self.proc)
        except BaseException:
            self.kill()
            raise AssertionError("nginx did not start listening:\n" + self.logs())
        return self

    def worker_pids(self) -> List[int]:
        assert self.proc is not None
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self, timeout: float = 60.0) -> int:
        """Graceful stop (SIGQUIT); the master's exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("nginx did not stop on SIGQUIT:\n" + self.logs())
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pids = self.worker_pids()
            self.proc.kill()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait(10)

    def logs(self) -> str:
        out = []
        for p in (self.stderr_path, self.workdir / "error.log"):
            try:
                out.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-6000:])
            except OSError:
                pass
        return "\n".join(out)

    def worker_stats(self):
        """The statistics blocks the worker wrote (after :meth:`stop`)."""
        assert self.stats_file is not None
        return read_stats_file(self.stats_file)

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def new_port() -> int:
    return free_port()
