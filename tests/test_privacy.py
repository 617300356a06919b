"""Personal data never appears in the logs, in answers to other parties, or in clear in the
database: markers planted in every personal field are searched for in the raw storage."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from gateway.services import open_services
from tests.support import RunningGateway, example

MARK = "ZQXMARK"
MARKED_DOB = "2013-07-19"


def marked_notification() -> dict[str, Any]:
    """The harm example with a marker in every field that names or describes a person."""
    n = example()
    counter = iter(range(1000))

    def m() -> str:
        return f"{MARK}{next(counter):03d}"

    for child in n["children"]:
        child["given_name"], child["family_name"] = m(), m()
        child["other_names"] = [m()]
        child["address"] = {"lines": [m()], "town": m(), "postcode": m(), "country": "GB"}
        child["identifiers"] = [{"system": "hcn", "value": m()}]
        if "ethnicity" in child:
            child["ethnicity"] = m()
    n["children"][0].pop("stated_age", None)
    n["children"][0]["date_of_birth"] = MARKED_DOB
    for adult in n.get("adults", []):
        adult["name"] = m()
        adult["address"] = {"lines": [m()], "town": m(), "postcode": m(), "country": "GB"}
    n["incident"]["place"] = m()
    n["incident"]["description"] = m()
    for key in n["narratives"]:
        n["narratives"][key] = m()
    n["notifier"] = {"name": m(), "role": m(), "email": f"{MARK.lower()}@example.org", "phone": m()}
    for agency in n.get("agencies_involved", []):
        agency["involvement"] = m()
    return n


async def raw_storage(gw: RunningGateway) -> bytes:
    url = gw.settings.effective_database_url
    if url.startswith("sqlite"):
        db = gw.settings.data_dir / "gateway.db"
        return b"".join(p.read_bytes() for p in db.parent.glob("gateway.db*"))
    dump = io.StringIO()
    with psycopg.connect(url.replace("+asyncpg", "")) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        for table in tables:
            for (row,) in conn.execute(f'SELECT row_to_json(t)::text FROM "{table}" t'):
                dump.write(row)
    return dump.getvalue().encode()


async def test_markers_never_leave_the_encrypted_payload(
    gateway: RunningGateway, log_stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    psni = await gateway.agency("PSNI")
    body = marked_notification()
    accepted = await psni.post(psni.seal(body=body))
    assert accepted.status == 202, accepted.body

    invalid = marked_notification()
    invalid["children"][0]["gender"] = MARK
    invalid["notifier"]["email"] = MARK
    rejected = await psni.post(psni.seal(body=invalid))
    assert rejected.status == 422
    assert MARK not in rejected.body.decode()

    # The same markers in an envelope the gateway cannot open: nothing of it is logged either.
    await psni.post(psni.seal(body=body, aud=MARK))

    logs = log_stream.getvalue() + caplog.text
    assert "notification_accepted" in log_stream.getvalue()  # the logs are really captured
    assert MARK not in logs and MARK.lower() not in logs
    assert MARKED_DOB not in logs

    raw = await raw_storage(gateway)
    assert raw  # really read
    assert MARK.encode() not in raw and MARK.lower().encode() not in raw
    assert MARKED_DOB.encode() not in raw

    # ... and it is all there for whoever holds the key.
    async with open_services(gateway.settings) as s, s.db.transaction() as conn:
        row = (
            await conn.execute(text("SELECT agency, jti, key_id, payload FROM notifications"))
        ).one()
        plain = s.cipher.decrypt(row.key_id, row.payload, f"{row.agency}\x00{row.jti}".encode())
    assert json.loads(plain) == body


async def test_ciphertext_is_bound_to_its_row(gateway: RunningGateway) -> None:
    """A payload copied into another row does not open there."""
    from cryptography.exceptions import InvalidTag

    psni = await gateway.agency("PSNI")
    assert (await psni.post(psni.seal())).status == 202
    async with open_services(gateway.settings) as s, s.db.transaction() as conn:
        row = (
            await conn.execute(text("SELECT agency, jti, key_id, payload FROM notifications"))
        ).one()
        with pytest.raises(InvalidTag):
            s.cipher.decrypt(row.key_id, row.payload, f"{row.agency}\x00other-jti".encode())


def test_redaction_processor_drops_personal_and_key_fields() -> None:
    from gateway import logging as gwlog

    stream = io.StringIO()
    gwlog.configure("debug", "json", stream)
    import structlog

    structlog.get_logger("t").info(
        "x",
        given_name=MARK,
        body={"narratives": MARK},
        jwk={"kty": "OKP", "d": MARK, "kid": "k1"},
        nested=[{"date_of_birth": MARK}],
        kid="k1",
    )
    gwlog.configure("info", "json")
    line = json.loads(stream.getvalue())
    assert MARK not in stream.getvalue()
    assert line["kid"] == "k1" and line["jwk"]["kid"] == "k1"
