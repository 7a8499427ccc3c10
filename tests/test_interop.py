"""Interop matrix: pipetls (this process, engine registered, pipelining
knobs) against software nobody here wrote, every suite, both directions.

Axes (DESIGN.md "Interop peers"; the issue's matrix):

* knobs on the pipetls side: max_pipelines 1/4/32 x split_send_fragment
  512/4096/16384 x read buffer OpenSSL's default / 1 MiB;
* peers, each in its own process and in both roles where it has one:
  stock ``openssl s_client``/``s_server`` (no engine), the same with
  ``-engine pipetls.so -max_pipelines 8``, Python's ``ssl`` (child process),
  ``gnutls-cli``/``gnutls-serv --echo``, ``curl`` against a pipetls HTTPS
  server, tlslite-ng (pure Python, child process);
* TLS 1.2 AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305, AES-128-CBC-SHA with
  and without Encrypt-then-MAC, AES-128-CBC-SHA256 with and without EtM, and
  TLS 1.3 (one suite by default, all three in the full run);
* sizes 0, 1, 2000, 2001, 6001, 16384, 16385, 1 MiB, 64 MiB: each one write
  call on each sending side, in both directions in one connection.

Proof: the SHA-256 of what arrived equals that of what was sent, each way;
the engine's counters show it did the record crypto (pipelined batches when
max_pipelines > 1 on TLS 1.2, none when it is 1 or on TLS 1.3).

Default run (CI size): every peer x role x suite once (88 connections), the
knob combinations rotated over them so all 18 occur, sizes up to 1 MiB
(tlslite-ng up to 16385: it moves ~0.3 MB/s), plus 64 MiB each way against
stock openssl and GnuTLS. ``-m full``: the whole product (18 knobs x 11
peer roles x 10 suites, every size; tlslite-ng up to 1 MiB) -- see
tests/README.md for how long each takes.
"""

from __future__ import annotations


import pytest

from support import programs
from support.proof import (KNOBS_ALL, MIB, PEER_ROLES, SIZES_FULL, SIZES_SMALL, SUITE_LIST,
                            SUITES, Knobs, full_only, run_interop)

DEFAULT_SUITES = [s for s in SUITE_LIST if not s.is13] + [SUITES["tls13-aes128gcm"]]
TOOLS = {"openssl": ["openssl"], "openssl-engine": ["openssl"],
         "gnutls": ["gnutls-cli", "gnutls-serv"], "curl": ["curl"]}


def _default_cases():
    cases = []
    for i, (peer, role) in enumerate(PEER_ROLES):
        for j, suite in enumerate(DEFAULT_SUITES):
            knobs = KNOBS_ALL[(i * len(DEFAULT_SUITES) + j * 7) % len(KNOBS_ALL)]
            cases.append((peer, role, suite, knobs))
    return cases


DEFAULT_CASES = _default_cases()


def sizes_for(peer: str, full: bool):
    if peer == "tlslite":
        return SIZES_SMALL + ([MIB] if full else [])
    return SIZES_FULL if full else SIZES_SMALL + [MIB]


def _skip_missing(peer):
    for tool in TOOLS.get(peer, ()):
        programs.require(tool)
    if peer == "tlslite":
        programs.require_module("tlslite", "pip install tlslite-ng")


@pytest.fixture(scope="module")
def engine(engine_path):
    import pipetls
    return pipetls.load_engine(engine_path, register=True)


def stream_calls(st) -> int:
    """EngineStats.stream_calls (older pipetls versions kept it in .extra)."""
    v = getattr(st, "stream_calls", None)
    return v if v is not None else st.extra.get("stream_calls", 0)


def check(res, peer, suite, knobs, sizes):
    """The assertions every interop case makes."""
    where = f"[{peer} {suite} {knobs}] peer stderr:\n{res.peer_stderr[-2000:]}"
    assert res.to_peer_n == sum(sizes), f"pipetls -> peer: byte count {where}"
    assert res.to_peer_sha == res.expected_to_peer, f"pipetls -> peer: SHA-256 differs {where}"
    assert res.from_peer.n == sum(sizes), f"peer -> pipetls: byte count {where}"
    assert res.from_peer.sha256 == res.expected_from_peer, \
        f"peer -> pipetls: SHA-256 differs {where}"
    if res.peer_rc is not None and not (peer == "gnutls" and res.peer_rc < 0):
        assert res.peer_rc == 0, f"peer exit status {res.peer_rc} {where}"
    st = res.stats
    assert st.failed_batches == 0, st
    # TLS 1.3 records, and CBC+EtM records outside a pipeline, reach the
    # engine as plain EVP calls (stream_calls); TLS 1.2 AEAD / stitched
    # records as batches.
    calls = st.batches + stream_calls(st)
    assert calls > 0, f"the engine did no record crypto: {st}"
    if suite.is13:
        assert st.batches == 0, st
    if suite.is13 or knobs.max_pipelines == 1:
        assert st.pipelined_batches == 0, st
    elif max(sizes) > knobs.split:
        assert st.pipelined_batches > 0, f"no pipelined batch: {st}"
        assert st.max_batch <= knobs.max_pipelines, st
    if peer == "openssl-engine":
        assert len(res.peer_stats) == 1, "the peer's engine wrote no statistics"
        ps = res.peer_stats[0]
        assert ps.failed_batches == 0, ps
        assert ps.batches + ps.stream_calls > 0, ps
        if not suite.is13 and max(sizes) > 4096:
            assert ps.pipelined_batches > 0, ps


@pytest.mark.parametrize("peer,role,suite,knobs", DEFAULT_CASES,
                         ids=[f"{p}-{r}-{s}-{k}" for p, r, s, k in DEFAULT_CASES])
def test_interop(engine, engine_path, certs, tmp_path, peer, role, suite, knobs):
    _skip_missing(peer)
    sizes = sizes_for(peer, full=False)
    res = run_interop(peer, role, suite, knobs, sizes, engine=engine,
                      engine_path=engine_path, certs=certs, tmp_path=tmp_path)
    check(res, peer, suite, knobs, sizes)


def test_default_matrix_covers_every_knob_and_suite():
    """The rotation above reaches all 18 knob combinations, every suite
    with max_pipelines > 1, and every peer with each max_pipelines value."""
    assert {k for *_, k in DEFAULT_CASES} == set(KNOBS_ALL)
    for s in DEFAULT_SUITES:
        assert any(k.max_pipelines > 1 for _, _, su, k in DEFAULT_CASES if su == s), s
    for peer, role in PEER_ROLES:
        got = {k.max_pipelines for p, r, _, k in DEFAULT_CASES if (p, r) == (peer, role)}
        assert got == {1, 4, 32}, (peer, role, got)


@pytest.mark.parametrize("peer,role", [("openssl", "client"), ("gnutls", "server")])
def test_interop_64mib(engine, engine_path, certs, tmp_path, peer, role):
    """Every size of the issue, 64 MiB included, both ways in one connection,
    at max_pipelines 32 with a 1 MiB read buffer."""
    _skip_missing(peer)
    suite, knobs = SUITES["aes128gcm"], Knobs(32, 4096, MIB)
    res = run_interop(peer, role, suite, knobs, SIZES_FULL, engine=engine,
                      engine_path=engine_path, certs=certs, tmp_path=tmp_path)
    check(res, peer, suite, knobs, SIZES_FULL)
    assert res.stats.max_batch == 32 or res.stats.hist.get(32, 0) > 0, res.stats


def test_negative_control_corrupted_byte_is_caught(engine, engine_path, certs, tmp_path):
    """A peer that flips one bit of what it sends (after the test recorded
    the payload) is caught by the SHA-256 comparison: the check can fail."""
    suite, knobs, sizes = SUITES["aes128gcm"], Knobs(4, 4096, MIB), [1, 6001, 16385]
    res = run_interop("pyssl", "client", suite, knobs, sizes, engine=engine,
                      engine_path=engine_path, certs=certs, tmp_path=tmp_path,
                      corrupt_at=3000)
    with pytest.raises(AssertionError, match="peer -> pipetls: SHA-256 differs"):
        check(res, "pyssl", suite, knobs, sizes)


def test_negative_control_engine_not_used_is_caught(engine, engine_path, certs, tmp_path):
    """With the engine unregistered for one connection, the counter check
    (the engine did the record crypto, pipelined) fails."""
    suite, knobs, sizes = SUITES["aes128gcm"], Knobs(4, 4096, 0), [1, 65536]
    engine.unregister()
    try:
        res = run_interop("openssl", "client", suite, knobs, sizes, engine=engine,
                          engine_path=engine_path, certs=certs, tmp_path=tmp_path,
                          use_engine=False)
    finally:
        engine.register_default()
    # (a couple of small non-record calls may still reach the engine, e.g.
    # from code that asks for EVP_aes_256_cbc() by name; records do not)
    with pytest.raises(AssertionError, match="no record crypto|no pipelined batch"):
        check(res, "openssl", suite, knobs, sizes)


def _full_cases():
    return [(p, r, s, k) for k in KNOBS_ALL for p, r in PEER_ROLES for s in SUITE_LIST]


@pytest.mark.full
@pytest.mark.parametrize("peer,role,suite,knobs", _full_cases(),
                         ids=[f"{p}-{r}-{s}-{k}" for p, r, s, k in _full_cases()])
def test_interop_full(request, engine, engine_path, certs, tmp_path, peer, role, suite, knobs):
    full_only(request)
    _skip_missing(peer)
    sizes = sizes_for(peer, full=True)
    res = run_interop(peer, role, suite, knobs, sizes, engine=engine,
                      engine_path=engine_path, certs=certs, tmp_path=tmp_path)
    check(res, peer, suite, knobs, sizes)
