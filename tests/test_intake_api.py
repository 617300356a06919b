"""The agency API end to end over real HTTPS with real client certificates, on SQLite and
PostgreSQL: the happy path, and every rejection of PROTOCOL.md with nothing stored."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import re
import time
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from joserfc.jwk import OctKey, OKPKey

from gateway.clock import FrozenClock
from gateway.intake.receipts import verify_receipt
from gateway.services import open_services
from gateway.settings import Settings
from tests.support import Agency, RunningGateway, b64, b64json, example, running_gateway


async def stored_count(gw: RunningGateway) -> int:
    async with open_services(gw.settings) as s:
        return await s.notifications.count()


def assert_problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, resp.body
    assert resp.content_type == "application/problem+json"
    body = resp.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "request_id"} <= set(body)
    return body


async def test_happy_path_receipt_status_and_resend(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    envelope = psni.seal()
    resp = await psni.post(envelope)
    assert resp.status == 202, resp.body
    body = resp.json()
    assert re.fullmatch(r"CMRN-\d{4}-0001", body["reference"])
    assert body["reference"].split("-")[1] == str(gateway.clock.now().year)

    payload = verify_receipt(body["receipt"], gateway.jwks())
    assert payload["iss"] == "SBNI-CMRP"
    assert payload["sub"] == "PSNI"
    assert payload["reference"] == body["reference"]
    assert payload["envelope_sha256"] == hashlib.sha256(envelope).hexdigest()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", payload["received_at"])

    again = await psni.post(envelope)
    assert again.status == 200
    assert again.json() == body
    # Hours later its iat is far outside the skew, and the resend is still answered as before.
    gateway.clock.advance(timedelta(hours=6))
    later = await psni.post(envelope)
    assert later.status == 200, later.body
    assert later.json() == body
    assert await stored_count(gateway) == 1

    status = await psni.get(f"/v1/notifications/{body['reference']}")
    assert status.status == 200
    assert status.json()["status"] == "received"
    assert status.json()["reference"] == body["reference"]

    # Another agency cannot learn that the reference exists.
    ea = await gateway.agency("EA")
    other = await ea.get(f"/v1/notifications/{body['reference']}")
    assert_problem(other, 404, "not_found")

    async with open_services(gateway.settings) as s:
        result = await s.audit.verify()
        events = await s.audit.events(body["reference"])
    assert result.ok
    assert [e.action for e in events] == ["notification.received"]


async def test_good_practice_example_is_accepted(gateway: RunningGateway) -> None:
    ea = await gateway.agency("EA")
    resp = await ea.post(ea.seal(body=example("good-practice")))
    assert resp.status == 202, resp.body


def _hostile(agency: Agency, case: str) -> bytes:
    claims = agency.claims()
    payload = json.dumps(claims).encode()
    hdr = agency.inner_header()
    good_inner = agency.sign_raw(hdr, payload)
    if case == "tampered_ciphertext":
        parts = agency.seal(claims).decode().split(".")
        ct = bytearray(parts[3].encode())
        ct[5] = ord("A") if ct[5] != ord("A") else ord("B")
        parts[3] = ct.decode()
        return ".".join(parts).encode()
    if case == "wrong_gateway_key":
        stranger = OKPKey.generate_key("X25519", private=False)
        jwk = {**stranger.as_dict(private=False), "kid": agency.gateway.enc_jwk()["kid"]}
        from gateway.intake.envelope import seal

        return seal(claims, agency.key, agency.alg, jwk).encode()
    if case == "unknown_gateway_kid":
        return agency.encrypt_raw(good_inner, {"kid": "no-such-key"})
    if case == "unregistered_signing_key":
        stranger = OKPKey.generate_key("Ed25519", private=True)
        stranger.ensure_kid()
        return agency.encrypt_raw(agency.sign_raw({**hdr, "kid": stranger.kid}, payload, stranger))
    if case == "signed_by_other_key_same_kid":
        stranger = OKPKey.generate_key("Ed25519", private=True)
        return agency.encrypt_raw(agency.sign_raw(hdr, payload, stranger))
    if case == "alg_none":
        token = f"{b64json({**hdr, 'alg': 'none'})}.{b64(payload)}."
        return agency.encrypt_raw(token)
    if case == "alg_hs256":
        secret = OctKey.import_key(b"k" * 32)
        return agency.encrypt_raw(agency.sign_raw({**hdr, "alg": "HS256"}, payload, secret))
    if case == "outer_rsa1_5":
        parts = agency.encrypt_raw(good_inner).decode().split(".")
        header = json.loads(__import__("base64").urlsafe_b64decode(parts[0] + "=="))
        parts[0] = b64json({**header, "alg": "RSA1_5"})
        return ".".join(parts).encode()
    if case == "outer_dir":
        parts = agency.encrypt_raw(good_inner).decode().split(".")
        parts[0] = b64json({"alg": "dir", "enc": "A256GCM", "kid": "x", "cty": "JWT"})
        return ".".join(parts).encode()
    if case in ("embedded_jwk", "jku", "x5u", "crit"):
        extra: dict[str, Any] = {
            "embedded_jwk": {"jwk": agency.key.as_dict(private=False)},
            "jku": {"jku": "https://attacker.example/jwks"},
            "x5u": {"x5u": "https://attacker.example/cert"},
            "crit": {"crit": ["urn:x"], "urn:x": 1},
        }[case]
        return agency.encrypt_raw(agency.sign_raw({**hdr, **extra}, payload))
    if case == "outer_zip":
        return agency.encrypt_raw(good_inner, {"zip": "DEF"})
    if case == "outer_jku":
        return agency.encrypt_raw(good_inner, {"jku": "https://attacker.example/jwks"})
    if case == "wrong_typ":
        return agency.encrypt_raw(agency.sign_raw({**hdr, "typ": "JWT"}, payload))
    if case == "stale_iat":
        return agency.seal(iat=int(time.time()) - 301 - 5)
    if case == "future_iat":
        return agency.seal(iat=int(time.time()) + 301 + 5)
    if case == "wrong_aud":
        return agency.seal(aud="SOMEONE-ELSE")
    if case == "bad_jti":
        return agency.seal(jti="has space")
    if case == "long_jti":
        return agency.seal(jti="x" * 129)
    if case == "no_body":
        c = agency.claims()
        del c["body"]
        return agency.seal(c)
    if case == "deeply_nested_claims":
        deep = b"[" * 150_000 + b"]" * 150_000
        return agency.encrypt_raw(agency.sign_raw(hdr, deep))
    if case == "not_a_jwe":
        return b"definitely.not.a.jwe"
    if case == "garbage_header":
        return b"!!!!.a.b.c.d"
    raise AssertionError(case)


HOSTILE = [
    "tampered_ciphertext",
    "wrong_gateway_key",
    "unknown_gateway_kid",
    "unregistered_signing_key",
    "signed_by_other_key_same_kid",
    "alg_none",
    "alg_hs256",
    "outer_rsa1_5",
    "outer_dir",
    "embedded_jwk",
    "jku",
    "x5u",
    "crit",
    "outer_zip",
    "outer_jku",
    "wrong_typ",
    "stale_iat",
    "future_iat",
    "wrong_aud",
    "bad_jti",
    "long_jti",
    "no_body",
    "not_a_jwe",
    "garbage_header",
    "deeply_nested_claims",
]


async def test_every_failure_to_open_is_one_answer(gateway: RunningGateway) -> None:
    """Each cause gets the same 401 envelope_rejected (no oracle), nothing is stored, and the
    cause is logged and audited under the request_id."""
    psni = await gateway.agency("PSNI")
    answers = set()
    for case in HOSTILE:
        resp = await psni.post(_hostile(psni, case))
        body = assert_problem(resp, 401, "envelope_rejected")
        answers.add(
            json.dumps({k: v for k, v in body.items() if k != "request_id"}, sort_keys=True)
        )
    assert len(answers) == 1
    assert await stored_count(gateway) == 0
    async with open_services(gateway.settings) as s:
        events = await s.audit.events()
        assert (await s.audit.verify()).ok
    rejected = [e for e in events if e.action == "notification.rejected"]
    assert len(rejected) == len(HOSTILE)
    assert all(json.loads(e.details)["code"] == "envelope_rejected" for e in rejected)
    assert all(json.loads(e.details).get("cause") for e in rejected)


@pytest.mark.parametrize("group_commit", ["on", "off"])
async def test_a_key_revoked_while_the_gateway_runs_is_refused_from_the_next_envelope(
    installation: Settings, clock: FrozenClock, log_stream: io.StringIO, group_commit: str
) -> None:
    """The gateway keeps the keys it has found; the revocation is made by another process
    (as by `agency revoke-key`), and the transaction that would store the next envelope finds
    it, with group commit and without."""
    settings = installation.with_overrides(intake_group_commit=group_commit)
    async with running_gateway(settings, clock) as gateway:
        psni = await gateway.agency("PSNI")
        assert (await psni.post(psni.seal())).status == 202
        async with open_services(gateway.settings) as s:
            await s.agency_keys.revoke("PSNI", str(psni.key.kid), "test", gateway.clock.now())
        for _ in range(2):  # found at the commit, then (forgotten) before opening
            assert_problem(await psni.post(psni.seal()), 401, "envelope_rejected")
        assert await stored_count(gateway) == 1
        async with open_services(gateway.settings) as s:
            events = await s.audit.events()
            assert (await s.audit.verify()).ok
    rejected = [json.loads(e.details) for e in events if e.action == "notification.rejected"]
    assert [d["cause"] for d in rejected] == ["signing key not registered or revoked for iss"] * 2


async def test_a_key_registered_while_the_gateway_runs_is_accepted_at_once(
    gateway: RunningGateway,
) -> None:
    psni = await gateway.agency("PSNI")
    assert (await psni.post(psni.seal())).status == 202
    second = OKPKey.generate_key("Ed25519", parameters={"kid": "psni-second"})
    rotated = dataclasses.replace(psni, key=second)
    assert_problem(await rotated.post(rotated.seal()), 401, "envelope_rejected")
    async with open_services(gateway.settings) as s:
        public = {k: v for k, v in second.as_dict().items() if k != "d"}
        await s.agency_keys.add(
            "PSNI", "psni-second", "Ed25519", public, "test", gateway.clock.now()
        )
    assert (await rotated.post(rotated.seal())).status == 202
    assert (await psni.post(psni.seal())).status == 202  # the first key still holds
    assert await stored_count(gateway) == 3


async def test_agency_mismatch(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    ea = await gateway.agency("EA")
    # Signed by PSNI's key as PSNI, sent over EA's connection.
    resp = await ea.post(psni.seal())
    assert_problem(resp, 403, "agency_mismatch")
    assert await stored_count(gateway) == 0


async def test_jti_reuse_with_other_bytes(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    first = await psni.post(psni.seal(jti="PSNI-2026-42"))
    assert first.status == 202
    resp = await psni.post(psni.seal(jti="PSNI-2026-42"))
    assert_problem(resp, 409, "replayed_message")
    assert await stored_count(gateway) == 1


async def test_wrong_content_type(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    resp = await psni.post(psni.seal(), content_type="application/json")
    assert_problem(resp, 415, "unsupported_media_type")
    assert await stored_count(gateway) == 0


async def test_oversized_body(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    big = b"A" * (gateway.settings.max_body_bytes + 1)
    assert_problem(await psni.post(big), 413, "payload_too_large")

    # A chunked body (no Content-Length) is capped too.
    async def chunks() -> Any:
        for _ in range(gateway.settings.max_body_bytes // 65536 + 2):
            yield b"A" * 65536

    async with (
        psni.session() as s,
        s.post(
            "/v1/notifications", data=chunks(), headers={"Content-Type": "application/jose"}
        ) as r,
    ):
        assert r.status == 413
        assert (await r.json(content_type=None))["code"] == "payload_too_large"
    assert await stored_count(gateway) == 0


async def test_schema_invalid_lists_pointers(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    body = example()
    body["children"][0]["gender"] = "MARKER-not-a-gender"
    del body["notifier"]
    body = assert_problem(await psni.post(psni.seal(body=body)), 422, "schema_invalid")
    pointers = {e["pointer"] for e in body["errors"]}
    assert "/children/0/gender" in pointers
    assert (
        "" in pointers or "/" in pointers or any("notifier" in e["message"] for e in body["errors"])
    )
    assert "MARKER" not in json.dumps(body)
    assert await stored_count(gateway) == 0


async def test_cross_field_invalid(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    body = example()
    future = (gateway.clock.now() + timedelta(days=3)).date().isoformat()
    body["incident"]["date"] = future
    resp = assert_problem(await psni.post(psni.seal(body=body)), 422, "schema_invalid")
    assert {"pointer": "/incident/date"}.items() <= resp["errors"][0].items() or any(
        e["pointer"] == "/incident/date" for e in resp["errors"]
    )
    body = example()
    body["children"][0]["date_of_birth"] = "2001-01-01"
    resp = assert_problem(await psni.post(psni.seal(body=body)), 422, "schema_invalid")
    assert any(e["pointer"] == "/children/0/date_of_birth" for e in resp["errors"])
    assert await stored_count(gateway) == 0


async def test_format_not_allowed(gateway: RunningGateway) -> None:
    ea = await gateway.agency("EA")  # EA may send only cmr-notification/1
    resp = await ea.post(ea.seal(format="fhir-r4"))
    assert_problem(resp, 422, "format_not_allowed")
    resp = await ea.post(ea.seal(format="no-such-format/9"))
    assert_problem(resp, 422, "format_not_allowed")
    assert await stored_count(gateway) == 0


async def test_connection_without_client_certificate_is_refused(gateway: RunningGateway) -> None:
    async with gateway.anonymous_api_session() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.post("/v1/notifications", data=b"x") as r:
                await r.read()
    assert await stored_count(gateway) == 0


async def test_parallel_identical_submissions(gateway: RunningGateway) -> None:
    psni = await gateway.agency("PSNI")
    envelope = psni.seal()
    async with psni.session(connector_owner=True) as s:

        async def post() -> tuple[int, Any]:
            async with s.post(
                "/v1/notifications", data=envelope, headers={"Content-Type": "application/jose"}
            ) as r:
                return r.status, await r.json(content_type=None)

        results = await asyncio.gather(*(post() for _ in range(50)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 49 + [202]
    assert len({json.dumps(body, sort_keys=True) for _, body in results}) == 1
    assert await stored_count(gateway) == 1


async def test_parallel_different_submissions_get_consecutive_references(
    gateway: RunningGateway,
) -> None:
    psni = await gateway.agency("PSNI")
    envelopes = [psni.seal() for _ in range(50)]
    async with psni.session() as s:

        async def post(envelope: bytes) -> tuple[int, Any]:
            async with s.post(
                "/v1/notifications", data=envelope, headers={"Content-Type": "application/jose"}
            ) as r:
                return r.status, await r.json(content_type=None)

        results = await asyncio.gather(*(post(e) for e in envelopes))
    assert all(status == 202 for status, _ in results), results
    numbers = sorted(int(body["reference"].rsplit("-", 1)[1]) for _, body in results)
    assert numbers == list(range(1, 51))
    assert await stored_count(gateway) == 50
    async with open_services(gateway.settings) as s:
        assert (await s.audit.verify()).events == 50 + 1  # 50 intakes and the key registration
