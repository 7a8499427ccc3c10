"""What a failed SSL_read / SSL_write / SSL_do_handshake means, as a pipetls
exception: :func:`ssl_failure`."""

from __future__ import annotations

import ctypes
import os
from typing import Optional, Sequence

from . import _ffi
from ._ffi import drain_errors
from .errors import (
    CertificateError,
    TLSAlertError,
    TLSClosed,
    TLSError,
    TLSUnexpectedEOF,
)

__all__ = ["ssl_failure"]


def alert_text(alert: int) -> Optional[str]:
    """OpenSSL's long text for a TLS alert number ("bad record mac")."""
    t = _ffi.SSL_alert_desc_string_long(alert)
    return t.decode() if t else None


def ssl_failure(ssl: int, err: int, op: str,
                alerts: Sequence[tuple[bool, int, int]]) -> tuple[Exception, bool]:
    """``(exception, fatal)`` for ``SSL_get_error(ssl, ret) == err`` after
    operation ``op``; OpenSSL's error queue is drained into the exception.

    ``alerts``: (sent, level, alert) seen by the SSL's info callback during
    the operation (a fatal alert this side sent names the failure).
    ``fatal``: the connection cannot be used again (OpenSSL must not even
    send close_notify).  ``errno`` explains SSL_ERROR_SYSCALL, so read it
    before anything else touches it.
    """
    errno = ctypes.get_errno()
    lines, codes = drain_errors()
    if err == _ffi.SSL_ERROR_ZERO_RETURN:
        return TLSClosed("%s: the peer closed the TLS connection (close_notify)" % op,
                         lines, codes), False
    if err == _ffi.SSL_ERROR_SYSCALL:
        if errno:
            return OSError(errno, "%s: %s" % (op, os.strerror(errno))), True
        return TLSUnexpectedEOF("%s: the transport closed without close_notify" % op,
                                lines, codes), True
    if err != _ffi.SSL_ERROR_SSL:
        return TLSError("%s failed (SSL_get_error %d)" % (op, err), lines, codes), False
    reasons = [(_ffi.ERR_GET_LIB(c), _ffi.ERR_GET_REASON(c)) for c in codes]
    ssl_reasons = [r for lib, r in reasons if lib == _ffi.ERR_LIB_SSL]
    if _ffi.SSL_R_PROTOCOL_IS_SHUTDOWN in ssl_reasons:
        return TLSClosed("%s: the TLS connection is shut down" % op, lines, codes), False
    if _ffi.SSL_R_UNEXPECTED_EOF_WHILE_READING in ssl_reasons:
        return TLSUnexpectedEOF("%s: the transport closed without close_notify" % op,
                                lines, codes), True
    if _ffi.SSL_R_CERTIFICATE_VERIFY_FAILED in ssl_reasons:
        code = _ffi.SSL_get_verify_result(ssl)
        msg = _ffi.X509_verify_cert_error_string(code)
        return CertificateError("%s: certificate verification failed" % op, code,
                                msg.decode() if msg else None, lines, codes), True
    for r in ssl_reasons:
        if _ffi.SSL_AD_REASON_OFFSET <= r < _ffi.SSL_AD_REASON_OFFSET + 256:
            alert = r - _ffi.SSL_AD_REASON_OFFSET
            return TLSAlertError(alert, False, alert_text(alert), lines, codes), True
    for sent, level, alert in alerts:
        if sent and level == 2:
            return TLSAlertError(alert, True, alert_text(alert), lines, codes), True
    return TLSError("%s failed" % op, lines, codes), True
