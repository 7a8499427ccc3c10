"""The test PKI, made once per session with the ``openssl`` CLI.

``make_certs(directory)`` writes a CA, a server certificate (CN and SAN
``localhost``, SAN IP 127.0.0.1, serverAuth) and a client certificate
(clientAuth), each with an unencrypted RSA-2048 key; :class:`Certs` holds
their paths. ``Certs.of(directory)`` finds them again (the stock child is
handed the directory, not the object).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from . import programs

_CERT_CONFIG = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = pipetls test

[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer

[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


@dataclass(frozen=True)
class Certs:
    """Paths of the test PKI (PEM files, unencrypted RSA-2048 keys).

    ``cert``/``key`` are the server's; ``client_cert``/``client_key`` a
    client certificate. Both are signed by ``ca`` (key ``ca_key``).
    """

    dir: Path
    ca: Path
    ca_key: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def of(cls, where: Union["Certs", str, os.PathLike]) -> "Certs":
        """``where`` itself if it is a Certs, else the PKI in that directory."""
        if isinstance(where, Certs):
            return where
        d = Path(where)
        return cls(dir=d, ca=d / "ca.pem", ca_key=d / "ca.key", cert=d / "server.pem",
                   key=d / "server.key", client_cert=d / "client.pem",
                   client_key=d / "client.key")


def _openssl(*args: Union[str, os.PathLike], cwd: Path) -> None:
    proc = subprocess.run([programs.openssl_program(), *map(os.fspath, args)], cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(map(str, args))} failed ({proc.returncode}):\n"
            + proc.stderr.decode(errors="replace"))


def make_certs(directory: Union[str, os.PathLike]) -> Certs:
    """Create the test PKI in ``directory`` with the openssl CLI."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "pki.cnf").write_text(_CERT_CONFIG)
    cnf = ("-config", "pki.cnf")
    _openssl("req", "-x509", *cnf, "-extensions", "v3_ca",
             "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "30", "-subj", "/CN=pipetls test CA", cwd=d)
    serial = 1
    for name, cn, ext in (("server", "localhost", "v3_server"),
                          ("client", "pipetls test client", "v3_client")):
        serial += 1
        _openssl("req", "-new", *cnf, "-newkey", "rsa:2048", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
                 "-CAkey", "ca.key", "-set_serial", str(serial), "-days", "30",
                 "-sha256", "-extfile", "pki.cnf", "-extensions", ext,
                 "-out", f"{name}.pem", cwd=d)
    return Certs.of(d)
