"""The one test PKI builder (``cryptography``; no libssl, no CLI).

``make_certs(directory, key="rsa"|"ec")`` writes, as PEM:

    ca.pem / ca.key            the test CA ("pipetls test CA")
    server.pem / server.key    CN and SAN localhost, SAN IP 127.0.0.1,
                               serverAuth, signed by the CA
    client.pem / client.key    "pipetls test client", clientAuth
    other_ca.pem               an unrelated CA (for verification failures)
    wrong_key.pem              a key that belongs to no certificate

``key="rsa"`` (RSA-2048: the ECDHE-RSA suites of the proof tests) or
``"ec"`` (P-256: the ECDHE-ECDSA suites of the API tests). :class:`Certs`
holds the paths; ``Certs.of(directory)`` finds them again (the stock child
is handed the directory, not the object).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

FILES = dict(ca="ca.pem", ca_key="ca.key", cert="server.pem", key="server.key",
             client_cert="client.pem", client_key="client.key", other_ca="other_ca.pem",
             wrong_key="wrong_key.pem")


@dataclass(frozen=True)
class Certs:
    """Paths of the test PKI (see the module doc)."""

    dir: Path
    ca: Path
    ca_key: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    wrong_key: Path

    @classmethod
    def of(cls, where: Union["Certs", str, os.PathLike]) -> "Certs":
        """``where`` itself if it is a Certs, else the PKI in that directory."""
        if isinstance(where, Certs):
            return where
        d = Path(where)
        return cls(dir=d, **{k: d / v for k, v in FILES.items()})

    @property
    def leaf_der(self) -> bytes:
        """The server certificate in DER."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return cert.public_bytes(serialization.Encoding.DER)


def make_certs(directory: Union[str, os.PathLike], key: str = "rsa") -> Certs:
    """Create the test PKI in ``directory`` (see the module doc)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if key not in ("rsa", "ec"):
        raise ValueError(f"key must be 'rsa' or 'ec', not {key!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def new_key():
        if key == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def usage(**on):
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                     crl_sign=False, encipher_only=False, decipher_only=False)
        flags.update(on)
        return x509.KeyUsage(**flags)

    def builder(subject, issuer, pub, serial):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(pub).serial_number(serial)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))

    def make_ca(cn, serial):
        k = new_key()
        cert = (builder(name(cn), name(cn), k.public_key(), serial)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                               critical=True)
                .sign(k, hashes.SHA256()))
        return k, cert

    ca_key, ca_cert = make_ca("pipetls test CA", 1)
    _, other_cert = make_ca("pipetls other CA", 100)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())

    def leaf(cn, serial, eku, san=None):
        k = new_key()
        b = (builder(name(cn), ca_cert.subject, k.public_key(), serial)
             .add_extension(aki, critical=False)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(usage(digital_signature=True, key_encipherment=key == "rsa"),
                            critical=True)
             .add_extension(x509.ExtendedKeyUsage([eku]), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return k, b.sign(ca_key, hashes.SHA256())

    srv_key, srv_cert = leaf("localhost", 2, ExtendedKeyUsageOID.SERVER_AUTH,
                             [x509.DNSName("localhost"),
                              x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key, cli_cert = leaf("pipetls test client", 3, ExtendedKeyUsageOID.CLIENT_AUTH)

    pem = serialization.Encoding.PEM
    certs = Certs.of(d)
    for path, cert in ((certs.ca, ca_cert), (certs.other_ca, other_cert),
                       (certs.cert, srv_cert), (certs.client_cert, cli_cert)):
        path.write_bytes(cert.public_bytes(pem))
    for path, k in ((certs.ca_key, ca_key), (certs.key, srv_key), (certs.client_key, cli_key),
                    (certs.wrong_key, new_key())):
        path.write_bytes(k.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return certs
