"""ctypes prototypes for libssl and libcrypto: the only module that binds C.

Model: oscrypto ``_openssl/_libssl_ctypes.py``.  Opaque handle aliases first,
then one ``_fn(lib, name, restype, *argtypes)`` line for every function that
pipetls calls; a missing symbol fails *here*, at import, with a clear
``MissingSymbolError`` (an ``ImportError``) -- never a segfault later.
OpenSSL macros (``SSL_CTX_set_max_pipelines`` ...) are ``SSL_CTX_ctrl`` /
``SSL_ctrl`` with the named constants below; every number was read from the
OpenSSL 3.0 headers (``ssl.h``, ``tls1.h``, ``bio.h``, ``evp.h``,
``engine.h``, ``err.h``) and is the same in 3.5.

Which OpenSSL (invariant 7: one libcrypto per process):

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
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_char_p,
    c_int,
    c_long,
    c_size_t,
    c_uint,
    c_uint64,
    c_ulong,
    c_void_p,
)

from .errors import MissingSymbolError, PipetlsError

__all__ = ["libssl", "libcrypto", "LIBSSL_PATH", "LIBCRYPTO_PATH", "stdlib_shares_openssl"]

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
EVP_CIPHER = c_void_p
EVP_CIPHER_CTX = c_void_p
OSSL_LIB_CTX = c_void_p

# --------------------------------------------------------------------------
# Constants (values verified against /usr/include/openssl, OpenSSL 3.0).
# --------------------------------------------------------------------------
# ssl.h: SSL_ctrl / SSL_CTX_ctrl commands
SSL_CTRL_MODE = 33
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


# --------------------------------------------------------------------------
# Finding and loading the libraries.
# --------------------------------------------------------------------------
def _mapped_libraries():
    """Paths of libssl.so*/libcrypto.so* mapped in this process, in map order.

    Returns None when /proc is not available.
    """
    try:
        with open("/proc/self/maps", "r", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    ssl_paths, crypto_paths = [], []
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


def _dladdr_path(handle_path, symbol):
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


def _stdlib_ssl_paths():
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


def _prefix_paths(prefix):
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


def _check_single_libcrypto(crypto_path):
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


def _load():
    prefix = os.environ.get("PIPETLS_OPENSSL")
    if prefix:
        ssl_path, crypto_path = _prefix_paths(prefix)
        _check_single_libcrypto(crypto_path)
    else:
        ssl_path, crypto_path = _stdlib_ssl_paths()
        if not ssl_path or not crypto_path:
            # _ssl linked statically or absent: the system library, and the
            # stdlib integration will refuse (stdlib_shares_openssl()).
            ssl_path = ctypes.util.find_library("ssl")
            crypto_path = ctypes.util.find_library("crypto")
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


def stdlib_shares_openssl():
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


# --------------------------------------------------------------------------
# Prototypes.
# --------------------------------------------------------------------------
def _fn(lib, name, restype, *argtypes):
    try:
        f = getattr(lib, name)
    except AttributeError:
        raise MissingSymbolError(
            "pipetls: symbol %s not found in %s (OpenSSL 3.0 or later is required)"
            % (name, lib._name),
            name=name,
        ) from None
    f.restype = restype
    f.argtypes = list(argtypes)
    globals()[name] = f
    return f


# ---- libcrypto: version, errors -------------------------------------------
_fn(libcrypto, "OpenSSL_version", c_char_p, c_int)
_fn(libcrypto, "OpenSSL_version_num", c_ulong)
_fn(libcrypto, "ERR_get_error", c_ulong)
_fn(libcrypto, "ERR_peek_error", c_ulong)
_fn(libcrypto, "ERR_peek_last_error", c_ulong)
_fn(libcrypto, "ERR_error_string_n", None, c_ulong, c_char_p, c_size_t)
_fn(libcrypto, "ERR_clear_error", None)
_fn(libcrypto, "ERR_reason_error_string", c_char_p, c_ulong)
_fn(libcrypto, "OBJ_sn2nid", c_int, c_char_p)
_fn(libcrypto, "OBJ_nid2sn", c_char_p, c_int)
_fn(libcrypto, "CRYPTO_free", None, c_void_p, c_char_p, c_int)

# ---- libcrypto: ENGINE ----------------------------------------------------
_fn(libcrypto, "ENGINE_load_builtin_engines", None)
_fn(libcrypto, "ENGINE_by_id", ENGINE, c_char_p)
_fn(libcrypto, "ENGINE_ctrl_cmd_string", c_int, ENGINE, c_char_p, c_char_p, c_int)
_fn(libcrypto, "ENGINE_ctrl", c_int, ENGINE, c_int, c_long, c_void_p, c_void_p)
_fn(libcrypto, "ENGINE_init", c_int, ENGINE)
_fn(libcrypto, "ENGINE_finish", c_int, ENGINE)
_fn(libcrypto, "ENGINE_free", c_int, ENGINE)
_fn(libcrypto, "ENGINE_set_default", c_int, ENGINE, c_uint)
_fn(libcrypto, "ENGINE_set_default_ciphers", c_int, ENGINE)
_fn(libcrypto, "ENGINE_unregister_ciphers", None, ENGINE)
_fn(libcrypto, "ENGINE_get_cipher", EVP_CIPHER, ENGINE, c_int)
_fn(libcrypto, "ENGINE_get_cipher_engine", ENGINE, c_int)
_fn(libcrypto, "ENGINE_get_id", c_char_p, ENGINE)
_fn(libcrypto, "ENGINE_get_name", c_char_p, ENGINE)

# ---- libcrypto: EVP ciphers -----------------------------------------------
_fn(libcrypto, "EVP_CIPHER_CTX_new", EVP_CIPHER_CTX)
_fn(libcrypto, "EVP_CIPHER_CTX_free", None, EVP_CIPHER_CTX)
_fn(libcrypto, "EVP_CIPHER_CTX_reset", c_int, EVP_CIPHER_CTX)
_fn(libcrypto, "EVP_CIPHER_CTX_ctrl", c_int, EVP_CIPHER_CTX, c_int, c_int, c_void_p)
_fn(libcrypto, "EVP_CIPHER_CTX_set_padding", c_int, EVP_CIPHER_CTX, c_int)
_fn(libcrypto, "EVP_CIPHER_CTX_get0_cipher", EVP_CIPHER, EVP_CIPHER_CTX)
_fn(libcrypto, "EVP_CipherInit_ex", c_int,
    EVP_CIPHER_CTX, EVP_CIPHER, ENGINE, c_void_p, c_void_p, c_int)
_fn(libcrypto, "EVP_CipherUpdate", c_int,
    EVP_CIPHER_CTX, c_void_p, POINTER(c_int), c_void_p, c_int)
_fn(libcrypto, "EVP_CipherFinal_ex", c_int, EVP_CIPHER_CTX, c_void_p, POINTER(c_int))
_fn(libcrypto, "EVP_Cipher", c_int, EVP_CIPHER_CTX, c_void_p, c_void_p, c_uint)
_fn(libcrypto, "EVP_CIPHER_fetch", EVP_CIPHER, OSSL_LIB_CTX, c_char_p, c_char_p)
_fn(libcrypto, "EVP_CIPHER_free", None, EVP_CIPHER)
_fn(libcrypto, "EVP_get_cipherbyname", EVP_CIPHER, c_char_p)
_fn(libcrypto, "EVP_CIPHER_get_nid", c_int, EVP_CIPHER)
_fn(libcrypto, "EVP_CIPHER_get_flags", c_ulong, EVP_CIPHER)
_fn(libcrypto, "EVP_CIPHER_get_key_length", c_int, EVP_CIPHER)
_fn(libcrypto, "EVP_CIPHER_get_iv_length", c_int, EVP_CIPHER)
_fn(libcrypto, "EVP_CIPHER_get_block_size", c_int, EVP_CIPHER)
_fn(libcrypto, "EVP_CIPHER_get0_provider", c_void_p, EVP_CIPHER)

# ---- libcrypto: BIO -------------------------------------------------------
_fn(libcrypto, "BIO_s_mem", BIO_METHOD)
_fn(libcrypto, "BIO_s_null", BIO_METHOD)
_fn(libcrypto, "BIO_new", BIO, BIO_METHOD)
_fn(libcrypto, "BIO_new_mem_buf", BIO, c_void_p, c_int)
_fn(libcrypto, "BIO_new_bio_pair", c_int, POINTER(BIO), c_size_t, POINTER(BIO), c_size_t)
_fn(libcrypto, "BIO_read", c_int, BIO, c_void_p, c_int)
_fn(libcrypto, "BIO_write", c_int, BIO, c_void_p, c_int)
_fn(libcrypto, "BIO_ctrl", c_long, BIO, c_int, c_long, c_void_p)
_fn(libcrypto, "BIO_ctrl_pending", c_size_t, BIO)
_fn(libcrypto, "BIO_ctrl_wpending", c_size_t, BIO)
_fn(libcrypto, "BIO_up_ref", c_int, BIO)
_fn(libcrypto, "BIO_free", c_int, BIO)

# ---- libcrypto: X509 ------------------------------------------------------
_fn(libcrypto, "i2d_X509", c_int, X509, POINTER(ctypes.POINTER(ctypes.c_ubyte)))
_fn(libcrypto, "X509_free", None, X509)
_fn(libcrypto, "X509_verify_cert_error_string", c_char_p, c_long)
_fn(libcrypto, "X509_VERIFY_PARAM_set1_ip_asc", c_int, X509_VERIFY_PARAM, c_char_p)

# ---- libssl: contexts -----------------------------------------------------
_fn(libssl, "TLS_method", SSL_METHOD)
_fn(libssl, "TLS_server_method", SSL_METHOD)
_fn(libssl, "TLS_client_method", SSL_METHOD)
_fn(libssl, "SSL_CTX_new", SSL_CTX, SSL_METHOD)
_fn(libssl, "SSL_CTX_free", None, SSL_CTX)
_fn(libssl, "SSL_CTX_ctrl", c_long, SSL_CTX, c_int, c_long, c_void_p)
_fn(libssl, "SSL_CTX_get_options", c_uint64, SSL_CTX)
_fn(libssl, "SSL_CTX_set_options", c_uint64, SSL_CTX, c_uint64)
_fn(libssl, "SSL_CTX_clear_options", c_uint64, SSL_CTX, c_uint64)
_fn(libssl, "SSL_CTX_set_cipher_list", c_int, SSL_CTX, c_char_p)
_fn(libssl, "SSL_CTX_set_ciphersuites", c_int, SSL_CTX, c_char_p)
_fn(libssl, "SSL_CTX_use_certificate_chain_file", c_int, SSL_CTX, c_char_p)
_fn(libssl, "SSL_CTX_use_PrivateKey_file", c_int, SSL_CTX, c_char_p, c_int)
_fn(libssl, "SSL_CTX_check_private_key", c_int, SSL_CTX)
_fn(libssl, "SSL_CTX_load_verify_locations", c_int, SSL_CTX, c_char_p, c_char_p)
_fn(libssl, "SSL_CTX_set_default_verify_paths", c_int, SSL_CTX)
_fn(libssl, "SSL_CTX_set_verify", None, SSL_CTX, c_int, c_void_p)
_fn(libssl, "SSL_CTX_get_verify_mode", c_int, SSL_CTX)
_fn(libssl, "SSL_CTX_set_alpn_protos", c_int, SSL_CTX, c_char_p, c_uint)
_fn(libssl, "SSL_CTX_set_alpn_select_cb", None, SSL_CTX, ALPN_SELECT_CB, c_void_p)
_fn(libssl, "SSL_select_next_proto", c_int,
    POINTER(c_void_p), POINTER(ctypes.c_ubyte), c_void_p, c_uint, c_void_p, c_uint)
_fn(libssl, "SSL_CTX_set_keylog_callback", None, SSL_CTX, KEYLOG_CB)
_fn(libssl, "SSL_CTX_set_info_callback", None, SSL_CTX, INFO_CB)
_fn(libssl, "SSL_CTX_set_default_read_buffer_len", None, SSL_CTX, c_size_t)

# ---- libssl: connections --------------------------------------------------
_fn(libssl, "SSL_new", SSL, SSL_CTX)
_fn(libssl, "SSL_free", None, SSL)
_fn(libssl, "SSL_ctrl", c_long, SSL, c_int, c_long, c_void_p)
_fn(libssl, "SSL_get_options", c_uint64, SSL)
_fn(libssl, "SSL_set_options", c_uint64, SSL, c_uint64)
_fn(libssl, "SSL_clear_options", c_uint64, SSL, c_uint64)
_fn(libssl, "SSL_set_fd", c_int, SSL, c_int)
_fn(libssl, "SSL_set_bio", None, SSL, BIO, BIO)
_fn(libssl, "SSL_get_rbio", BIO, SSL)
_fn(libssl, "SSL_get_wbio", BIO, SSL)
_fn(libssl, "SSL_set_connect_state", None, SSL)
_fn(libssl, "SSL_set_accept_state", None, SSL)
_fn(libssl, "SSL_do_handshake", c_int, SSL)
_fn(libssl, "SSL_is_init_finished", c_int, SSL)
_fn(libssl, "SSL_read_ex", c_int, SSL, c_void_p, c_size_t, POINTER(c_size_t))
_fn(libssl, "SSL_write_ex", c_int, SSL, c_void_p, c_size_t, POINTER(c_size_t))
_fn(libssl, "SSL_pending", c_int, SSL)
_fn(libssl, "SSL_shutdown", c_int, SSL)
_fn(libssl, "SSL_get_shutdown", c_int, SSL)
_fn(libssl, "SSL_get_error", c_int, SSL, c_int)
_fn(libssl, "SSL_get_version", c_char_p, SSL)
_fn(libssl, "SSL_version", c_int, SSL)
_fn(libssl, "SSL_get_current_cipher", SSL_CIPHER, SSL)
_fn(libssl, "SSL_CIPHER_get_name", c_char_p, SSL_CIPHER)
_fn(libssl, "SSL_get1_peer_certificate", X509, SSL)
_fn(libssl, "SSL_get_verify_result", c_long, SSL)
_fn(libssl, "SSL_set1_host", c_int, SSL, c_char_p)
_fn(libssl, "SSL_get0_param", X509_VERIFY_PARAM, SSL)
_fn(libssl, "SSL_set_verify", None, SSL, c_int, c_void_p)
_fn(libssl, "SSL_get0_alpn_selected", None, SSL, POINTER(c_void_p), POINTER(c_uint))
_fn(libssl, "SSL_alert_desc_string_long", c_char_p, c_int)
_fn(libssl, "SSL_alert_type_string_long", c_char_p, c_int)
_fn(libssl, "SSL_get_read_ahead", c_int, SSL)
_fn(libssl, "SSL_set_read_ahead", None, SSL, c_int)
_fn(libssl, "SSL_set_default_read_buffer_len", None, SSL, c_size_t)
_fn(libssl, "SSL_session_reused", c_int, SSL)


# --------------------------------------------------------------------------
# Macros (ssl.h), as functions over the ctrl entry points.
# --------------------------------------------------------------------------
def SSL_CTX_set_max_pipelines(ctx, n):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_PIPELINES, n, None)


def SSL_CTX_set_split_send_fragment(ctx, n):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SPLIT_SEND_FRAGMENT, n, None)


def SSL_CTX_set_max_send_fragment(ctx, n):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_SEND_FRAGMENT, n, None)


def SSL_CTX_set_read_ahead(ctx, yes):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_READ_AHEAD, int(bool(yes)), None)


def SSL_CTX_get_read_ahead(ctx):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_GET_READ_AHEAD, 0, None)


def SSL_CTX_set_min_proto_version(ctx, v):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, v, None)


def SSL_CTX_set_max_proto_version(ctx, v):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_PROTO_VERSION, v, None)


def SSL_CTX_get_min_proto_version(ctx):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_GET_MIN_PROTO_VERSION, 0, None)


def SSL_CTX_get_max_proto_version(ctx):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_GET_MAX_PROTO_VERSION, 0, None)


def SSL_CTX_set_mode(ctx, mode):
    return SSL_CTX_ctrl(ctx, SSL_CTRL_MODE, mode, None)


def SSL_set_mode(ssl, mode):
    return SSL_ctrl(ssl, SSL_CTRL_MODE, mode, None)


def SSL_set_max_pipelines(ssl, n):
    return SSL_ctrl(ssl, SSL_CTRL_SET_MAX_PIPELINES, n, None)


def SSL_set_split_send_fragment(ssl, n):
    return SSL_ctrl(ssl, SSL_CTRL_SET_SPLIT_SEND_FRAGMENT, n, None)


def SSL_set_max_send_fragment(ssl, n):
    return SSL_ctrl(ssl, SSL_CTRL_SET_MAX_SEND_FRAGMENT, n, None)


def SSL_set_tlsext_host_name(ssl, name):
    return SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, name)


def BIO_set_mem_eof_return(bio, v):
    return BIO_ctrl(bio, BIO_C_SET_BUF_MEM_EOF_RETURN, v, None)


def BIO_set_write_buf_size(bio, size):
    return BIO_ctrl(bio, BIO_C_SET_WRITE_BUF_SIZE, size, None)


def ERR_GET_LIB(code):
    if code & ERR_SYSTEM_FLAG:
        return 2  # ERR_LIB_SYS
    return (code >> ERR_LIB_OFFSET) & ERR_LIB_MASK


def ERR_GET_REASON(code):
    if code & ERR_SYSTEM_FLAG:
        return code & 0x7FFFFFFF
    return code & ERR_REASON_MASK


def openssl_version():
    """The OpenSSL version string of the loaded libcrypto."""
    return OpenSSL_version(OPENSSL_VERSION).decode()


# --------------------------------------------------------------------------
# Zero-copy access to Python buffers (bytes, bytearray, memoryview, array,
# mmap ...).  PyObject_GetBuffer pins the memory (a bytearray cannot resize
# while exported) for the duration of the C call; nothing is copied.
# --------------------------------------------------------------------------
class Py_buffer(ctypes.Structure):
    _fields_ = [
        ("buf", c_void_p),
        ("obj", c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", c_int),
        ("ndim", c_int),
        ("format", c_char_p),
        ("shape", c_void_p),
        ("strides", c_void_p),
        ("suboffsets", c_void_p),
        ("internal", c_void_p),
    ]


_PyObject_GetBuffer = ctypes.pythonapi.PyObject_GetBuffer
_PyObject_GetBuffer.argtypes = [ctypes.py_object, POINTER(Py_buffer), c_int]
_PyObject_GetBuffer.restype = c_int
_PyBuffer_Release = ctypes.pythonapi.PyBuffer_Release
_PyBuffer_Release.argtypes = [POINTER(Py_buffer)]
_PyBuffer_Release.restype = None
_PyBUF_SIMPLE = 0
_PyBUF_WRITABLE = 1


class pinned_buffer:
    """``with pinned_buffer(obj, writable) as (address, length):``

    Exposes the memory of any C-contiguous buffer object without copying.
    Raises TypeError for objects without the buffer protocol, for
    non-contiguous views, and (writable=True) for read-only buffers.
    """

    __slots__ = ("_obj", "_flags", "_view")

    def __init__(self, obj, writable=False):
        self._obj = obj
        self._flags = _PyBUF_WRITABLE if writable else _PyBUF_SIMPLE
        self._view = None

    def __enter__(self):
        view = Py_buffer()
        try:
            _PyObject_GetBuffer(self._obj, ctypes.byref(view), self._flags)
        except (BufferError, TypeError) as e:
            raise TypeError(
                "expected a contiguous%s bytes-like object, got %s (%s)"
                % (" writable" if self._flags else "", type(self._obj).__name__, e)
            ) from None
        self._view = view
        return view.buf or 0, view.len

    def __exit__(self, *exc):
        if self._view is not None:
            _PyBuffer_Release(ctypes.byref(self._view))
            self._view = None
        return False
