"""CBC_HMAC_MODE: how the stitched CBC-HMAC ciphers encrypt a batch
(engine/pipetls.h, docs/knobs.md).

* INFO names the mode (auto by default) and, in auto mode, the per-record
  costs measured on this CPU for each stitched cipher offered;
* a mode that is not auto, stitched or multiblock is refused with the
  engine's reason, and the mode is unchanged;
* forcing each mode, a pipetls server writes to a stock ``openssl s_client``
  (no engine) over CBC suites without Encrypt-then-MAC: what s_client read
  has the SHA-256 of what was sent, and the engine's counters show the
  records going the forced way (none through MULTIBLOCK when stitched; 8-
  groups at max_pipelines 16 on two lanes, 4-groups at max_pipelines 4,
  when multiblock; in auto, the way INFO's measured costs make cheapest --
  costs that depend on the build: under ThreadSanitizer the group's copies
  are slow and records go one at a time).
"""

from __future__ import annotations

import re

import pytest

import pipetls
from support.proof import MIB, SUITES, Knobs, run_interop
from support import programs

from test_interop import check

CBC_SUITES = [SUITES["cbcsha-noetm"], SUITES["cbcsha256-noetm"]]
SIZES = [1, 2000, 16385, 65536 + 7, MIB]
COST = re.compile(r"stitched:(\d+\.\d+),mb4:(\d+\.\d+),mb8:(\d+\.\d+)")


@pytest.fixture(scope="module")
def engine(engine_path):
    e = pipetls.load_engine(engine_path, register=True)
    threads = e.threads
    e.threads = 2
    try:
        yield e
    finally:
        e.cbc_hmac_mode = "auto"
        e.threads = threads


def test_info_names_the_mode_and_the_measured_costs(engine):
    engine.cbc_hmac_mode = "auto"
    info = engine.info()
    assert info["cbc_hmac_mode"] == "auto"
    stitched = [c for c in info["ciphers"] if "CBC-HMAC" in c]
    assert stitched, "the engine offers no stitched CBC-HMAC cipher here: %s" % info["ciphers"]
    for name in stitched:
        m = COST.fullmatch(str(info["cbc_hmac_cost." + name]))
        assert m, info["cbc_hmac_cost." + name]
        costs = [float(x) for x in m.groups()]
        assert all(c > 0 for c in costs) and costs[2] == 1.0, (name, costs)
    for mode in ("stitched", "multiblock", "auto"):
        engine.cbc_hmac_mode = mode
        assert engine.info()["cbc_hmac_mode"] == mode
        assert engine.info()["multiblock"] == (0 if mode == "stitched" else 1)


def test_an_unknown_mode_is_refused_with_a_reason(engine):
    engine.cbc_hmac_mode = "stitched"
    with pytest.raises(pipetls.ConfigError, match="cbc_hmac_mode"):
        engine.cbc_hmac_mode = "fast"
    # the engine's own refusal, past the Python check
    with pytest.raises(pipetls.EngineError) as ei:
        engine._ctrl_string(engine.handle, "CBC_HMAC_MODE", "fast")
    assert "pipetls" in str(ei.value) and "argument out of range" in str(ei.value)
    assert engine.cbc_hmac_mode == "stitched"
    engine.cbc_hmac_mode = "auto"


@pytest.mark.parametrize("suite", CBC_SUITES, ids=str)
@pytest.mark.parametrize("mode,pipes", [("stitched", 16), ("multiblock", 16), ("multiblock", 4),
                                        ("auto", 16)])
def test_each_mode_interoperates_with_stock_s_client(engine, engine_path, certs, tmp_path,
                                                     suite, mode, pipes):
    programs.require("openssl")
    engine.cbc_hmac_mode = mode
    knobs = Knobs(pipes, 16384, MIB)
    res = run_interop("openssl", "client", suite, knobs, SIZES, engine=engine,
                      engine_path=engine_path, certs=certs, tmp_path=tmp_path)
    check(res, "openssl", suite, knobs, SIZES)  # s_client read it: SHA-256 equal
    st = res.stats
    one, mb4, mb8 = st.cbc_hmac_stitched, st.cbc_hmac_mb4, st.cbc_hmac_mb8
    assert one + mb4 + mb8 > 0, st
    if mode == "stitched":
        assert one > 0 and mb4 == 0 and mb8 == 0, st
    elif mode == "multiblock" and pipes == 16:
        # 16 records on two lanes: a group of eight for each
        assert mb8 > 0 and mb8 % 8 == 0, st
    elif mode == "multiblock":
        assert mb4 > 0 and mb4 % 4 == 0 and mb8 == 0, st
    else:
        # auto: the way that costs least per record on this CPU, by the
        # costs INFO shows (a batch of 16 on two lanes, or on one: eight
        # records per lane whichever way), for the 16-record batches of the
        # 1 MiB write; the first of equals wins
        name = "AES-128-CBC-HMAC-SHA1" if "SHA256" not in suite.cipher else "AES-128-CBC-HMAC-SHA256"
        costs = [float(x) for x in COST.fullmatch(str(engine.info()["cbc_hmac_cost." + name])).groups()]
        way = costs.index(min(costs))
        assert [one > 0, mb4 > 0, mb8 > 0][way], (costs, st)
        if way == 0:
            assert mb4 == 0 and mb8 == 0, (costs, st)
