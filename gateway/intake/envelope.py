"""The envelope of PROTOCOL.md: a JWS (agency-signed claims) nested in a JWE (encrypted to
the gateway). Opening is split in steps because the signing key is found by the issuer named
inside; every failure is an EnvelopeRejected whose cause goes to the log, never to the client.

Headers are checked against closed allow-lists before joserfc sees them, so `none`, HMAC,
RSA, embedded keys (jwk, jku, x5u, x5c), `crit` and `zip` never reach a library code path."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, Key, OKPKey
from joserfc.jws import JWSRegistry

from gateway.errors import EnvelopeRejected

AUDIENCE = "SBNI-CMRP"
NOTIFICATION_TYP = "cmr-notification+jwt"
RECEIPT_TYP = "cmr-receipt+jwt"
JWE_ALG = "ECDH-ES+A256KW"
JWE_ENC = "A256GCM"
JTI_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JWE_HEADER_KEYS = frozenset({"alg", "enc", "kid", "cty", "epk", "apu", "apv"})
JWS_HEADER_KEYS = frozenset({"alg", "kid", "typ"})


def registries(max_bytes: int) -> tuple[JWERegistry, JWSRegistry]:
    """joserfc's default caps (64 KiB of ciphertext) are below our body limit: raise them to it."""

    class _JWE(JWERegistry):
        max_ciphertext_length = max_bytes

    class _JWS(JWSRegistry):
        max_payload_length = max_bytes

    return _JWE(algorithms=[JWE_ALG, JWE_ENC]), _JWS(algorithms=["Ed25519", "ES256"])


def _b64_json(segment: bytes) -> dict[str, Any]:
    try:
        padded = segment + b"=" * (-len(segment) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise EnvelopeRejected("header is not base64url JSON") from None
    if not isinstance(value, dict):
        raise EnvelopeRejected("header is not a JSON object")
    return value


@dataclass(frozen=True)
class InnerToken:
    """The signed inner JWT, parsed but not yet verified."""

    token: bytes
    alg: str
    kid: str
    issuer: str


@dataclass(frozen=True)
class Claims:
    iss: str
    jti: str
    iat: int
    format: str
    body: Any


class EnvelopeOpener:
    def __init__(
        self, max_bytes: int, signing_algorithms: tuple[str, ...], skew_seconds: int
    ) -> None:
        self._jwe_registry, self._jws_registry = registries(max_bytes)
        self._signing_algorithms = frozenset(signing_algorithms)
        self._skew = skew_seconds

    def outer_kid(self, raw: bytes) -> str:
        parts = raw.split(b".")
        if len(parts) != 5:
            raise EnvelopeRejected("not a JWE compact serialisation")
        header = _b64_json(parts[0])
        extra = set(header) - JWE_HEADER_KEYS
        if extra:
            raise EnvelopeRejected(f"JWE header not allowed: {sorted(extra)[0]}")
        if header.get("alg") != JWE_ALG or header.get("enc") != JWE_ENC:
            raise EnvelopeRejected("JWE alg or enc not allowed")
        if header.get("cty") != "JWT":
            raise EnvelopeRejected("JWE cty is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise EnvelopeRejected("JWE kid missing")
        return kid

    def decrypt(self, raw: bytes, key: OKPKey | ECKey) -> InnerToken:
        try:
            obj = jwe.decrypt_compact(raw, key, registry=self._jwe_registry)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise EnvelopeRejected(f"decryption failed: {type(exc).__name__}") from None
        token = obj.plaintext or b""
        parts = token.split(b".")
        if len(parts) != 3:
            raise EnvelopeRejected("inner token is not a JWS compact serialisation")
        header = _b64_json(parts[0])
        extra = set(header) - JWS_HEADER_KEYS
        if extra:
            raise EnvelopeRejected(f"JWS header not allowed: {sorted(extra)[0]}")
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._signing_algorithms:
            raise EnvelopeRejected("JWS alg not allowed")
        if header.get("typ") != NOTIFICATION_TYP:
            raise EnvelopeRejected("JWS typ is not cmr-notification+jwt")
        if not isinstance(kid, str):
            raise EnvelopeRejected("JWS kid missing")
        # The issuer is read before verification only to find the key to verify with.
        unverified = _b64_json(parts[1])
        iss = unverified.get("iss")
        if not isinstance(iss, str):
            raise EnvelopeRejected("iss missing")
        return InnerToken(token, str(alg), kid, iss)

    def verify(self, inner: InnerToken, key: Key, key_alg: str) -> dict[str, Any]:
        if inner.alg != key_alg:
            raise EnvelopeRejected("JWS alg does not match the registered key")
        try:
            obj = jws.deserialize_compact(inner.token, key, registry=self._jws_registry)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise EnvelopeRejected(f"signature invalid: {type(exc).__name__}") from None
        try:
            claims = json.loads(obj.payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise EnvelopeRejected("claims are not JSON") from None
        if not isinstance(claims, dict):
            raise EnvelopeRejected("claims are not a JSON object")
        return claims

    def check_claims(self, claims: dict[str, Any], now: float | None = None) -> Claims:
        now = time.time() if now is None else now
        aud = claims.get("aud")
        if not (aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud)):
            raise EnvelopeRejected("aud is not SBNI-CMRP")
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise EnvelopeRejected("iat missing or not a number")
        if abs(now - iat) > self._skew:
            raise EnvelopeRejected("iat outside the allowed clock skew")
        for name in ("exp", "nbf"):
            value = claims.get(name)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise EnvelopeRejected(f"{name} is not a number")
            if name == "exp" and now > value + self._skew:
                raise EnvelopeRejected("exp has passed")
            if name == "nbf" and now + self._skew < value:
                raise EnvelopeRejected("nbf is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not JTI_PATTERN.fullmatch(jti):
            raise EnvelopeRejected("jti missing or malformed")
        fmt = claims.get("format")
        if not isinstance(fmt, str):
            raise EnvelopeRejected("format missing")
        if "body" not in claims:
            raise EnvelopeRejected("body missing")
        return Claims(str(claims["iss"]), jti, int(iat), fmt, claims["body"])


def seal(
    claims: dict[str, Any],
    signing_key: Key,
    signing_alg: str,
    gateway_enc_jwk: dict[str, Any],
) -> str:
    """Sign, then encrypt: what an agency system does (the reference client and the tests)."""
    jwe_registry, jws_registry = registries(16 * 1024 * 1024)
    header = {"alg": signing_alg, "kid": signing_key.kid, "typ": NOTIFICATION_TYP}
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
    token = jws.serialize_compact(header, payload, signing_key, registry=jws_registry)
    enc_key: Key
    if gateway_enc_jwk.get("kty") == "OKP":
        enc_key = OKPKey.import_key(gateway_enc_jwk)
    else:
        enc_key = ECKey.import_key(gateway_enc_jwk)
    protected = {"alg": JWE_ALG, "enc": JWE_ENC, "kid": gateway_enc_jwk["kid"], "cty": "JWT"}
    return jwe.encrypt_compact(protected, token, enc_key, registry=jwe_registry)
