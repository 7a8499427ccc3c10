"""The pipetls exception tree and the one OpenSSL error gate.

::

    PipetlsError                 .errors: OpenSSL's error queue lines (maybe empty)
     +-- OpenSSLError            a libssl/libcrypto call failed
     +-- ConfigError             a bad knob / setting (also ValueError)
     |    +-- ConfigTypeError    ... of the wrong type (also TypeError)
     +-- EngineError             loading or driving the engine failed
     +-- ProviderError           loading or driving the pipetls provider failed
     +-- TagError                open_many(): a tag did not verify (.pipes)
     +-- StdlibError             enable_pipelining() refused an ssl.SSLContext
     +-- TLSError                the TLS connection failed or ended
     |    +-- TLSAlertError      an alert was sent or received (.alert, .alert_name)
     |    +-- TLSClosed          the peer sent close_notify / we shut down
     |    +-- TLSUnexpectedEOF   the transport ended without close_notify
     |    +-- CertificateError   peer certificate verification failed
     +-- WantRead / WantWrite    non-blocking: retry when the transport is ready
     +-- WantAsync               async_mode: retry when one of .fds is readable
     +-- TLSTimeout              a blocking operation ran past its timeout (TimeoutError)
     +-- ClosedError            the pipetls object was closed (also ValueError)
     +-- MissingSymbolError      libssl/libcrypto lack a symbol (ImportError)

Model: oscrypto ``errors.py``.  This module is a leaf: it imports nothing
from pipetls.  The gate that drains OpenSSL's error queue into these
exceptions (``check`` / ``check_ptr`` / ``drain_errors``) lives beside the
prototypes, in :mod:`pipetls._ffi`.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Optional, Sequence

__all__ = [
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
    "WantRead",
    "WantWrite",
    "WantAsync",
    "TLSTimeout",
    "ClosedError",
    "MissingSymbolError",
    "ALERT_NAMES",
]


class PipetlsError(Exception):
    """Base class of every pipetls error.

    ``errors`` holds OpenSSL's error queue at the time, oldest first, as
    ``ERR_error_string_n`` lines (``error:0A000086:SSL routines::...``);
    ``codes`` holds the packed error codes.  Both may be empty.
    """

    def __init__(self, message: str = "", errors: Sequence[str] = (),
                 codes: Sequence[int] = ()) -> None:
        self.errors = list(errors)
        self.codes = list(codes)
        self.message = message
        if self.errors:
            message = "%s: %s" % (message, "; ".join(self.errors))
        super().__init__(message)


class OpenSSLError(PipetlsError):
    """A libssl/libcrypto call failed."""


class ConfigError(PipetlsError, ValueError):
    """A setting was refused: out of range (checked before OpenSSL is
    touched; the message names the knob and the allowed range), of the wrong
    type, or refused by OpenSSL itself."""

    def __init__(self, message: str, errors: Sequence[str] = (), codes: Sequence[int] = (),
                 knob: Optional[str] = None) -> None:
        self.knob = knob
        super().__init__(message, errors, codes)


class ConfigTypeError(ConfigError, TypeError):
    """A setting of the wrong type (also TypeError)."""


class EngineError(PipetlsError):
    """The pipetls engine could not be found, loaded or driven."""


class ProviderError(PipetlsError):
    """The pipetls provider could not be found, loaded or driven, or this
    libcrypto has no cipher pipeline API (OpenSSL < 3.5)."""


class TagError(PipetlsError):
    """An AEAD tag did not verify: :func:`pipetls.evp.open_many` returned no
    plaintext at all.  ``pipes`` lists the 0-based indices of the pipes whose
    tag failed (ascending; never empty); the message carries the provider's
    own detail too (which counts pipes from 1)."""

    def __init__(self, message: str, pipes: Sequence[int], errors: Sequence[str] = (),
                 codes: Sequence[int] = ()) -> None:
        self.pipes = sorted(pipes)
        super().__init__(message, errors, codes)


class StdlibError(PipetlsError):
    """enable_pipelining() refused to touch a Python ``ssl.SSLContext``."""


class TLSError(PipetlsError):
    """The TLS connection failed or ended."""


# TLS alert descriptions (RFC 5246 / 8446), number -> the RFC's name.
ALERT_NAMES: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}


class TLSAlertError(TLSError):
    """A fatal TLS alert ended the connection.

    ``alert``: the alert number (20 for bad_record_mac);
    ``alert_name``: the RFC name ("bad_record_mac");
    ``description``: OpenSSL's long text ("bad record mac");
    ``sent``: True if this side sent it (e.g. a record failed to decrypt
    here), False if the peer sent it.
    """

    def __init__(self, alert: int, sent: bool, description: Optional[str] = None,
                 errors: Sequence[str] = (), codes: Sequence[int] = ()) -> None:
        self.alert = int(alert)
        self.alert_name = ALERT_NAMES.get(self.alert, "alert_%d" % self.alert)
        self.description = description or self.alert_name.replace("_", " ")
        self.sent = bool(sent)
        msg = "TLS alert %s (%d) %s" % (
            self.alert_name,
            self.alert,
            "sent to the peer" if self.sent else "received from the peer",
        )
        super().__init__(msg, errors, codes)


class TLSClosed(TLSError):
    """The TLS connection is closed for this operation: the peer sent
    close_notify (SSL_ERROR_ZERO_RETURN), or we already shut down."""


class TLSUnexpectedEOF(TLSError):
    """The transport ended without close_notify (possible truncation)."""


class CertificateError(TLSError):
    """Peer certificate verification failed; ``verify_code``/``verify_message``
    come from SSL_get_verify_result."""

    def __init__(self, message: str, verify_code: Optional[int] = None,
                 verify_message: Optional[str] = None, errors: Sequence[str] = (),
                 codes: Sequence[int] = ()) -> None:
        self.verify_code = verify_code
        self.verify_message = verify_message
        if verify_message:
            message = "%s (%s)" % (message, verify_message)
        super().__init__(message, errors, codes)


class WantRead(PipetlsError):
    """Non-blocking operation: retry when the transport has data to read."""


class WantWrite(PipetlsError):
    """Non-blocking operation: retry when the transport can take more data."""


class WantAsync(PipetlsError):
    """Non-blocking operation in ``Context(async_mode=True)``
    (``SSL_ERROR_WANT_ASYNC``): a batch of records is being worked on by the
    engine's lanes while OpenSSL's ASYNC job is paused.  Wait until one of
    ``fds`` (``SSL_get_all_async_fds``; empty when OpenSSL had no job to
    give, ``SSL_ERROR_WANT_ASYNC_JOB``) is readable -- ``loop.add_reader``
    -- then call the same method again with the same buffer: the paused
    job resumes, and only then do its bytes count.  Never read the fds."""

    def __init__(self, message: str, fds: Sequence[int] = ()) -> None:
        self.fds = list(fds)
        super().__init__(message)


class TLSTimeout(PipetlsError, TimeoutError):
    """A blocking operation did not complete within the connection's timeout."""


class ClosedError(PipetlsError, ValueError):
    """The Context / Connection / Engine was closed; it cannot be used again."""


class MissingSymbolError(PipetlsError, ImportError):
    """libssl/libcrypto lacks a function pipetls needs (raised at import)."""

    def __init__(self, message: str, name: Optional[str] = None) -> None:
        self.errors: list[str] = []
        self.codes: list[int] = []
        self.message = message
        ImportError.__init__(self, message, name=name)


# --------------------------------------------------------------------------
# Deprecated: the gate used to live here (and ``handle_openssl_error`` was a
# second name for ``check``).  For one release these names still resolve,
# with a DeprecationWarning, to the functions in pipetls._ffi.  That module
# is looked up in sys.modules, not imported: importing any pipetls module
# runs pipetls/__init__.py, which has loaded _ffi, and errors.py stays a
# leaf of the import graph.
# --------------------------------------------------------------------------
_MOVED = {
    "check": "check",
    "check_ptr": "check_ptr",
    "drain_errors": "drain_errors",
    "clear_errors": "clear_errors",
    "handle_openssl_error": "check",
}


def __getattr__(name: str) -> Any:
    target = _MOVED.get(name)
    if target is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    warnings.warn(
        "pipetls.errors.%s is deprecated: use pipetls._ffi.%s (the OpenSSL error gate "
        "lives beside the prototypes now)" % (name, target),
        DeprecationWarning,
        stacklevel=2,
    )
    ffi = sys.modules[__name__.rpartition(".")[0] + "._ffi"]
    return getattr(ffi, target)
