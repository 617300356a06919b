"""TLS for the two listeners, and the agency behind a request: the verified client certificate
of the connection, or (only from a configured proxy address) the one the proxy forwards."""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from gateway.errors import SettingsError
from gateway.keys.pki import agency_of


def _base_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"cannot load the TLS certificate {cert}: {exc}") from None
    return ctx


def api_context(cert: Path, key: Path, client_ca: Path, proxy_mode: bool) -> ssl.SSLContext:
    ctx = _base_context(cert, key)
    # Purpose.CLIENT_AUTH defaults to CERT_NONE; a connection without a certificate must not
    # reach a handler, so the handshake itself requires one (unless a proxy presents it).
    ctx.verify_mode = ssl.CERT_OPTIONAL if proxy_mode else ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"cannot load the agency CA {client_ca}: {exc}") from None
    return ctx


def web_context(cert: Path, key: Path) -> ssl.SSLContext:
    return _base_context(cert, key)


class ProxyCertificates:
    """Certificates forwarded by a TLS-terminating proxy, believed only from its addresses and
    only after we verify the chain to the agency CA ourselves."""

    def __init__(self, proxies: Sequence[str], client_ca: Path) -> None:
        self.networks = [ipaddress.ip_network(p, strict=False) for p in proxies]
        self.store = (
            Store(x509.load_pem_x509_certificates(client_ca.read_bytes())) if proxies else None
        )

    def trusted(self, remote: str | None) -> bool:
        if not remote or not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)

    def agency(self, header_value: str, now: datetime) -> str | None:
        assert self.store is not None
        try:
            cert = x509.load_pem_x509_certificate(unquote(header_value).encode())
            verifier = PolicyBuilder().store(self.store).time(now).build_client_verifier()
            verifier.verify(cert, [])
        except (ValueError, VerificationError):
            return None
        return agency_of(cert)


def peer_agency(ssl_object: ssl.SSLObject | None) -> str | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return _agency_of_der(der)


@functools.lru_cache(maxsize=1024)
def _agency_of_der(der: bytes) -> str | None:
    # A pure function of the certificate's bytes (verified by the handshake already), asked on
    # every request of a keep-alive connection: parsing it each time showed in the profile.
    return agency_of(x509.load_der_x509_certificate(der))
