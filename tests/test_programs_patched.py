"""Real programs, unmodified, pipelining by configuration alone.

Debian's nginx (linked against libssl.so.3) runs on the patched OpenSSL 3.5
libraries (``LD_LIBRARY_PATH=<prefix>/lib``) with ``OPENSSL_CONF`` loading
the pipetls engine; its server block, made by ``pipetls config --nginx``
(:func:`pipetls.nginx.nginx_text`), turns pipelining on with
``ssl_conf_command MaxPipelines 8;`` (patch 0001's SSL_CONF commands).  The
clients are stock: curl and ``openssl s_client`` on the system's libraries
and configuration-free.  Then the other way round: Debian's curl on the
patched libraries with a ``system_default`` section (MaxPipelines,
ReadBufferLength) downloads from stock servers, and a Python asyncio
service on the patched libraries pipelines from ``OPENSSL_CONF`` alone.

Proof, in every case: SHA-256 of what the client got equals the file's; the
engine statistics of the pipelining process (``PIPETLS_STATS``, written
when it exits cleanly; nginx's worker gets the variable through an ``env``
directive) show batches of more than one record, and the control without
``MaxPipelines`` shows none; a relay counts the records on the wire and
compares them with the record split libssl applies (the seed's rule
whenever a write fits in max_pipelines x split, see :func:`libssl_records`).

TLS 1.2 goes through the engine.  TLS 1.3 (``SUITES13``) goes through the
provider on patch 0002: ``pipetls config --nginx --provider`` makes the
openssl.cnf that loads it beside the default provider
(:func:`pipetls.nginx.provider_conf_text`) and a block with ``ssl_protocols
TLSv1.3`` and ``ssl_conf_command Ciphersuites``.  Its proof is the
provider's statistics, written to ``PIPETLS_STATS`` by the provider's
teardown when the worker exits cleanly (as the engine's); records on the
wire cannot tell there, since with 128 KiB writes and the default split
the records are full-size whether they are pipelined or not.

``PIPETLS_NGINX_BYTES`` (default 256 MiB; 25 s for the large-file tests on 2 cores):
the size of the file nginx serves in the large-file tests.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

from pipetls.cli import config_text
from pipetls.nginx import RECORD, SslConfCommands, nginx_text, provider_conf_text
from support import programs
from support.net import free_port, wait_listening
from support.nginx import Nginx, nginx_program
from support.patched import assert_only_patched, mapped_ssl_libs, penv
from support.peers import stream_exchange
from support.records import APPLICATION_DATA, CHANGE_CIPHER_SPEC, parse_records
from support.relay import Relay
from support.stats import read_stats_file

pytestmark = pytest.mark.patched

MIB = 1 << 20


def _size_from_env() -> int:
    text = os.environ.get("PIPETLS_NGINX_BYTES", "")
    if not text:
        return 256 * MIB
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"PIPETLS_NGINX_BYTES must be a number of bytes, not {text!r}")
    return int(text)


BIG = _size_from_env()
SMALL = 2 * MIB        # the wire checks keep the whole capture in memory
# responses whose last write is 1, 3, 5 and 7 records wide (128 KiB writes of 8)
MIXED = [("m%d" % i, MIB + tail) for i, tail in enumerate((5000, 40000, 70000, 100000))]


@dataclass(frozen=True)
class Suite:
    id: str
    protocol: str       # nginx ssl_protocols
    cipher: str         # OpenSSL name (ssl_ciphers)
    overhead: int       # ciphertext - plaintext of one record (nonce + tag)


SUITES = [
    Suite("tls12-aes128gcm", "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", 8 + 16),
    Suite("tls12-chacha20", "TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305", 16),
]
SUITE_PARAMS = [pytest.param(s, id=s.id) for s in SUITES]

# TLS 1.3 through the provider (patch 0002): the overhead is the tag and
# the inner content type
SUITES13 = [
    Suite("tls13-aes128gcm", "TLSv1.3", "TLS_AES_128_GCM_SHA256", 16 + 1),
    Suite("tls13-aes256gcm", "TLSv1.3", "TLS_AES_256_GCM_SHA384", 16 + 1),
    Suite("tls13-chacha20", "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256", 16 + 1),
]


# ------------------------------------------------------------------ helpers

def stock_env() -> dict:
    """A process on the system's own OpenSSL, without any configuration."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "OPENSSL_CONF", "OPENSSL_ENGINES",
                        "OPENSSL_MODULES", "PIPETLS_STATS", "LD_PRELOAD")}
    env["OPENSSL_CONF"] = os.devnull
    return env


def stock_openssl(prefix: Path) -> str:
    """The system's openssl program (never the patched prefix's)."""
    path = shutil.which("openssl", path=stock_env().get("PATH"))
    if path is None:
        path = programs.require("openssl")
    assert not os.path.realpath(path).startswith(str(prefix)), path
    return path


def write_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path``; their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


@dataclass
class Site:
    root: Path
    files: dict          # name -> (size, sha256)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    root = tmp_path_factory.mktemp("www")
    files = {}
    for name, size in (("big", BIG), ("small", SMALL), *MIXED):
        files[name] = (size, write_file(root / name, size))
    return Site(root, files)


def engine_conf(path: Path, engine: str, commands: Optional[SslConfCommands] = None) -> Path:
    """``pipetls config`` output: load the engine (and apply ``commands`` to
    every SSL_CTX through system_default)."""
    path.write_text(config_text(engine, None, commands))
    return path


def server_block(port: int, certs, root: Path, suite: Suite,
                 commands: SslConfCommands, buffer_size: Optional[int] = None,
                 conf: str = "") -> str:
    """``pipetls config --nginx``'s server block; with ``commands`` that do
    not pipeline (the control), the same block with those commands only."""
    if commands.max_pipelines is not None and commands.max_pipelines > 1:
        return nginx_text(commands, openssl_conf=conf, listen=f"127.0.0.1:{port}",
                          cert=str(certs.cert), key=str(certs.key), root=str(root),
                          ciphers=suite.cipher, protocols=suite.protocol,
                          buffer_size=buffer_size)
    lines = [f"listen 127.0.0.1:{port} ssl;", "server_name localhost;",
             f"ssl_certificate {certs.cert};", f"ssl_certificate_key {certs.key};",
             f"ssl_protocols {suite.protocol};", f"ssl_ciphers {suite.cipher};"]
    if buffer_size is not None:
        lines.append(f"ssl_buffer_size {buffer_size};")
    lines += ["ssl_conf_command %s %d;" % kv for kv in commands.commands()]
    lines.append(f"root {root};")
    return "server {\n" + "\n".join("    " + line for line in lines) + "\n}\n"


def hash_stdout(argv, *, env, stdin: bytes = b"", timeout: float = 600.0,
                skip_header: bool = False):
    """Run argv, hash its stdout as it comes (the HTTP header cut off with
    ``skip_header``); returns (returncode, sha256, bytes hashed, stderr)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    err: List[bytes] = []
    t = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    t.start()
    if stdin:
        proc.stdin.write(stdin)
        proc.stdin.flush()
    h, n, head = hashlib.sha256(), 0, b""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        while True:
            chunk = proc.stdout.read1(1 << 20)
            if not chunk:
                break
            if skip_header and head is not None:
                head += chunk
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                chunk, head = head[end + 4:], None
            h.update(chunk)
            n += len(chunk)
        proc.stdin.close()
        rc = proc.wait(60)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t.join(10)
    return rc, h.hexdigest(), n, b"".join(err).decode(errors="replace")


def curl_argv(port: int, certs, name: str, *extra: str) -> list:
    curl = programs.require("curl")
    return [curl, "-sS", "--fail", "-v", "--cacert", str(certs.ca),
            "--resolve", f"localhost:{port}:127.0.0.1", *extra,
            f"https://localhost:{port}/{name}"]


def s_client_argv(openssl: str, port: int, certs, suite: Suite) -> list:
    if suite.protocol == "TLSv1.3":
        version = ["-tls1_3", "-ciphersuites", suite.cipher]
    else:
        version = ["-tls1_2", "-cipher", suite.cipher]
    return [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
            "-CAfile", str(certs.ca), "-verify_return_error", "-quiet", "-ign_eof", *version]


def only_block(blocks, logs=""):
    """The one statistics block that saw traffic."""
    busy = [b for b in blocks if b.records > 0]
    assert len(busy) == 1, f"expected one statistics block with records, got {blocks}\n{logs}"
    assert busy[0].failed_batches == 0, busy[0]
    return busy[0]


def libssl_records(n: int, pipes: int, split: int) -> List[int]:
    """The plaintext lengths of the records libssl makes of one SSL_write of
    ``n`` bytes (ssl3_write_bytes, the same in 3.0 and 3.5; ``pipes`` 1 when
    nothing pipelines): k = min(pipes, ceil(n / split)); if n / k >= split,
    k records of split bytes and the rest is written the same way; else n
    spread over k records (the first n % k one byte longer).

    Where n <= pipes x split this is the seed's rule (:func:`seed_records`).
    A larger write is several such batches, and a split below 16384 cuts
    records even when nothing is pipelined (docs/knobs.md)."""
    out: List[int] = []
    while n:
        k = min(pipes, -(-n // split))
        if n // k >= split:
            out += [split] * k
            n -= k * split
        else:
            base, extra = divmod(n, k)
            out += [base + 1] * extra + [base] * (k - extra)
            n = 0
    return out


def seed_records(n: int, pipes: int, split: int) -> List[int]:
    """The seed's rule (seeds/pipelining-announcement.txt): a write of n
    bytes uses min(pipes, ceil(n / split)) pipelines, the data spread
    equally (for n <= pipes x split, one record per pipeline)."""
    k = min(pipes, -(-n // split))
    base, extra = divmod(n, k)
    return [base + 1] * extra + [base] * (k - extra)


def app_lengths(stream: bytes, suite: Suite) -> List[int]:
    """Plaintext lengths of the application-data records after the
    ChangeCipherSpec of one direction of a TLS 1.2 capture."""
    recs, _ = parse_records(bytes(stream), strict=False)
    seen_ccs, out = False, []
    for r in recs:
        if r.type == CHANGE_CIPHER_SPEC:
            seen_ccs = True
        elif r.type == APPLICATION_DATA and seen_ccs:
            out.append(len(r.body) - suite.overhead)
    return out


# --------------------------------------------------------------------- tests

def test_nginx_links_libssl3(prefix):
    """Debian's nginx is linked against the soname libssl.so.3, which the
    patched prefix provides: with LD_LIBRARY_PATH the loader picks the
    prefix's (the ABI promise of OpenSSL 3.x, docs/howto-nginx.md)."""
    nginx = nginx_program()
    stock = subprocess.run(["ldd", nginx], capture_output=True, text=True, timeout=30,
                           env=stock_env())
    assert re.search(r"^\s*libssl\.so\.3 => (?!%s)" % re.escape(str(prefix)), stock.stdout,
                     re.M), stock.stdout
    patched = subprocess.run(["ldd", nginx], capture_output=True, text=True, timeout=30,
                             env=penv(prefix, None))
    for lib in ("libssl.so.3", "libcrypto.so.3"):
        assert re.search(r"^\s*%s => %s/lib/%s" % (re.escape(lib), re.escape(str(prefix)),
                                                   re.escape(lib)), patched.stdout, re.M), \
            patched.stdout


@pytest.mark.parametrize("suite", SUITE_PARAMS)
def test_nginx_serves_large_file_pipelined(tmp_path, prefix, openssl35, engine35, certs,
                                           site, suite):
    """nginx on the patched libraries, ``MaxPipelines 8`` from the generated
    server block (ssl_buffer_size 128k: every full write is 8 records of
    16 KiB), serves the large file to stock curl and to stock s_client:
    SHA-256 equal, the worker mapped only the patched libraries, and its
    statistics show batches of 8 records for every full write."""
    size, sha = site.files["big"]
    port = free_port()
    conf = engine_conf(tmp_path / "pipetls.cnf", engine35)
    block = server_block(port, certs, site.root, suite, SslConfCommands(max_pipelines=8),
                         conf=str(conf))
    assert "ssl_conf_command MaxPipelines 8;" in block and "ssl_buffer_size 128k;" in block
    ng = Nginx(tmp_path / "nginx", block, env=penv(prefix, conf), port=port)
    with ng:
        workers = ng.worker_pids()
        assert len(workers) == 1, ng.logs()
        assert_only_patched(mapped_ssl_libs(workers[0]), prefix)
        rc, got, n, err = hash_stdout(curl_argv(port, certs, "big", "--tlsv1.2"),
                                      env=stock_env())
        assert rc == 0 and (n, got) == (size, sha), f"curl rc={rc} {n} bytes\n{err}\n{ng.logs()}"
        assert re.search(r"SSL connection using TLSv1\.2 / %s" % suite.cipher, err), err
        rc, got, n, err = hash_stdout(
            s_client_argv(stock_openssl(prefix), port, certs, suite), env=stock_env(),
            stdin=b"GET /big HTTP/1.0\r\nHost: localhost\r\n\r\n", skip_header=True)
        assert rc == 0 and (n, got) == (size, sha), \
            f"s_client rc={rc} {n} bytes\n{err}\n{ng.logs()}"
        assert ng.stop() == 0, ng.logs()
    st = only_block(ng.worker_stats(), ng.logs())
    assert st.bytes >= 2 * size, st
    full_writes = 2 * (size // (8 * RECORD))
    assert st.hist.get(8, 0) >= full_writes - 2, st
    assert max(st.hist) == 8, st


def test_provider_conf_activates_both_providers(tmp_path, prefix, openssl35, module35):
    """The openssl.cnf of ``pipetls config --provider``, read by the patched
    openssl: the default provider and the pipetls one are both active
    (naming a provider turns off the default one's automatic loading), and
    the pipetls provider offers TLS 1.3's three AEAD ciphers.  Control:
    the same file without its default-provider section fails to load."""
    conf = tmp_path / "pipetls.cnf"
    text = provider_conf_text(str(module35))
    conf.write_text(text)
    env = penv(prefix, conf)
    r = subprocess.run([openssl35, "list", "-providers"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    names = re.findall(r"^  (\S+)\n(?:    .*\n)*?    status: active$", r.stdout, re.M)
    assert sorted(names) == ["default", "pipetls"], r.stdout
    r = subprocess.run([openssl35, "list", "-cipher-algorithms"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    for name in ("aes-128-gcm", "aes-256-gcm", "ChaCha20-Poly1305"):
        assert re.search(r"%s\b.*@ pipetls$" % name, r.stdout, re.M), r.stdout
    broken = tmp_path / "no-default.cnf"
    broken.write_text(text.replace("default = pipetls_default_provider\n", ""))
    r = subprocess.run([openssl35, "list", "-providers"], env=penv(prefix, broken),
                       capture_output=True, text=True, timeout=30)
    assert not re.search(r"^  default$", r.stdout, re.M), r.stdout


@pytest.mark.parametrize("pipelines", [8, None], ids=["MaxPipelines8", "control"])
@pytest.mark.parametrize("suite", [pytest.param(s, id=s.id) for s in SUITES13])
def test_nginx_serves_large_file_tls13(tmp_path, prefix, openssl35, module35, certs, site,
                                       suite, pipelines):
    """TLS 1.3 through the provider (patch 0002): nginx on the patched
    libraries, the openssl.cnf and the server block of ``pipetls config
    --nginx --provider`` (ssl_protocols TLSv1.3, the suite as
    ``ssl_conf_command Ciphersuites``, MaxPipelines 8, ssl_buffer_size
    128k), serves the large file to stock curl and stock s_client: SHA-256
    equal, the suite negotiated, the worker mapped only the patched
    libraries, and the provider's statistics (its teardown at the worker's
    clean exit) show batches of 8 records for every full write.  Control:
    the same block without the MaxPipelines line: the provider's ciphers
    carry every byte (``stream_bytes``, one record per call) and no batch
    has more than one record."""
    size, sha = site.files["big"]
    port = free_port()
    conf = tmp_path / "pipetls.cnf"
    conf.write_text(provider_conf_text(str(module35)))
    block = nginx_text(SslConfCommands(max_pipelines=8), openssl_conf=str(conf),
                       listen=f"127.0.0.1:{port}", cert=str(certs.cert), key=str(certs.key),
                       root=str(site.root), provider=True, ciphersuites=suite.cipher)
    assert "ssl_protocols TLSv1.3;" in block and "ssl_buffer_size 128k;" in block
    assert f"ssl_conf_command Ciphersuites {suite.cipher};" in block
    line = "    ssl_conf_command MaxPipelines 8;\n"
    assert line in block
    if not pipelines:
        block = block.replace(line, "")
    ng = Nginx(tmp_path / "nginx", block, env=penv(prefix, conf), port=port)
    with ng:
        workers = ng.worker_pids()
        assert len(workers) == 1, ng.logs()
        assert_only_patched(mapped_ssl_libs(workers[0]), prefix)
        rc, got, n, err = hash_stdout(curl_argv(port, certs, "big", "--tlsv1.3"),
                                      env=stock_env())
        assert rc == 0 and (n, got) == (size, sha), f"curl rc={rc} {n} bytes\n{err}\n{ng.logs()}"
        assert re.search(r"SSL connection using TLSv1\.3 / %s" % suite.cipher, err), err
        rc, got, n, err = hash_stdout(
            s_client_argv(stock_openssl(prefix), port, certs, suite), env=stock_env(),
            stdin=b"GET /big HTTP/1.0\r\nHost: localhost\r\n\r\n", skip_header=True)
        assert rc == 0 and (n, got) == (size, sha), \
            f"s_client rc={rc} {n} bytes\n{err}\n{ng.logs()}"
        assert ng.stop() == 0, ng.logs()
    blocks = ng.worker_stats()
    assert len(blocks) == 1, f"expected the worker's provider statistics, got {blocks}\n" \
        + ng.logs()
    st = blocks[0]
    assert st.failed_batches == 0, st
    if pipelines:
        assert st.bytes >= 2 * size, st
        full_writes = 2 * (size // (8 * RECORD))
        assert st.hist.get(8, 0) >= full_writes - 2, st
        assert max(st.hist) == 8, st
    else:
        # the provider's ciphers carried the traffic, one record per call
        assert st.stream_bytes >= 2 * size, st
        assert st.pipelined_batches == 0 and max(st.hist, default=1) == 1, st


def test_nginx_busy_writes_cut_short(tmp_path, prefix, openssl35, engine35, certs, site):
    """A busy connection: nginx's socket send buffer is 32 KiB
    (``listen ... sndbuf=32k``) and curl reads at a limited rate, so most of
    nginx's 128 KiB pipelined writes stop with SSL_ERROR_WANT_WRITE part way
    and are retried; four responses on one kept-alive connection end in
    batches of 1, 3, 5 and 7 records after batches of 8 (the case libssl 3.0
    gets wrong, docs/knobs.md).  Everything arrives intact; nginx logs no
    SSL error."""
    port = free_port()
    conf = engine_conf(tmp_path / "pipetls.cnf", engine35)
    block = nginx_text(SslConfCommands(max_pipelines=8), openssl_conf=str(conf),
                       listen=f"127.0.0.1:{port} sndbuf=32k", cert=str(certs.cert),
                       key=str(certs.key), root=str(site.root), ciphers=SUITES[0].cipher)
    names = [name for name, _ in MIXED]
    want = hashlib.sha256()
    for name in names:
        want.update((site.root / name).read_bytes())
    total = sum(site.files[name][0] for name in names)
    ng = Nginx(tmp_path / "nginx", block, env=penv(prefix, conf), port=port, log_level="debug")
    with ng:
        argv = curl_argv(port, certs, names[0], "--limit-rate", "16M")
        argv += [f"https://localhost:{port}/{name}" for name in names[1:]]
        rc, got, n, err = hash_stdout(argv, env=stock_env())
        assert ng.stop() == 0, ng.logs()
    assert rc == 0 and (n, got) == (total, want.hexdigest()), f"curl rc={rc} {n}\n{err[-3000:]}"
    assert err.count("Re-using existing connection") >= len(names) - 1, err[-3000:]
    log = (tmp_path / "nginx" / "error.log").read_text()
    # the premise: writes were cut short (nginx's debug log of ngx_ssl_write)
    assert log.count("SSL_get_error: 3") >= 10, "no SSL_write stopped with WANT_WRITE"
    bad = [line for line in log.splitlines()
           if "[crit]" in line or "[error]" in line or "[alert]" in line]
    assert not bad, bad[:5]
    st = only_block(ng.worker_stats(), ng.logs())
    assert st.hist.get(8, 0) > 0, st
    assert {1, 3, 5, 7} <= set(st.hist), st


@pytest.mark.parametrize("pipelines", [8, None], ids=["MaxPipelines8", "control"])
@pytest.mark.parametrize("suite", SUITE_PARAMS)
def test_nginx_records_on_the_wire(tmp_path, prefix, openssl35, engine35, certs, site,
                                   suite, pipelines):
    """nginx with ``SplitSendFragment 4096`` and its default 16 KiB writes
    (ssl_buffer_size 16k), seen by a relay between it and stock curl: with
    MaxPipelines 8 every 16 KiB write is 4 records of 4096 bytes (the
    seed's rule: min(8, ceil(16384 / 4096)) records, spread equally) and
    the worker's statistics show those batches of 4.  Control: without
    MaxPipelines no batch of more than one record (libssl still cuts
    the writes into 4096-byte records, one at a time: libssl_records)."""
    size, sha = site.files["small"]
    split, buf = 4096, 16384
    commands = SslConfCommands(max_pipelines=pipelines, split_send_fragment=split)
    port = free_port()
    conf = engine_conf(tmp_path / "pipetls.cnf", engine35)
    block = server_block(port, certs, site.root, suite, commands, buffer_size=buf,
                         conf=str(conf))
    ng = Nginx(tmp_path / "nginx", block, env=penv(prefix, conf), port=port)
    with ng:
        relay = Relay(port, timeout=60).start()
        rc, got, n, err = hash_stdout(curl_argv(relay.port, certs, "small", "--tlsv1.2"),
                                      env=stock_env())
        relay.join()
        assert rc == 0 and (n, got) == (size, sha), f"curl rc={rc} {n} bytes\n{err}\n{ng.logs()}"
        assert ng.stop() == 0, ng.logs()
    lengths = app_lengths(relay.captured["s2c"], suite)
    total = sum(lengths)
    assert size < total < size + 1024, (size, total)       # the body and one header
    writes = [buf] * (total // buf) + ([total % buf] if total % buf else [])
    pipes = pipelines or 1
    expected = [r for w in writes for r in libssl_records(w, pipes, split)]
    if pipelines:
        # within pipes x split, libssl follows the seed's rule
        assert expected == [r for w in writes for r in seed_records(w, pipes, split)]
    assert lengths == expected, (lengths[:12], expected[:12])
    st = only_block(ng.worker_stats(), ng.logs())
    if pipelines:
        assert st.hist.get(4, 0) >= size // buf - 1, st
        assert max(st.hist) == 4, st
    else:
        assert st.pipelined_batches == 0 and set(st.hist) == {1}, st
        assert st.records >= len(lengths), st


def test_nginx_t_rejects_max_pipelines_33(tmp_path, prefix, openssl35, engine35, certs, site):
    """``nginx -t`` fails on ``ssl_conf_command MaxPipelines 33`` with
    patch 0001's message naming the limit; control: 32 passes."""
    conf = engine_conf(tmp_path / "pipetls.cnf", engine35)
    suite = SUITES[0]
    port = free_port()
    results = {}
    for value in (33, 32):
        block = server_block(port, certs, site.root, suite, SslConfCommands(max_pipelines=32),
                             conf=str(conf)).replace("MaxPipelines 32;", f"MaxPipelines {value};")
        ng = Nginx(tmp_path / f"nginx-{value}", block, env=penv(prefix, conf), port=port,
                   stats=False)
        results[value] = ng.test()
    bad, good = results[33], results[32]
    assert bad.returncode != 0, bad.stderr
    assert 'SSL_CONF_cmd("MaxPipelines", "33") failed' in bad.stderr, bad.stderr
    assert "MaxPipelines must be a number from 1 to 32" in bad.stderr, bad.stderr
    assert "test failed" in bad.stderr, bad.stderr
    assert good.returncode == 0 and "test is successful" in good.stderr, good.stderr


# --------------------------------------------- curl reads, pipelined

def curl_patched_env(prefix, conf, stats):
    return penv(prefix, conf, PIPETLS_STATS=stats)


@pytest.mark.parametrize("pipelines", [8, None], ids=["MaxPipelines8", "control"])
def test_curl_reads_pipelined_from_s_server(tmp_path, prefix, openssl35, engine35, certs,
                                            pipelines):
    """Debian's curl on the patched libraries, OPENSSL_CONF with MaxPipelines
    8 and ReadBufferLength 1 MiB in system_default (``pipetls config
    --max-pipelines 8 --read-buf 1M``), downloads 16 MiB from a stock
    ``openssl s_server -tls1_2`` (its stdin: an HTTP/1.0 response; it
    closes the connection after it): data intact, curl's engine batches of
    more than one record on the read side. Control: ReadBufferLength alone,
    no batch of more than one."""
    openssl = stock_openssl(prefix)
    size = 16 * MIB
    body = os.urandom(size)
    response = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body
    conf = engine_conf(tmp_path / "curl.cnf", engine35,
                       SslConfCommands(max_pipelines=pipelines, read_buffer_length=MIB))
    stats = tmp_path / "curl.stats"
    port = free_port()
    server = [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", "-quiet",
              "-cert", str(certs.cert), "-key", str(certs.key), "-tls1_2",
              "-cipher", SUITES[0].cipher]
    client = curl_argv(port, certs, "file", "-o", "-")
    # stream_exchange feeds the client's stdin: curl ignores it (no upload)
    res = stream_exchange(server, client, port=port, server_send=response,
                          client_send=b"x", server_env=stock_env(),
                          client_env=curl_patched_env(prefix, conf, stats), timeout=300)
    logs = f"--- s_server\n{res.server.stderr}\n--- curl\n{res.client.stderr[-3000:]}"
    assert res.client.returncode == 0, logs
    assert res.client.sha256 == hashlib.sha256(body).hexdigest(), logs
    st = only_block(read_stats_file(stats), logs)
    assert st.bytes >= size, st
    if pipelines:
        assert st.pipelined_batches > 0 and max(st.hist) > 1, st
        assert max(st.hist) <= pipelines, st
    else:
        assert st.pipelined_batches == 0, st


@pytest.mark.parametrize("pipelines", [8, None], ids=["MaxPipelines8", "control"])
def test_curl_reads_tls13_pipelined_from_s_server(tmp_path, prefix, openssl35, module35, certs,
                                                  pipelines):
    """TLS 1.3 reads: Debian's curl on the patched libraries with the
    provider's openssl.cnf (``pipetls config --provider --max-pipelines 8
    --read-buf 1M``) downloads 16 MiB from a stock ``openssl s_server
    -tls1_3``: data intact, the provider's read batches of more than one
    record.  Control: ReadBufferLength alone, the provider's ciphers carry
    the records one at a time."""
    openssl = stock_openssl(prefix)
    size = 16 * MIB
    body = os.urandom(size)
    response = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body
    conf = tmp_path / "curl.cnf"
    conf.write_text(provider_conf_text(
        str(module35), None, SslConfCommands(max_pipelines=pipelines, read_buffer_length=MIB)))
    stats = tmp_path / "curl.stats"
    port = free_port()
    suite = SUITES13[0]
    server = [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", "-quiet",
              "-cert", str(certs.cert), "-key", str(certs.key), "-tls1_3",
              "-ciphersuites", suite.cipher]
    client = curl_argv(port, certs, "file", "-o", "-", "--tlsv1.3")
    res = stream_exchange(server, client, port=port, server_send=response,
                          client_send=b"x", server_env=stock_env(),
                          client_env=curl_patched_env(prefix, conf, stats), timeout=300)
    logs = f"--- s_server\n{res.server.stderr}\n--- curl\n{res.client.stderr[-3000:]}"
    assert res.client.returncode == 0, logs
    assert re.search(r"SSL connection using TLSv1\.3 / %s" % suite.cipher, res.client.stderr), logs
    assert res.client.sha256 == hashlib.sha256(body).hexdigest(), logs
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, f"expected curl's provider statistics, got {blocks}\n{logs}"
    st = blocks[0]
    assert st.failed_batches == 0, st
    if pipelines:
        assert st.pipelined_batches > 0 and 1 < max(st.hist) <= pipelines, st
        assert sum(k * n for k, n in st.hist.items() if k > 1) > size // RECORD // 2, st
    else:
        assert st.stream_bytes >= size, st
        assert st.pipelined_batches == 0 and max(st.hist, default=1) == 1, st


def test_curl_reads_pipelined_from_nginx(tmp_path, prefix, openssl35, engine35, certs, site):
    """The same curl against Debian's nginx on the system's own libraries
    (no engine, nothing pipelined there): read batches of more than one
    record in curl, data intact.  ``Connection: close``: with read-ahead
    the last records of a response can wait in libssl's buffer, which curl
    does not look at (it asks SSL_pending, not SSL_has_pending), until the
    server closes a kept-alive connection (docs/howto-nginx.md)."""
    size, sha = site.files["big"]
    port = free_port()
    block = server_block(port, certs, site.root, SUITES[0], SslConfCommands())
    ng = Nginx(tmp_path / "nginx", block, env=stock_env(), port=port, stats=False)
    conf = engine_conf(tmp_path / "curl.cnf", engine35,
                       SslConfCommands(max_pipelines=8, read_buffer_length=MIB))
    stats = tmp_path / "curl.stats"
    with ng:
        rc, got, n, err = hash_stdout(
            curl_argv(port, certs, "big", "-H", "Connection: close"),
            env=curl_patched_env(prefix, conf, stats))
        assert ng.stop() == 0, ng.logs()
    assert rc == 0 and (n, got) == (size, sha), f"curl rc={rc} {n} bytes\n{err[-3000:]}"
    st = only_block(read_stats_file(stats), err[-3000:])
    assert st.bytes >= size, st
    assert st.pipelined_batches > 0 and 1 < max(st.hist) <= 8, st


# -------------------------------------------- a Python asyncio service

ASYNCIO_SERVER = r'''
import asyncio, os, ssl, sys

port, path, certdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]

async def handle(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    size = os.path.getsize(path)
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            writer.write(chunk)
            await writer.drain()
    writer.close()
    await writer.wait_closed()
    server.close()

async def main():
    global server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(certdir, "server.pem"), os.path.join(certdir, "server.key"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    print("VERSION", ssl.OPENSSL_VERSION, flush=True)
    async with server:
        try:
            await server.serve_forever()
        except asyncio.CancelledError:
            pass

asyncio.run(main())
'''


@pytest.mark.parametrize("pipelines", [8, None], ids=["MaxPipelines8", "control"])
def test_python_asyncio_service_pipelines_from_config(tmp_path, prefix, openssl35, engine35,
                                                      certs, site, pipelines):
    """An asyncio TLS service (stdlib ssl over memory BIOs), no pipetls
    import, on the patched libraries: MaxPipelines 8 in OPENSSL_CONF alone
    makes its writes batches of 8 records; stock curl gets the file intact.
    Control: no batch of more than one."""
    size, sha = site.files["small"]
    script = tmp_path / "service.py"
    script.write_text(ASYNCIO_SERVER)
    conf = engine_conf(tmp_path / "py.cnf", engine35,
                       SslConfCommands(max_pipelines=pipelines) if pipelines else None)
    stats = tmp_path / "py.stats"
    port = free_port()
    server = subprocess.Popen([sys.executable, str(script), str(port), str(site.root / "small"),
                               str(certs.dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL,
                              env=penv(prefix, conf, PIPETLS_STATS=stats))
    try:
        wait_listening(port, 30.0, server)
        assert_only_patched(mapped_ssl_libs(server.pid), prefix)
        rc, got, n, err = hash_stdout(curl_argv(port, certs, "small"), env=stock_env())
        out, serr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, serr
    assert "VERSION OpenSSL 3.5." in out, out
    assert rc == 0 and (n, got) == (size, sha), f"curl rc={rc}\n{err[-3000:]}\n{serr}"
    st = only_block(read_stats_file(stats), serr)
    if pipelines:
        assert st.hist.get(8, 0) >= size // (8 * RECORD) // 2, st
    else:
        assert st.pipelined_batches == 0, st
