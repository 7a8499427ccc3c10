"""Patch 0004 (openssl_patches/): the engine's TLS 1.2 writes on the
patched libssl are encrypted out of place.

libssl no longer copies the plaintext of a pipelined write into its write
buffer before the batch (serially): it reserves the room and hands the
caller's buffers to the ENGINE cipher (EVP_CTRL_SET_PIPELINE_PLAINTEXT_BUFS);
the engine's AES-GCM, ChaCha20-Poly1305 and stitched CBC-HMAC lanes copy
it into the records (or, for MULTIBLOCK groups, read it where it is), in
parallel (``plaintext_records`` in the statistics). A cipher with the flag
EVP_CIPH_FLAG_PIPELINE_PLAINTEXT that refuses the ctrl (the engine's
``OUT_OF_PLACE = 0``, or inside an ASYNC job) gets it copied by libssl's
fallback, after the room was reserved.

The patched ``openssl s_server`` (pipelining from openssl.cnf, patch 0001)
sends 16 MiB in 16 KiB writes split into batches of 4 records
(SplitSendFragment 4096) to the system's stock OpenSSL 3.0 ``s_client``,
which checks every record; the SHA-256 of what it received must be that of
what was sent.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from support.net import free_port
from support.patched import penv
from support.peers import OPENSSL, stream_exchange
from support.stats import read_stats_file

pytestmark = pytest.mark.patched

BULK = 16 << 20
TOKEN = b"go\n"
AEAD = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305"]


def conf(path: Path, engine: str, out_of_place: int, cbc_hmac_mode: str = "auto") -> Path:
    path.write_text("\n".join([
        "config_diagnostics = 1", "openssl_conf = openssl_init", "",
        "[openssl_init]", "engines = engine_section", "ssl_conf = ssl_module", "",
        "[engine_section]", "pipetls = pipetls_section", "",
        "[pipetls_section]", "engine_id = pipetls", f"dynamic_path = {engine}",
        "THREADS = 2", f"OUT_OF_PLACE = {out_of_place}", f"CBC_HMAC_MODE = {cbc_hmac_mode}",
        "init = 1",
        "default_algorithms = CIPHERS", "",
        "[ssl_module]", "system_default = tls_system_default", "",
        "[tls_system_default]", "MaxPipelines = 8", "SplitSendFragment = 4096", ""]))
    return path


def send_bulk(tmp_path, prefix, openssl35, certs, engine, cipher, out_of_place,
              extra_client=(), extra_server=(), cbc_hmac_mode="auto"):
    """Patched s_server (engine, statistics) sends BULK to stock s_client;
    returns the server's statistics."""
    port = free_port()
    stats = tmp_path / f"stats-{port}.txt"
    data = os.urandom(BULK)
    cnf = conf(tmp_path / f"oop-{out_of_place}-{cbc_hmac_mode}.cnf", engine, out_of_place,
               cbc_hmac_mode)
    server = [openssl35, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
              "-quiet", "-cert", certs.cert, "-key", certs.key, "-tls1_2", "-cipher", cipher,
              *extra_server]
    client = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
              "-CAfile", certs.ca, "-verify_return_error", "-tls1_2", "-cipher", cipher,
              *extra_client]
    client_env = {k: v for k, v in os.environ.items()
                  if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "OPENSSL_CONF")}
    client_env["OPENSSL_CONF"] = os.devnull
    res = stream_exchange(server, client, port=port, server_send=data, client_send=TOKEN,
                          server_env=penv(prefix, cnf, PIPETLS_STATS=stats),
                          client_env=client_env, timeout=180)
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    assert res.client.sha256 == hashlib.sha256(data).hexdigest(), logs
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, logs
    st = blocks[0]
    assert st.failed_batches == 0 and st.bytes >= BULK, st
    assert st.hist.get(4, 0) >= BULK // (16 << 10) // 2, st  # 16 KiB writes: 4 records
    return st


def batched_records(st) -> int:
    return sum(k * n for k, n in st.hist.items() if k > 1)


@pytest.mark.parametrize("cipher", AEAD)
def test_aead_writes_read_the_callers_buffer(tmp_path, prefix, openssl35, engine35, certs,
                                             cipher):
    """Every record of every pipelined write took its plaintext from the
    caller's buffer (the client only sends a token: every batch is a write)."""
    st = send_bulk(tmp_path, prefix, openssl35, certs, engine35, cipher, 1)
    assert st.plaintext_records == batched_records(st) > 0, st


@pytest.mark.parametrize("cipher", AEAD)
def test_out_of_place_off_lets_libssl_copy(tmp_path, prefix, openssl35, engine35, certs,
                                           cipher):
    """Control: OUT_OF_PLACE 0, the ctrl is refused and libssl copies the
    plaintext itself (its fallback): same batches, data intact, no record
    read from the caller's buffer by the lanes."""
    st = send_bulk(tmp_path, prefix, openssl35, certs, engine35, cipher, 0)
    assert st.plaintext_records == 0 and batched_records(st) > 0, st


@pytest.mark.parametrize("mode", ["multiblock", "stitched"])
def test_cbc_hmac_writes_read_the_callers_buffer(tmp_path, prefix, openssl35, engine35, certs,
                                                 mode):
    """The engine's stitched CBC-HMAC ciphers take the plaintext buffers
    too (without encrypt-then-MAC, where libssl uses them): MULTIBLOCK
    groups read the caller's consecutive plaintexts as they are, single
    stitched records get theirs moved after the explicit IV on the lane.
    Every record of every batch, and stock decrypts every record."""
    st = send_bulk(tmp_path, prefix, openssl35, certs, engine35, "AES128-SHA", 1,
                   extra_client=["-no_etm"], cbc_hmac_mode=mode)
    assert st.plaintext_records == batched_records(st) > 0, st
    by_path = {"multiblock": st.cbc_hmac_mb4 + st.cbc_hmac_mb8, "stitched": st.cbc_hmac_stitched}
    assert by_path[mode] >= batched_records(st), st


def test_cbc_hmac_out_of_place_off_lets_libssl_copy(tmp_path, prefix, openssl35, engine35,
                                                    certs):
    """Control: OUT_OF_PLACE 0, libssl copies the CBC-HMAC plaintext itself."""
    st = send_bulk(tmp_path, prefix, openssl35, certs, engine35, "AES128-SHA", 0,
                   extra_client=["-no_etm"])
    assert st.plaintext_records == 0 and batched_records(st) > 0, st
    assert st.cbc_hmac_stitched + st.cbc_hmac_mb4 + st.cbc_hmac_mb8 >= batched_records(st), st


def test_async_jobs_keep_the_copy(tmp_path, prefix, openssl35, engine35, certs):
    """s_server -async (SSL_MODE_ASYNC): a batch may pause its job, and
    SSL_write returns while the lanes run; the caller's buffer is not
    libssl's to lend then, so the engine refuses the plaintext buffers there
    and libssl copies, while the batches still go to the lanes paused."""
    st = send_bulk(tmp_path, prefix, openssl35, certs, engine35, AEAD[0], 1,
                   extra_server=["-async"])
    assert st.plaintext_records == 0 and batched_records(st) > 0, st
    assert st.async_batches > 0, st
