"""ctypes prototypes for libssl and libcrypto, and the one OpenSSL error gate.

Model: oscrypto ``_openssl/_libssl_ctypes.py`` and ``_libcrypto.py``.
Opaque handle aliases first, then the constants, then one
``NAME = _fn(lib, "NAME", restype, *argtypes)`` line for every function
that pipetls calls: each prototype is a module attribute a type checker can
see, typed by its ``restype`` (int, bytes or None for ``char *``, an int
or None for a pointer).  A missing symbol fails *here*, at import, with a
clear ``MissingSymbolError`` (an ``ImportError``) -- never a segfault later.
OpenSSL macros (``SSL_CTX_set_max_pipelines`` ...) are ``SSL_CTX_ctrl`` /
``SSL_ctrl`` with the named constants below; every number was read from the
OpenSSL 3.0 headers (``ssl.h``, ``tls1.h``, ``bio.h``, ``evp.h``,
``engine.h``, ``err.h``) and is the same in 3.5.  The ``PIPETLS_CMD_*``
numbers are the engine's (``engine/pipetls.h``); tests compare them.

The gate: :func:`check` / :func:`check_ptr` return a call's result or raise
with OpenSSL's (per-thread) error queue drained into the exception
(:func:`drain_errors`), so the queue is always left empty.  Every ctypes
call that can fail goes through them.

Which libraries are loaded is :mod:`pipetls._libload`'s business.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    _SimpleCData,
    c_char_p,
    c_int,
    c_long,
    c_size_t,
    c_uint,
    c_uint64,
    c_ulong,
    c_void_p,
)
from typing import Any, Callable, Optional, TypeVar, overload

from ._libload import LIBCRYPTO_PATH, LIBSSL_PATH, libcrypto, libssl, stdlib_shares_openssl
from .errors import MissingSymbolError, OpenSSLError, PipetlsError

__all__ = [
    "libssl",
    "libcrypto",
    "LIBSSL_PATH",
    "LIBCRYPTO_PATH",
    "stdlib_shares_openssl",
    "openssl_version",
    "has_symbol",
    "check",
    "check_ptr",
    "drain_errors",
    "clear_errors",
]

# --------------------------------------------------------------------------
# Opaque handle types.  They are all plain pointers; the aliases only say
# what a prototype expects.
# --------------------------------------------------------------------------
SSL_METHOD = c_void_p
SSL_CTX = c_void_p
SSL = c_void_p
SSL_CIPHER = c_void_p
SSL_SESSION = c_void_p
BIO = c_void_p
BIO_METHOD = c_void_p
X509 = c_void_p
X509_STORE_CTX = c_void_p
X509_VERIFY_PARAM = c_void_p
ENGINE = c_void_p
EVP_PKEY = c_void_p
EVP_CIPHER = c_void_p
EVP_CIPHER_CTX = c_void_p
OSSL_LIB_CTX = c_void_p
OSSL_PROVIDER = c_void_p

# --------------------------------------------------------------------------
# Constants (values verified against /usr/include/openssl, OpenSSL 3.0).
# --------------------------------------------------------------------------
# ssl.h: SSL_ctrl / SSL_CTX_ctrl commands
SSL_CTRL_MODE = 33
SSL_CTRL_CLEAR_MODE = 78
SSL_CTRL_GET_READ_AHEAD = 40
SSL_CTRL_SET_READ_AHEAD = 41
SSL_CTRL_SET_MAX_SEND_FRAGMENT = 52
SSL_CTRL_SET_TLSEXT_HOSTNAME = 55
SSL_CTRL_CLEAR_MODE = 78
SSL_CTRL_SET_MIN_PROTO_VERSION = 123
SSL_CTRL_SET_MAX_PROTO_VERSION = 124
SSL_CTRL_SET_SPLIT_SEND_FRAGMENT = 125
SSL_CTRL_SET_MAX_PIPELINES = 126
SSL_CTRL_GET_MIN_PROTO_VERSION = 130
SSL_CTRL_GET_MAX_PROTO_VERSION = 131
TLSEXT_NAMETYPE_host_name = 0  # tls1.h

SSL_MAX_PIPELINES = 32  # ssl.h
SSL3_RT_MAX_PLAIN_LENGTH = 16384  # ssl3.h: the largest max_send_fragment
SSL_MIN_SEND_FRAGMENT = 512  # ssl_lib.c: SSL_CTRL_SET_MAX_SEND_FRAGMENT floor

# prov_ssl.h
TLS1_VERSION = 0x0301
TLS1_1_VERSION = 0x0302
TLS1_2_VERSION = 0x0303
TLS1_3_VERSION = 0x0304

# ssl.h: options (uint64_t in 3.0)
SSL_OP_ENABLE_KTLS = 1 << 3
SSL_OP_IGNORE_UNEXPECTED_EOF = 1 << 7
SSL_OP_NO_TICKET = 1 << 14
SSL_OP_NO_COMPRESSION = 1 << 17
SSL_OP_NO_ENCRYPT_THEN_MAC = 1 << 19
SSL_OP_NO_RENEGOTIATION = 1 << 30

# ssl.h: modes
SSL_MODE_ENABLE_PARTIAL_WRITE = 0x1
SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = 0x2
SSL_MODE_AUTO_RETRY = 0x4
SSL_MODE_RELEASE_BUFFERS = 0x10
SSL_MODE_ASYNC = 0x100

# ssl.h: verify modes, file types
SSL_VERIFY_NONE = 0x00
SSL_VERIFY_PEER = 0x01
SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
SSL_FILETYPE_PEM = 1  # X509_FILETYPE_PEM
X509_V_OK = 0

# ssl.h: SSL_get_error results
SSL_ERROR_NONE = 0
SSL_ERROR_SSL = 1
SSL_ERROR_WANT_READ = 2
SSL_ERROR_WANT_WRITE = 3
SSL_ERROR_WANT_X509_LOOKUP = 4
SSL_ERROR_SYSCALL = 5
SSL_ERROR_ZERO_RETURN = 6
SSL_ERROR_WANT_CONNECT = 7
SSL_ERROR_WANT_ACCEPT = 8
SSL_ERROR_WANT_ASYNC = 9
SSL_ERROR_WANT_ASYNC_JOB = 10

# ssl.h: SSL_get_shutdown bits
SSL_SENT_SHUTDOWN = 1
SSL_RECEIVED_SHUTDOWN = 2

# ssl.h: info callback "where" bits
SSL_CB_READ = 0x04
SSL_CB_WRITE = 0x08
SSL_CB_ALERT = 0x4000
SSL_CB_READ_ALERT = SSL_CB_ALERT | SSL_CB_READ
SSL_CB_WRITE_ALERT = SSL_CB_ALERT | SSL_CB_WRITE
SSL_CB_HANDSHAKE_DONE = 0x20
SSL_AD_REASON_OFFSET = 1000  # received alert N -> reason 1000 + N

# tls1.h / ssl.h: ALPN
SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_ALERT_FATAL = 2
SSL_TLSEXT_ERR_NOACK = 3
OPENSSL_NPN_NEGOTIATED = 1

# sslerr.h: reasons pipetls maps to exceptions
SSL_R_PROTOCOL_IS_SHUTDOWN = 207
SSL_R_UNEXPECTED_EOF_WHILE_READING = 294
SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC = 281
SSL_R_CERTIFICATE_VERIFY_FAILED = 134

# err.h: packed error codes (3.0 layout)
ERR_LIB_OFFSET = 23
ERR_LIB_MASK = 0xFF
ERR_REASON_MASK = 0x7FFFFF
ERR_SYSTEM_FLAG = 0x80000000
ERR_TXT_STRING = 0x02
ERR_LIB_SSL = 20
ERR_LIB_ENGINE = 38

# bio.h
BIO_CTRL_PENDING = 10
BIO_CTRL_WPENDING = 13
BIO_C_SET_WRITE_BUF_SIZE = 136
BIO_CTRL_EOF = 2
BIO_C_SET_BUF_MEM_EOF_RETURN = 130

# engine.h
ENGINE_CMD_BASE = 200
ENGINE_METHOD_CIPHERS = 0x0040

# evp.h
EVP_CIPH_FLAG_AEAD_CIPHER = 0x200000
EVP_CIPH_FLAG_PIPELINE = 0x800000
EVP_CTRL_AEAD_SET_IVLEN = 0x9
EVP_CTRL_AEAD_GET_TAG = 0x10
EVP_CTRL_AEAD_SET_TAG = 0x11
EVP_CTRL_AEAD_TLS1_AAD = 0x16
EVP_CTRL_SET_PIPELINE_OUTPUT_BUFS = 0x22
EVP_CTRL_SET_PIPELINE_INPUT_BUFS = 0x23
EVP_CTRL_SET_PIPELINE_INPUT_LENS = 0x24
EVP_AEAD_TLS1_AAD_LEN = 13
EVP_GCM_TLS_FIXED_IV_LEN = 4
EVP_GCM_TLS_EXPLICIT_IV_LEN = 8
EVP_GCM_TLS_TAG_LEN = 16

# evp.h (3.5): the cipher pipeline API
EVP_MAX_PIPES = 32
EVP_MAX_BLOCK_LENGTH = 32

# core.h: OSSL_PARAM data types; core_names.h: the parameter names used
OSSL_PARAM_INTEGER = 1
OSSL_PARAM_UNSIGNED_INTEGER = 2
OSSL_PARAM_REAL = 3
OSSL_PARAM_UTF8_STRING = 4
OSSL_PARAM_OCTET_STRING = 5
OSSL_PARAM_UTF8_PTR = 6
OSSL_PARAM_OCTET_PTR = 7
OSSL_PARAM_UNMODIFIED = (1 << (8 * ctypes.sizeof(c_size_t))) - 1  # SIZE_MAX
OSSL_CIPHER_PARAM_AEAD_TAG = b"tag"
OSSL_CIPHER_PARAM_PIPELINE_AEAD_TAG = b"pipeline-tag"  # 3.5

# opensslv.h: OpenSSL_version_num() of the first release with the pipeline API
OPENSSL_3_5 = 0x30500000

# crypto.h: OpenSSL_version() selectors
OPENSSL_VERSION = 0
OPENSSL_DIR = 4
OPENSSL_ENGINES_DIR = 5

# pipetls.h: the engine's control commands
PIPETLS_ENGINE_ID = b"pipetls"
PIPETLS_MAX_PIPES = 32
PIPETLS_MAX_LANES = 256
PIPETLS_CMD_THREADS = ENGINE_CMD_BASE + 0
PIPETLS_CMD_INLINE_BELOW = ENGINE_CMD_BASE + 1
PIPETLS_CMD_STATS = ENGINE_CMD_BASE + 2
PIPETLS_CMD_RESET_STATS = ENGINE_CMD_BASE + 3
PIPETLS_CMD_STATS_FILE = ENGINE_CMD_BASE + 4
PIPETLS_CMD_INFO = ENGINE_CMD_BASE + 5
PIPETLS_CMD_MULTIBLOCK = ENGINE_CMD_BASE + 6
PIPETLS_CMD_CBC_HMAC_MODE = ENGINE_CMD_BASE + 7
PIPETLS_CMD_ADAPTIVE = ENGINE_CMD_BASE + 8
PIPETLS_CMD_CPUS = ENGINE_CMD_BASE + 9
PIPETLS_CMD_ASYNC = ENGINE_CMD_BASE + 10
PIPETLS_CMD_OUT_OF_PLACE = ENGINE_CMD_BASE + 11

# --------------------------------------------------------------------------
# Callback types.  The Python objects made from these must be kept alive for
# as long as OpenSSL may call them (Context keeps them).
# --------------------------------------------------------------------------
# void (*)(const SSL *ssl, const char *line)
KEYLOG_CB = CFUNCTYPE(None, c_void_p, c_char_p)
# void (*)(const SSL *ssl, int where, int ret)
INFO_CB = CFUNCTYPE(None, c_void_p, c_int, c_int)
# int (*)(SSL *, const unsigned char **out, unsigned char *outlen,
#         const unsigned char *in, unsigned int inlen, void *arg)
ALPN_SELECT_CB = CFUNCTYPE(
    c_int, c_void_p, POINTER(c_void_p), POINTER(ctypes.c_ubyte), c_void_p, c_uint, c_void_p
)
# int (*)(int preverify_ok, X509_STORE_CTX *)
VERIFY_CB = CFUNCTYPE(c_int, c_int, c_void_p)



class OSSL_PARAM(ctypes.Structure):
    """core.h ``struct ossl_param_st``; an array ends with a NULL key."""

    _fields_ = [
        ("key", c_char_p),
        ("data_type", c_uint),
        ("data", c_void_p),
        ("data_size", c_size_t),
        ("return_size", c_size_t),
    ]


# --------------------------------------------------------------------------
# Prototypes.
# --------------------------------------------------------------------------
_T = TypeVar("_T")


@overload
def _fn(lib: ctypes.CDLL, name: str, restype: None, *argtypes: Any) -> Callable[..., None]: ...


@overload
def _fn(
    lib: ctypes.CDLL, name: str, restype: type[_SimpleCData[_T]], *argtypes: Any
) -> Callable[..., _T]: ...


def _fn(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
    """The prototype of ``name`` in ``lib``; MissingSymbolError if absent."""
    f = _lookup(lib, name, restype, argtypes)
    if f is None:
        raise MissingSymbolError(
            "pipetls: symbol %s not found in %s (OpenSSL 3.0 or later is required)"
            % (name, lib._name),
            name=name,
        )
    return f


def _lookup(lib: ctypes.CDLL, name: str, restype: Any,
            argtypes: tuple[Any, ...]) -> Optional[Callable[..., Any]]:
    try:
        f = getattr(lib, name)
    except AttributeError:
        return None
    f.restype = restype
    f.argtypes = list(argtypes)
    return f  # type: ignore[no-any-return]


# Functions newer than OpenSSL 3.0: absent from an older libcrypto, they are
# looked up here like the others, but a missing one becomes a stub that
# raises MissingSymbolError when *called* (naming the release that added it),
# so the package still imports on 3.0.  ``has_symbol()`` asks first.
_MISSING_OPTIONAL: dict[str, str] = {}


@overload
def _fn_since(version: str, lib: ctypes.CDLL, name: str, restype: None,
              *argtypes: Any) -> Callable[..., None]: ...


@overload
def _fn_since(version: str, lib: ctypes.CDLL, name: str, restype: type[_SimpleCData[_T]],
              *argtypes: Any) -> Callable[..., _T]: ...


def _fn_since(version: str, lib: ctypes.CDLL, name: str, restype: Any,
              *argtypes: Any) -> Callable[..., Any]:
    """The prototype of ``name``, added in OpenSSL ``version``; a stub that
    raises MissingSymbolError on call when this libcrypto lacks it."""
    f = _lookup(lib, name, restype, argtypes)
    if f is not None:
        return f
    _MISSING_OPTIONAL[name] = version
    message = ("pipetls: %s needs OpenSSL %s or later; this process has %s (%s). Run it "
               "with PIPETLS_OPENSSL=<prefix of an OpenSSL >= %s>, e.g. the patched build of "
               "openssl_patches/build.py" % (name, version, lib._name, "%s", version))

    def missing(*args: Any) -> Any:
        raise MissingSymbolError(message % openssl_version(), name=name)

    missing.__name__ = name
    return missing


def has_symbol(name: str) -> bool:
    """False for a ``_fn_since`` prototype this libcrypto/libssl lacks."""
    return name not in _MISSING_OPTIONAL


# ---- libcrypto: version, errors -------------------------------------------
OpenSSL_version = _fn(libcrypto, "OpenSSL_version", c_char_p, c_int)
OpenSSL_version_num = _fn(libcrypto, "OpenSSL_version_num", c_ulong)
ERR_get_error = _fn(libcrypto, "ERR_get_error", c_ulong)
ERR_get_error_all = _fn(libcrypto, "ERR_get_error_all", c_ulong,
    POINTER(c_char_p), POINTER(c_int), POINTER(c_char_p), POINTER(c_char_p), POINTER(c_int))
ERR_peek_error = _fn(libcrypto, "ERR_peek_error", c_ulong)
ERR_peek_last_error = _fn(libcrypto, "ERR_peek_last_error", c_ulong)
ERR_error_string_n = _fn(libcrypto, "ERR_error_string_n", None, c_ulong, c_char_p, c_size_t)
ERR_clear_error = _fn(libcrypto, "ERR_clear_error", None)
ERR_reason_error_string = _fn(libcrypto, "ERR_reason_error_string", c_char_p, c_ulong)
OBJ_sn2nid = _fn(libcrypto, "OBJ_sn2nid", c_int, c_char_p)
OBJ_nid2sn = _fn(libcrypto, "OBJ_nid2sn", c_char_p, c_int)
CRYPTO_free = _fn(libcrypto, "CRYPTO_free", None, c_void_p, c_char_p, c_int)
OPENSSL_cleanse = _fn(libcrypto, "OPENSSL_cleanse", None, c_void_p, c_size_t)

# ---- libcrypto: ENGINE ----------------------------------------------------
ENGINE_load_builtin_engines = _fn(libcrypto, "ENGINE_load_builtin_engines", None)
ENGINE_by_id = _fn(libcrypto, "ENGINE_by_id", ENGINE, c_char_p)
ENGINE_ctrl_cmd_string = _fn(libcrypto, "ENGINE_ctrl_cmd_string", c_int, ENGINE, c_char_p, c_char_p, c_int)
ENGINE_ctrl = _fn(libcrypto, "ENGINE_ctrl", c_int, ENGINE, c_int, c_long, c_void_p, c_void_p)
ENGINE_init = _fn(libcrypto, "ENGINE_init", c_int, ENGINE)
ENGINE_finish = _fn(libcrypto, "ENGINE_finish", c_int, ENGINE)
ENGINE_free = _fn(libcrypto, "ENGINE_free", c_int, ENGINE)
ENGINE_set_default = _fn(libcrypto, "ENGINE_set_default", c_int, ENGINE, c_uint)
ENGINE_set_default_ciphers = _fn(libcrypto, "ENGINE_set_default_ciphers", c_int, ENGINE)
ENGINE_unregister_ciphers = _fn(libcrypto, "ENGINE_unregister_ciphers", None, ENGINE)
ENGINE_get_cipher = _fn(libcrypto, "ENGINE_get_cipher", EVP_CIPHER, ENGINE, c_int)
ENGINE_get_cipher_engine = _fn(libcrypto, "ENGINE_get_cipher_engine", ENGINE, c_int)
ENGINE_get_id = _fn(libcrypto, "ENGINE_get_id", c_char_p, ENGINE)
ENGINE_get_name = _fn(libcrypto, "ENGINE_get_name", c_char_p, ENGINE)

# ---- libcrypto: EVP ciphers -----------------------------------------------
EVP_CIPHER_CTX_new = _fn(libcrypto, "EVP_CIPHER_CTX_new", EVP_CIPHER_CTX)
EVP_CIPHER_CTX_free = _fn(libcrypto, "EVP_CIPHER_CTX_free", None, EVP_CIPHER_CTX)
EVP_CIPHER_CTX_reset = _fn(libcrypto, "EVP_CIPHER_CTX_reset", c_int, EVP_CIPHER_CTX)
EVP_CIPHER_CTX_ctrl = _fn(libcrypto, "EVP_CIPHER_CTX_ctrl", c_int, EVP_CIPHER_CTX, c_int, c_int, c_void_p)
EVP_CIPHER_CTX_set_padding = _fn(libcrypto, "EVP_CIPHER_CTX_set_padding", c_int, EVP_CIPHER_CTX, c_int)
EVP_CIPHER_CTX_get0_cipher = _fn(libcrypto, "EVP_CIPHER_CTX_get0_cipher", EVP_CIPHER, EVP_CIPHER_CTX)
EVP_CipherInit_ex = _fn(libcrypto, "EVP_CipherInit_ex", c_int,
    EVP_CIPHER_CTX, EVP_CIPHER, ENGINE, c_void_p, c_void_p, c_int)
EVP_CipherUpdate = _fn(libcrypto, "EVP_CipherUpdate", c_int,
    EVP_CIPHER_CTX, c_void_p, POINTER(c_int), c_void_p, c_int)
EVP_CipherFinal_ex = _fn(libcrypto, "EVP_CipherFinal_ex", c_int, EVP_CIPHER_CTX, c_void_p, POINTER(c_int))
EVP_Cipher = _fn(libcrypto, "EVP_Cipher", c_int, EVP_CIPHER_CTX, c_void_p, c_void_p, c_uint)
EVP_CIPHER_fetch = _fn(libcrypto, "EVP_CIPHER_fetch", EVP_CIPHER, OSSL_LIB_CTX, c_char_p, c_char_p)
EVP_CIPHER_free = _fn(libcrypto, "EVP_CIPHER_free", None, EVP_CIPHER)
EVP_get_cipherbyname = _fn(libcrypto, "EVP_get_cipherbyname", EVP_CIPHER, c_char_p)
EVP_CIPHER_get_nid = _fn(libcrypto, "EVP_CIPHER_get_nid", c_int, EVP_CIPHER)
EVP_CIPHER_get_flags = _fn(libcrypto, "EVP_CIPHER_get_flags", c_ulong, EVP_CIPHER)
EVP_CIPHER_get_key_length = _fn(libcrypto, "EVP_CIPHER_get_key_length", c_int, EVP_CIPHER)
EVP_CIPHER_get_iv_length = _fn(libcrypto, "EVP_CIPHER_get_iv_length", c_int, EVP_CIPHER)
EVP_CIPHER_get_block_size = _fn(libcrypto, "EVP_CIPHER_get_block_size", c_int, EVP_CIPHER)
EVP_CIPHER_get0_provider = _fn(libcrypto, "EVP_CIPHER_get0_provider", c_void_p, EVP_CIPHER)
EVP_CIPHER_get0_name = _fn(libcrypto, "EVP_CIPHER_get0_name", c_char_p, EVP_CIPHER)
EVP_CIPHER_CTX_get_params = _fn(libcrypto, "EVP_CIPHER_CTX_get_params", c_int,
    EVP_CIPHER_CTX, POINTER(OSSL_PARAM))
EVP_CIPHER_CTX_set_params = _fn(libcrypto, "EVP_CIPHER_CTX_set_params", c_int,
    EVP_CIPHER_CTX, POINTER(OSSL_PARAM))
EVP_EncryptInit_ex = _fn(libcrypto, "EVP_EncryptInit_ex", c_int,
    EVP_CIPHER_CTX, EVP_CIPHER, ENGINE, c_void_p, c_void_p)
EVP_EncryptUpdate = _fn(libcrypto, "EVP_EncryptUpdate", c_int,
    EVP_CIPHER_CTX, c_void_p, POINTER(c_int), c_void_p, c_int)
EVP_EncryptFinal_ex = _fn(libcrypto, "EVP_EncryptFinal_ex", c_int, EVP_CIPHER_CTX, c_void_p, POINTER(c_int))
EVP_DecryptInit_ex = _fn(libcrypto, "EVP_DecryptInit_ex", c_int,
    EVP_CIPHER_CTX, EVP_CIPHER, ENGINE, c_void_p, c_void_p)
EVP_DecryptUpdate = _fn(libcrypto, "EVP_DecryptUpdate", c_int,
    EVP_CIPHER_CTX, c_void_p, POINTER(c_int), c_void_p, c_int)
EVP_DecryptFinal_ex = _fn(libcrypto, "EVP_DecryptFinal_ex", c_int, EVP_CIPHER_CTX, c_void_p, POINTER(c_int))

# ---- libcrypto: the cipher pipeline API (3.5) -------------------------------
EVP_CIPHER_can_pipeline = _fn_since("3.5", libcrypto, "EVP_CIPHER_can_pipeline", c_int, EVP_CIPHER, c_int)
EVP_CipherPipelineEncryptInit = _fn_since("3.5", libcrypto, "EVP_CipherPipelineEncryptInit", c_int,
    EVP_CIPHER_CTX, EVP_CIPHER, c_void_p, c_size_t, c_size_t, c_void_p, c_size_t)
EVP_CipherPipelineDecryptInit = _fn_since("3.5", libcrypto, "EVP_CipherPipelineDecryptInit", c_int,
    EVP_CIPHER_CTX, EVP_CIPHER, c_void_p, c_size_t, c_size_t, c_void_p, c_size_t)
# (ctx, unsigned char **out, size_t *outl, const size_t *outsize,
#  const unsigned char **in, const size_t *inl): the arrays as addresses
EVP_CipherPipelineUpdate = _fn_since("3.5", libcrypto, "EVP_CipherPipelineUpdate", c_int,
    EVP_CIPHER_CTX, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p)
EVP_CipherPipelineFinal = _fn_since("3.5", libcrypto, "EVP_CipherPipelineFinal", c_int,
    EVP_CIPHER_CTX, c_void_p, c_void_p, c_void_p)

# ---- libcrypto: library contexts and providers ------------------------------
OSSL_LIB_CTX_new = _fn(libcrypto, "OSSL_LIB_CTX_new", OSSL_LIB_CTX)
OSSL_LIB_CTX_free = _fn(libcrypto, "OSSL_LIB_CTX_free", None, OSSL_LIB_CTX)
OSSL_PROVIDER_load = _fn(libcrypto, "OSSL_PROVIDER_load", OSSL_PROVIDER, OSSL_LIB_CTX, c_char_p)
OSSL_PROVIDER_try_load = _fn(libcrypto, "OSSL_PROVIDER_try_load", OSSL_PROVIDER,
    OSSL_LIB_CTX, c_char_p, c_int)
OSSL_PROVIDER_try_load_ex = _fn_since("3.2", libcrypto, "OSSL_PROVIDER_try_load_ex", OSSL_PROVIDER,
    OSSL_LIB_CTX, c_char_p, POINTER(OSSL_PARAM), c_int)
OSSL_PROVIDER_unload = _fn(libcrypto, "OSSL_PROVIDER_unload", c_int, OSSL_PROVIDER)
OSSL_PROVIDER_available = _fn(libcrypto, "OSSL_PROVIDER_available", c_int, OSSL_LIB_CTX, c_char_p)
OSSL_PROVIDER_get0_name = _fn(libcrypto, "OSSL_PROVIDER_get0_name", c_char_p, OSSL_PROVIDER)
OSSL_PROVIDER_gettable_params = _fn(libcrypto, "OSSL_PROVIDER_gettable_params", c_void_p, OSSL_PROVIDER)
OSSL_PROVIDER_get_params = _fn(libcrypto, "OSSL_PROVIDER_get_params", c_int,
    OSSL_PROVIDER, POINTER(OSSL_PARAM))

# ---- libcrypto: BIO -------------------------------------------------------
BIO_s_mem = _fn(libcrypto, "BIO_s_mem", BIO_METHOD)
BIO_s_null = _fn(libcrypto, "BIO_s_null", BIO_METHOD)
BIO_new = _fn(libcrypto, "BIO_new", BIO, BIO_METHOD)
BIO_new_mem_buf = _fn(libcrypto, "BIO_new_mem_buf", BIO, c_void_p, c_int)
BIO_new_bio_pair = _fn(libcrypto, "BIO_new_bio_pair", c_int, POINTER(BIO), c_size_t, POINTER(BIO), c_size_t)
BIO_read = _fn(libcrypto, "BIO_read", c_int, BIO, c_void_p, c_int)
BIO_write = _fn(libcrypto, "BIO_write", c_int, BIO, c_void_p, c_int)
BIO_ctrl = _fn(libcrypto, "BIO_ctrl", c_long, BIO, c_int, c_long, c_void_p)
BIO_ctrl_pending = _fn(libcrypto, "BIO_ctrl_pending", c_size_t, BIO)
BIO_ctrl_wpending = _fn(libcrypto, "BIO_ctrl_wpending", c_size_t, BIO)
BIO_up_ref = _fn(libcrypto, "BIO_up_ref", c_int, BIO)
BIO_free = _fn(libcrypto, "BIO_free", c_int, BIO)

# ---- libcrypto: X509 ------------------------------------------------------
i2d_X509 = _fn(libcrypto, "i2d_X509", c_int, X509, POINTER(ctypes.POINTER(ctypes.c_ubyte)))
X509_free = _fn(libcrypto, "X509_free", None, X509)
X509_new = _fn(libcrypto, "X509_new", X509)
X509_set_pubkey = _fn(libcrypto, "X509_set_pubkey", c_int, X509, EVP_PKEY)
X509_getm_notBefore = _fn(libcrypto, "X509_getm_notBefore", c_void_p, X509)
X509_getm_notAfter = _fn(libcrypto, "X509_getm_notAfter", c_void_p, X509)
X509_gmtime_adj = _fn(libcrypto, "X509_gmtime_adj", c_void_p, c_void_p, c_long)
X509_sign = _fn(libcrypto, "X509_sign", c_int, X509, EVP_PKEY, c_void_p)
# ---- libcrypto: keys --------------------------------------------------------
EVP_PKEY_new_raw_private_key = _fn(libcrypto, "EVP_PKEY_new_raw_private_key", EVP_PKEY,
    c_int, ENGINE, c_void_p, c_size_t)
EVP_PKEY_free = _fn(libcrypto, "EVP_PKEY_free", None, EVP_PKEY)
EVP_PKEY_ED25519 = 1087  # NID_ED25519
# ---- libcrypto: default properties ------------------------------------------
EVP_set_default_properties = _fn(libcrypto, "EVP_set_default_properties", c_int,
    OSSL_LIB_CTX, c_char_p)
# returns an OPENSSL_malloc'ed copy (OPENSSL_free = CRYPTO_free)
EVP_get1_default_properties = _fn_since("3.2", libcrypto, "EVP_get1_default_properties",
    c_void_p, OSSL_LIB_CTX)
X509_verify_cert_error_string = _fn(libcrypto, "X509_verify_cert_error_string", c_char_p, c_long)
X509_VERIFY_PARAM_set1_ip_asc = _fn(libcrypto, "X509_VERIFY_PARAM_set1_ip_asc", c_int, X509_VERIFY_PARAM, c_char_p)

# ---- libssl: contexts -----------------------------------------------------
TLS_method = _fn(libssl, "TLS_method", SSL_METHOD)
TLS_server_method = _fn(libssl, "TLS_server_method", SSL_METHOD)
TLS_client_method = _fn(libssl, "TLS_client_method", SSL_METHOD)
SSL_CTX_new = _fn(libssl, "SSL_CTX_new", SSL_CTX, SSL_METHOD)
# (libctx, propq, method): propq is the property query of every fetch the
# SSL_CTX makes, its record ciphers included (fetched here, once)
SSL_CTX_new_ex = _fn(libssl, "SSL_CTX_new_ex", SSL_CTX, OSSL_LIB_CTX, c_char_p, SSL_METHOD)
SSL_CTX_use_certificate = _fn(libssl, "SSL_CTX_use_certificate", c_int, SSL_CTX, X509)
SSL_CTX_use_PrivateKey = _fn(libssl, "SSL_CTX_use_PrivateKey", c_int, SSL_CTX, EVP_PKEY)
SSL_CTX_free = _fn(libssl, "SSL_CTX_free", None, SSL_CTX)
SSL_CTX_ctrl = _fn(libssl, "SSL_CTX_ctrl", c_long, SSL_CTX, c_int, c_long, c_void_p)
SSL_CTX_get_options = _fn(libssl, "SSL_CTX_get_options", c_uint64, SSL_CTX)
SSL_CTX_set_options = _fn(libssl, "SSL_CTX_set_options", c_uint64, SSL_CTX, c_uint64)
SSL_CTX_clear_options = _fn(libssl, "SSL_CTX_clear_options", c_uint64, SSL_CTX, c_uint64)
SSL_CTX_set_cipher_list = _fn(libssl, "SSL_CTX_set_cipher_list", c_int, SSL_CTX, c_char_p)
SSL_CTX_set_ciphersuites = _fn(libssl, "SSL_CTX_set_ciphersuites", c_int, SSL_CTX, c_char_p)
SSL_CTX_use_certificate_chain_file = _fn(libssl, "SSL_CTX_use_certificate_chain_file", c_int, SSL_CTX, c_char_p)
SSL_CTX_use_PrivateKey_file = _fn(libssl, "SSL_CTX_use_PrivateKey_file", c_int, SSL_CTX, c_char_p, c_int)
SSL_CTX_check_private_key = _fn(libssl, "SSL_CTX_check_private_key", c_int, SSL_CTX)
SSL_CTX_load_verify_locations = _fn(libssl, "SSL_CTX_load_verify_locations", c_int, SSL_CTX, c_char_p, c_char_p)
SSL_CTX_set_default_verify_paths = _fn(libssl, "SSL_CTX_set_default_verify_paths", c_int, SSL_CTX)
SSL_CTX_set_verify = _fn(libssl, "SSL_CTX_set_verify", None, SSL_CTX, c_int, c_void_p)
SSL_CTX_get_verify_mode = _fn(libssl, "SSL_CTX_get_verify_mode", c_int, SSL_CTX)
SSL_CTX_set_alpn_protos = _fn(libssl, "SSL_CTX_set_alpn_protos", c_int, SSL_CTX, c_char_p, c_uint)
SSL_CTX_set_alpn_select_cb = _fn(libssl, "SSL_CTX_set_alpn_select_cb", None, SSL_CTX, ALPN_SELECT_CB, c_void_p)
SSL_select_next_proto = _fn(libssl, "SSL_select_next_proto", c_int,
    POINTER(c_void_p), POINTER(ctypes.c_ubyte), c_void_p, c_uint, c_void_p, c_uint)
SSL_CTX_set_keylog_callback = _fn(libssl, "SSL_CTX_set_keylog_callback", None, SSL_CTX, KEYLOG_CB)
SSL_CTX_set_info_callback = _fn(libssl, "SSL_CTX_set_info_callback", None, SSL_CTX, INFO_CB)
SSL_set_info_callback = _fn(libssl, "SSL_set_info_callback", None, SSL, INFO_CB)
SSL_CTX_set_default_read_buffer_len = _fn(libssl, "SSL_CTX_set_default_read_buffer_len", None, SSL_CTX, c_size_t)

# ---- libssl: connections --------------------------------------------------
SSL_new = _fn(libssl, "SSL_new", SSL, SSL_CTX)
SSL_free = _fn(libssl, "SSL_free", None, SSL)
SSL_ctrl = _fn(libssl, "SSL_ctrl", c_long, SSL, c_int, c_long, c_void_p)
SSL_get_options = _fn(libssl, "SSL_get_options", c_uint64, SSL)
SSL_set_options = _fn(libssl, "SSL_set_options", c_uint64, SSL, c_uint64)
SSL_clear_options = _fn(libssl, "SSL_clear_options", c_uint64, SSL, c_uint64)
SSL_set_fd = _fn(libssl, "SSL_set_fd", c_int, SSL, c_int)
SSL_set_bio = _fn(libssl, "SSL_set_bio", None, SSL, BIO, BIO)
SSL_get_rbio = _fn(libssl, "SSL_get_rbio", BIO, SSL)
SSL_get_wbio = _fn(libssl, "SSL_get_wbio", BIO, SSL)
SSL_set_connect_state = _fn(libssl, "SSL_set_connect_state", None, SSL)
SSL_set_accept_state = _fn(libssl, "SSL_set_accept_state", None, SSL)
SSL_do_handshake = _fn(libssl, "SSL_do_handshake", c_int, SSL)
SSL_is_init_finished = _fn(libssl, "SSL_is_init_finished", c_int, SSL)
SSL_read_ex = _fn(libssl, "SSL_read_ex", c_int, SSL, c_void_p, c_size_t, POINTER(c_size_t))
SSL_write_ex = _fn(libssl, "SSL_write_ex", c_int, SSL, c_void_p, c_size_t, POINTER(c_size_t))
SSL_pending = _fn(libssl, "SSL_pending", c_int, SSL)
SSL_shutdown = _fn(libssl, "SSL_shutdown", c_int, SSL)
SSL_get_shutdown = _fn(libssl, "SSL_get_shutdown", c_int, SSL)
SSL_get_error = _fn(libssl, "SSL_get_error", c_int, SSL, c_int)
SSL_get_version = _fn(libssl, "SSL_get_version", c_char_p, SSL)
SSL_version = _fn(libssl, "SSL_version", c_int, SSL)
SSL_get_current_cipher = _fn(libssl, "SSL_get_current_cipher", SSL_CIPHER, SSL)
SSL_CIPHER_get_name = _fn(libssl, "SSL_CIPHER_get_name", c_char_p, SSL_CIPHER)
SSL_get1_peer_certificate = _fn(libssl, "SSL_get1_peer_certificate", X509, SSL)
SSL_get_verify_result = _fn(libssl, "SSL_get_verify_result", c_long, SSL)
SSL_set1_host = _fn(libssl, "SSL_set1_host", c_int, SSL, c_char_p)
SSL_get0_param = _fn(libssl, "SSL_get0_param", X509_VERIFY_PARAM, SSL)
SSL_set_verify = _fn(libssl, "SSL_set_verify", None, SSL, c_int, c_void_p)
SSL_get0_alpn_selected = _fn(libssl, "SSL_get0_alpn_selected", None, SSL, POINTER(c_void_p), POINTER(c_uint))
SSL_alert_desc_string_long = _fn(libssl, "SSL_alert_desc_string_long", c_char_p, c_int)
SSL_alert_type_string_long = _fn(libssl, "SSL_alert_type_string_long", c_char_p, c_int)
SSL_get_read_ahead = _fn(libssl, "SSL_get_read_ahead", c_int, SSL)
SSL_set_read_ahead = _fn(libssl, "SSL_set_read_ahead", None, SSL, c_int)
SSL_set_default_read_buffer_len = _fn(libssl, "SSL_set_default_read_buffer_len", None, SSL, c_size_t)
SSL_session_reused = _fn(libssl, "SSL_session_reused", c_int, SSL)
SSL_get_all_async_fds = _fn(libssl, "SSL_get_all_async_fds", c_int, SSL, POINTER(c_int),
                            POINTER(c_size_t))
SSL_waiting_for_async = _fn(libssl, "SSL_waiting_for_async", c_int, SSL)


# --------------------------------------------------------------------------
# Macros (ssl.h), as functions over the ctrl entry points.
# --------------------------------------------------------------------------
def SSL_CTX_set_max_pipelines(ctx: int, n: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_PIPELINES, n, None)


def SSL_CTX_set_split_send_fragment(ctx: int, n: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SPLIT_SEND_FRAGMENT, n, None)


def SSL_CTX_set_max_send_fragment(ctx: int, n: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_SEND_FRAGMENT, n, None)


def SSL_CTX_set_read_ahead(ctx: int, yes: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_READ_AHEAD, int(bool(yes)), None)


def SSL_CTX_get_read_ahead(ctx: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_GET_READ_AHEAD, 0, None)


def SSL_CTX_set_min_proto_version(ctx: int, v: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, v, None)


def SSL_CTX_set_max_proto_version(ctx: int, v: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_PROTO_VERSION, v, None)


def SSL_CTX_get_min_proto_version(ctx: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_GET_MIN_PROTO_VERSION, 0, None)


def SSL_CTX_get_max_proto_version(ctx: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_GET_MAX_PROTO_VERSION, 0, None)


def SSL_CTX_set_mode(ctx: int, mode: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_MODE, mode, None)


def SSL_CTX_clear_mode(ctx: int, mode: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_CLEAR_MODE, mode, None)


def SSL_CTX_get_mode(ctx: int) -> int:
    return SSL_CTX_ctrl(ctx, SSL_CTRL_MODE, 0, None)


def SSL_set_mode(ssl: int, mode: int) -> int:
    return SSL_ctrl(ssl, SSL_CTRL_MODE, mode, None)


def SSL_clear_mode(ssl: int, mode: int) -> int:
    return SSL_ctrl(ssl, SSL_CTRL_CLEAR_MODE, mode, None)


def SSL_get_mode(ssl: int) -> int:
    return SSL_ctrl(ssl, SSL_CTRL_MODE, 0, None)


def SSL_set_max_pipelines(ssl: int, n: int) -> int:
    return SSL_ctrl(ssl, SSL_CTRL_SET_MAX_PIPELINES, n, None)


def SSL_set_split_send_fragment(ssl: int, n: int) -> int:
    return SSL_ctrl(ssl, SSL_CTRL_SET_SPLIT_SEND_FRAGMENT, n, None)


def SSL_set_max_send_fragment(ssl: int, n: int) -> int:
    return SSL_ctrl(ssl, SSL_CTRL_SET_MAX_SEND_FRAGMENT, n, None)


def SSL_set_tlsext_host_name(ssl: int, name: bytes) -> int:
    return SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, name)


def BIO_set_mem_eof_return(bio: int, v: int) -> int:
    return BIO_ctrl(bio, BIO_C_SET_BUF_MEM_EOF_RETURN, v, None)


def BIO_set_write_buf_size(bio: int, size: int) -> int:
    return BIO_ctrl(bio, BIO_C_SET_WRITE_BUF_SIZE, size, None)


def ERR_GET_LIB(code: int) -> int:
    if code & ERR_SYSTEM_FLAG:
        return 2  # ERR_LIB_SYS
    return (code >> ERR_LIB_OFFSET) & ERR_LIB_MASK


def ERR_GET_REASON(code: int) -> int:
    if code & ERR_SYSTEM_FLAG:
        return code & 0x7FFFFFFF
    return code & ERR_REASON_MASK


def openssl_version() -> str:
    """The OpenSSL version string of the loaded libcrypto."""
    return (OpenSSL_version(OPENSSL_VERSION) or b"").decode()


# --------------------------------------------------------------------------
# The gate.
# --------------------------------------------------------------------------
def drain_errors() -> tuple[list[str], list[int]]:
    """Empty this thread's OpenSSL error queue; return (lines, codes)."""
    lines: list[str] = []
    codes: list[int] = []
    buf = ctypes.create_string_buffer(256)
    while True:
        code = ERR_get_error()
        if not code:
            break
        ERR_error_string_n(code, buf, len(buf))
        lines.append(buf.value.decode("utf-8", "replace"))
        codes.append(code)
    return lines, codes


def drain_errors_detailed() -> tuple[list[str], list[int]]:
    """:func:`drain_errors`, each line followed by the detail text the
    raising code attached (ERR_raise_data), when there is one."""
    lines: list[str] = []
    codes: list[int] = []
    buf = ctypes.create_string_buffer(256)
    data, flags = c_char_p(), c_int()
    while True:
        code = ERR_get_error_all(None, None, None, ctypes.byref(data), ctypes.byref(flags))
        if not code:
            break
        ERR_error_string_n(code, buf, len(buf))
        line = buf.value.decode("utf-8", "replace")
        if data.value and flags.value & ERR_TXT_STRING:
            line += " (%s)" % data.value.decode("utf-8", "replace")
        lines.append(line)
        codes.append(code)
    return lines, codes


def clear_errors() -> None:
    """Discard this thread's OpenSSL error queue."""
    ERR_clear_error()


def check(result: Optional[int], message: str, exc: type[PipetlsError] = OpenSSLError,
          **kwargs: Any) -> int:
    """Return ``result`` if it is > 0; else raise ``exc`` with the drained
    error queue.  For the many OpenSSL calls that return 1 on success."""
    if result is not None and result > 0:
        return result
    lines, codes = drain_errors()
    raise exc(message, lines, codes, **kwargs)


def check_ptr(ptr: Optional[int], message: str, exc: type[PipetlsError] = OpenSSLError,
              **kwargs: Any) -> int:
    """Return ``ptr`` if it is not NULL; else raise as :func:`check`."""
    if ptr:
        return ptr
    lines, codes = drain_errors()
    raise exc(message, lines, codes, **kwargs)
