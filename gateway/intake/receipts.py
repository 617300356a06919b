"""Signed receipts (PROTOCOL.md, API): a JWS by a gateway `sig` key over what was received."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from gateway.intake.envelope import AUDIENCE, RECEIPT_TYP


def rfc3339(at: datetime) -> str:
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def sign_receipt(
    key: OKPKey, agency: str, jti: str, reference: str, received_at: datetime, envelope_sha256: str
) -> str:
    payload = {
        "iss": AUDIENCE,
        "sub": agency,
        "jti": jti,
        "reference": reference,
        "received_at": rfc3339(received_at),
        "envelope_sha256": envelope_sha256,
    }
    header = {"alg": "Ed25519", "kid": key.kid, "typ": RECEIPT_TYP}
    return jws.serialize_compact(
        header, json.dumps(payload, separators=(",", ":")), key, algorithms=["Ed25519"]
    )


class ReceiptInvalid(Exception):
    pass


def verify_receipt(receipt: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Check a receipt against the gateway's published `sig` keys; return its payload."""
    try:
        obj = jws.extract_compact(receipt.encode())
    except (JoseError, ValueError) as exc:
        raise ReceiptInvalid("the receipt is not a JWS") from exc
    kid = obj.headers().get("kid")
    if obj.headers().get("alg") != "Ed25519":
        raise ReceiptInvalid("the receipt is not signed with Ed25519")
    for raw in jwks.get("keys", []):
        if raw.get("use") == "sig" and raw.get("kid") == kid:
            key = OKPKey.import_key(raw)
            if jws.validate_compact(obj, key, algorithms=["Ed25519"]):
                payload = json.loads(obj.payload)
                if not isinstance(payload, dict):
                    raise ReceiptInvalid("the receipt payload is not an object")
                return payload
            raise ReceiptInvalid("the receipt's signature does not verify")
    raise ReceiptInvalid("the receipt is signed by a key the gateway does not publish")
