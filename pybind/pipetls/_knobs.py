"""The pipelining knobs, validated in one place for Context and Connection.

Ranges (DESIGN.md, "Pipelining semantics"; OpenSSL ``ssl_lib.c``):

================================  =============================================
max_pipelines                     1..32 (SSL_MAX_PIPELINES); > 1 also turns
                                  read_ahead on
max_send_fragment                 512..16384; lowering it below
                                  split_send_fragment lowers that too
split_send_fragment               512..max_send_fragment
read_ahead                        bool
default_read_buffer_len           0..2**30 bytes (0: OpenSSL's default size,
                                  max_pipelines records); unset: twice that
                                  (READ_BUFFER_RECORDS_PER_PIPE records per
                                  pipeline, see read_buffer_auto)
================================  =============================================

A bad value raises :class:`ConfigError` (:class:`ConfigTypeError` for a wrong
type) *before* OpenSSL is touched; the message names the knob and the range.
OpenSSL's own refusal (a ctrl returning 0) is a ConfigError too.

OpenSSL has no getters for max_pipelines, split_send_fragment,
max_send_fragment or default_read_buffer_len: the getters return the last
value set through pipetls (or inherited from the Context / OpenSSL's default),
kept in Python.  read_ahead has a real getter and is read from OpenSSL.
"""

from __future__ import annotations

import numbers
import operator
from typing import Optional

from . import _ffi
from ._ffi import check
from .errors import ConfigError, ConfigTypeError

MAX_READ_BUFFER_LEN = 1 << 30

# The room libssl 3.0 allocates per record in its read buffer
# (ssl3_setup_read_buffer: SSL3_RT_MAX_PLAIN_LENGTH 16384 +
# SSL3_RT_MAX_ENCRYPTED_OVERHEAD 320 + header 5 + alignment 3); it sizes the
# buffer as max_pipelines of these when max_pipelines > 1.
READ_BUFFER_RECORD = 16712
# Records per pipeline in the read buffer pipetls asks for when
# default_read_buffer_len is not set (docs/performance.md, "Read batches").
READ_BUFFER_RECORDS_PER_PIPE = 2

# OpenSSL's defaults for a new SSL_CTX.
DEFAULTS: dict[str, int] = {
    "max_pipelines": 1,
    "max_send_fragment": _ffi.SSL3_RT_MAX_PLAIN_LENGTH,
    "split_send_fragment": _ffi.SSL3_RT_MAX_PLAIN_LENGTH,
    "default_read_buffer_len": 0,
    # 1 while default_read_buffer_len follows max_pipelines (never set)
    "read_buffer_auto": 1,
}


def read_buffer_auto(max_pipelines: int) -> int:
    """The read buffer pipetls sets when ``default_read_buffer_len`` was never
    given: 0 (OpenSSL's one record) for one pipeline, else room for
    READ_BUFFER_RECORDS_PER_PIPE x ``max_pipelines`` records, twice what
    libssl allocates on its own.

    libssl decrypts in one batch the complete records its read buffer holds
    (up to max_pipelines), and when a fill ends inside a record it hands up
    that record alone next. With room for exactly max_pipelines records a
    bulk stream therefore alternates max_pipelines, 1, max_pipelines, 1
    (mean (k + 1) / 2); twice the room gives k, k, 1 (mean (2k + 1) / 3).
    More room raises the mean further but libssl moves the unread rest of
    the buffer to its front before each batch, which costs more than the
    larger batches save on few lanes.
    """
    if max_pipelines <= 1:
        return 0
    return READ_BUFFER_RECORDS_PER_PIPE * max_pipelines * READ_BUFFER_RECORD


def as_int(knob: str, value: object) -> int:
    """``value`` as an int, or ConfigTypeError naming the knob."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigTypeError(
            "%s must be an int, not %s" % (knob, type(value).__name__), knob=knob
        )
    return operator.index(value)


def at_least(knob: str, value: object, lo: int) -> int:
    """``value`` as an int >= ``lo``, or ConfigError / ConfigTypeError."""
    v = as_int(knob, value)
    if v < lo:
        raise ConfigError("%s=%d is out of range: allowed >= %d" % (knob, v, lo), knob=knob)
    return v


def in_range(knob: str, value: object, lo: int, hi: int, hi_text: Optional[str] = None) -> int:
    value = as_int(knob, value)
    if not lo <= value <= hi:
        raise ConfigError(
            "%s=%d is out of range: allowed %d..%s" % (knob, value, lo, hi_text or hi),
            knob=knob,
        )
    return value


def as_bool(knob: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise ConfigTypeError(
        "%s must be a bool, not %r" % (knob, value), knob=knob
    )


def default_read_buffer_for(max_pipelines: int) -> int:
    """A read buffer that holds ``max_pipelines`` full TLS records.

    libssl already sizes its read buffer as max_pipelines records when
    max_pipelines > 1; this is for callers that want to say so explicitly.
    """
    # SSL3_RT_MAX_PLAIN_LENGTH + SSL3_RT_MAX_ENCRYPTED_OVERHEAD (256 + 64)
    # + header (5), rounded up.
    return max(1, max_pipelines) * (16384 + 2048)


class PipelineKnobs:
    """Mixin: the knobs as properties.  Subclasses provide

    ``_knob_ctrl(cmd, larg) -> int`` (SSL_CTX_ctrl / SSL_ctrl),
    ``_knob_set_read_buffer_len(n)``, ``_knob_get_read_ahead() -> bool``,
    ``_knob_set_read_ahead(bool)`` and a ``_knobs`` dict of cached values.
    """

    _knobs: dict[str, int]

    def _knob_handle(self) -> int:
        raise NotImplementedError

    def _knob_ctrl(self, cmd: int, value: int) -> int:
        raise NotImplementedError

    def _knob_set_read_buffer_len(self, n: int) -> None:
        raise NotImplementedError

    def _knob_get_read_ahead(self) -> bool:
        raise NotImplementedError

    def _knob_set_read_ahead(self, yes: bool) -> None:
        raise NotImplementedError

    # -- max_pipelines ----------------------------------------------------
    @property
    def max_pipelines(self) -> int:
        """Most records one SSL_write / SSL_read batch may carry (1..32).

        Cached in Python: OpenSSL has no getter."""
        self._knob_handle()
        return self._knobs["max_pipelines"]

    @max_pipelines.setter
    def max_pipelines(self, value: int) -> None:
        value = in_range("max_pipelines", value, 1, _ffi.SSL_MAX_PIPELINES)
        self._knob_apply("max_pipelines", _ffi.SSL_CTRL_SET_MAX_PIPELINES, value)
        self._knobs["max_pipelines"] = value
        if value > 1:
            # OpenSSL does this itself for an SSL; for an SSL_CTX it does not,
            # but the documented semantics are the same for both.
            self._knob_set_read_ahead(True)
        if self._knobs.get("read_buffer_auto", 0):
            n = read_buffer_auto(value)
            self._knob_set_read_buffer_len(n)
            self._knobs["default_read_buffer_len"] = n

    # -- max_send_fragment ------------------------------------------------
    @property
    def max_send_fragment(self) -> int:
        """Largest plaintext per record (512..16384).  Cached in Python."""
        self._knob_handle()
        return self._knobs["max_send_fragment"]

    @max_send_fragment.setter
    def max_send_fragment(self, value: int) -> None:
        value = in_range(
            "max_send_fragment", value, _ffi.SSL_MIN_SEND_FRAGMENT, _ffi.SSL3_RT_MAX_PLAIN_LENGTH
        )
        self._knob_apply("max_send_fragment", _ffi.SSL_CTRL_SET_MAX_SEND_FRAGMENT, value)
        self._knobs["max_send_fragment"] = value
        if self._knobs["split_send_fragment"] > value:  # OpenSSL clamps it too
            self._knobs["split_send_fragment"] = value

    # -- split_send_fragment ----------------------------------------------
    @property
    def split_send_fragment(self) -> int:
        """Plaintext per pipeline before another record is used
        (512..max_send_fragment).  Cached in Python."""
        self._knob_handle()
        return self._knobs["split_send_fragment"]

    @split_send_fragment.setter
    def split_send_fragment(self, value: int) -> None:
        hi = self._knobs["max_send_fragment"]
        value = in_range(
            "split_send_fragment",
            value,
            _ffi.SSL_MIN_SEND_FRAGMENT,
            hi,
            "max_send_fragment (%d)" % hi,
        )
        self._knob_apply("split_send_fragment", _ffi.SSL_CTRL_SET_SPLIT_SEND_FRAGMENT, value)
        self._knobs["split_send_fragment"] = value

    # -- read_ahead -------------------------------------------------------
    @property
    def read_ahead(self) -> bool:
        """Read as much as the transport offers (needed for read pipelining).
        Read from OpenSSL."""
        self._knob_handle()
        return self._knob_get_read_ahead()

    @read_ahead.setter
    def read_ahead(self, value: bool) -> None:
        value = as_bool("read_ahead", value)
        self._knob_handle()
        self._knob_set_read_ahead(value)

    # -- default_read_buffer_len ------------------------------------------
    @property
    def default_read_buffer_len(self) -> int:
        """Size of the read buffer allocated on first read (0..2**30; 0 keeps
        OpenSSL's default).  Until it is set, pipetls sets
        :func:`read_buffer_auto` (``max_pipelines``) whenever max_pipelines
        is set, and returns that.  Cached in Python: OpenSSL has no getter."""
        self._knob_handle()
        return self._knobs["default_read_buffer_len"]

    @default_read_buffer_len.setter
    def default_read_buffer_len(self, value: int) -> None:
        value = in_range("default_read_buffer_len", value, 0, MAX_READ_BUFFER_LEN, "2**30")
        self._knob_handle()
        self._knob_set_read_buffer_len(value)
        self._knobs["default_read_buffer_len"] = value
        self._knobs["read_buffer_auto"] = 0

    def set_pipelining(self, max_pipelines: int, split_send_fragment: Optional[int] = None,
                       read_buffer_len: Optional[int] = None,
                       max_send_fragment: Optional[int] = None) -> None:
        """Set several knobs at once (all validated before any is applied)."""
        in_range("max_pipelines", max_pipelines, 1, _ffi.SSL_MAX_PIPELINES)
        msf = self._knobs["max_send_fragment"]
        if max_send_fragment is not None:
            msf = in_range("max_send_fragment", max_send_fragment,
                           _ffi.SSL_MIN_SEND_FRAGMENT, _ffi.SSL3_RT_MAX_PLAIN_LENGTH)
        if split_send_fragment is not None:
            in_range("split_send_fragment", split_send_fragment,
                     _ffi.SSL_MIN_SEND_FRAGMENT, msf, "max_send_fragment (%d)" % msf)
        if read_buffer_len is not None:
            in_range("default_read_buffer_len", read_buffer_len, 0, MAX_READ_BUFFER_LEN, "2**30")
        if max_send_fragment is not None:
            self.max_send_fragment = max_send_fragment
        self.max_pipelines = max_pipelines
        if split_send_fragment is not None:
            self.split_send_fragment = split_send_fragment
        if read_buffer_len is not None:
            self.default_read_buffer_len = read_buffer_len

    # -- helpers ------------------------------------------------------------
    def _knob_apply(self, knob: str, cmd: int, value: int) -> None:
        self._knob_handle()  # raises ClosedError after close()
        check(
            self._knob_ctrl(cmd, value),
            "OpenSSL refused %s=%d" % (knob, value),
            exc=ConfigError,
            knob=knob,
        )
