"""The reference agency client: seal a file, submit it over mutual TLS, verify the receipt.
`cmr-gateway send` is this; agencies building their own client can read it as an example."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from joserfc.jwk import ECKey, Key, OKPKey

from gateway.errors import GatewayError, UsageError
from gateway.intake.envelope import AUDIENCE, seal
from gateway.intake.receipts import ReceiptInvalid, verify_receipt
from gateway.keys.pki import agency_of


class SendFailed(GatewayError):
    code = "send_failed"
    title = "The gateway did not accept the notification"


@dataclass(frozen=True)
class Credentials:
    agency: str
    signing_key: Key
    signing_alg: str
    ssl: ssl.SSLContext
    jwks_file: Path

    @classmethod
    def load(cls, directory: Path) -> Credentials:
        try:
            raw = json.loads((directory / "signing-key.jwk").read_text())
            cert = x509.load_pem_x509_certificate((directory / "client.crt").read_bytes())
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(directory / "ca.crt")
            )
            ctx.load_cert_chain(directory / "client.crt", directory / "client.key")
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise UsageError(f"cannot read the credentials in {directory}: {exc}") from None
        agency = agency_of(cert)
        if agency is None:
            raise UsageError("the client certificate names no agency")
        key: Key
        if raw.get("kty") == "OKP":
            key, alg = OKPKey.import_key(raw), "Ed25519"
        else:
            key, alg = ECKey.import_key(raw), "ES256"
        return cls(agency, key, alg, ctx, directory / "gateway.jwks.json")


@dataclass(frozen=True)
class SendResult:
    created: bool
    reference: str
    receipt_kid: str
    envelope_sha256: str
    received_at: str


def read_body(path: Path, fmt: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if fmt == "cmr-xml/1":
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None


def claims_for(agency: str, fmt: str, body: Any, jti: str | None = None) -> dict[str, Any]:
    return {
        "iss": agency,
        "aud": AUDIENCE,
        "iat": int(time.time()),
        "jti": jti or f"{agency}-{secrets.token_hex(12)}",
        "format": fmt,
        "body": body,
    }


async def send_file(
    credentials_dir: Path, url: str, fmt: str, path: Path, jti: str | None = None
) -> SendResult:
    creds = Credentials.load(credentials_dir)
    body = read_body(path, fmt)
    connector = aiohttp.TCPConnector(ssl=creds.ssl)
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(
            base_url=url.rstrip("/") + "/", connector=connector, timeout=timeout
        ) as session:
            async with session.get(".well-known/jwks.json") as resp:
                if resp.status != 200:
                    raise SendFailed(f"the gateway's JWKS answered {resp.status}")
                jwks = await resp.json(content_type=None)
            enc = next((k for k in jwks.get("keys", []) if k.get("use") == "enc"), None)
            if enc is None:
                raise SendFailed("the gateway publishes no encryption key")
            claims = claims_for(creds.agency, fmt, body, jti)
            envelope = seal(claims, creds.signing_key, creds.signing_alg, enc).encode()
            async with session.post(
                "v1/notifications", data=envelope, headers={"Content-Type": "application/jose"}
            ) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
    except aiohttp.ClientError as exc:
        raise SendFailed(f"cannot reach {url}: {exc}") from None
    except ValueError:
        raise SendFailed("the gateway's answer is not JSON") from None
    if status not in (200, 202):
        code = answer.get("code", "?") if isinstance(answer, dict) else "?"
        detail = answer.get("title", "") if isinstance(answer, dict) else ""
        extra = ""
        if isinstance(answer, dict) and answer.get("errors"):
            extra = "; " + "; ".join(
                f"{e['pointer']}: {e['message']}" for e in answer["errors"][:10]
            )
        raise SendFailed(
            f"{status} {code}: {detail}{extra} (request {answer.get('request_id', '?')})"
        )
    digest = hashlib.sha256(envelope).hexdigest()
    try:
        payload = verify_receipt(answer["receipt"], jwks)
    except (ReceiptInvalid, KeyError, TypeError) as exc:
        raise SendFailed(f"the receipt does not verify: {exc}") from None
    expected = {
        "iss": AUDIENCE,
        "sub": creds.agency,
        "jti": claims["jti"],
        "reference": answer["reference"],
        "envelope_sha256": digest,
    }
    for name, value in expected.items():
        if payload.get(name) != value:
            raise SendFailed(f"the receipt's {name} does not match what was sent")
    kid = json.loads(base64.urlsafe_b64decode(answer["receipt"].split(".")[0] + "==")).get(
        "kid", "?"
    )
    return SendResult(status == 202, answer["reference"], kid, digest, str(payload["received_at"]))
