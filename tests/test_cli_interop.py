"""The engine in the stock ``openssl`` CLI, against a stock peer.

One side runs ``openssl s_server``/``s_client -engine pipetls.so -max_pipelines 8
-split_send_frag 4096 -read_buf 131072`` with ``PIPETLS_STATS=<file>``; the
other side is a plain openssl without the engine. 32 MiB of random data
cross in each direction through the processes' stdin/stdout (``-quiet``) and
the SHA-256 of what arrived must equal what was sent.

The engine's counters do not tell reads from writes, so the directions are
proven apart: in an ``engine_receives`` run the engine side sends at most a
3-byte token besides its handshake Finished (single records), so any
pipelined batch is a pipelined *read*; in an ``engine_sends`` run the peer
sends at most that token, so the pipelined batches are *writes*.

Write batch sizes follow from the CLI: s_server writes what it reads from
stdin in 16 KiB SSL_write calls, s_client in 8 KiB ones; with
split_send_frag 4096 that is 4 and 2 records per write.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pytest

from support.net import free_port
from support.peers import OPENSSL, stream_exchange
from support.stats import read_stats_file

MIB = 1 << 20
BULK = 32 * MIB
TOKEN = b"go\n"
PIPELINE_OPTS = ["-max_pipelines", "8", "-split_send_frag", "4096",
                 "-read_buf", "131072"]


@dataclass(frozen=True)
class Suite:
    cipher: str
    extra: tuple = ()       # options for both sides
    what: str = ""
    # AEAD and stitched ciphers get every record's TLS AAD, so the engine
    # counts every record as one. Plain CBC (EtM) gets a bare EVP_Cipher call
    # for a lone record -- not recognisable as TLS -- which the engine counts
    # as "stream" use; only batches of K > 1 are records there.
    counts_all: bool = True

    def __str__(self) -> str:
        return self.cipher + ("+" + "".join(self.extra).lstrip("-") if self.extra else "")


TLS12_SUITES = [
    Suite("ECDHE-RSA-AES128-GCM-SHA256", what="AES-128-GCM"),
    Suite("ECDHE-RSA-AES256-GCM-SHA384", what="AES-256-GCM"),
    Suite("ECDHE-RSA-CHACHA20-POLY1305", what="ChaCha20-Poly1305"),
    # Encrypt-then-MAC off: libssl uses the stitched AES-128-CBC-HMAC-SHA1.
    Suite("AES128-SHA", ("-no_etm",), what="AES-128-CBC-HMAC-SHA1 (stitched)"),
    # EtM on (the default): libssl MACs, the engine's AES-256-CBC encrypts.
    Suite("AES256-SHA256", what="AES-256-CBC, EtM", counts_all=False),
]


@pytest.fixture(scope="module")
def blobs():
    """Two different 32 MiB random payloads and their SHA-256."""
    a, b = os.urandom(BULK), os.urandom(BULK)
    return {"a": (a, hashlib.sha256(a).hexdigest()),
            "b": (b, hashlib.sha256(b).hexdigest())}


def run_pair(tmp_path, certs, engine_path, *, engine_side, version_opts,
             server_send=b"", client_send=b"", timeout=120.0):
    """One connection: engine on ``engine_side`` ("server"/"client"), a stock
    openssl on the other. Returns (StreamResult, list of stats blocks)."""
    port = free_port()
    stats = tmp_path / f"stats-{engine_side}-{port}.txt"
    server = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}",
              "-naccept", "1", "-quiet", "-cert", certs.cert, "-key", certs.key,
              *version_opts]
    client = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
              "-CAfile", certs.ca, "-verify_return_error",
              "-verify_hostname", "localhost", *version_opts]
    engine_opts = ["-engine", engine_path, *PIPELINE_OPTS]
    stats_env = {"PIPETLS_STATS": str(stats)}
    if engine_side == "server":
        server += engine_opts
        envs = {"server_env": stats_env}
    else:
        client += engine_opts
        envs = {"client_env": stats_env}

    res = stream_exchange(server, client, port=port, server_send=server_send,
                          client_send=client_send, timeout=timeout, **envs)
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    exits = (res.server.returncode, res.client.returncode)
    assert exits == (0, 0), f"exit status (server, client)\n{logs}"
    received = (res.server.received, res.client.received)
    assert received == (len(client_send), len(server_send)), \
        f"bytes received (server, client)\n{logs}"
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, (
        f"expected one stats block from the engine ({engine_side}) in {stats}, "
        f"got {len(blocks)}\n{logs}")
    return res, blocks[0]


def tls12(suite: Suite) -> list:
    return ["-tls1_2", "-cipher", suite.cipher, *suite.extra]


def assert_sane(st, suite: Suite, min_bytes: int) -> None:
    assert st.failed_batches == 0, st
    assert st.batches > 0, st
    if suite.counts_all:
        assert st.bytes >= min_bytes, st
    else:
        assert st.bytes + st.stream_bytes >= min_bytes, st
    assert sum(st.hist.values()) == st.batches, st
    assert sum(k * n for k, n in st.hist.items()) == st.records, st
    assert st.pipelined_batches == sum(n for k, n in st.hist.items() if k > 1), st


@pytest.mark.parametrize("engine_side", ["server", "client"])
@pytest.mark.parametrize("suite", TLS12_SUITES, ids=str)
def test_bulk_both_ways(tmp_path, certs, engine_path, blobs, suite, engine_side):
    """32 MiB each way through the engine; byte-exact; batches of K > 1."""
    (s_data, s_hash), (c_data, c_hash) = blobs["a"], blobs["b"]
    res, st = run_pair(tmp_path, certs, engine_path, engine_side=engine_side,
                       version_opts=tls12(suite),
                       server_send=s_data, client_send=c_data)
    assert res.client.sha256 == s_hash, "server -> client data differs"
    assert res.server.sha256 == c_hash, "client -> server data differs"
    assert_sane(st, suite, 2 * BULK)
    assert any(k > 1 and n > 0 for k, n in st.hist.items()), st
    assert st.pipelined_batches > 0, st


@pytest.mark.parametrize("direction", ["engine_receives", "engine_sends"])
@pytest.mark.parametrize("engine_side", ["server", "client"])
@pytest.mark.parametrize("suite", TLS12_SUITES, ids=str)
def test_one_direction(tmp_path, certs, engine_path, blobs, suite, engine_side,
                       direction):
    """32 MiB one way: pipelined batches on the read path and on the write
    path, each seen alone."""
    data, digest = blobs["a"]
    engine_sends = direction == "engine_sends"
    server_sends = engine_sends == (engine_side == "server")
    # The client always speaks first (see stream_exchange): when the server
    # is the sender, the client sends only this token -- one record.
    res, st = run_pair(tmp_path, certs, engine_path, engine_side=engine_side,
                       version_opts=tls12(suite),
                       server_send=data if server_sends else b"",
                       client_send=TOKEN if server_sends else data)
    got = res.client if server_sends else res.server
    assert got.sha256 == digest, "data differs"
    assert_sane(st, suite, BULK)
    assert st.pipelined_batches > 0, (
        f"no pipelined {'write' if engine_sends else 'read'} batches: {st}")
    if engine_sends:
        # Every write of 8 or 16 KiB is split into 4096-byte records.
        records_per_write = 4 if engine_side == "server" else 2
        assert st.hist.get(records_per_write, 0) > 0, st


def test_tls13_not_pipelined(tmp_path, certs, engine_path, blobs):
    """TLS 1.3 through the engine's AES-256-GCM: correct data; libssl 3.0 hands
    TLS 1.3 records over one at a time through the plain EVP calls (IV, AAD,
    update, final), which the engine forwards to OpenSSL's cipher and counts
    as "stream" use: no batch of more than one record."""
    n = 4 * MIB
    s_data, c_data = blobs["a"][0][:n], blobs["b"][0][:n]
    res, st = run_pair(tmp_path, certs, engine_path, engine_side="server",
                       version_opts=["-tls1_3", "-ciphersuites",
                                     "TLS_AES_256_GCM_SHA384"],
                       server_send=s_data, client_send=c_data)
    assert res.client.sha256 == hashlib.sha256(s_data).hexdigest()
    assert res.server.sha256 == hashlib.sha256(c_data).hexdigest()
    assert st.failed_batches == 0, st
    assert st.pipelined_batches == 0, st
    assert set(st.hist) <= {1}, st
    # Both directions' records went through the engine's cipher.
    assert st.stream_bytes >= 2 * n, st
