"""SSL_MODE_ASYNC with the engine: a pipelined batch inside an ASYNC job
goes to the lanes while the job pauses (core/async.c).

The stock CLI first: ``openssl s_server -async`` / ``s_client -async`` with
the engine against a stock peer, 32 MiB each way, and the engine's counters
must show batches that went to the lanes alone and paused jobs, with every
pause resumed (the CLI resumes a job when its wait fd is readable).
"""

from __future__ import annotations

import hashlib
import os

import pytest

from support.net import free_port
from support.peers import OPENSSL, stream_exchange
from support.stats import read_stats_file

MIB = 1 << 20
BULK = 32 * MIB
PIPELINE_OPTS = ["-max_pipelines", "8", "-split_send_frag", "4096",
                 "-read_buf", "131072"]
TLS12 = ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]


@pytest.fixture(scope="module")
def blobs():
    a, b = os.urandom(BULK), os.urandom(BULK)
    return (a, hashlib.sha256(a).hexdigest()), (b, hashlib.sha256(b).hexdigest())


def cli_pair(tmp_path, certs, engine_path, engine_side, server_send, client_send, engine_extra):
    port = free_port()
    stats = tmp_path / f"stats-{engine_side}-{port}.txt"
    server = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}",
              "-naccept", "1", "-quiet", "-cert", certs.cert, "-key", certs.key, *TLS12]
    client = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
              "-CAfile", certs.ca, "-verify_return_error",
              "-verify_hostname", "localhost", *TLS12]
    opts = ["-engine", engine_path, *PIPELINE_OPTS, *engine_extra]
    env = {"PIPETLS_STATS": str(stats)}
    if engine_side == "server":
        server += opts
        envs = {"server_env": env}
    else:
        client += opts
        envs = {"client_env": env}
    res = stream_exchange(server, client, port=port, server_send=server_send,
                          client_send=client_send, timeout=180.0, **envs)
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    blocks = read_stats_file(stats)
    assert len(blocks) == 1, logs
    return res, blocks[0], logs


@pytest.mark.parametrize("engine_side", ["server", "client"])
def test_cli_async_bulk_both_ways(tmp_path, certs, engine_path, blobs, engine_side):
    """32 MiB each way, ``-async`` on the engine side: byte-exact, and the
    batches went to the lanes in paused jobs."""
    (s_data, s_hash), (c_data, c_hash) = blobs
    res, st, logs = cli_pair(tmp_path, certs, engine_path, engine_side, s_data, c_data,
                             ["-async"])
    assert res.client.sha256 == s_hash, "server -> client data differs\n" + logs
    assert res.server.sha256 == c_hash, "client -> server data differs\n" + logs
    assert st.failed_batches == 0, st
    assert st.pipelined_batches > 0, st
    assert st.async_batches > 0, st
    assert st.async_pauses > 0, st
    # a job pauses only to be resumed: the CLI frees no paused connection
    assert st.async_resumes == st.async_pauses, st
    assert st.async_paused_ns > 0, st
    # every batch that went to the lanes alone is counted as a batch too
    assert st.async_batches <= st.pipelined_batches, st


def test_cli_without_async_never_pauses(tmp_path, certs, engine_path, blobs):
    """The same exchange without ``-async``: no job, so no batch is posted
    and nothing pauses (the counters can tell the two apart)."""
    (s_data, s_hash), (c_data, c_hash) = blobs
    res, st, logs = cli_pair(tmp_path, certs, engine_path, "server", s_data[:4 * MIB],
                             c_data[:4 * MIB], [])
    assert res.client.sha256 == hashlib.sha256(s_data[:4 * MIB]).hexdigest(), logs
    assert st.pipelined_batches > 0, st
    assert st.async_batches == 0, st
    assert st.async_pauses == 0, st
