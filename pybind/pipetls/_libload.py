"""Finding and loading libssl and libcrypto (invariant 7: one libcrypto per
process).

* default: exactly the libssl/libcrypto that Python's own ``ssl`` module
  uses.  ``_ssl`` is imported first, then the paths it mapped are read from
  ``/proc/self/maps`` (without /proc: ``dladdr`` on a symbol resolved through
  ``_ssl``'s own handle; last resort ``ctypes.util.find_library``).
* ``PIPETLS_OPENSSL=/prefix``: ``prefix/lib64`` or ``prefix/lib``
  (``libcrypto.so.3``, ``libssl.so.3``).  ``_ssl`` is *not* imported, and a
  different libcrypto already mapped in the process is refused.  Such an
  OpenSSL belongs in a process of its own (``LD_LIBRARY_PATH``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from ctypes import POINTER, c_char_p, c_int, c_void_p
from typing import Optional

from .errors import PipetlsError

__all__ = ["libssl", "libcrypto", "LIBSSL_PATH", "LIBCRYPTO_PATH", "stdlib_shares_openssl",
           "prefix_library_env"]


def _mapped_libraries() -> Optional[tuple[list[str], list[str]]]:
    """Paths of libssl.so*/libcrypto.so* mapped in this process, in map order.

    Returns None when /proc is not available.
    """
    try:
        with open("/proc/self/maps", "r", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    ssl_paths: list[str] = []
    crypto_paths: list[str] = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        if not path.startswith("/"):
            continue
        base = os.path.basename(path)
        if base.startswith("libssl.so") and path not in ssl_paths:
            ssl_paths.append(path)
        elif base.startswith("libcrypto.so") and path not in crypto_paths:
            crypto_paths.append(path)
    return ssl_paths, crypto_paths


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", c_char_p),
        ("dli_fbase", c_void_p),
        ("dli_sname", c_char_p),
        ("dli_saddr", c_void_p),
    ]


def _dladdr_path(handle_path: str, symbol: str) -> Optional[str]:
    """Path of the object that provides ``symbol`` as seen from ``handle_path``.

    dlsym() on a handle searches that object and then its dependencies, so
    looking up SSL_CTX_new through _ssl's own handle finds exactly the libssl
    _ssl uses; dladdr() names its file.
    """
    try:
        lib = ctypes.CDLL(handle_path)
        addr = ctypes.cast(getattr(lib, symbol), c_void_p).value
        libc = ctypes.CDLL(None)
        dladdr = libc.dladdr
        dladdr.argtypes = [c_void_p, POINTER(_DlInfo)]
        dladdr.restype = c_int
        info = _DlInfo()
        if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
            return os.fsdecode(info.dli_fname)
    except (OSError, AttributeError):
        pass
    return None


def _stdlib_ssl_paths() -> tuple[Optional[str], Optional[str]]:
    """(libssl, libcrypto) paths used by Python's _ssl, or (None, None)."""
    try:
        import _ssl  # noqa: F401  (maps the libraries into the process)
    except ImportError:
        return None, None
    mapped = _mapped_libraries()
    if mapped is not None and len(mapped[0]) == 1 and len(mapped[1]) == 1:
        return mapped[0][0], mapped[1][0]
    # No /proc, or several candidates (another OpenSSL was loaded by someone
    # else): ask the dynamic linker which ones _ssl itself resolves.
    ssl_file = getattr(sys.modules.get("_ssl"), "__file__", None)
    if ssl_file:
        ssl_path = _dladdr_path(ssl_file, "SSL_CTX_new")
        crypto_path = _dladdr_path(ssl_file, "ERR_get_error")
        if ssl_path and crypto_path:
            return ssl_path, crypto_path
    return None, None


def prefix_library_env(prefix: str, env: Optional[dict[str, str]] = None) -> dict[str, str]:
    """A copy of ``env`` (default: os.environ) whose LD_LIBRARY_PATH starts
    with ``prefix``'s library directories (lib64, lib: those that exist),
    for a program of that OpenSSL build run in a process of its own."""
    out = dict(os.environ if env is None else env)
    libdirs = [d for d in (os.path.join(prefix, "lib64"), os.path.join(prefix, "lib"))
               if os.path.isdir(d)]
    out["LD_LIBRARY_PATH"] = os.pathsep.join(
        libdirs + [p for p in out.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
    return out


def _prefix_paths(prefix: str) -> tuple[str, str]:
    for sub in ("lib64", "lib"):
        d = os.path.join(prefix, sub)
        ssl_path = os.path.join(d, "libssl.so.3")
        crypto_path = os.path.join(d, "libcrypto.so.3")
        if os.path.exists(ssl_path) and os.path.exists(crypto_path):
            return ssl_path, crypto_path
    raise PipetlsError(
        "PIPETLS_OPENSSL=%s: no libssl.so.3/libcrypto.so.3 in %s/lib64 or %s/lib"
        % (prefix, prefix, prefix)
    )


def _check_single_libcrypto(crypto_path: str) -> None:
    """Invariant 7: refuse if another libcrypto is already in the process."""
    mapped = _mapped_libraries()
    if mapped is None:
        return
    want = os.path.realpath(crypto_path)
    for path in mapped[1]:
        if os.path.realpath(path) != want:
            raise PipetlsError(
                "PIPETLS_OPENSSL asks for %s but %s is already loaded in this "
                "process (invariant 7: one libcrypto per process). Run the other "
                "OpenSSL in a process of its own, started with LD_LIBRARY_PATH, "
                "and do not import ssl before pipetls." % (want, os.path.realpath(path))
            )


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL, str, str]:
    prefix = os.environ.get("PIPETLS_OPENSSL")
    found: tuple[Optional[str], Optional[str]]
    if prefix:
        found = _prefix_paths(prefix)
        _check_single_libcrypto(found[1] or "")
    else:
        found = _stdlib_ssl_paths()
        if not found[0] or not found[1]:
            # _ssl linked statically or absent: the system library, and the
            # stdlib integration will refuse (stdlib_shares_openssl()).
            found = ctypes.util.find_library("ssl"), ctypes.util.find_library("crypto")
    ssl_path, crypto_path = found
    if not ssl_path or not crypto_path:
        raise PipetlsError("cannot find libssl/libcrypto to load")
    # libcrypto first: libssl's DT_NEEDED "libcrypto.so.3" then resolves to it
    # by soname instead of searching the default paths.
    crypto = ctypes.CDLL(crypto_path, mode=ctypes.RTLD_GLOBAL)
    # use_errno: SSL_ERROR_SYSCALL is explained by errno (ctypes.get_errno()).
    ssl = ctypes.CDLL(ssl_path, mode=ctypes.RTLD_GLOBAL, use_errno=True)
    if prefix:
        _check_single_libcrypto(crypto_path)
    return ssl, crypto, ssl_path, crypto_path


libssl, libcrypto, LIBSSL_PATH, LIBCRYPTO_PATH = _load()


def stdlib_shares_openssl() -> bool:
    """True when Python's ``ssl`` uses the same libssl/libcrypto as pipetls.

    Imports ``_ssl`` (when PIPETLS_OPENSSL selected another OpenSSL, that
    import itself is what breaks invariant 7: call this only to check before
    touching the stdlib).
    """
    if os.environ.get("PIPETLS_OPENSSL") and "_ssl" not in sys.modules:
        return False
    s, c = _stdlib_ssl_paths()
    return bool(
        s
        and c
        and os.path.realpath(s) == os.path.realpath(LIBSSL_PATH)
        and os.path.realpath(c) == os.path.realpath(LIBCRYPTO_PATH)
    )
