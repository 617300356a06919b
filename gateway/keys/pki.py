"""The development PKI: a CA made by `init`, the server certificate and agency client
certificates. Production installs use their own CA (settings tls_*_file and agency_ca_file).
Also the one place that reads an agency code out of a verified client certificate."""

from __future__ import annotations

import ipaddress
import os
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AGENCY_URI_PREFIX = "urn:sbni:agency:"


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def create_ca(cert_path: Path, key_path: Path, now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CMR gateway development CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, _cert_pem(cert), private=False)


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the development CA key is not an EC key")
    return cert, key


def _issue(
    ca_cert_path: Path,
    ca_key_path: Path,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    cert_path: Path,
    key_path: Path,
    now: datetime,
    days: int,
) -> None:
    ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, _cert_pem(cert), private=False)


def issue_server_cert(
    ca_cert: Path, ca_key: Path, cert_path: Path, key_path: Path, now: datetime
) -> None:
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    _issue(
        ca_cert,
        ca_key,
        subject,
        sans,
        ExtendedKeyUsageOID.SERVER_AUTH,
        cert_path,
        key_path,
        now,
        825,
    )


def issue_client_cert(
    ca_cert: Path, ca_key: Path, agency: str, cert_path: Path, key_path: Path, now: datetime
) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CMR gateway development"),
            x509.NameAttribute(NameOID.COMMON_NAME, agency),
        ]
    )
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(AGENCY_URI_PREFIX + agency)]
    _issue(
        ca_cert,
        ca_key,
        subject,
        sans,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        cert_path,
        key_path,
        now,
        365,
    )


def agency_of(cert: x509.Certificate) -> str | None:
    """The agency a verified client certificate names: its SAN URI urn:sbni:agency:<CODE> or
    its subject CN. A certificate naming two different agencies names none."""
    names: set[str] = set()
    for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if isinstance(attr.value, str):
            names.add(attr.value)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)] if san else []
    agency_uris = {u[len(AGENCY_URI_PREFIX) :] for u in uris if u.startswith(AGENCY_URI_PREFIX)}
    if len(agency_uris) > 1:
        return None
    if agency_uris:
        (code,) = agency_uris
        # A CN that is itself an agency-looking code must agree with the URI.
        if names and code not in names and any(n.isupper() and n.isalpha() for n in names):
            return None
        return code
    return next(iter(names)) if len(names) == 1 else None
