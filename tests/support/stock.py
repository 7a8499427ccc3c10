"""Stock OpenSSL's answer to the same case, measured in the same run.

The pytest process registers the engine for its ciphers process-wide, so it
cannot also ask stock libssl. :class:`StockOracle` keeps one child Python
process that never loads the engine; a test sends it a case (a function in
a ``support`` module and JSON arguments), the child runs that function with
``engine=None`` and sends back its JSON summary, and the test runs the same
function in-process with the engine and asserts the two answers are equal.

The child inherits the environment (``LD_LIBRARY_PATH``, ``PATH``,
``PIPETLS_OPENSSL``), so it uses the same libssl as pytest; it reports
that library's version, and after every case it checks that no engine
file is mapped into it -- no file named ``pipetls.so``, nor the engine
file the parent uses (an answer with the engine inside would not be
stock's); directories named ``pipetls`` (release caches) do not count.

    python -m support.stock     # the child: JSON lines on stdin/stdout
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

TESTS = Path(__file__).resolve().parent.parent


def libcrypto_version() -> Dict[str, Any]:
    """The version of the libcrypto this process uses (``OpenSSL_version_num``)."""
    lib = ctypes.CDLL("libcrypto.so.3")
    lib.OpenSSL_version_num.restype = ctypes.c_ulong
    lib.OpenSSL_version.restype = ctypes.c_char_p
    lib.OpenSSL_version.argtypes = [ctypes.c_int]
    return {"num": int(lib.OpenSSL_version_num()), "text": lib.OpenSSL_version(0).decode()}


def version_tuple(num: int) -> tuple:
    """OPENSSL_VERSION_NUMBER 0xMNN00PP0L -> (major, minor, patch)."""
    return (num >> 28) & 0xF, (num >> 20) & 0xFF, (num >> 4) & 0xFF


ENGINE_FILE_NAME = "pipetls.so"
# the engine file the parent process uses (its real path), set by StockOracle
ENGINE_FILE_ENV = "PIPETLS_STOCK_ENGINE_FILE"


def is_engine_file(path: str, engine_file: Optional[str] = None) -> bool:
    """Whether the mapped file ``path`` is a pipetls engine: a file named
    ``pipetls.so``, or the file ``engine_file`` itself.  Only the file counts,
    not its directories: OpenSSL releases cached under ``~/.cache/pipetls/``
    or ``/var/cache/pipetls/`` are not the engine."""
    if os.path.basename(path) == ENGINE_FILE_NAME:
        return True
    return bool(engine_file) and os.path.realpath(path) == os.path.realpath(engine_file)


def mapped_paths() -> list:
    """The files mapped into this process (``/proc/self/maps``)."""
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith("/"):
                paths.add(fields[5].rstrip("\n").removesuffix(" (deleted)"))
    return sorted(paths)


def engine_mapped(engine_file: Optional[str] = None) -> bool:
    """Whether a pipetls engine is mapped into this process (see
    :func:`is_engine_file`; ``engine_file`` defaults to
    ``$PIPETLS_STOCK_ENGINE_FILE``)."""
    engine_file = engine_file or os.environ.get(ENGINE_FILE_ENV)
    return any(is_engine_file(p, engine_file) for p in mapped_paths())


class StockError(AssertionError):
    """The stock child failed to answer (its traceback or stderr is attached)."""


class StockOracle:
    """One child process without the engine; :meth:`call` runs a case there."""

    def __init__(self, timeout: float = 120.0):
        import pipetls  # the same package the tests use, found by the child too

        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)      # a sanitizer runtime is the engine's
        env.pop("PIPETLS_ENGINE", None)  # nothing to find the engine with
        env.pop("OPENSSL_ENGINES", None)
        try:                              # the engine file, whatever its name
            from pipetls.engine import engine_path
            env[ENGINE_FILE_ENV] = os.path.realpath(engine_path())
        except Exception:  # noqa: BLE001 - no engine to find: pipetls.so by name only
            env.pop(ENGINE_FILE_ENV, None)
        pkg_root = str(Path(pipetls.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS), pkg_root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.timeout = timeout
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "support.stock"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env, cwd=str(TESTS))
        self.version = self._request({"fn": "support.stock:libcrypto_version", "kwargs": {}})
        self.version_tuple = version_tuple(self.version["num"])

    def _stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")[-4000:]

    def _request(self, req: dict) -> Any:
        if self.proc.poll() is not None:
            raise StockError(f"the stock child exited ({self.proc.returncode}):\n"
                             + self._stderr())
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.close()
            raise StockError(f"no answer from the stock child for {req['fn']} within "
                             f"{self.timeout}s (rc {self.proc.returncode}):\n" + self._stderr())
        reply = json.loads(line)
        if "error" in reply:
            raise StockError(f"stock {req['fn']}({req['kwargs']}) raised:\n{reply['error']}")
        return reply["result"]

    def call(self, fn: str, **kwargs) -> Any:
        """Run ``fn`` ("module:function" in the child, with ``engine=None``
        and ``kwargs``) and return its JSON result."""
        return self._request({"fn": fn, "kwargs": kwargs, "engine": None})

    def query(self, fn: str, **kwargs) -> Any:
        """Run ``fn`` in the child as it is (no ``engine`` argument): for
        facts about the child itself."""
        return self._request({"fn": fn, "kwargs": kwargs})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdout, self._err):
            try:
                f.close()
            except OSError:
                pass


def _serve() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr              # a case that prints cannot break the protocol
    for line in sys.stdin:
        req = json.loads(line)
        try:
            mod, name = req["fn"].split(":")
            fn = getattr(importlib.import_module(mod), name)
            if "engine" in req:
                result = fn(None, **req["kwargs"])
            else:
                result = fn(**req["kwargs"])
            if engine_mapped():
                raise RuntimeError("a pipetls engine is mapped into the stock child")
            reply: Optional[dict] = {"result": result}
        except BaseException:  # noqa: BLE001 - reported to the parent
            reply = {"error": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
