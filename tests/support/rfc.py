"""What the RFCs fix, and where stock OpenSSL is known to answer otherwise.

The tests compare the engine with stock OpenSSL measured in the same run
(support.stock): that is invariant 1. Where an RFC also fixes the answer,
:func:`check_stock_against_rfc` holds stock to it -- and a release that
answers otherwise must be listed in :data:`KNOWN_STOCK_DEVIATIONS`, by
case and version range. The list is exact both ways: an unlisted deviation
fails, and a listed one that no longer happens on a release in its range
fails too (the range is then wrong and must be updated), so the set of
deviations can never drift silently.

RFC 5246 section 7.2.2 (and RFC 8446 section 6.2): a record that fails
authentication, or "decrypted in an invalid way" (a CBC length that is not
a multiple of the block, bad padding), gets ``bad_record_mac``.
RFC 5246 section 6: an unexpected record type gets ``unexpected_message``.
RFC 6066 section 4 / RFC 8446 section 5.1: a plaintext longer than 2^14
gets ``record_overflow``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

ALERT_UNEXPECTED_MESSAGE = 10
ALERT_BAD_RECORD_MAC = 20
ALERT_RECORD_OVERFLOW = 22
ALERT_DECODE_ERROR = 50
ALERT_PROTOCOL_VERSION = 70
ALERT_INTERNAL_ERROR = 80

ALERT_NAMES = {ALERT_UNEXPECTED_MESSAGE: "unexpected_message",
               ALERT_BAD_RECORD_MAC: "bad_record_mac",
               ALERT_RECORD_OVERFLOW: "record_overflow",
               ALERT_DECODE_ERROR: "decode_error",
               ALERT_PROTOCOL_VERSION: "protocol_version",
               ALERT_INTERNAL_ERROR: "internal_error"}


def alert_name(alert) -> str:
    return ALERT_NAMES.get(alert, repr(alert))


@dataclass(frozen=True)
class StockDeviation:
    """Stock OpenSSL ``versions`` (inclusive (major, minor, patch) bounds)
    answers ``stock`` where the RFC says ``rfc``, for the cases ``applies``
    accepts."""

    what: str
    applies: Callable[[str], bool]   # case id -> bool
    rfc: int
    stock: int
    versions: Tuple[tuple, tuple]
    reference: str

    def covers(self, case: str, version: tuple) -> bool:
        lo, hi = self.versions
        return lo <= version <= hi and self.applies(case)


def _aead_shorter_than_tag(case: str) -> bool:
    suite, _, name = case.partition(":")
    return suite in ("aes128gcm", "aes256gcm", "chacha20") and name == "truncate-to-10"


KNOWN_STOCK_DEVIATIONS: List[StockDeviation] = [
    StockDeviation(
        "an AEAD (AES-GCM, ChaCha20-Poly1305) TLS 1.2 record shorter than its tag",
        _aead_shorter_than_tag, ALERT_BAD_RECORD_MAC, ALERT_INTERNAL_ERROR,
        # measured: 3.0.17, 3.0.19 and 3.0.20 answer internal_error, 3.0.22
        # answers bad_record_mac (3.0.21 and releases before 3.0.17 unmeasured)
        ((3, 0, 0), (3, 0, 20)), "openssl/openssl#25290"),
    StockDeviation(
        "an AEAD (AES-GCM, ChaCha20-Poly1305) TLS 1.2 record shorter than its tag (3.5)",
        _aead_shorter_than_tag, ALERT_BAD_RECORD_MAC, ALERT_INTERNAL_ERROR,
        # measured: 3.5.7 (Debian's 3.5.7-1~deb13u2 source built by
        # openssl_patches/build.py; its patch touches ssl_conf.c only, not the
        # record layer) answers internal_error: tls1_cipher() in
        # ssl/record/methods/tls1_meth.c turns the provider's refusal of the
        # EVP_CTRL_AEAD_TLS1_AAD ctrl (record length below explicit nonce +
        # tag) into SSL_AD_INTERNAL_ERROR. 3.5.0 to 3.5.6 unmeasured.
        ((3, 5, 7), (3, 5, 7)), "measured on 3.5.7; cf. openssl/openssl#25290 (3.0)"),
]

# what a run saw, for the terminal summary (conftest.py prints it)
SEEN: List[str] = []


def deviation_for(case: str, version: tuple) -> Optional[StockDeviation]:
    found = [d for d in KNOWN_STOCK_DEVIATIONS if d.covers(case, version)]
    assert len(found) <= 1, f"two documented deviations cover {case}: {found}"
    return found[0] if found else None


def check_stock_against_rfc(case: str, rfc: Optional[int], stock: Optional[int],
                            version: tuple, version_text: str = "") -> None:
    """Hold stock's answer ``stock`` (an alert number, or None for none) to
    the RFC's ``rfc`` (None: the RFC does not fix this answer), allowing
    exactly the documented deviations for ``version``."""
    dev = deviation_for(case, version)
    release = version_text or ".".join(map(str, version))
    if dev is not None:
        assert rfc == dev.rfc, f"{case}: the deviation {dev.what!r} is about {dev.rfc}"
        assert stock == dev.stock, (
            f"{case}: documented deviation no longer seen: stock {release} answers "
            f"{alert_name(stock)}, the list says {alert_name(dev.stock)} for "
            f"{dev.versions} ({dev.reference}); narrow the version range")
        SEEN.append(f"stock {release} answers {alert_name(stock)} where the RFC says "
                    f"{alert_name(rfc)}: {case} ({dev.what}; {dev.reference})")
        return
    if rfc is None:
        return
    assert stock == rfc, (
        f"{case}: stock {release} answers {alert_name(stock)} where the RFC says "
        f"{alert_name(rfc)}, and no entry of KNOWN_STOCK_DEVIATIONS covers it")
