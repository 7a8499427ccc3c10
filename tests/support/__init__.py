"""The one test harness of pipetls (fixtures that use it live in
tests/conftest.py; test modules import from here, never from conftest).

    programs   peer programs on PATH and the skip policy (CI=true: fail)
    stock      the same case in a child process with the engine NOT loaded:
               stock OpenSSL's answer, measured in the same run
    rfc        what the RFCs fix, and the documented stock deviations
    tamper     damage to records of a pipelined batch, and the case runners
"""
