"""A cluster's certificate authority: ``kayit certs init`` and ``kayit certs add``.

Layout of a TLS dir (what ``--tls-dir`` names):

    ca.crt, ca.key              the cluster CA; only the CA signs, and ca.key may be kept offline
    <name>/node.crt, node.key   one identity: a node, or ``admin`` for the tools

Every certificate the CA issues is good for both ends of a connection (server and client
authentication), since every node dials the others and is dialled by them. Keys are ECDSA P-256:
small, and fast to sign and verify on every handshake. Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kayit.config import ConfigError
from kayit.tls.layout import ADMIN, CA_CERT, CA_KEY, NODE_CERT, NODE_KEY, check_name

_CA_DAYS = 10 * 365
_LEAF_DAYS = 5 * 365


def init_authority(directory: Path) -> None:
    """Make a new CA in ``directory`` and the ``admin`` identity. Refuses a directory that
    holds a CA already: a new one would lock every node of the old one out."""
    if (directory / CA_KEY).exists() or (directory / CA_CERT).exists():
        raise ConfigError(f"{directory} already holds a certificate authority; keeping it")
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kayit cluster CA")])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / CA_KEY, _key_pem(key))
    (directory / CA_CERT).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    issue(directory, ADMIN, ())


def issue(directory: Path, name: str, hosts: Iterable[str]) -> Path:
    """Make ``directory/name/{node.crt,node.key}``, signed by the CA of ``directory``, valid
    for ``hosts`` (DNS names or IP addresses a peer dials it by). Returns the identity's
    directory. Refuses a name that exists: its key may be in use."""
    check_name(name)
    identity = directory / name
    if (identity / NODE_CERT).exists() or (identity / NODE_KEY).exists():
        raise ConfigError(f"{identity} already holds a certificate; remove it to make a new one")
    ca_key, ca_certificate = _load_authority(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    names = [_general_name(host) for host in dict.fromkeys(hosts)]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    identity.mkdir(parents=True, exist_ok=True)
    _write_private(identity / NODE_KEY, _key_pem(key))
    (identity / NODE_CERT).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return identity


def _load_authority(
    directory: Path,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
        certificate = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    except FileNotFoundError as error:
        raise ConfigError(
            f"{directory} holds no certificate authority ({error.filename} is missing); "
            f"make one with: kayit certs init {directory}"
        ) from error
    except ValueError as error:
        raise ConfigError(f"{directory}: the CA's files are not readable: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{directory / CA_KEY} is not a key kayit made")
    return key, certificate


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(c.isspace() or c in "/:@" for c in host):
        raise ConfigError(f"bad host {host!r} for a certificate: give a DNS name or IP address")
    return x509.DNSName(host)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Created with mode 0600 from the start: never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
