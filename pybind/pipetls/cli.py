"""The ``pipetls`` command: info, serve, connect, openssl, config (and bench).

``pipetls serve`` / ``pipetls connect`` are a small s_server / s_client pair
written with pipetls itself; ``--bulk BYTES`` measures one connection's
throughput and prints the engine's statistics.  ``pipetls openssl ARGS``
runs the stock ``openssl`` program with ``-engine <bundled pipetls.so>``
inserted after the subcommand; ``pipetls config`` prints an openssl.cnf that
makes every OpenSSL program load the engine (and, on the patched OpenSSL 3.5,
pipeline: ``--max-pipelines`` ...; ``--nginx`` adds an nginx server block).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from typing import TYPE_CHECKING, Optional, Sequence, Union

from rich.console import Console
from rich.table import Table

from ._argtypes import parse_size
from .nginx import (DEFAULT_MAX_PIPELINES, SslConfCommands, nginx_text, provider_conf_text,
                    ssl_conf_section)

if TYPE_CHECKING:  # only for annotations: the commands import what they use
    from .connection import Connection
    from .context import Context
    from .engine import Engine
    from .provider import Provider

__all__ = ["main", "build_parser", "config_text"]

# openssl subcommands that take no -engine option.
_NO_ENGINE_SUBCOMMANDS = {"version", "help", "errstr", "list", "info"}


def _size(text: str) -> int:
    """'64M', '1G', '4096', '1.5k' -> bytes."""
    return parse_size(text, minimum=0)


# --------------------------------------------------------------------------
# openssl program and config
# --------------------------------------------------------------------------
def _openssl_program() -> tuple[str, dict[str, str]]:
    """(argv0, env) for the stock openssl CLI matching the loaded OpenSSL."""
    env = dict(os.environ)
    prefix = os.environ.get("PIPETLS_OPENSSL")
    if prefix:
        from ._libload import prefix_library_env

        prog = os.path.join(prefix, "bin", "openssl")
        return prog, prefix_library_env(prefix, env)
    found = shutil.which("openssl")
    if found is None:
        raise SystemExit("pipetls: the openssl program is not on PATH")
    return found, env


def openssl_argv(args: Sequence[str], engine: str) -> list[str]:
    """The openssl command line for ``pipetls openssl ARGS``."""
    args = list(args)
    if args and args[0] == "--":
        args = args[1:]
    prog, _ = _openssl_program()
    if not args:
        return [prog, "help"]
    if args[0].startswith("-") or not _takes_engine(prog, args[0]):
        return [prog] + args
    return [prog, args[0], "-engine", engine] + args[1:]


def _takes_engine(prog: str, subcommand: str) -> bool:
    """Whether ``openssl SUBCOMMAND`` has an -engine option (asks its -help)."""
    if subcommand in _NO_ENGINE_SUBCOMMANDS:
        return False
    _, env = _openssl_program()
    try:
        r = subprocess.run([prog, subcommand, "-help"], env=env, capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return "-engine" in (r.stdout + r.stderr)


def config_text(engine: str, threads: Optional[int] = None,
                commands: Optional[SslConfCommands] = None) -> str:
    """An openssl.cnf that loads the engine into every OpenSSL program; with
    ``commands`` (patch 0001's SSL_CONF commands: the patched OpenSSL 3.5
    only) also a ``system_default`` section that applies them to every
    SSL_CTX, and ``config_diagnostics = 1`` so that a bad value fails
    SSL_CTX_new() instead of being skipped."""
    lines = [
        "# pipetls: make every OpenSSL program load the pipetls engine and use it",
        "# for its ciphers (process-wide in each program).",
        "#",
        "# Use it alone:      OPENSSL_CONF=/path/to/this.cnf openssl s_server ...",
        "# or include it in your openssl.cnf (.include /path/to/this.cnf) and merge",
        "# the openssl_conf line into the existing one.",
    ]
    if commands:
        lines += [
            "# The system_default section at the end pipelines every SSL_CTX: it needs",
            "# the patched OpenSSL 3.5 (openssl_patches/), whose libraries the program",
            "# must run on (LD_LIBRARY_PATH); stock OpenSSL refuses these commands.",
            "# A bad value there makes SSL_CTX_new() fail with an error naming it",
            "# (config_diagnostics; without it the section would be skipped).",
            "config_diagnostics = 1",
        ]
    else:
        lines += [
            "# Remember the pipelining knobs: openssl s_server/s_client -max_pipelines 8",
            "# -split_send_frag N -read_buf N, or SSL_CTX_set_max_pipelines() in the",
            "# program (on the patched OpenSSL 3.5: pipetls config --max-pipelines 8).",
        ]
    lines += [
        "openssl_conf = pipetls_openssl_init",
        "",
        "[pipetls_openssl_init]",
        "engines = pipetls_engines",
    ]
    if commands:
        lines.append("ssl_conf = pipetls_ssl_module")
    lines += [
        "",
        "[pipetls_engines]",
        "pipetls = pipetls_engine",
        "",
        "[pipetls_engine]",
        "# the order matters: load, then control commands, then init",
        "engine_id = pipetls",
        "dynamic_path = %s" % engine,
    ]
    if threads is not None:
        lines.append("# lanes working one batch, the calling thread included (1..256)")
        lines.append("THREADS = %d" % threads)
    else:
        lines.append("# THREADS = 4   # lanes per batch, caller included; default: online CPUs")
    lines += [
        "init = 1",
        "default_algorithms = CIPHERS",
        "",
    ]
    if commands:
        lines += ssl_conf_section(commands)
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Shared helpers for serve / connect
# --------------------------------------------------------------------------
def _add_tls_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TLS")
    v = g.add_mutually_exclusive_group()
    v.add_argument("--tls1_2", action="store_true", help="TLS 1.2 only (the version that pipelines)")
    v.add_argument("--tls1_3", action="store_true", help="TLS 1.3 only")
    g.add_argument("--cipher", help="TLS 1.2 cipher list (OpenSSL syntax)")
    g.add_argument("--ciphersuites", help="TLS 1.3 cipher suites")
    g.add_argument("--no-etm", action="store_true",
                   help="disable encrypt-then-MAC (CBC suites use the stitched ciphers)")
    k = p.add_argument_group("pipelining")
    k.add_argument("--max-pipelines", type=int, metavar="N", help="1..32")
    k.add_argument("--split-send-frag", type=int, metavar="N", help="512..max_send_fragment")
    k.add_argument("--max-send-frag", type=int, metavar="N", help="512..16384")
    k.add_argument("--read-buf", type=_size, metavar="BYTES", help="default read buffer length")
    k.add_argument("--threads", type=int, metavar="N", help="engine lanes (1..256)")
    k.add_argument("--no-engine", action="store_true",
                   help="do not load the engine, nor the provider unless --provider on "
                   "(stock OpenSSL)")
    k.add_argument("--provider", choices=("auto", "on", "off"), default="auto",
                   help="TLS 1.3 through the pipetls provider (the SSL_CTX made with "
                   "?provider=pipetls; OpenSSL >= 3.5 with patch 0002). auto (default): "
                   "where this libssl pipelines TLS 1.3 through it, unless --tls1_2; the "
                   "engine is then not loaded (it would take TLS 1.3 from the provider). "
                   "on: required (an error where it cannot). off: the engine, as on 3.0")
    b = p.add_argument_group("bulk")
    b.add_argument("--bulk", type=_size, metavar="BYTES",
                   help="throughput test: the client sends BYTES, the server sinks (or --echo)")
    b.add_argument("--echo", action="store_true", help="the server echoes what it reads")
    b.add_argument("--io-size", type=_size, default=1 << 20, metavar="BYTES",
                   help="bytes per write/read call (default 1M)")
    b.add_argument("--quiet", action="store_true", help="no statistics tables")


def _engine_for(args: argparse.Namespace, console: Console) -> Optional[Engine]:
    if args.no_engine or _provider_for(args) is not None:
        return None
    from .engine import load_engine

    return load_engine(threads=args.threads, register=True)


def _provider_for(args: argparse.Namespace) -> Optional[Provider]:
    """The provider serve/connect pipeline through (see --provider), or
    None for the engine (or stock with --no-engine).  Decided once."""
    if not hasattr(args, "_provider"):
        args._provider = _choose_provider(args)
    p: Optional[Provider] = args._provider
    return p


def _choose_provider(args: argparse.Namespace) -> Optional[Provider]:
    from .errors import ProviderError
    from .paths import probe
    from .provider import load_provider

    if args.provider == "off" or (args.provider == "auto" and (args.no_engine or args.tls1_2)):
        return None
    if args.provider == "on":
        try:
            found = probe("1.3")
        except ProviderError as exc:
            raise ProviderError(
                "--provider on pipelines TLS 1.3 through the pipetls provider, which needs "
                "OpenSSL >= 3.5 with patch 0002 (openssl_patches/, 'pipetls build-openssl'; "
                "run with PIPETLS_OPENSSL=<its prefix>) and pipetls-provider.so built against "
                "it: %s" % exc) from None
        if not found.pipelined:
            raise ProviderError("--provider on: %s" % found.reason)
        return load_provider(threads=args.threads)
    try:  # auto
        found = probe("1.3")
    except ProviderError:
        return None
    return load_provider(threads=args.threads) if found.pipelined else None


def _context_provider(args: argparse.Namespace) -> Union[Provider, bool]:
    """Context(provider=...) of serve/connect: the provider, or False."""
    p = _provider_for(args)
    return p if p is not None else False


def _say_path(args: argparse.Namespace, engine: Optional[Engine], console: Console) -> None:
    if args.quiet:
        return
    if _provider_for(args) is not None:
        console.print("pipelining TLS 1.3 through the pipetls provider (TLS 1.2: one record "
                      "at a time, unless this libssl pipelines it through the provider too; "
                      "--tls1_2 or --provider off: the engine)")
    elif engine is not None:
        console.print("pipelining TLS 1.2 through the pipetls engine")


def _configure(ctx: Context, args: argparse.Namespace) -> None:
    if args.tls1_2:
        ctx.set_versions("TLSv1.2", "TLSv1.2")
    elif args.tls1_3:
        ctx.set_versions("TLSv1.3", "TLSv1.3")
    if args.cipher:
        ctx.set_ciphers(args.cipher)
    if args.ciphersuites:
        ctx.set_ciphersuites(args.ciphersuites)
    if args.no_etm:
        ctx.encrypt_then_mac = False
    if args.max_send_frag is not None:
        ctx.max_send_fragment = args.max_send_frag
    if args.max_pipelines is not None:
        ctx.max_pipelines = args.max_pipelines
    if args.split_send_frag is not None:
        ctx.split_send_fragment = args.split_send_frag
    if args.read_buf is not None:
        ctx.default_read_buffer_len = args.read_buf


def _stats_table(engine: Union[Engine, Provider], title: str) -> Table:
    st = engine.stats()
    t = Table(title=title)
    t.add_column("counter")
    t.add_column("value", justify="right")
    for name in ("lanes", "workers", "batches", "pipelined_batches", "inline_batches",
                 "records", "bytes", "failed_batches", "crypto_ns", "batch_ns"):
        t.add_row(name, str(getattr(st, name)))
    if st.async_batches:
        for name in ("async_batches", "async_pauses", "async_resumes", "async_paused_ns"):
            t.add_row(name, str(getattr(st, name)))
    t.add_row("mean batch", "%.2f" % st.mean_batch)
    for k in sorted(st.hist):
        t.add_row("batches of %d" % k, str(st.hist[k]))
    return t


def _rate(n: int, seconds: float) -> str:
    if seconds <= 0:
        return "-"
    return "%.3f GB/s (%.1f MB in %.3f s)" % (n / seconds / 1e9, n / 1e6, seconds)


def _selfsigned(tmpdir: str) -> tuple[str, str]:
    """Generate a throwaway self-signed certificate with the openssl CLI."""
    prog, env = _openssl_program()
    cert = os.path.join(tmpdir, "cert.pem")
    key = os.path.join(tmpdir, "key.pem")
    cmd = [prog, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("pipetls serve: openssl req failed: %s" % r.stderr.strip())
    return cert, key


# --------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace, console: Console) -> int:
    from . import _ffi, __version__
    from .engine import Engine, engine_path, shared_engine
    from .errors import PipetlsError
    from .paths import path_table

    t = Table(title="pipetls %s" % __version__, show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("OpenSSL", _ffi.openssl_version())
    t.add_row("libssl", _ffi.LIBSSL_PATH)
    t.add_row("libcrypto", _ffi.LIBCRYPTO_PATH)
    t.add_row("Python ssl shares it", "yes" if _ffi.stdlib_shares_openssl() else "no")
    doc: dict[str, object] = {"openssl": _ffi.openssl_version(), "libssl": _ffi.LIBSSL_PATH,
                              "libcrypto": _ffi.LIBCRYPTO_PATH}
    rc = 0
    engine: Optional[Engine] = None
    own = False
    try:
        path = args.engine or engine_path()
        t.add_row("engine", path)
        shared = shared_engine()
        if shared is not None and not shared.closed and \
                os.path.realpath(shared.path) == os.path.realpath(path):
            engine = shared
        else:
            engine, own = Engine(path), True
        info = engine.info()
        doc["engine"] = dict(info, path=path)
        t.add_row("engine version", str(info.get("version", "?")))
        t.add_row("lanes", str(info.get("lanes", "?")))
        t.add_row("ciphers (this CPU)", "\n".join(info.get("ciphers", [])) or "(none)")
        for k, v in info.items():
            if k not in ("version", "lanes", "ciphers"):
                t.add_row(k, str(v))
    except PipetlsError as exc:
        t.add_row("engine", "[red]%s[/red]" % exc)
        doc["engine"] = {"error": str(exc)}
        rc = 1
    doc["provider"] = _provider_rows(t, args.provider)
    try:
        # measured: the provider first (a registered engine would take its
        # ciphers), then the engine, registered only for its own probes
        rows = path_table(engine)
    finally:
        if own and engine is not None:
            engine.close()
    doc["paths"] = rows
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return rc
    console.print(t)
    p = Table(title="paths on this libssl (measured: batches of more than one record "
              "writing and reading)")
    for col in ("TLS", "suite", "served by", "why not the other"):
        p.add_column(col)
    for r in rows:
        colour = "green" if r["served_by"] != "none" else "yellow"
        p.add_row(r["tls"], r["suite"], "[%s]%s[/%s]" % (colour, r["served_by"], colour),
                  r["detail"])
    console.print(p)
    if any(r["served_by"] == "engine or provider" for r in rows):
        console.print("engine or provider: a registered engine takes the cipher (libssl asks "
                      "ENGINEs before providers); without it, the provider")
    return rc


def _provider_rows(t: Table, path: Optional[str]) -> dict[str, object]:
    """``pipetls info``'s provider rows: its path, and loaded or why not
    (optional: a missing provider is not a failure of ``info``); returns
    the same for ``--json``."""
    from .errors import PipetlsError
    from .provider import load_provider, provider_path, require_pipeline_api, shared_provider

    found: Optional[str] = None
    why: Optional[str] = None
    out: dict[str, object] = {}
    try:
        found = path or provider_path()
        t.add_row("provider", found)
        out["path"] = found
    except PipetlsError as exc:
        t.add_row("provider", "(not found)")
        why = str(exc)
    try:
        require_pipeline_api()
    except PipetlsError as exc:
        why = str(exc)  # the more basic reason
    if why is not None or found is None:
        t.add_row("provider status", "[yellow]not loaded: %s[/yellow]" % why)
        out["status"] = "not loaded: %s" % why
        return out
    try:
        # the shared provider: the path probes of `info` use it too
        shared = shared_provider()
        p = shared if shared is not None and not shared.closed and \
            os.path.realpath(shared.path) == os.path.realpath(found) else load_provider(found)
        t.add_row("provider status", "loaded: %d lanes, updates below %d bytes inline"
                  % (p.threads, p.inline_below))
        t.add_row("provider version", str(p.params().get("version", "?")))
        t.add_row("provider ciphers", "\n".join(p.ciphers()) or "(none)")
        out.update(status="loaded", lanes=p.threads, ciphers=p.ciphers(),
                   version=p.params().get("version", "?"))
    except PipetlsError as exc:
        t.add_row("provider status", "[red]not loaded: %s[/red]" % exc)
        out["status"] = "not loaded: %s" % exc
    return out


def _config_provider(path: str) -> str:
    """The provider module for ``pipetls config --provider [PATH]``: PATH,
    else :func:`pipetls.provider_path`; ProviderError when it is not there
    (nothing is written then)."""
    from .errors import ProviderError
    from .provider import provider_path

    found = path or provider_path()
    if not os.path.isfile(found):
        raise ProviderError("--provider %s: no such file (build the provider against the "
                            "patched OpenSSL 3.5: cmake -S . -B build/provider-3.5 "
                            "-DOPENSSL_ROOT_DIR=<prefix> && cmake --build build/provider-3.5)"
                            % found)
    return os.path.abspath(found)


def cmd_config(args: argparse.Namespace, console: Console) -> int:
    from .engine import engine_path
    from .errors import ConfigError

    knobs = dict(max_pipelines=args.max_pipelines, split_send_fragment=args.split_send_frag,
                 max_send_fragment=args.max_send_frag, read_buffer_length=args.read_buf)
    system = SslConfCommands(**knobs) if args.system_default or not args.nginx else \
        SslConfCommands()
    provider = args.provider is not None
    if provider and args.engine:
        raise ConfigError("--provider and --engine: the openssl.cnf loads one of them (the "
                          "provider pipelines TLS 1.3, the engine TLS 1.2); an engine "
                          "registered for AES-GCM would take TLS 1.3's records from the "
                          "provider", knob="provider")
    if args.threads is not None and provider:
        from ._knobs import in_range
        from .provider import THREADS_RANGE

        in_range("threads", args.threads, *THREADS_RANGE)
    if provider:
        text = provider_conf_text(_config_provider(args.provider), args.threads, system)
    else:
        text = config_text(os.path.abspath(args.engine or engine_path()), args.threads, system)
    nginx = None
    if args.nginx:
        if knobs["max_pipelines"] is None:
            knobs["max_pipelines"] = DEFAULT_MAX_PIPELINES
        nginx = nginx_text(
            SslConfCommands(**knobs),
            openssl_conf=os.path.abspath(args.output) if args.output else "/path/to/pipetls.cnf",
            listen=args.listen, server_name=args.server_name, cert=args.cert, key=args.key,
            root=args.root, buffer_size=args.buffer_size, stats=args.stats,
            openssl_prefix=args.openssl_prefix or os.environ.get("PIPETLS_OPENSSL"),
            provider=provider)
    if args.output:
        with open(args.output, "w", encoding="ascii") as f:
            f.write(text)
    else:
        if nginx is not None:
            sys.stdout.write("# ---- openssl.cnf (-o FILE writes it to FILE) ----\n")
        sys.stdout.write(text)
    if nginx is not None:
        if not args.output:
            sys.stdout.write("\n# ---- nginx ----\n")
        sys.stdout.write(nginx)
    return 0


def cmd_openssl(args: argparse.Namespace, console: Console) -> int:
    from .engine import engine_path

    argv = openssl_argv(args.args, args.engine or engine_path())
    _, env = _openssl_program()
    return subprocess.call(argv, env=env)


def _sink(conn: Connection, io_size: int, echo: bool) -> tuple[int, float]:
    """Read until close_notify; echo if asked.  Returns (bytes, seconds)."""
    from .errors import TLSClosed, TLSUnexpectedEOF

    buf = bytearray(io_size)
    view = memoryview(buf)
    n = 0
    t0 = None
    try:
        while True:
            k = conn.readinto(buf)
            if t0 is None:
                t0 = time.perf_counter()
            n += k
            if echo:
                conn.sendall(view[:k])
    except (TLSClosed, TLSUnexpectedEOF):
        pass
    return n, (time.perf_counter() - t0) if t0 is not None else 0.0


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from .context import Context

    engine = _engine_for(args, console)
    meter = _provider_for(args) or engine
    _say_path(args, engine, console)
    tmp = None
    cert, key = args.cert, args.key
    if cert is None:
        tmp = tempfile.TemporaryDirectory(prefix="pipetls-serve-")
        cert, key = _selfsigned(tmp.name)
    try:
        with Context(server=True, certfile=cert, keyfile=key or cert,
                     provider=_context_provider(args)) as ctx:
            _configure(ctx, args)
            family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as lsock:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                lsock.bind((args.host, args.port))
                lsock.listen(16)
                _serve(ctx, lsock, meter, args, console)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def _serve(ctx: Context, lsock: socket.socket, engine: Union[Engine, Provider, None],
           args: argparse.Namespace, console: Console) -> None:
    from .connection import Connection
    from .errors import PipetlsError

    host, port = lsock.getsockname()[:2]
    print("ACCEPT %s:%d" % (host, port), flush=True)
    served = 0
    while args.naccept is None or served < args.naccept:
        sock, peer = lsock.accept()
        served += 1
        sock.settimeout(args.timeout)
        try:
            with Connection(ctx, sock) as conn:
                conn.do_handshake()
                if not args.quiet:
                    console.print("[green]%s:%d[/green] %s %s" % (peer[0], peer[1],
                                                                 conn.tls_version, conn.cipher_name))
                if engine is not None:
                    engine.reset_stats()
                if args.bulk is not None or args.echo:
                    n, dt = _sink(conn, args.io_size, args.echo)
                    print("received %d bytes: %s" % (n, _rate(n, dt)), flush=True)
                    if args.bulk is not None and n != args.bulk:
                        console.print("[red]expected %d bytes[/red]" % args.bulk)
                else:
                    n, dt = _sink(conn, args.io_size, False)
                    print("received %d bytes" % n, flush=True)
                if engine is not None and not args.quiet:
                    console.print(_stats_table(engine, "%s (server)" % _meter_name(engine)))
                conn.shutdown(timeout=1.0)
        except PipetlsError as exc:
            console.print("[red]connection from %s: %s[/red]" % (peer[0], exc))
        except OSError as exc:
            console.print("[red]connection from %s: %s[/red]" % (peer[0], exc))
        finally:
            sock.close()


def cmd_connect(args: argparse.Namespace, console: Console) -> int:
    from .context import Context

    engine = _engine_for(args, console)
    meter = _provider_for(args) or engine
    _say_path(args, engine, console)
    verify = not args.insecure
    with Context(server=False, verify=verify, cafile=args.cafile if verify else None,
                 provider=_context_provider(args)) as ctx:
        if args.cert:
            ctx.load_cert_chain(args.cert, args.key)
        _configure(ctx, args)
        return _connect(ctx, meter, args, console)


def _meter_name(m: Union[Engine, Provider]) -> str:
    from .engine import Engine

    return "engine" if isinstance(m, Engine) else "provider"


def _connect(ctx: Context, engine: Union[Engine, Provider, None], args: argparse.Namespace,
             console: Console) -> int:
    from .connection import Connection
    from .errors import TLSClosed, TLSUnexpectedEOF

    sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    servername = args.servername or args.host
    try:
        with Connection(ctx, sock, server_hostname=servername) as conn:
            conn.do_handshake()
            if not args.quiet:
                console.print("connected: %s %s" % (conn.tls_version, conn.cipher_name), style="green")
            if engine is not None:
                engine.reset_stats()
            if args.bulk is not None:
                echoed = [0]

                def reader() -> None:
                    buf = bytearray(args.io_size)
                    try:
                        while echoed[0] < args.bulk:
                            echoed[0] += conn.readinto(buf)
                    except (TLSClosed, TLSUnexpectedEOF):
                        pass

                th = None
                if args.echo:
                    th = threading.Thread(target=reader, daemon=True)
                    th.start()
                chunk = memoryview(bytearray(min(args.io_size, max(args.bulk, 1))))
                t0 = time.perf_counter()
                left = args.bulk
                while left:
                    left -= conn.write(chunk[:min(left, len(chunk))])
                dt = time.perf_counter() - t0
                print("sent %d bytes: %s" % (args.bulk, _rate(args.bulk, dt)), flush=True)
                if th is not None:
                    th.join()
                    dt = time.perf_counter() - t0
                    print("echoed %d bytes: %s" % (echoed[0], _rate(echoed[0], dt)), flush=True)
                if engine is not None and not args.quiet:
                    console.print(_stats_table(engine, "%s (client)" % _meter_name(engine)))
                conn.shutdown(timeout=2.0)
            else:
                data = sys.stdin.buffer.read()
                if data:
                    conn.sendall(data)
                conn.shutdown(timeout=0)
                try:
                    while True:
                        sys.stdout.buffer.write(conn.read(1 << 16))
                        sys.stdout.flush()
                except (TLSClosed, TLSUnexpectedEOF):
                    pass
    finally:
        sock.close()
    return 0


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
_OWN_COMMANDS = (cmd_info, cmd_serve, cmd_connect, cmd_openssl, cmd_config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pipetls",
        description="pipetls: parallel TLS record pipelining for OpenSSL "
        "(info, serve, connect, openssl, config, bench).")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="OpenSSL, engine path, ciphers the engine offers, lanes; "
                       "the provider (OpenSSL >= 3.5)")
    s.add_argument("--engine", help="engine path (default: pipetls.engine_path())")
    s.add_argument("--provider", help="provider path (default: pipetls.provider_path())")
    s.add_argument("--json", action="store_true",
                   help="print it all as JSON (the paths: one object per TLS version and suite)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("serve", help="a TLS server (s_server-like)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=4433, help="0 picks a free port (printed)")
    s.add_argument("--cert", help="PEM certificate chain (default: a throwaway self-signed one)")
    s.add_argument("--key", help="PEM private key (default: --cert)")
    s.add_argument("--naccept", type=int, help="exit after N connections")
    s.add_argument("--timeout", type=float, default=60.0, help="per-operation timeout (s)")
    _add_tls_options(s)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("connect", help="a TLS client (s_client-like)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=4433)
    s.add_argument("--servername", help="SNI / name to verify (default: --host)")
    s.add_argument("--cafile", help="trust these CA certificates")
    s.add_argument("--insecure", action="store_true", help="do not verify the server")
    s.add_argument("--cert", help="client certificate chain")
    s.add_argument("--key", help="client private key")
    s.add_argument("--timeout", type=float, default=60.0, help="per-operation timeout (s)")
    _add_tls_options(s)
    s.set_defaults(func=cmd_connect)

    s = sub.add_parser("openssl", help="run openssl with -engine <pipetls.so> inserted",
                       description="pipetls openssl [--] SUBCOMMAND ARGS: runs the stock "
                       "openssl program as 'openssl SUBCOMMAND -engine <pipetls.so> ARGS'.")
    s.add_argument("--engine", help="engine path (default: pipetls.engine_path())")
    s.add_argument("args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_openssl)

    s = sub.add_parser(
        "config", help="print an openssl.cnf that loads the engine everywhere (--nginx: and an "
        "nginx server block)",
        description="Print an openssl.cnf that loads the pipetls engine into every OpenSSL "
        "program. The pipelining options add a system_default section with patch 0001's "
        "SSL_CONF commands (the patched OpenSSL 3.5 only, openssl_patches/). --nginx also "
        "prints an nginx server block with those commands as ssl_conf_command lines "
        "(MaxPipelines %d unless given); the openssl.cnf then only loads the engine, unless "
        "--system-default. --provider loads the pipetls provider (and the default "
        "provider) instead of the engine: TLS 1.3 pipelining, which needs patch 0002; "
        "the nginx block then offers TLS 1.3." % DEFAULT_MAX_PIPELINES)
    s.add_argument("--engine", help="engine path (default: pipetls.engine_path())")
    s.add_argument("--provider", nargs="?", const="", metavar="PATH",
                   help="load the pipetls provider instead of the engine (TLS 1.3, patch 0002; "
                   "PATH default: pipetls.provider_path()); refused if it is not built")
    s.add_argument("--threads", type=int, help="THREADS for the engine or provider (1..256)")
    s.add_argument("-o", "--output", help="write the openssl.cnf to this file instead of stdout")
    k = s.add_argument_group("pipelining (patch 0001's SSL_CONF commands)")
    k.add_argument("--max-pipelines", type=int, metavar="N", help="MaxPipelines, 1..32")
    k.add_argument("--split-send-frag", type=int, metavar="N",
                   help="SplitSendFragment, 512..max send fragment")
    k.add_argument("--max-send-frag", type=int, metavar="N", help="MaxSendFragment, 512..16384")
    k.add_argument("--read-buf", type=_size, metavar="BYTES",
                   help="ReadBufferLength (read pipelining: room for several records)")
    k.add_argument("--system-default", action="store_true",
                   help="with --nginx: put the commands in the openssl.cnf's system_default "
                   "section too (every SSL_CTX of every program using that file)")
    n = s.add_argument_group("nginx")
    n.add_argument("--nginx", action="store_true", help="also print an nginx server block")
    n.add_argument("--listen", default="443", help="listen address/port (default 443)")
    n.add_argument("--server-name", default="localhost")
    n.add_argument("--cert", default="/etc/ssl/certs/server.pem", help="ssl_certificate")
    n.add_argument("--key", default="/etc/ssl/private/server.key", help="ssl_certificate_key")
    n.add_argument("--root", default="/var/www/html")
    n.add_argument("--buffer-size", type=_size, metavar="BYTES",
                   help="ssl_buffer_size (default: MaxPipelines x SplitSendFragment, so that "
                   "each write fills every pipeline)")
    n.add_argument("--stats", metavar="FILE",
                   help="say how to get each worker's engine statistics in FILE (env directive)")
    n.add_argument("--openssl-prefix", metavar="DIR",
                   help="the patched OpenSSL prefix, for LD_LIBRARY_PATH (default: "
                   "$PIPETLS_OPENSSL)")
    s.set_defaults(func=cmd_config)

    # Hook: pipetls/bench.py, when present, registers its own subcommand
    # (bench.add_parser(subparsers); its handler is called as func(args)).
    if importlib.util.find_spec(__package__ + ".bench") is not None:
        bench = importlib.import_module(__package__ + ".bench")
        if hasattr(bench, "add_parser"):
            bench.add_parser(sub)
    from . import build_openssl  # pipetls build-openssl: openssl_patches/build.py

    build_openssl.add_parser(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.version:
        from . import __version__

        print("pipetls %s" % __version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    console = Console(stderr=args.command in ("serve", "connect"))
    from .errors import PipetlsError

    try:
        if args.func in _OWN_COMMANDS:
            return args.func(args, console) or 0
        # A plugged-in command (bench): func(args), or func(args, console).
        try:
            n = len(inspect.signature(args.func).parameters)
        except (TypeError, ValueError):
            n = 1
        return (args.func(args, console) if n >= 2 else args.func(args)) or 0
    except PipetlsError as exc:
        console.print("[red]pipetls: %s[/red]" % exc)
        return 1
    except OSError as exc:  # a refused connection, a missing file ...
        console.print("[red]pipetls %s: %s[/red]" % (args.command, exc))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
