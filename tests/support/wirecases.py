"""The relay cases of test_wire.py, runnable in-process (engine) and in
the stock child (support.stock, engine=None)."""

from __future__ import annotations

import threading

from .proof import SUITES, Knobs, PtServer, payload, pt_connect, pt_context, pt_exchange
from .relay import Corrupt, Relay

from .pki import Certs
from .tamper import error_answer


class Keylog:
    """Thread-safe collector for keylog_callback."""

    def __init__(self):
        self.lines, self._lock = [], threading.Lock()

    def __call__(self, line):
        with self._lock:
            self.lines.append(line)

    def get(self):
        with self._lock:
            return list(self.lines)


def pipetls_pair_through_relay(engine, certs, suite, knobs_s, knobs_c, plan_s, plan_c,
                               hook_c2s=None, hook_s2c=None, expect_failure=False):
    """pipetls server <- relay <- pipetls client, both writing their plan
    and reading the other's. Returns (relay, keylog, server data, client data)."""
    klog = Keylog()
    s_data, c_data = payload(sum(plan_s), 11), payload(sum(plan_c), 12)
    sctx = pt_context(engine, certs, server=True, suite=suite, knobs=knobs_s, keylog=klog)
    cctx = pt_context(engine, certs, server=False, suite=suite, knobs=knobs_c, keylog=klog)

    def handler(conn):
        got = pt_exchange(conn, s_data, plan_s, expect=len(c_data), keep=True)
        conn.shutdown(timeout=5)
        return got

    srv = PtServer(sctx, handler, timeout=30)
    relay = Relay(srv.port, c2s=hook_c2s, s2c=hook_s2c, timeout=30).start()
    relay.server = srv
    try:
        conn, sock = pt_connect(cctx, relay.port, timeout=30)
        with sock, conn:
            got_c = pt_exchange(conn, c_data, plan_c, expect=len(s_data), keep=True)
            conn.shutdown(timeout=5)
        got_s = srv.join()
        relay.join()
        assert got_c.data == s_data and got_s.data == c_data, "data differs end to end"
    except BaseException:
        if not expect_failure:
            raise
        srv.join(raise_error=False)
        relay.join()
    finally:
        sctx.close()
        cctx.close()
    return relay, klog, s_data, c_data




def corrupted_relay_case(engine, certs):
    """ChaCha20-Poly1305, max_pipelines 4, split 2000: a relay flips one
    ciphertext bit of the client's 3rd application-data record of an
    8000-byte write. The answer: what the receiving server raised."""
    certs = Certs.of(certs)
    suite, knobs = SUITES["chacha20"], Knobs(4, 2000, 0)
    relay, klog, s_data, c_data = pipetls_pair_through_relay(
        engine, certs, suite, knobs, knobs, [1], [8000], hook_c2s=Corrupt(2, 7),
        expect_failure=True)
    answer = {"server": error_answer(relay.server.error)}
    return (answer, (relay, klog, s_data, c_data)) if engine is not None else answer
