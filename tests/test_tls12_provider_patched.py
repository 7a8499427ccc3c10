"""Patch 0003: the patched libssl 3.5 pipelines TLS 1.2 AEAD suites through
the pipetls provider.

The patched ``openssl s_server`` / ``s_client`` loads the pipetls provider
from an openssl.cnf (``default_properties = ?provider=pipetls``, so libssl's
AES-GCM and ChaCha20-Poly1305 are the provider's) and gets
``-max_pipelines`` / ``-split_send_frag`` on its command line; its peer is
the system's stock OpenSSL 3.0 (``openssl s_client`` / ``s_server``) or
GnuTLS' ``gnutls-cli``, which know nothing of pipelining. What happens is
checked from outside the process: the records on the wire (support.relay),
decrypted from the key log with `cryptography` (support.wire, written from
the RFCs), and the provider's statistics (``PIPETLS_STATS``).

The reference for damaged input is the same patched build with the
provider and ``-max_pipelines 1`` (libssl then works one record at a time,
through the cipher's TLS mode, as stock 3.5 does), run in the same test on
the same damage.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import programs
from support.net import free_port, wait_listening
from support.patched import assert_only_patched, mapped_ssl_libs, penv
from support.peers import OPENSSL, stream_exchange
from support.records import ALERT, APPLICATION_DATA
from support.relay import BatchTamper, Relay, flip, set_len
from support.stats import read_stats_file
from support.wire import WireError, WireSession

pytestmark = pytest.mark.patched

MIB = 1 << 20
BULK = 32 * MIB
TOKEN = b"go\n"
SUITES = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
          "ECDHE-RSA-CHACHA20-POLY1305"]
TAGLEN = 16


# ------------------------------------------------------------------ helpers

def provider_conf(path: Path, module: Path) -> Path:
    """An openssl.cnf that loads the pipetls provider beside the default one
    and makes it the preferred implementation of its algorithms."""
    path.write_text("\n".join([
        "config_diagnostics = 1",
        "openssl_conf = openssl_init", "",
        "[openssl_init]", "providers = provider_sect", "alg_section = evp_props", "",
        "[provider_sect]", "default = default_sect", "pipetls = pipetls_sect", "",
        "[default_sect]", "activate = 1", "",
        "[pipetls_sect]", f"module = {module}", "activate = 1", "THREADS = 2", "",
        "[evp_props]", "default_properties = ?provider=pipetls", ""]))
    return path


def patched_server(openssl35, certs, port, suite, *extra):
    return [openssl35, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
            "-quiet", "-cert", certs.cert, "-key", certs.key, "-tls1_2",
            "-cipher", suite, *extra]


def stock_client(port, suite, *extra):
    """The stock (system OpenSSL 3.0) s_client."""
    return [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-tls1_2",
            "-cipher", suite, *extra]


def pipelined(st) -> int:
    """Pipeline updates of more than one record."""
    return sum(n for k, n in st.hist.items() if k > 1)


def pipelined_records(st) -> int:
    return sum(k * n for k, n in st.hist.items() if k > 1)


def one_stats(path: Path, logs: str):
    blocks = read_stats_file(path)
    assert len(blocks) == 1, f"expected one stats block in {path}\n{logs}"
    return blocks[0]


class Driven:
    """A patched s_server and a stock s_client through a Relay, with the
    server's stdin written by the test (each write one SSL_write of
    s_server, as the test pauses between them)."""

    def __init__(self, srv_argv, env, suite, relay_hooks=None):
        self.port = int(srv_argv[srv_argv.index("-accept") + 1].rsplit(":", 1)[1])
        self.srv = subprocess.Popen(srv_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env)
        wait_listening(self.port, 10.0, self.srv)
        self.relay = Relay(self.port, **(relay_hooks or {})).start()
        self.cli = subprocess.Popen(stock_client(self.relay.port, suite),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        self.out = {"srv": bytearray(), "cli": bytearray()}
        self.err = {"srv": b"", "cli": b""}
        self._threads = []
        for name, proc in (("srv", self.srv), ("cli", self.cli)):
            for what, pipe in (("out", proc.stdout), ("err", proc.stderr)):
                t = threading.Thread(target=self._drain, args=(name, what, pipe), daemon=True)
                t.start()
                self._threads.append(t)

    def _drain(self, name, what, pipe):
        for chunk in iter(lambda: os.read(pipe.fileno(), 1 << 20), b""):
            if what == "out":
                self.out[name] += chunk
            else:
                self.err[name] += chunk

    def wait_for(self, name, n, timeout=60.0):
        proc = self.srv if name == "srv" else self.cli
        end = time.monotonic() + timeout
        while len(self.out[name]) < n and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.01)
        return len(self.out[name]) >= n

    def send(self, name, data):
        proc = self.srv if name == "srv" else self.cli
        proc.stdin.write(data)
        proc.stdin.flush()

    def finish(self, timeout=60.0):
        for proc in (self.srv, self.cli):
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in (self.srv, self.cli):
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for t in self._threads:
            t.join(10)
        self.relay.join()
        return self

    def session(self, keylog: Path, strict: bool = True) -> WireSession:
        return WireSession.from_capture(bytes(self.relay.captured["c2s"]),
                                        bytes(self.relay.captured["s2c"]),
                                        keylog.read_text().splitlines(), strict=strict)

    def logs(self) -> str:
        return (f"--- server rc={self.srv.returncode}\n{self.err['srv'].decode(errors='replace')}\n"
                f"--- client rc={self.cli.returncode}\n{self.err['cli'].decode(errors='replace')}")


def check_exchange(res, server_send, client_send, stats, direction, bulk, frag):
    """Both exits clean, both SHA-256 intact; the patched side's provider
    batched most of the ``bulk`` bytes it moved in ``direction``: records of
    at most ``frag`` bytes (its split_send_fragment) when it writes, 16 KiB
    (the peer's) when it reads."""
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    assert res.server.sha256 == hashlib.sha256(client_send).hexdigest(), logs
    assert res.client.sha256 == hashlib.sha256(server_send).hexdigest(), logs
    st = one_stats(stats, logs)
    assert st.failed_batches == 0, st
    assert pipelined(st) > 0, f"no batch of more than one record ({direction}): {st}"
    # each record is counted twice: its AAD update and its data update
    least = bulk // (frag if direction == "write" else 16384) // 2
    assert pipelined_records(st) > least, st
    return logs


# --------------------------------------------------------------------- bulk

@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", ["write", "read"])
@pytest.mark.parametrize("role", ["server", "client"])
def test_bulk_against_stock_30(tmp_path, prefix, openssl35, module35, certs, suite,
                               direction, role):
    """32 MiB from (write) or to (read) the pipelined patched program
    (s_server or s_client), the stock 3.0 s_client or s_server on the other
    end: data intact, and the provider batched the records of that direction
    (the other direction carries one short record only)."""
    port = free_port()
    stats = tmp_path / "stats.txt"
    env = penv(prefix, provider_conf(tmp_path / "prov.cnf", module35), PIPETLS_STATS=stats)
    pipe_opts = ["-max_pipelines", "8", "-split_send_frag", "4096"]
    bulk = os.urandom(BULK)
    if role == "server":
        srv = patched_server(openssl35, certs, port, suite, *pipe_opts)
        cli = stock_client(port, suite)
        server_send, client_send = (bulk, TOKEN) if direction == "write" else (b"", bulk)
        envs = {"server_env": env}
    else:
        srv = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
               "-quiet", "-cert", certs.cert, "-key", certs.key, "-tls1_2", "-cipher", suite]
        cli = [openssl35, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-tls1_2",
               "-cipher", suite, *pipe_opts]
        server_send, client_send = (bulk, TOKEN) if direction == "read" else (TOKEN, bulk)
        envs = {"client_env": env}
    res = stream_exchange(srv, cli, port=port, server_send=server_send,
                          client_send=client_send, timeout=300, **envs)
    check_exchange(res, server_send, client_send, stats, direction, BULK, 4096)


@pytest.mark.parametrize("suite", SUITES)
def test_bulk_both_ways_32mib(tmp_path, prefix, openssl35, module35, certs, suite):
    """32 MiB each way at once between the pipelined patched s_server and
    the stock 3.0 s_client: both SHA-256 match, batches were pipelined."""
    a, b = os.urandom(BULK), os.urandom(BULK)
    port = free_port()
    stats = tmp_path / "stats.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    srv = patched_server(openssl35, certs, port, suite, "-max_pipelines", "8",
                         "-split_send_frag", "4096")
    res = stream_exchange(srv, stock_client(port, suite), port=port, server_send=a,
                          client_send=b, server_env=penv(prefix, conf, PIPETLS_STATS=stats),
                          timeout=400)
    logs = f"{res.server.stderr}\n{res.client.stderr}"
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    assert res.server.sha256 == hashlib.sha256(b).hexdigest(), logs
    assert res.client.sha256 == hashlib.sha256(a).hexdigest(), logs
    st = one_stats(stats, logs)
    assert st.failed_batches == 0 and pipelined(st) > 0, st


GNUTLS_CIPHER = {
    "ECDHE-RSA-AES128-GCM-SHA256": "AES-128-GCM",
    "ECDHE-RSA-AES256-GCM-SHA384": "AES-256-GCM",
    "ECDHE-RSA-CHACHA20-POLY1305": "CHACHA20-POLY1305",
}


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", ["write", "read"])
def test_bulk_against_gnutls(tmp_path, prefix, openssl35, module35, certs, suite,
                             direction):
    """The same against GnuTLS' gnutls-cli, TLS 1.2 with the one AEAD."""
    gnutls = programs.require("gnutls-cli")
    port = free_port()
    stats = tmp_path / "stats.txt"
    env = penv(prefix, provider_conf(tmp_path / "prov.cnf", module35), PIPETLS_STATS=stats)
    srv = patched_server(openssl35, certs, port, suite, "-max_pipelines", "8",
                         "-split_send_frag", "4096")
    bulk = os.urandom(BULK)
    server_send, client_send = (bulk, TOKEN) if direction == "write" else (b"", bulk)
    log = tmp_path / "gnutls.log"
    cipher = GNUTLS_CIPHER[suite]
    prio = f"NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+{cipher}"
    cli = [gnutls, "--insecure", "--priority", prio, f"--logfile={log}",
           "-p", str(port), "127.0.0.1"]
    res = stream_exchange(srv, cli, port=port, server_send=server_send,
                          client_send=client_send, server_env=env, timeout=300)
    logs = check_exchange(res, server_send, client_send, stats, direction, BULK, 4096)
    text = log.read_text(errors="replace")
    assert "TLS1.2" in text and cipher in text, text + logs


# --------------------------------------------------------------------- wire

SEED_WRITES = [2000, 2001, 4000, 4001, 6000, 6001]


def expected_split(n: int, split: int = 2000, pipes: int = 4):
    k = min(pipes, max(1, -(-n // split)))
    share, rem = divmod(n, k)
    return [share + (1 if i < rem else 0) for i in range(k)]


def _seed_run(tmp_path, prefix, openssl35, certs, conf, suite, pipes, label, bulk=b""):
    """Seed writes (then ``bulk`` both ways) from the patched s_server to a
    stock s_client; returns the Driven (finished), the data sent down, the
    wire session and the stats path."""
    port = free_port()
    keylog = tmp_path / f"keylog-{label}.txt"
    stats = tmp_path / f"stats-{label}.txt"
    argv = patched_server(openssl35, certs, port, suite, "-max_pipelines", str(pipes),
                          "-split_send_frag", "2000", "-keylogfile", keylog)
    d = Driven(argv, penv(prefix, conf, PIPETLS_STATS=stats), suite)
    sent = bytearray()
    try:
        d.send("cli", TOKEN + bulk)
        assert d.wait_for("srv", len(TOKEN) + len(bulk)), d.logs()
        assert d.srv.poll() is None, d.logs()
        assert_only_patched(mapped_ssl_libs(d.srv.pid), prefix)
        for n in SEED_WRITES:
            chunk = os.urandom(n)
            sent += chunk
            d.send("srv", chunk)
            assert d.wait_for("cli", len(sent)), d.logs()
            time.sleep(0.05)
        if bulk:
            down = os.urandom(len(bulk))
            sent += down
            d.send("srv", down)
            assert d.wait_for("cli", len(sent)), d.logs()
    finally:
        d.finish()
    assert bytes(d.out["cli"]) == bytes(sent), d.logs()
    assert bytes(d.out["srv"]) == TOKEN + bulk, d.logs()
    s = d.session(keylog)
    s.decrypt()
    return d, bytes(sent), s, stats


def _nonces(s: WireSession, name: str):
    recs = s.records[name]
    if s.suite.kind == "gcm":
        return [r.explicit for r in recs]
    return [r.seq for r in recs]     # ChaCha20-Poly1305: IV XOR seq


@pytest.mark.parametrize("suite", SUITES)
def test_wire_records_of_pipelined_writes(tmp_path, prefix, openssl35, module35, certs, suite):
    """split 2000 x 4 pipelines: writes of 2000, 2001, 4000, 4001, 6000, 6001
    bytes leave as 1, 2, 2, 3, 3, 4 records of equal shares, then 2 MiB each
    way. Every record of both directions is decrypted on its own from the
    key log (support.wire: the TLS 1.2 PRF, key block, AEAD from the RFCs);
    the records the pipelined side wrote carry the sequence number as their
    AES-GCM explicit nonce (so the nonces never repeat), the plaintext on
    the wire is the data, and the provider batched both directions."""
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    bulk = os.urandom(2 * MIB)
    d, sent, s, stats = _seed_run(tmp_path, prefix, openssl35, certs, conf, suite, 4,
                                  "pipetls", bulk)
    assert s.suite.name == suite
    sizes = [len(r.plaintext) for r in s.records["s2c"] if r.type == APPLICATION_DATA]
    want = [x for n in SEED_WRITES for x in expected_split(n)]
    assert sizes[:len(want)] == want
    assert max(sizes) <= 2000
    assert s.app_data("s2c") == sent
    assert s.app_data("c2s") == TOKEN + bulk
    for name in ("s2c", "c2s"):
        nonces = _nonces(s, name)
        assert len(set(nonces)) == len(nonces), f"{name}: a nonce repeats"
    if s.suite.kind == "gcm":
        # the pipelined side: every record it wrote, Finished included
        assert [r.explicit for r in s.records["s2c"]] == \
            [r.seq.to_bytes(8, "big") for r in s.records["s2c"]]
    for r in s.records["s2c"]:
        assert r.wire_len == len(r.plaintext) + (8 if s.suite.kind == "gcm" else 0) + TAGLEN
    st = one_stats(stats, d.logs())
    assert st.failed_batches == 0, st
    # 2 MiB read in 16 KiB records and written in 2000-byte ones, batched
    assert pipelined_records(st) > len(bulk) // 2000, st


def test_wire_reader_catches_a_bad_record(tmp_path, prefix, openssl35, module35, certs):
    """Negative control of the wire check: one flipped bit in a captured
    record of a pipelined write fails its decryption."""
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    d, _, s, _ = _seed_run(tmp_path, prefix, openssl35, certs, conf, SUITES[0], 4, "x")
    s2c = bytearray(d.relay.captured["s2c"])
    last = s.records["s2c"][-1]
    s2c[last.offset + 5 + 8 + 3] ^= 1
    bad = WireSession.from_capture(bytes(d.relay.captured["c2s"]), bytes(s2c),
                                   [], master=s.master)
    with pytest.raises(WireError):
        bad.decrypt_direction("s2c")


@pytest.mark.parametrize("suite", SUITES)
def test_one_pipeline_is_unchanged(tmp_path, prefix, openssl35, module35, certs, suite):
    """With max_pipelines 1 the provider loaded changes nothing on the wire:
    the same records (types and sizes, both directions) as the same build
    without the provider, the AES-GCM explicit nonces those of the cipher's
    TLS mode (a counter from a random start, not the sequence number), and
    no pipelined batch."""
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    runs = {}
    for label, c in (("provider", conf), ("default", None)):
        d, sent, s, stats = _seed_run(tmp_path, prefix, openssl35, certs, c, suite, 1, label)
        runs[label] = (s, stats, d)
    shapes = {label: {name: [(r.type, r.wire_len) for r in s.records[name]]
                      for name in ("c2s", "s2c")} for label, (s, _, _) in runs.items()}
    assert shapes["provider"] == shapes["default"]
    want = [x for n in SEED_WRITES for x in [2000] * (n // 2000) + ([n % 2000] if n % 2000 else [])]
    s = runs["provider"][0]
    assert [len(r.plaintext) for r in s.records["s2c"] if r.type == APPLICATION_DATA] == want
    if s.suite.kind == "gcm":
        for label, (s, _, _) in runs.items():
            ex = [int.from_bytes(r.explicit, "big") for r in s.records["s2c"]]
            assert ex == list(range(ex[0], ex[0] + len(ex))), label
            assert ex[0] != 0, label
    st = one_stats(runs["provider"][1], runs["provider"][2].logs())
    assert pipelined(st) == 0, st
    assert st.records == 0, st


# ------------------------------------------------------------------ tamper

def _op_cipher(recs, k):
    return recs[:k] + [flip(recs[k], len(recs[k]) // 2)] + recs[k + 1:], False


def _op_tag(recs, k):
    return recs[:k] + [flip(recs[k], len(recs[k]) - 1)] + recs[k + 1:], False


def _op_explicit_nonce(recs, k):
    return recs[:k] + [flip(recs[k], 5 + 7)] + recs[k + 1:], False


def _op_header_type(recs, k):
    b = bytearray(recs[k])
    b[0] = 22
    return recs[:k] + [bytes(b)] + recs[k + 1:], False


def _op_header_version(recs, k):
    return recs[:k] + [flip(recs[k], 2)] + recs[k + 1:], False


def _op_truncate(recs, k):
    return recs[:k] + [set_len(recs[k], recs[k][5:-1])] + recs[k + 1:], False


def _op_short(recs, k):
    return recs[:k] + [set_len(recs[k], recs[k][5:5 + 8])] + recs[k + 1:], False


def _op_drop(recs, k):
    return recs[:k] + recs[k + 1:], False


def _op_duplicate(recs, k):
    return recs[:k + 1] + [recs[k]] + recs[k + 1:], False


def _op_reorder(recs, k):
    r = list(recs)
    r[k], r[k + 1] = r[k + 1], r[k]
    return r, False


def _op_cut(recs, k):
    return recs[:k] + [recs[k][:len(recs[k]) // 2]], True


TAMPER = {"ciphertext": _op_cipher, "tag": _op_tag, "explicit-nonce": _op_explicit_nonce,
          "header-type": _op_header_type, "header-version": _op_header_version,
          "truncate": _op_truncate, "short": _op_short, "drop": _op_drop,
          "duplicate": _op_duplicate, "reorder": _op_reorder, "cut": _op_cut}


def _tampered_run(tmp_path, prefix, openssl35, certs, conf, suite, pipes, op, k, label):
    port = free_port()
    keylog = tmp_path / f"keylog-{label}.txt"
    stats = tmp_path / f"stats-{label}.txt"
    argv = patched_server(openssl35, certs, port, suite, "-max_pipelines", str(pipes),
                          "-keylogfile", keylog)
    # lead: the group before the damaged one is read as one batch of 4, so
    # the run is pipelined whatever the damage does to its own group (a
    # first record of outer type 22 forms no batch)
    hook = BatchTamper(n=4, k=k, op=op, batch=2, pause=0.2, lead=True)
    d = Driven(argv, penv(prefix, conf, PIPETLS_STATS=stats), suite, {"c2s": hook})
    data = os.urandom(16 * 16384)
    try:
        # s_client sends what one read of its stdin gives (8 KiB at most)
        for off in range(0, len(data), 16384):
            d.send("cli", data[off:off + 16384])
            time.sleep(0.01)
        end = time.monotonic() + 30
        while d.srv.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        d.finish(timeout=30)
    assert hook.done, d.logs()
    s = d.session(keylog, strict=False)
    alerts = [tuple(r.plaintext[:2]) for r in s.decrypt_direction("s2c") if r.type == ALERT]
    return alerts, bytes(d.out["srv"]), data, stats, d


TAMPER_CASES = ([(SUITES[1], damage, k) for damage in sorted(TAMPER) for k in (0, 1, 3)]
                + [(SUITES[2], damage, 1) for damage in ("ciphertext", "tag", "truncate",
                                                          "duplicate", "reorder")])


@pytest.mark.parametrize("suite,damage,k", TAMPER_CASES)
def test_tampered_record_in_a_batch(tmp_path, prefix, openssl35, module35, certs, suite,
                                    damage, k):
    """A damaged record inside a batch of 4 read by the pipelined server
    ends the connection with the alert the same build sends with
    max_pipelines 1 for the same damage, and the application gets the same
    data: the records before the damaged one, nothing of the bad record."""
    if damage == "reorder" and k == 3:
        k = 2
    op = TAMPER[damage]
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    got_alerts, got_data, sent, stats, d = _tampered_run(
        tmp_path, prefix, openssl35, certs, conf, suite, 4, op, k, "pipelined")
    ref_alerts, ref_data, _, ref_stats, ref = _tampered_run(
        tmp_path, prefix, openssl35, certs, conf, suite, 1, op, k, "one")
    if damage != "cut":
        assert ref_alerts, "the reference sent no alert: the damage was not seen\n" + ref.logs()
        assert ref_alerts[0][0] == 2     # fatal
    assert got_alerts == ref_alerts, d.logs()
    assert got_data == sent[:len(got_data)]
    assert len(got_data) == len(ref_data), d.logs()
    assert len(got_data) >= 8 * 8192     # the records before the damaged group
    st = one_stats(stats, d.logs())
    if damage != "short":
        # (a batch with a record too short for its tag never reaches the
        # cipher: libssl refuses it by its length, then redoes it record by
        # record)
        assert pipelined(st) > 0, st
    assert pipelined(one_stats(ref_stats, ref.logs())) == 0
