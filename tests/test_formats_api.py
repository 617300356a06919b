"""The fhir-r4 and cmr-xml/1 formats end to end, over real HTTPS with real client
certificates, on SQLite and PostgreSQL: each shipped example is stored as exactly its JSON
twin, every malformed or hostile body answers 422 schema_invalid with the path of the problem
and stores nothing, and `cmr-gateway send --format` sends the shipped examples."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.cli import main
from gateway.services import open_services
from gateway.storage import tables
from tests.support import EXAMPLES, RunningGateway, example

MARKER = "ZZSECRETZZ"

TWINS = [
    # (agency allowed the format, format, shipped file, stem of the JSON twin)
    ("BHSCT", "fhir-r4", "harm-route.fhir.json", "harm-route"),
    ("BHSCT", "fhir-r4", "good-practice.fhir.json", "good-practice"),
    ("PSNI", "cmr-xml/1", "harm-route.cmr.xml", "harm-route"),
    ("PSNI", "cmr-xml/1", "good-practice.cmr.xml", "good-practice"),
]


def body_of(fmt: str, file: str) -> Any:
    text = (EXAMPLES / file).read_text(encoding="utf-8")
    return text if fmt == "cmr-xml/1" else json.loads(text)


async def stored(gw: RunningGateway) -> list[tuple[str, str, dict[str, Any]]]:
    """(agency, format, decrypted canonical document) of every stored notification."""
    async with open_services(gw.settings) as s, s.db.transaction() as conn:
        rows = (
            await conn.execute(sa.select(tables.notifications).order_by(tables.notifications.c.id))
        ).all()
        return [
            (
                row.agency,
                row.format,
                json.loads(
                    s.cipher.decrypt(
                        row.key_id, row.payload, aad=f"{row.agency}\x00{row.jti}".encode()
                    )
                ),
            )
            for row in rows
        ]


async def stored_count(gw: RunningGateway) -> int:
    async with open_services(gw.settings) as s:
        return await s.notifications.count()


@pytest.mark.parametrize(("code", "fmt", "file", "stem"), TWINS)
async def test_each_shipped_example_is_stored_as_its_json_twin(
    gateway: RunningGateway, code: str, fmt: str, file: str, stem: str
) -> None:
    agency = await gateway.agency(code)
    resp = await agency.post(agency.seal(format=fmt, body=body_of(fmt, file)))
    assert resp.status == 202, resp.body
    assert await stored(gateway) == [(code, fmt, example(stem))]


def _fhir(change: Any) -> Any:
    bundle = body_of("fhir-r4", "harm-route.fhir.json")
    change(bundle)
    return bundle


def _xml(old: str, new: str) -> str:
    text: str = body_of("cmr-xml/1", "harm-route.cmr.xml")
    assert old in text
    return text.replace(old, new, 1)


def _nested(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"url": "https://x.example", "valueString": MARKER}
    for _ in range(levels):
        node = {"url": "https://x.example", "extension": [node]}
    return node


HOSTILE: list[tuple[str, str, Any, str, str]] = [
    # (case, format, body, pointer, fragment of the message)
    ("invalid XML", "cmr-xml/1", _xml("</route>", "</rout>"), "/", "not well-formed XML"),
    (
        "XSD-invalid XML",
        "cmr-xml/1",
        _xml("<dateOfBirth>2019-03-14", "<dateOfBirth>2019-02-30"),
        "/notification/children/child[2]/dateOfBirth",
        "must be a date (YYYY-MM-DD)",
    ),
    (
        "billion laughs",
        "cmr-xml/1",
        '<?xml version="1.0"?><!DOCTYPE notification [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
        ']><notification xmlns="https://sbni.example/schemas/cmr-xml/1">&c;</notification>',
        "/",
        "DTDs and entities are not allowed",
    ),
    (
        "external entity",
        "cmr-xml/1",
        '<?xml version="1.0"?><!DOCTYPE n [<!ENTITY x SYSTEM "file:///etc/passwd">]><n>&x;</n>',
        "/",
        "DTDs and entities are not allowed",
    ),
    (
        "DTD",
        "cmr-xml/1",
        _xml(
            "<notification ",
            '<!DOCTYPE notification SYSTEM "http://attacker.example/d"><notification ',
        ),
        "/",
        "DTDs and entities are not allowed",
    ),
    (
        "deep XML",
        "cmr-xml/1",
        "<notification>" + "<a>" * 1000 + "</a>" * 1000 + "</notification>",
        "/notification" + "/a" * 31,
        "nested more than 32 levels deep",
    ),
    ("XML body not a string", "cmr-xml/1", {"x": MARKER}, "/", "must be an XML document"),
    (
        "XML mapping to a schema-invalid notification",
        "cmr-xml/1",
        _xml("<category>neglect</category>", "<category>physical</category>"),
        "/notification/reg17/abuseCategories",
        "must not contain duplicate items",
    ),
    (
        "wrong FHIR resource type",
        "fhir-r4",
        _fhir(lambda b: b["entry"][1]["resource"].update(resourceType="Medication")),
        "/entry/1/resource/resourceType",
        "must be one of",
    ),
    (
        "FHIR resource not a Bundle",
        "fhir-r4",
        {"resourceType": "Patient", "name": [{"text": MARKER}]},
        "/resourceType",
        "must be Bundle",
    ),
    (
        "missing Patient",
        "fhir-r4",
        _fhir(
            lambda b: b.update(
                entry=[e for e in b["entry"] if e["resource"]["resourceType"] != "Patient"]
            )
        ),
        "/entry",
        "is required: a Patient",
    ),
    (
        "invalid FHIR",
        "fhir-r4",
        _fhir(lambda b: b["entry"][1]["resource"].update(birthDate=MARKER)),
        "/entry/1/resource/birthDate",
        "",
    ),
    (
        "deep FHIR",
        "fhir-r4",
        _fhir(lambda b: b["entry"][1]["resource"].update(extension=[_nested(100)])),
        "/entry/1/resource" + "/extension/0" * 15,
        "nested more than 32 levels deep",
    ),
    (
        "FHIR mapping to a schema-invalid notification",
        "fhir-r4",
        _fhir(lambda b: b["entry"][1]["resource"].update(gender=MARKER)),
        "/entry/1/resource/gender",
        "must be one of: male, female, other, unknown (canonical /children/0/gender)",
    ),
    (
        "hostile XHTML in FHIR",
        "fhir-r4",
        _fhir(
            lambda b: b["entry"][0]["resource"]["section"][0]["text"].update(
                div='<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                '<div xmlns="http://www.w3.org/1999/xhtml">&x;</div>'
            )
        ),
        "/entry/0/resource/section/0/text/div",
        "DTDs and entities are not allowed",
    ),
]


async def test_malformed_and_hostile_bodies_answer_schema_invalid(
    gateway: RunningGateway,
) -> None:
    agencies = {"fhir-r4": await gateway.agency("BHSCT"), "cmr-xml/1": await gateway.agency("PSNI")}
    for case, fmt, body, pointer, fragment in HOSTILE:
        agency = agencies[fmt]
        resp = await agency.post(agency.seal(format=fmt, body=body))
        assert resp.status == 422, (case, resp.status, resp.body)
        assert resp.content_type == "application/problem+json", case
        problem = resp.json()
        assert problem["code"] == "schema_invalid", case
        assert any(
            e["pointer"] == pointer and fragment in e["message"] for e in problem["errors"]
        ), (case, problem["errors"])
        assert MARKER not in resp.body.decode(), case
    assert await stored_count(gateway) == 0
    async with open_services(gateway.settings) as s:
        events = await s.audit.events()
    rejected = [e for e in events if e.action == "notification.rejected"]
    assert len(rejected) == len(HOSTILE)
    assert all(json.loads(e.details)["code"] == "schema_invalid" for e in rejected)


async def test_a_format_the_agency_may_not_send(gateway: RunningGateway) -> None:
    bhsct = await gateway.agency("BHSCT")  # an HSCT: fhir-r4 but not cmr-xml/1
    xml = body_of("cmr-xml/1", "harm-route.cmr.xml")
    resp = await bhsct.post(bhsct.seal(format="cmr-xml/1", body=xml))
    assert resp.status == 422
    assert resp.json()["code"] == "format_not_allowed"
    psni = await gateway.agency("PSNI")  # police: cmr-xml/1 but not fhir-r4
    bundle = body_of("fhir-r4", "harm-route.fhir.json")
    resp = await psni.post(psni.seal(format="fhir-r4", body=bundle))
    assert resp.json()["code"] == "format_not_allowed"
    assert await stored_count(gateway) == 0


@pytest.mark.parametrize(
    ("code", "fmt", "file"),
    [("BHSCT", "fhir-r4", "harm-route.fhir.json"), ("PSNI", "cmr-xml/1", "good-practice.cmr.xml")],
)
async def test_cli_send_with_format(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str], code: str, fmt: str, file: str
) -> None:
    agency = await gateway.agency(code)
    argv = [
        "--data-dir",
        str(gateway.settings.data_dir),
        "send",
        "--credentials",
        str(agency.dir),
        "--url",
        gateway.api_url,
        "--format",
        fmt,
        str(EXAMPLES / file),
    ]
    # main() runs its own event loop, so it cannot run on this test's.
    assert await asyncio.to_thread(main, argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "accepted: CMRN-" in out
    assert "receipt verified" in out
    [(agency_code, stored_format, document)] = await stored(gateway)
    assert (agency_code, stored_format) == (code, fmt)
    assert document == example(file.split(".")[0])
