"""Patch 0002: the patched libssl 3.5 pipelines TLS 1.3 through the pipetls provider.

The patched ``openssl s_server`` loads the pipetls provider from an
openssl.cnf (``default_properties = ?provider=pipetls``, so libssl's TLS 1.3
ciphers are the provider's) and gets ``-max_pipelines`` /
``-split_send_frag`` on its command line; its peer is the system's stock
OpenSSL 3.0 (``openssl s_client``, or support.ku_peer on the system
libssl), which knows nothing of pipelining; the other stacks of the system
(Python's ssl on the system libssl, GnuTLS, curl) are peers too, and the
patched s_client pipelines against a stock 3.0 s_server and a Python ssl
server. What happens is checked from outside the process: the records on
the wire (support.relay), decrypted from the server's key log with
`cryptography` (support.wire13), and the provider's statistics
(``PIPETLS_STATS``).

The reference for damaged input is the same patched build without the
provider (its default provider's ciphers cannot pipeline, so libssl works
one record at a time, as stock 3.5 does; for a record of inner type 0 also
with max_pipelines 1), run in the same test on the same damage.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support import programs
from support.net import free_port, wait_listening
from support.patched import assert_only_patched, mapped_ssl_libs, penv
from support.peers import OPENSSL, stream_exchange
from support.records import APPLICATION_DATA, parse_records
from support.relay import BatchTamper, Relay, flip, set_len
from support.stats import read_stats_file
from support.wire13 import Session13, WireError

pytestmark = pytest.mark.patched

MIB = 1 << 20
TOKEN = b"go\n"
SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
          "TLS_CHACHA20_POLY1305_SHA256"]
TAGLEN = 16


# ------------------------------------------------------------------ helpers

def provider_conf(path: Path, module: Path, system_default=None) -> Path:
    """An openssl.cnf that loads the pipetls provider beside the default one
    and makes it the preferred implementation of its algorithms;
    ``system_default``: SSL_CONF commands (name -> value) that every SSL_CTX
    of the process gets (its ``system_default`` section)."""
    ssl_init, ssl_sects = [], []
    if system_default:
        ssl_init = ["ssl_conf = ssl_sect"]
        ssl_sects = ["[ssl_sect]", "system_default = ssl_defaults", "",
                     "[ssl_defaults]", *[f"{k} = {v}" for k, v in system_default.items()], ""]
    path.write_text("\n".join([
        "config_diagnostics = 1",
        "openssl_conf = openssl_init", "",
        "[openssl_init]", "providers = provider_sect", "alg_section = evp_props",
        *ssl_init, "",
        "[provider_sect]", "default = default_sect", "pipetls = pipetls_sect", "",
        "[default_sect]", "activate = 1", "",
        "[pipetls_sect]", f"module = {module}", "activate = 1", "THREADS = 2", "",
        "[evp_props]", "default_properties = ?provider=pipetls", "", *ssl_sects]))
    return path


def server_argv(openssl35, certs, port, suite, *extra):
    return [openssl35, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
            "-quiet", "-cert", certs.cert, "-key", certs.key, "-tls1_3",
            "-ciphersuites", suite, *extra]


def client_argv(port, suite, *extra):
    """The stock (system OpenSSL 3.0) s_client."""
    return [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-tls1_3",
            "-ciphersuites", suite, *extra]


def pipelined(st) -> int:
    return sum(n for k, n in st.hist.items() if k > 1)


def one_stats(path: Path, logs: str):
    blocks = read_stats_file(path)
    assert len(blocks) == 1, f"expected one stats block in {path}\n{logs}"
    return blocks[0]


class Driven:
    """A patched s_server and a stock s_client through a Relay, with the
    server's stdin written by the test (each write one SSL_write of
    s_server, as the test pauses between them)."""

    def __init__(self, srv_argv, env, relay_hooks=None, client_extra=(), suite=SUITES[0]):
        self.port = int(srv_argv[srv_argv.index("-accept") + 1].rsplit(":", 1)[1])
        self.srv = subprocess.Popen(srv_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env)
        wait_listening(self.port, 10.0, self.srv)
        self.relay = Relay(self.port, **(relay_hooks or {})).start()
        self.cli = subprocess.Popen(client_argv(self.relay.port, suite, *client_extra),
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
        end = time.monotonic() + timeout
        while len(self.out[name]) < n and time.monotonic() < end:
            if (self.srv.poll() is not None and name == "srv") or \
                    (self.cli.poll() is not None and name == "cli"):
                break
            time.sleep(0.01)
        return len(self.out[name]) >= n

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

    def logs(self) -> str:
        return (f"--- server rc={self.srv.returncode}\n{self.err['srv'].decode(errors='replace')}\n"
                f"--- client rc={self.cli.returncode}\n{self.err['cli'].decode(errors='replace')}")


# --------------------------------------------------------------------- bulk

@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", ["write", "read"])
def test_bulk_against_stock_30(tmp_path, prefix, openssl35, module35, certs, suite, direction):
    """8 MiB from (write) or to (read) the pipelined patched s_server, the
    stock 3.0 s_client on the other end; data intact, and the provider saw
    batches of more than one record in that direction (the other direction
    carries one short record only)."""
    bulk = os.urandom(8 * MIB)
    port = free_port()
    stats = tmp_path / "stats.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    srv = server_argv(openssl35, certs, port, suite, "-max_pipelines", "8",
                      "-split_send_frag", "4096")
    server_send, client_send = (bulk, TOKEN) if direction == "write" else (b"", bulk)
    res = stream_exchange(srv, client_argv(port, suite), port=port,
                          server_send=server_send, client_send=client_send,
                          server_env=penv(prefix, conf, PIPETLS_STATS=stats), timeout=240)
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    assert res.server.sha256 == hashlib.sha256(client_send).hexdigest(), logs
    assert res.client.sha256 == hashlib.sha256(server_send).hexdigest(), logs
    st = one_stats(stats, logs)
    assert st.failed_batches == 0, st
    assert pipelined(st) > 0, f"no batch of more than one record: {st}"
    # 8 MiB in records of at most 4 KiB (write) / 16 KiB (read): most of them batched
    least = len(bulk) // (4096 if direction == "write" else 16384) // 2
    assert sum(k * n for k, n in st.hist.items() if k > 1) > least, st


def test_bulk_both_ways_32mib(tmp_path, prefix, openssl35, module35, certs):
    """32 MiB each way at once, AES-256-GCM: both SHA-256 match."""
    suite = "TLS_AES_256_GCM_SHA384"
    a, b = os.urandom(32 * MIB), os.urandom(32 * MIB)
    port = free_port()
    stats = tmp_path / "stats.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    srv = server_argv(openssl35, certs, port, suite, "-max_pipelines", "8",
                      "-split_send_frag", "4096")
    res = stream_exchange(srv, client_argv(port, suite), port=port, server_send=a,
                          client_send=b, server_env=penv(prefix, conf, PIPETLS_STATS=stats),
                          timeout=400)
    logs = f"{res.server.stderr}\n{res.client.stderr}"
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    assert res.server.sha256 == hashlib.sha256(b).hexdigest(), logs
    assert res.client.sha256 == hashlib.sha256(a).hexdigest(), logs
    st = one_stats(stats, logs)
    assert st.failed_batches == 0 and pipelined(st) > 0, st


# --------------------------------------------------------------------- wire

SEED_WRITES = [2000, 2001, 4000, 4001, 6000, 6001]


def expected_split(n: int, split: int = 2000, pipes: int = 4):
    k = min(pipes, max(1, -(-n // split)))
    share, rem = divmod(n, k)
    return [share + (1 if i < rem else 0) for i in range(k)]


def test_expected_split_is_the_seed():
    assert [len(expected_split(n)) for n in SEED_WRITES] == [1, 2, 2, 3, 3, 4]
    assert expected_split(6001) == [1501, 1500, 1500, 1500]


@pytest.mark.parametrize("suite,pipes", [(s, 4) for s in SUITES] + [(SUITES[1], 1)])
def test_seed_arithmetic_on_the_wire(tmp_path, prefix, openssl35, module35, certs, suite,
                                     pipes):
    """split 2000 x 4 pipelines: writes of 2000, 2001, 4000, 4001, 6000, 6001
    bytes leave as 1, 2, 2, 3, 3, 4 records of equal shares, counted on the
    wire and decrypted from the key log (every record, unique nonces).
    With max_pipelines 1 (the provider loaded all the same) the records are
    those of libssl without pipelining, one at a time."""
    port = free_port()
    keylog = tmp_path / "keylog.txt"
    stats = tmp_path / "stats.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    argv = server_argv(openssl35, certs, port, suite, "-max_pipelines", str(pipes),
                       "-split_send_frag", "2000", "-keylogfile", keylog)
    d = Driven(argv, penv(prefix, conf, PIPETLS_STATS=stats), suite=suite)
    sent = bytearray()
    try:
        d.cli.stdin.write(TOKEN)
        d.cli.stdin.flush()
        assert d.wait_for("srv", len(TOKEN)), d.logs()
        assert d.srv.poll() is None, d.logs()
        assert_only_patched(mapped_ssl_libs(d.srv.pid), prefix)
        for n in SEED_WRITES:
            chunk = os.urandom(n)
            sent += chunk
            d.srv.stdin.write(chunk)
            d.srv.stdin.flush()
            assert d.wait_for("cli", len(sent)), d.logs()
            time.sleep(0.05)
    finally:
        d.finish()
    assert bytes(d.out["cli"]) == bytes(sent), d.logs()
    s = Session13.from_capture(d.relay.captured["c2s"], d.relay.captured["s2c"],
                               keylog.read_text().splitlines()).decrypt()
    assert s.suite_name == suite
    want = [x for n in SEED_WRITES for x in expected_split(n, pipes=pipes)]
    if pipes == 1:
        # one pipeline: records of split_send_fragment bytes, then the rest
        want = [x for n in SEED_WRITES
                for x in [2000] * (n // 2000) + ([n % 2000] if n % 2000 else [])]
    assert s.app_sizes("s2c") == want
    assert s.app_data("s2c") == bytes(sent)
    # every record of both directions decrypted, with nonces never repeated
    total = sum(len(r) for r in s.records.values())
    assert len(s.nonces) == total + sum(d_.handshake_records for d_ in s.dirs.values())
    for r in s.records["s2c"]:
        if r.inner_type == APPLICATION_DATA:
            assert r.wire_length == len(r.plaintext) + 1 + r.padding + TAGLEN
    st = one_stats(stats, d.logs())
    if pipes == 1:
        assert pipelined(st) == 0, st
    else:
        assert pipelined(st) > 0, st


def test_keylog_decrypts_pipelined_bulk(tmp_path, prefix, openssl35, module35, certs):
    """Pipelined bulk both ways (ChaCha20-Poly1305 write, batched reads):
    every record decrypts independently with nonce = IV XOR seq; the
    plaintext on the wire is the data."""
    suite = "TLS_CHACHA20_POLY1305_SHA256"
    port = free_port()
    keylog = tmp_path / "keylog.txt"
    stats = tmp_path / "stats.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    argv = server_argv(openssl35, certs, port, suite, "-max_pipelines", "8",
                       "-split_send_frag", "3000", "-keylogfile", keylog)
    d = Driven(argv, penv(prefix, conf, PIPETLS_STATS=stats), suite=suite)
    up, down = os.urandom(2 * MIB), os.urandom(2 * MIB)
    try:
        d.cli.stdin.write(up)
        d.cli.stdin.flush()
        assert d.wait_for("srv", len(up)), d.logs()
        d.srv.stdin.write(down)
        d.srv.stdin.flush()
        assert d.wait_for("cli", len(down)), d.logs()
    finally:
        d.finish()
    assert bytes(d.out["srv"]) == up and bytes(d.out["cli"]) == down, d.logs()
    s = Session13.from_capture(d.relay.captured["c2s"], d.relay.captured["s2c"],
                               keylog.read_text().splitlines()).decrypt()
    assert s.app_data("c2s") == up and s.app_data("s2c") == down
    assert max(s.app_sizes("s2c")) <= 3000
    st = one_stats(stats, d.logs())
    assert pipelined(st) > 0 and st.failed_batches == 0, st


def test_wire_reader_catches_a_bad_record(tmp_path):
    """Negative control of support.wire13: one flipped bit fails the reading."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from support.records import header
    from support.wire13 import Direction13, SUITES13, hkdf_expand_label
    secret_hs, secret_app = os.urandom(32), os.urandom(32)
    h = SUITES13[0x1301][3]
    key = hkdf_expand_label(h, secret_app, b"key", b"", 16)
    iv = hkdf_expand_label(h, secret_app, b"iv", b"", 12)
    stream = b""
    for seq in range(3):
        body_len = 10 + 1 + 16
        nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big")))
        ct = AESGCM(key).encrypt(nonce, b"0123456789\x17", header(23, 0x0303, body_len))
        stream += header(23, 0x0303, body_len) + ct
    good = Direction13("x", 0x1301, secret_hs, secret_app)
    good.decrypt(stream, set())
    assert [r.plaintext for r in good.records] == [b"0123456789"] * 3
    bad = bytearray(stream)
    bad[-3] ^= 1
    with pytest.raises(WireError):
        Direction13("x", 0x1301, secret_hs, secret_app).decrypt(bytes(bad), set())


# ---------------------------------------------------------------- KeyUpdate

def test_key_updates_during_pipelined_traffic(tmp_path, prefix, openssl35, module35, certs):
    """100 KeyUpdates from a stock 3.0 client (requested and not, while it
    sends and while it receives) during pipelined bulk both ways: data
    intact both ways; read batches straddled a key change (the provider
    counts the batches that failed under the old key and were redone)."""
    suite = "TLS_AES_128_GCM_SHA256"
    nbytes, updates, seed = 8 * MIB, 100, 1234
    port = free_port()
    stats = tmp_path / "stats.txt"
    keylog = tmp_path / "keylog.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    argv = server_argv(openssl35, certs, port, suite, "-max_pipelines", "8",
                       "-split_send_frag", "4096", "-keylogfile", keylog)
    srv = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=penv(prefix, conf, PIPETLS_STATS=stats))
    wait_listening(port, 10.0, srv)
    relay = Relay(port, timeout=120).start()
    here = Path(__file__).resolve().parent
    cli = subprocess.Popen([sys.executable, "-m", "support.ku_peer", str(relay.port),
                            str(nbytes), str(updates), str(seed)], cwd=here,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = bytearray()
    t = threading.Thread(target=lambda: [got.extend(c) for c in
                                         iter(lambda: os.read(srv.stdout.fileno(), 1 << 20), b"")],
                         daemon=True)
    t.start()
    import random
    up = random.Random(seed).randbytes(nbytes)
    down = os.urandom(nbytes)
    try:
        end = time.monotonic() + 120
        while len(got) < nbytes and time.monotonic() < end and srv.poll() is None:
            time.sleep(0.02)
        assert len(got) == nbytes, srv.stderr.read1().decode(errors="replace") if srv.poll() is not None else len(got)
        srv.stdin.write(down)
        srv.stdin.flush()
        out, err = cli.communicate(timeout=180)
    finally:
        try:
            srv.stdin.close()
        except OSError:
            pass
        try:
            srv.wait(60)
        except subprocess.TimeoutExpired:
            srv.kill()
        if cli.poll() is None:
            cli.kill()
        t.join(10)
        relay.join()
    logs = f"client: {out!r} {err!r}\nserver: {srv.stderr.read().decode(errors='replace')}"
    assert bytes(got) == up, logs
    import json
    res = json.loads(out.decode().strip().splitlines()[-1])
    assert res.get("sha256") == hashlib.sha256(down).hexdigest(), logs
    assert res["key_updates"] == updates, logs
    s = Session13.from_capture(relay.captured["c2s"], relay.captured["s2c"],
                               keylog.read_text().splitlines()).decrypt(strict_end=False)
    c2s_gens = {r.generation for r in s.records["c2s"]}
    s2c_gens = {r.generation for r in s.records["s2c"]}
    # Many key changes on the wire, not one per call: one CI run saw 99
    # generations for 100 SSL_key_update calls (a generation whose records
    # the capture does not hold, e.g. at its end, is not seen). The client's
    # own count (key_updates above) and the straddling batches below are the
    # exact checks.
    assert len(c2s_gens) >= updates * 9 // 10, len(c2s_gens)
    # the server's own updates, in answer to the requested ones (answers to
    # requests that arrive together may be one)
    assert len(s2c_gens) > 10, len(s2c_gens)
    assert s.app_data("c2s") == up and s.app_data("s2c") == down
    st = one_stats(stats, logs)
    assert pipelined(st) > 0, st
    assert st.failed_batches > 0, f"no read batch straddled a key change: {st}"


# ------------------------------------------------------------------ tamper

def _op_cipher(recs, k):
    return recs[:k] + [flip(recs[k], 5 + 3)] + recs[k + 1:], False


def _op_tag(recs, k):
    return recs[:k] + [flip(recs[k], len(recs[k]) - 1)] + recs[k + 1:], False


def _op_truncate(recs, k):
    return recs[:k] + [set_len(recs[k], recs[k][5:-1])] + recs[k + 1:], False


def _op_drop(recs, k):
    return recs[:k] + recs[k + 1:], False


def _op_duplicate(recs, k):
    return recs[:k + 1] + [recs[k]] + recs[k + 1:], False


def _op_reorder(recs, k):
    r = list(recs)
    r[k], r[k + 1] = r[k + 1], r[k]
    return r, False


def _op_header_type(recs, k):
    b = bytearray(recs[k])
    b[0] = 22
    return recs[:k] + [bytes(b)] + recs[k + 1:], False


TAMPER = {"ciphertext": _op_cipher, "tag": _op_tag, "truncate": _op_truncate,
          "drop": _op_drop, "duplicate": _op_duplicate, "reorder": _op_reorder,
          "header-type": _op_header_type}


def _tampered_run(tmp_path, prefix, openssl35, certs, conf, op, k, label, pipes=4):
    """``op`` may have ``bind(hook, keylog)``: it is called with the relay's
    hook and the server's key log file before the connection starts."""
    suite = "TLS_AES_256_GCM_SHA384"
    port = free_port()
    keylog = tmp_path / f"keylog-{label}.txt"
    stats = tmp_path / f"stats-{label}.txt"
    argv = server_argv(openssl35, certs, port, suite, "-max_pipelines", str(pipes),
                       "-keylogfile", keylog)
    # lead: the group before the damaged one is read as one batch of 4, so
    # the run is pipelined whatever the damage does to its own group (a
    # first record of outer type 22 forms no batch)
    hook = BatchTamper(n=4, k=k, op=op, batch=2, pause=0.2, lead=True)
    if hasattr(op, "bind"):
        op.bind(hook, keylog)
    d = Driven(argv, penv(prefix, conf, PIPETLS_STATS=stats), {"c2s": hook}, suite=suite)
    data = os.urandom(16 * 16384)
    try:
        # s_client sends what one read of its stdin gives (8 KiB at most)
        for off in range(0, len(data), 16384):
            d.cli.stdin.write(data[off:off + 16384])
            d.cli.stdin.flush()
            time.sleep(0.01)
        end = time.monotonic() + 30
        while d.srv.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        d.finish(timeout=30)
    assert hook.done, d.logs()
    s = Session13.from_capture(d.relay.captured["c2s"], d.relay.captured["s2c"],
                               keylog.read_text().splitlines())
    s.dirs["s2c"].decrypt(s.streams["s2c"], s.nonces, strict_end=False)
    alerts = s.alerts("s2c")
    return alerts, bytes(d.out["srv"]), data, stats


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("damage", sorted(TAMPER))
def test_tampered_record_in_a_batch(tmp_path, prefix, openssl35, module35, certs, damage, k):
    """A damaged record inside a batch of 4 read by the pipelined server
    ends the connection with the alert the same build without pipelining
    (default provider) sends for the same damage, and the application gets
    the same data: a prefix of what was sent, nothing of the bad record."""
    if damage == "reorder" and k == 3:
        k = 2
    op = TAMPER[damage]
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    got_alerts, got_data, sent, stats = _tampered_run(tmp_path, prefix, openssl35, certs,
                                                      conf, op, k, "pipetls")
    ref_alerts, ref_data, ref_sent, _ = _tampered_run(tmp_path, prefix, openssl35, certs,
                                                      None, op, k, "stock")
    assert ref_alerts, "the reference sent no alert: the damage was not seen"
    assert got_alerts == ref_alerts
    assert got_alerts[0][0] == 2     # fatal
    # the records before the damaged one, whole, then nothing
    assert got_data == sent[:len(got_data)]
    assert len(got_data) == len(ref_data)
    assert len(got_data) >= 4 * 8192     # the records before the damaged group
    st = one_stats(stats, "")
    assert pipelined(st) > 0, st


class InnerTypeZero:
    """A tamper op: record k of the batch becomes a record that decrypts
    (protected under the client's traffic keys at that record's sequence
    number, from the server's key log) to a TLSInnerPlaintext of zeros
    only, of the same length: no content type (RFC 8446 5.4: the receiver
    must answer unexpected_message)."""

    def __init__(self):
        self.hook = self.keylog = None
        self.seq = self.offset = None      # of the forged record; its data's offset

    def bind(self, hook, keylog):
        self.hook, self.keylog = hook, keylog

    def __call__(self, recs, k):
        from support.wire13 import open13, seal13
        captured = self.hook.relay.captured
        s = Session13.from_capture(captured["c2s"], captured["s2c"],
                                   self.keylog.read_text().splitlines())
        c2s = s.dirs["c2s"]
        c2s.decrypt(s.streams["c2s"], set(), strict_end=False)
        # the hook counts the client's protected records from its first
        # (handshake) one; the key log reading counts those separately
        before = c2s.records[:self.hook.group_start + k - c2s.handshake_records]
        assert all(r.generation == 0 and r.inner_type == APPLICATION_DATA for r in before)
        self.seq = len(before)
        self.offset = sum(len(r.plaintext) for r in before)
        secret = c2s.app_secret
        inner = open13(s.suite, secret, self.seq, recs[k])   # the seq is right
        forged = seal13(s.suite, secret, self.seq, bytes(len(inner)))
        assert len(forged) == len(recs[k])
        return recs[:k] + [forged] + recs[k + 1:], False


@pytest.mark.parametrize("k", [0, 1, 3])
def test_inner_type_zero_in_a_batch(tmp_path, prefix, openssl35, module35, certs, k):
    """A record of zeros only (no inner content type) at position k of a
    batch of 4 read by the pipelined server (provider, max_pipelines 4)
    ends the connection with the alert the same build sends with
    max_pipelines 1 and the default provider (stock 3.5's answer) for the
    same record; the application gets the same data, all of it from before
    the bad record, nothing of it."""
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    op, ref_op = InnerTypeZero(), InnerTypeZero()
    got_alerts, got_data, sent, stats = _tampered_run(tmp_path, prefix, openssl35, certs,
                                                      conf, op, k, "pipetls")
    ref_alerts, ref_data, ref_sent, _ = _tampered_run(tmp_path, prefix, openssl35, certs,
                                                      None, ref_op, k, "stock", pipes=1)
    # the same record forged in both runs, and it is what it should be: it
    # decrypts, and has no content type (the wire reader refuses it there)
    assert op.seq == ref_op.seq and op.offset == ref_op.offset and op.seq is not None
    for o in (op, ref_op):
        sent_on = o.hook.relay.forwarded
        with pytest.raises(WireError, match=f"record {o.seq} has no inner content type"):
            Session13.from_capture(sent_on["c2s"], sent_on["s2c"],
                                   o.keylog.read_text().splitlines()).decrypt(strict_end=False)
    assert ref_alerts, "the reference sent no alert: the damage was not seen"
    assert got_alerts == ref_alerts
    assert got_alerts[0][0] == 2     # fatal
    assert got_data == sent[:len(got_data)]
    assert len(got_data) == len(ref_data)
    assert len(got_data) <= op.offset        # nothing of the bad record or after it
    assert len(got_data) >= 4 * 8192         # the records before the damaged group
    st = one_stats(stats, "")
    assert pipelined(st) > 0, st


# ------------------------------------------------- other peers (issue 12)
#
# The same pipelined patched s_server (provider, max_pipelines 8) against
# the other TLS stacks of the system: Python's ssl (system libssl 3.0),
# GnuTLS (gnutls-cli), curl; and the patched s_client (provider) against a
# stock 3.0 s_server, so that the client side of the patched build
# pipelines too. A missing peer program skips locally and fails under
# CI=true (support.programs).

PEER_BYTES = 8 * MIB
HERE = Path(__file__).resolve().parent


def _pipelined_server(tmp_path, prefix, openssl35, module35, certs, suite, *extra):
    port = free_port()
    stats = tmp_path / "stats.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    argv = server_argv(openssl35, certs, port, suite, "-max_pipelines", "8",
                       "-split_send_frag", "4096", *extra)
    return port, argv, penv(prefix, conf, PIPETLS_STATS=stats), stats


def _check_exchange(res, server_send, client_send, stats, direction, bulk):
    """Both exits clean, both SHA-256 intact; the patched side's provider
    batched most of the ``bulk`` bytes it moved in ``direction`` (records
    of at most 4 KiB when it writes, 16 KiB when it reads)."""
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    assert res.server.sha256 == hashlib.sha256(client_send).hexdigest(), logs
    assert res.client.sha256 == hashlib.sha256(server_send).hexdigest(), logs
    st = one_stats(stats, logs)
    assert st.failed_batches == 0, st
    assert pipelined(st) > 0, f"no batch of more than one record ({direction}): {st}"
    least = bulk // (4096 if direction == "write" else 16384) // 2
    assert sum(k * n for k, n in st.hist.items() if k > 1) > least, st
    return logs


def _bulk(direction):
    bulk = os.urandom(PEER_BYTES)
    return (bulk, TOKEN) if direction == "write" else (b"", bulk)


GNUTLS_PRIORITY = {
    "TLS_AES_128_GCM_SHA256": "+AES-128-GCM",
    "TLS_AES_256_GCM_SHA384": "+AES-256-GCM",
    "TLS_CHACHA20_POLY1305_SHA256": "+CHACHA20-POLY1305",
}


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", ["write", "read"])
def test_bulk_against_gnutls(tmp_path, prefix, openssl35, module35, certs, suite,
                             direction):
    """The same against GnuTLS' gnutls-cli (TLS 1.3 only, the one AEAD)."""
    gnutls = programs.require("gnutls-cli")
    port, srv, env, stats = _pipelined_server(tmp_path, prefix, openssl35, module35,
                                              certs, suite)
    server_send, client_send = _bulk(direction)
    log = tmp_path / "gnutls.log"
    prio = f"NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:{GNUTLS_PRIORITY[suite]}"
    cli = [gnutls, "--insecure", "--priority", prio, f"--logfile={log}",
           "-p", str(port), "127.0.0.1"]
    res = stream_exchange(srv, cli, port=port, server_send=server_send,
                          client_send=client_send, server_env=env, timeout=240)
    logs = _check_exchange(res, server_send, client_send, stats, direction,
                           PEER_BYTES)
    text = log.read_text(errors="replace")
    assert "TLS1.3" in text and GNUTLS_PRIORITY[suite][1:] in text, text + logs


@pytest.mark.parametrize("suite", SUITES)
def test_download_with_curl(tmp_path, prefix, openssl35, module35, certs, suite):
    """curl (system libcurl) fetches 32 MiB over HTTPS from the pipelined
    patched ``s_server -WWW``: SHA-256 intact, batched writes."""
    curl = programs.require("curl")
    root = tmp_path / "www"
    root.mkdir()
    body = os.urandom(32 * MIB)
    (root / "bulk.bin").write_bytes(body)
    port, srv, env, stats = _pipelined_server(tmp_path, prefix, openssl35, module35,
                                              certs, suite, "-WWW")
    out = tmp_path / "got.bin"
    proc = subprocess.Popen(srv, cwd=root, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, 10.0, proc)
        res = subprocess.run([curl, "-sS", "-k", "--tlsv1.3", "-w", "%{http_code} %{ssl_verify_result}",
                              "-o", str(out), f"https://127.0.0.1:{port}/bulk.bin"],
                             capture_output=True, text=True, timeout=240)
        srv_out = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    logs = f"curl rc={res.returncode} {res.stdout} {res.stderr}\nserver: {srv_out}"
    assert res.returncode == 0 and res.stdout.startswith("200"), logs
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(body).hexdigest(), logs
    st = one_stats(stats, logs)
    assert st.failed_batches == 0, st
    assert pipelined(st) > 0, f"no batch of more than one record: {st}"
    assert sum(k * n for k, n in st.hist.items() if k > 1) > len(body) // 4096 // 2, st


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", ["read", "write"])
def test_patched_client_against_stock_30_server(tmp_path, prefix, openssl35, module35,
                                                certs, suite, direction):
    """The patched s_client (provider, max_pipelines 8) reads 8 MiB from
    (read) or sends 8 MiB to (write) a stock 3.0 s_server: data intact,
    and the client's provider batched records in that direction."""
    port = free_port()
    stats = tmp_path / "stats.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    srv = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", "-quiet",
           "-cert", certs.cert, "-key", certs.key, "-tls1_3", "-ciphersuites", suite]
    cli = [openssl35, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-tls1_3",
           "-ciphersuites", suite, "-max_pipelines", "8", "-split_send_frag", "4096"]
    bulk = os.urandom(PEER_BYTES)
    # the roles of _bulk seen from the patched side, now the client
    server_send, client_send = (bulk, TOKEN) if direction == "read" else (TOKEN, bulk)
    res = stream_exchange(srv, cli, port=port, server_send=server_send,
                          client_send=client_send,
                          client_env=penv(prefix, conf, PIPETLS_STATS=stats), timeout=240)
    _check_exchange(res, server_send, client_send, stats, direction, PEER_BYTES)


# --------------------------------------------- Python's ssl as the peer
#
# Python's ssl module on the system libssl (stock OpenSSL 3.0), in a process
# of its own (support/py_tls_peer.py: one thread, a selectors loop that
# sends and receives at once on a non-blocking socket), against the
# pipelined patched s_server or s_client (provider, max_pipelines 8).

PY_PEER = HERE / "support" / "py_tls_peer.py"
PY_PEER_BYTES = 32 * MIB
MAX_RECORD13 = 5 + (1 << 14) + 256     # RFC 8446 5.2: header, at most 2^14 + 256


def _wire_bytes(stream) -> int:
    """Bytes of the protected records (outer type application data, header
    included) in a captured stream."""
    recs, _ = parse_records(bytes(stream), strict=False)
    return sum(5 + len(r.body) for r in recs if r.type == APPLICATION_DATA)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("python_role", ["client", "server"])
def test_python_ssl_peer_both_ways(tmp_path, prefix, openssl35, module35, certs, suite,
                                   python_role):
    """32 MiB each way at once between the pipelined patched side (s_server
    when Python is the client, s_client when it is the server) and Python's
    ssl on the system libssl: both SHA-256 intact, the suite as chosen, and
    batches of more than one record in both directions.

    The statistics count both directions together, so the direction comes
    from the wire: the relay counts the bytes of the protected records the
    patched side wrote (W) and read (R). What a batched record puts through
    the lanes (its header as AAD, its content) is at most its record on the
    wire, so of the bytes the lanes saw in batches (B, every batch has more
    than one record), at most W were written ones and at most R read ones:
    more than B - W read bytes and B - R written ones were batched (the
    test asks for a quarter of the 32 MiB each)."""
    import ssl
    to_client, to_server = os.urandom(PY_PEER_BYTES), os.urandom(PY_PEER_BYTES)
    port = free_port()
    stats = tmp_path / "stats.txt"
    conf = provider_conf(tmp_path / "prov.cnf", module35)
    env = penv(prefix, conf, PIPETLS_STATS=stats)
    pipelining = ["-max_pipelines", "8", "-split_send_frag", "4096"]
    relay = Relay(port, timeout=300).start()
    if python_role == "client":
        srv = server_argv(openssl35, certs, port, suite, *pipelining)
        cli = [sys.executable, PY_PEER, "client", str(relay.port), "280"]
        server_env, client_env, patched_writes = env, None, "s2c"
    else:
        srv = [sys.executable, PY_PEER, "server", str(port), certs.cert, certs.key, "280"]
        cli = [openssl35, "s_client", "-connect", f"127.0.0.1:{relay.port}", "-quiet",
               "-tls1_3", "-ciphersuites", suite, *pipelining]
        server_env, client_env, patched_writes = None, env, "c2s"
    try:
        res = stream_exchange(srv, cli, port=port, server_send=to_client,
                              client_send=to_server, server_env=server_env,
                              client_env=client_env, timeout=300)
    finally:
        relay.kill()
    relay.join()
    logs = (f"--- server rc={res.server.returncode}\n{res.server.stderr}\n"
            f"--- client rc={res.client.returncode}\n{res.client.stderr}")
    assert (res.server.returncode, res.client.returncode) == (0, 0), logs
    assert res.server.sha256 == hashlib.sha256(to_server).hexdigest(), logs
    assert res.client.sha256 == hashlib.sha256(to_client).hexdigest(), logs
    py_err = res.client.stderr if python_role == "client" else res.server.stderr
    assert f"version=TLSv1.3 cipher={suite} libssl={ssl.OPENSSL_VERSION}" in py_err, logs
    assert not ssl.OPENSSL_VERSION.startswith("OpenSSL 3.5"), ssl.OPENSSL_VERSION
    st = one_stats(stats, logs)
    assert st.failed_batches == 0, st
    assert pipelined(st) > 0, st
    # bytes of batches of more than one record: less those of any batch of
    # one, each at most one whole record
    batched = st.bytes - st.hist.get(1, 0) * MAX_RECORD13
    patched_reads = "c2s" if patched_writes == "s2c" else "s2c"
    written = _wire_bytes(relay.captured[patched_writes])
    read = _wire_bytes(relay.captured[patched_reads])
    assert batched - written > PY_PEER_BYTES // 4, \
        f"read direction: {batched - written} bytes provably batched (of {read}): {st}"
    assert batched - read > PY_PEER_BYTES // 4, \
        f"write direction: {batched - read} bytes provably batched (of {written}): {st}"


# ----------------------------------------------------------- record padding
#
# SSL_CTX_set_block_padding (s_server/s_client -record_padding, openssl.cnf
# RecordPadding): OpenSSL pads a TLSInnerPlaintext (content and type byte,
# RFC 8446 5.2) with zeros up to the next multiple of the block, never past
# 2^14 bytes; one that fills 2^14 bytes already is not padded. The patched
# s_server pads what it writes (pipelined: 16 KiB writes split into 6
# records of 2730 or 2731 bytes), the stock 3.0 s_client what the server reads (in batches).

MAX_PLAIN = 1 << 14


def padded_inner(content: int, block: int) -> int:
    """The length of the TLSInnerPlaintext of ``content`` bytes of content
    under OpenSSL's block padding."""
    inner = content + 1
    if inner >= MAX_PLAIN:
        return inner
    return min(-(-inner // block) * block, MAX_PLAIN)


def test_padded_inner_is_openssl_rule():
    assert [padded_inner(n, 512) for n in (0, 510, 511, 512, 4096, 16383, 16384)] == \
        [512, 512, 512, 1024, 4608, 16384, 16385]
    assert padded_inner(4096, 1000) == 5000 and padded_inner(16000, 1000) == MAX_PLAIN


def padding_violations(session: Session13, captured, block: int) -> list:
    """What does not match ``block`` padding: from outside, every protected
    record (outer type application data) whose TLSInnerPlaintext (length
    less the tag) is not a multiple of the block; from the key log, every
    decrypted record whose padding is not OpenSSL's (see padded_inner)."""
    bad = []
    for name in ("c2s", "s2c"):
        recs, _ = parse_records(bytes(captured[name]), strict=False)
        for i, r in enumerate(recs):
            if r.type == APPLICATION_DATA and (len(r.body) - TAGLEN) % block:
                bad.append((name, "wire", i, len(r.body)))
        for r in session.records[name]:
            inner = len(r.plaintext) + 1 + r.padding
            if inner != padded_inner(len(r.plaintext), block) or \
                    r.wire_length != inner + TAGLEN:
                bad.append((name, "keylog", r.seq, r.inner_type, len(r.plaintext), r.padding))
    return bad


def _padding_run(tmp_path, prefix, openssl35, module35, certs, pipes, block, via):
    """2 MiB each way between the patched s_server (provider, ``pipes``,
    split 3000, ``block`` padding set ``via`` its option or its openssl.cnf,
    or none) and a stock 3.0 s_client (``-record_padding block``, or none);
    returns the decrypted session, the relay's capture, the stats."""
    suite = "TLS_AES_256_GCM_SHA384"
    port = free_port()
    keylog = tmp_path / "keylog.txt"
    stats = tmp_path / "stats.txt"
    ours = ["-record_padding", str(block)] if block and via == "option" else []
    conf = provider_conf(tmp_path / "prov.cnf", module35,
                         {"RecordPadding": block} if block and via == "openssl.cnf" else None)
    argv = server_argv(openssl35, certs, port, suite, "-max_pipelines", str(pipes),
                       "-split_send_frag", "3000", "-keylogfile", keylog, *ours)
    d = Driven(argv, penv(prefix, conf, PIPETLS_STATS=stats), suite=suite,
               client_extra=("-record_padding", str(block)) if block else ())
    up, down = os.urandom(2 * MIB), os.urandom(2 * MIB)
    try:
        d.cli.stdin.write(up)
        d.cli.stdin.flush()
        assert d.wait_for("srv", len(up)), d.logs()
        d.srv.stdin.write(down)
        d.srv.stdin.flush()
        assert d.wait_for("cli", len(down)), d.logs()
    finally:
        d.finish()
    assert bytes(d.out["srv"]) == up and bytes(d.out["cli"]) == down, d.logs()
    s = Session13.from_capture(d.relay.captured["c2s"], d.relay.captured["s2c"],
                               keylog.read_text().splitlines()).decrypt()
    assert s.app_data("c2s") == up and s.app_data("s2c") == down
    assert max(s.app_sizes("s2c")) <= 3000
    return s, d.relay.captured, one_stats(stats, d.logs())


@pytest.mark.parametrize("pipes,block,via", [(8, 512, "option"), (8, 1000, "option"),
                                             (8, 512, "openssl.cnf"), (1, 512, "option")])
def test_record_padding(tmp_path, prefix, openssl35, module35, certs, pipes, block, via):
    """Record padding on, pipelined (max_pipelines 8) or not (1): data intact
    both ways; every protected record on the wire, and every record
    decrypted from the key log, padded as configured; batches of more
    than one record with 8 pipelines, none with 1."""
    s, captured, st = _padding_run(tmp_path, prefix, openssl35, module35, certs, pipes,
                                   block, via)
    assert padding_violations(s, captured, block) == []
    # the padding is there at all: the server's records carry some
    assert any(r.padding for r in s.records["s2c"]), s.records["s2c"][:4]
    if pipes > 1:
        assert pipelined(st) > 0 and st.failed_batches == 0, st
    else:
        assert pipelined(st) == 0, st


def test_record_padding_check_sees_unpadded_records(tmp_path, prefix, openssl35, module35,
                                                    certs):
    """Negative control of padding_violations: without padding the same
    traffic breaks the 512-byte rule, on the wire and in the key log."""
    s, captured, st = _padding_run(tmp_path, prefix, openssl35, module35, certs, 8, 0,
                                   "option")
    bad = padding_violations(s, captured, 512)
    assert {(name, how) for name, how, *_ in bad} == \
        {("c2s", "wire"), ("s2c", "wire"), ("c2s", "keylog"), ("s2c", "keylog")}
    assert pipelined(st) > 0, st
