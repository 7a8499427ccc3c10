"""Configuration for unmodified programs: the SSL_CONF pipelining commands
of the patched OpenSSL 3.5 (openssl_patches/0001), an openssl.cnf that
loads the engine and sets them for every SSL_CTX (``system_default``), and
an nginx server block (``pipetls config --nginx``).

The commands and their ranges are those of patch 0001 (``MaxPipelines``
1..32, ``MaxSendFragment`` 512..16384, ``SplitSendFragment`` 512..the
maximum send fragment, ``ReadBufferLength`` bytes); a value out of range is
refused here with :class:`ConfigError` before any file is written, and by
the patched libssl itself when a file is read.  Stock OpenSSL (3.0, 3.5
without the patch) knows none of these commands.

The engine pipelines TLS 1.2 (and 1.1) records: its server block offers
TLS 1.2 with the suites the engine pipelines.  TLS 1.3 records are
pipelined by the pipetls provider on a libssl with patch 0002
(:func:`provider_conf_text` loads it, beside the default provider); that
server block offers TLS 1.3 with the provider's suites (``Ciphersuites``
through ``ssl_conf_command``, since ``ssl_ciphers`` is TLS 1.2's list).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from ._knobs import in_range
from .errors import ConfigError

__all__ = ["SslConfCommands", "ssl_conf_section", "nginx_text", "provider_conf_text",
           "NGINX_CIPHERS", "NGINX_CIPHERSUITES", "DEFAULT_MAX_PIPELINES", "RECORD"]

RECORD = 16384                  # SSL3_RT_MAX_PLAIN_LENGTH: a full record
DEFAULT_MAX_PIPELINES = 8
MAX_PIPELINES = 32              # SSL_MAX_PIPELINES
MAX_READ_BUFFER = 1 << 30       # what pipetls.Context accepts, too

# TLS 1.2 suites whose records the engine pipelines (AEAD; ECDSA and RSA keys)
NGINX_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])

# TLS 1.3 suites whose records the provider pipelines (patch 0002): all three
# AEAD suites of OpenSSL's default list (the CCM ones are not offered)
NGINX_CIPHERSUITES = ":".join([
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
])


@dataclasses.dataclass(frozen=True)
class SslConfCommands:
    """The SSL_CONF pipelining commands of patch 0001; None: not set.

    ``commands()`` lists them in the order they must be applied
    (``MaxSendFragment`` before ``SplitSendFragment``, which may not exceed
    it)."""

    max_pipelines: Optional[int] = None
    split_send_fragment: Optional[int] = None
    max_send_fragment: Optional[int] = None
    read_buffer_length: Optional[int] = None

    def __post_init__(self) -> None:
        if self.max_pipelines is not None:
            in_range("MaxPipelines", self.max_pipelines, 1, MAX_PIPELINES)
        if self.max_send_fragment is not None:
            in_range("MaxSendFragment", self.max_send_fragment, 512, RECORD)
        if self.split_send_fragment is not None:
            in_range("SplitSendFragment", self.split_send_fragment, 512, self.send_fragment)
        if self.read_buffer_length is not None:
            in_range("ReadBufferLength", self.read_buffer_length, 0, MAX_READ_BUFFER)

    @property
    def send_fragment(self) -> int:
        """The maximum send fragment in effect."""
        return self.max_send_fragment if self.max_send_fragment is not None else RECORD

    @property
    def split(self) -> int:
        """The split send fragment in effect (its default: the maximum)."""
        if self.split_send_fragment is not None:
            return self.split_send_fragment
        return self.send_fragment

    def commands(self) -> list[tuple[str, int]]:
        out = []
        for name, value in (("MaxSendFragment", self.max_send_fragment),
                            ("SplitSendFragment", self.split_send_fragment),
                            ("MaxPipelines", self.max_pipelines),
                            ("ReadBufferLength", self.read_buffer_length)):
            if value is not None:
                out.append((name, value))
        return out

    def __bool__(self) -> bool:
        return bool(self.commands())


def ssl_conf_section(commands: SslConfCommands) -> list[str]:
    """The openssl.cnf lines that apply ``commands`` to every SSL_CTX: the
    ``ssl_conf`` module's ``system_default`` section (to be referenced from
    the init section as ``ssl_conf = pipetls_ssl_module``)."""
    lines = [
        "[pipetls_ssl_module]",
        "system_default = pipetls_system_default",
        "",
        "# Applied by SSL_CTX_new() in every program (patch 0001's commands: the",
        "# patched OpenSSL 3.5 only; stock OpenSSL does not know them)",
        "[pipetls_system_default]",
    ]
    lines += ["%s = %d" % kv for kv in commands.commands()]
    lines.append("")
    return lines


def provider_conf_text(module: str, threads: Optional[int] = None,
                       commands: Optional[SslConfCommands] = None) -> str:
    """An openssl.cnf that loads the pipetls provider (``module``) beside
    OpenSSL's default provider into every OpenSSL program and makes the
    provider's ciphers the preferred ones (``default_properties =
    ?provider=pipetls``: libssl's TLS 1.3 record ciphers are then the
    provider's, everything else stays the default provider's).

    The default provider must be activated by name: a configuration that
    names any provider turns off OpenSSL's automatic fallback to it, and
    without it there is no key exchange, signature or digest.  With
    ``commands``, a ``system_default`` section as in the engine's file.
    Needs OpenSSL >= 3.5 (the pipeline API); pipelined TLS 1.3 records need
    patch 0002 (openssl_patches/)."""
    lines = [
        "# pipetls: make every OpenSSL >= 3.5 program load the pipetls provider",
        "# beside the default one and prefer its ciphers (AES-GCM, ChaCha20-Poly1305).",
        "# On the patched OpenSSL 3.5 (patch 0002, openssl_patches/) libssl then",
        "# pipelines TLS 1.3 records through it when MaxPipelines > 1.",
        "#",
        "# Use it alone:      OPENSSL_CONF=/path/to/this.cnf openssl s_server ...",
        "# or include it in your openssl.cnf (.include /path/to/this.cnf) and merge",
        "# the openssl_conf line into the existing one.",
        "# A bad line (a missing module, a bad THREADS) fails the program's start",
        "# (config_diagnostics) instead of leaving the default provider alone.",
        "config_diagnostics = 1",
        "openssl_conf = pipetls_openssl_init",
        "",
        "[pipetls_openssl_init]",
        "providers = pipetls_providers",
        "alg_section = pipetls_evp_properties",
    ]
    if commands:
        lines.append("ssl_conf = pipetls_ssl_module")
    lines += [
        "",
        "[pipetls_providers]",
        "# naming any provider stops OpenSSL from loading the default one by itself",
        "default = pipetls_default_provider",
        "pipetls = pipetls_provider",
        "",
        "[pipetls_default_provider]",
        "activate = 1",
        "",
        "[pipetls_provider]",
        "module = %s" % module,
    ]
    if threads is not None:
        lines.append("# lanes working one batch, the calling thread included")
        lines.append("THREADS = %d" % threads)
    else:
        lines.append("# THREADS = 4   # lanes per batch, caller included; default: online CPUs")
    lines += [
        "activate = 1",
        "",
        "[pipetls_evp_properties]",
        "# '?': prefer the provider's implementation, fall back to the default's",
        "default_properties = ?provider=pipetls",
        "",
    ]
    if commands:
        lines += ssl_conf_section(commands)
    return "\n".join(lines)


def buffer_size_for(commands: SslConfCommands) -> int:
    """nginx's ``ssl_buffer_size`` that makes each of its SSL_write calls
    fill every pipeline: max_pipelines pieces of the split send fragment.

    nginx collects the response in a buffer of this size and hands it to
    one SSL_write; libssl cuts a write of n bytes into
    min(max_pipelines, ceil(n / split)) records.  With nginx's default
    (16k) and the default split (16384) every write is one record and
    nothing is pipelined."""
    pipes = commands.max_pipelines if commands.max_pipelines is not None else 1
    return pipes * commands.split


def _size_directive(n: int) -> str:
    return "%dk" % (n // 1024) if n % 1024 == 0 else str(n)


def nginx_text(commands: SslConfCommands, *, openssl_conf: str, listen: str = "443",
               server_name: str = "localhost", cert: str = "/etc/ssl/certs/server.pem",
               key: str = "/etc/ssl/private/server.key", root: str = "/var/www/html",
               ciphers: str = NGINX_CIPHERS, protocols: Optional[str] = None,
               buffer_size: Optional[int] = None, stats: Optional[str] = None,
               openssl_prefix: Optional[str] = None, provider: bool = False,
               ciphersuites: str = NGINX_CIPHERSUITES) -> str:
    """An nginx server block that pipelines its TLS writes, with the lines
    that go outside it as comments (how to start nginx, ``env``).

    ``commands`` become ``ssl_conf_command`` lines (nginx >= 1.19.4 passes
    them to SSL_CONF_cmd); ``buffer_size`` (default :func:`buffer_size_for`)
    is ``ssl_buffer_size``.  ``provider``: the openssl.cnf loads the
    provider (TLS 1.3, patch 0002), not the engine (TLS 1.2); ``protocols``
    defaults to the version that pipelines with it.  With TLSv1.3 among the
    protocols, ``ciphersuites`` becomes ``ssl_conf_command Ciphersuites``
    (``ssl_ciphers`` sets TLS 1.2's suites only)."""
    if not commands.max_pipelines or commands.max_pipelines < 2:
        raise ConfigError("an nginx server block that pipelines needs MaxPipelines >= 2",
                          knob="max_pipelines")
    size = buffer_size if buffer_size is not None else buffer_size_for(commands)
    if size < 1:
        raise ConfigError("ssl_buffer_size must be at least 1 byte", knob="buffer_size")
    if protocols is None:
        protocols = "TLSv1.3" if provider else "TLSv1.2"
    versions = protocols.split()
    what = "provider" if provider else "engine"
    lib = os.path.join(openssl_prefix, "lib") if openssl_prefix else "<patched OpenSSL prefix>/lib"
    lines = [
        "# nginx server block: TLS %s record pipelining with the pipetls %s"
        % ("1.3" if provider else "1.2", what),
        "# (generated by 'pipetls config --nginx%s'; see docs/howto-nginx.md)."
        % (" --provider" if provider else ""),
        "#",
        "# Start nginx on the patched OpenSSL 3.5 libraries (openssl_patches/%s) with"
        % (", patches 0001 and 0002" if provider else ""),
        "# the openssl.cnf that loads the %s; the master reads it at startup" % what,
        "# and the workers inherit the %s:" % what,
        "#",
        "#   LD_LIBRARY_PATH=%s OPENSSL_CONF=%s nginx" % (lib, openssl_conf),
        "#",
    ]
    if stats:
        lines += [
            "# %s statistics of each worker, appended to a file when it exits"
            % what.capitalize(),
            "# (nginx -s quit): nginx passes only the variables named by 'env' to its",
            "# workers, and the file must be writable by the worker's user. Put this",
            "# line in the main context of nginx.conf (outside http {}):",
            "#",
            "#   env PIPETLS_STATS=%s;" % stats,
            "#",
        ]
    lines += [
        "# This block goes inside http {}.",
        "server {",
        "    listen %s ssl;" % listen,
        "    server_name %s;" % server_name,
        "    ssl_certificate %s;" % cert,
        "    ssl_certificate_key %s;" % key,
    ]
    if provider:
        lines.append("    # the provider pipelines TLS 1.3 records (patch 0002; TLS 1.2 records")
        lines.append("    # through it: one at a time, the engine pipelines those)")
    else:
        lines.append("    # the engine pipelines TLS 1.2 records (TLS 1.3: one record at a time)")
    lines.append("    ssl_protocols %s;" % protocols)
    if "TLSv1.3" not in versions or len(versions) > 1:
        lines.append("    ssl_ciphers %s;" % ciphers)
    if "TLSv1.3" in versions:
        lines.append("    # TLS 1.3 suites (ssl_ciphers is the TLS 1.2 list)")
        lines.append("    ssl_conf_command Ciphersuites %s;" % ciphersuites)
    lines += [
        "    # one SSL_write per ssl_buffer_size bytes; libssl cuts a write into",
        "    # min(MaxPipelines, ceil(size / SplitSendFragment)) records",
        "    ssl_buffer_size %s;" % _size_directive(size),
    ]
    lines += ["    ssl_conf_command %s %d;" % kv for kv in commands.commands()]
    lines += [
        "    root %s;" % root,
        "}",
        "",
    ]
    return "\n".join(lines)
