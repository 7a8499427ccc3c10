"""pipetls: parallel TLS record pipelining for OpenSSL, from Python.

The records of one TLS connection are encrypted and decrypted on all cores
by the pipetls ENGINE, while the application keeps calling plain reads and
writes.  Python binding through ctypes only (no compiled extension).

Quick start::

    import pipetls
    pipetls.load_engine()                      # process-wide: see Engine
    srv = pipetls.Context(server=True, certfile="c.pem", keyfile="k.pem",
                          max_version="TLSv1.2", max_pipelines=8)
    ...
    # or make Python's own ssl module pipeline:
    pipetls.enable_pipelining(ssl_context, max_pipelines=8)
"""

from ._ffi import openssl_version
from .connection import Connection
from .context import Context
from . import evp
from .engine import Engine, EngineStats, engine_path, load_engine, shared_engine
from .provider import Provider, load_provider, provider_path, shared_provider
from .errors import (
    CertificateError,
    ClosedError,
    ConfigError,
    ConfigTypeError,
    EngineError,
    OpenSSLError,
    PipetlsError,
    ProviderError,
    StdlibError,
    TagError,
    TLSAlertError,
    TLSClosed,
    TLSError,
    TLSTimeout,
    TLSUnexpectedEOF,
    WantAsync,
    WantRead,
    WantWrite,
)
from .pairs import handshake_pair, pump
from .stdlib import enable_pipelining

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "openssl_version",
    "engine_path",
    "Engine",
    "EngineStats",
    "load_engine",
    "shared_engine",
    "provider_path",
    "Provider",
    "load_provider",
    "shared_provider",
    "evp",
    "Context",
    "Connection",
    "handshake_pair",
    "pump",
    "enable_pipelining",
    "PipetlsError",
    "OpenSSLError",
    "ConfigError",
    "ConfigTypeError",
    "EngineError",
    "ProviderError",
    "TagError",
    "StdlibError",
    "TLSError",
    "TLSAlertError",
    "TLSClosed",
    "TLSUnexpectedEOF",
    "CertificateError",
    "TLSTimeout",
    "ClosedError",
    "WantAsync",
    "WantRead",
    "WantWrite",
]
