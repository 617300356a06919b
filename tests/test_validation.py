"""Tests of the canonical notification's schema and cross-field rules."""

from __future__ import annotations

import copy
import json
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import SchemaInvalid
from gateway.intake.validation import (
    AGE_BANDS,
    ChildFacts,
    NotificationValidator,
    ValidNotification,
    age_band,
    age_band_from_stated,
)

SCHEMAS = Path(__file__).parent.parent / "schemas"
SCHEMA_PATH = SCHEMAS / "cmr-notification-1.schema.json"
HARM = SCHEMAS / "examples" / "harm-route.notification.json"
GOOD_PRACTICE = SCHEMAS / "examples" / "good-practice.notification.json"
RECEIVED = date(2026, 6, 1)


@cache
def _validator() -> NotificationValidator:
    return NotificationValidator.from_file(SCHEMA_PATH)


@cache
def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def _example(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _errors(body: Any, received_on: date = RECEIVED) -> list[dict[str, str]]:
    with pytest.raises(SchemaInvalid) as caught:
        _validator().validate(body, received_on)
    return [e.as_dict() for e in caught.value.errors]


def _pointers(body: Any, received_on: date = RECEIVED) -> list[str]:
    return [e["pointer"] for e in _errors(body, received_on)]


def _one_child(date_of_birth: str, incident: str) -> dict[str, Any]:
    doc = _example(HARM)
    doc["children"] = doc["children"][:1]
    doc["children"][0]["date_of_birth"] = date_of_birth
    doc["incident"]["date"] = incident
    return doc


# The examples


@pytest.mark.parametrize("received_on", [RECEIVED, date(2027, 1, 31), date(2040, 12, 31)])
def test_harm_example_is_valid(received_on: date) -> None:
    valid = _validator().validate(_example(HARM), received_on)
    assert isinstance(valid, ValidNotification)
    assert valid.route == "harm"
    assert valid.incident_type == "serious_harm"
    assert valid.incident_date == date(2026, 2, 10)
    assert valid.children == (
        ChildFacts(gender="female", age_band="0-11 months"),
        ChildFacts(gender="male", age_band="6-11 years"),
    )
    assert valid.document == _example(HARM)


def test_harm_example_carries_the_learning_from_reviews() -> None:
    doc = _example(HARM)
    assert len(doc["children"]) == 2
    assert "partner_of_parent" in {a["relationship"] for a in doc["adults"]}
    assert doc["family"]["interpreter_needed"] is True
    assert "IE" in doc["family"]["other_jurisdictions"]
    assert "IE" in {a["jurisdiction"] for a in doc["agencies_involved"]}


@pytest.mark.parametrize("received_on", [RECEIVED, date(2030, 2, 28)])
def test_good_practice_example_is_valid(received_on: date) -> None:
    valid = _validator().validate(_example(GOOD_PRACTICE), received_on)
    assert valid.route == "good_practice"
    assert valid.incident_date == date(2026, 3, 3)
    assert valid.children == (ChildFacts(gender="male", age_band="12-17 years"),)


def test_schema_has_its_id_and_describes_every_property() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$id"] == "https://sbni.example/schemas/cmr-notification-1.schema.json"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert node.get("additionalProperties") is False, where
            for name, sub in node.get("properties", {}).items():
                assert "description" in sub, f"{where}/{name}"
            if node.get("type") == "array":
                assert "maxItems" in node, where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}/{index}")

    walk(schema, "")


def test_age_band_is_never_a_field() -> None:
    doc = _example(HARM)
    doc["children"][0]["age_band"] = "1-5 years"
    assert _errors(doc) == [
        {"pointer": "/children/0/age_band", "message": "unexpected property: age_band"}
    ]


# Schema errors: pointers and messages


def test_required_points_at_the_parent() -> None:
    doc = _example(HARM)
    del doc["children"][1]["given_name"]
    del doc["notifier"]
    assert _errors(doc) == [
        {"pointer": "", "message": "is required: notifier"},
        {"pointer": "/children/1", "message": "is required: given_name"},
    ]


def test_all_schema_errors_are_reported_in_pointer_order() -> None:
    doc = _example(HARM)
    doc["children"] = [copy.deepcopy(doc["children"][0]) for _ in range(12)]
    doc["children"][10]["gender"] = "x"
    doc["children"][2]["gender"] = "y"
    doc["incident"]["date"] = "10/02/2026"
    doc["notifier"]["name"] = "n" * 201
    assert _errors(doc) == [
        {
            "pointer": "/children/2/gender",
            "message": "must be one of: male, female, other, unknown",
        },
        {
            "pointer": "/children/10/gender",
            "message": "must be one of: male, female, other, unknown",
        },
        {"pointer": "/incident/date", "message": "must be a date (YYYY-MM-DD)"},
        {"pointer": "/notifier/name", "message": "is longer than 200 characters"},
    ]


def test_schema_errors_stop_before_the_cross_field_rules() -> None:
    doc = _example(HARM)
    doc["incident"]["date"] = "2099-01-01"
    doc["notifier"]["email"] = "not an address"
    assert _pointers(doc) == ["/notifier/email"]


@pytest.mark.parametrize("email", ["not an address", "a@b", "a b@example.org", "@example.org"])
def test_notifier_email_must_be_an_address(email: str) -> None:
    doc = _example(HARM)
    doc["notifier"]["email"] = email
    assert _errors(doc) == [{"pointer": "/notifier/email", "message": "must be an email address"}]


def test_additional_property_points_at_it_and_truncates_its_name() -> None:
    doc = _example(HARM)
    long_name = "k" * 100
    doc["family"][long_name] = 1
    doc["family"]["a/b~c"] = 2
    errors = _errors(doc)
    assert errors == [
        {"pointer": "/family/a~1b~0c", "message": "unexpected property: a/b~c"},
        {"pointer": f"/family/{long_name}", "message": f"unexpected property: {'k' * 64}..."},
    ]


def test_date_of_birth_xor_stated_age() -> None:
    doc = _example(HARM)
    doc["children"][0]["stated_age"] = {"years": 0, "months": 6}
    del doc["children"][1]["date_of_birth"]
    assert _errors(doc) == [
        {"pointer": "/children/0", "message": "must have only one of: date_of_birth, stated_age"},
        {"pointer": "/children/1", "message": "is required: one of date_of_birth, stated_age"},
    ]


def test_stated_age_bounds() -> None:
    doc = _example(GOOD_PRACTICE)
    doc["children"][0]["stated_age"] = {"years": 18, "months": 12}
    assert _errors(doc) == [
        {"pointer": "/children/0/stated_age/months", "message": "must be at most 11"},
        {"pointer": "/children/0/stated_age/years", "message": "must be at most 17"},
    ]


def test_interpreter_needed_requires_a_language() -> None:
    doc = _example(HARM)
    del doc["adults"][0]["interpreter"]["language"]
    del doc["family"]["language"]
    assert _errors(doc) == [
        {"pointer": "/adults/0/interpreter", "message": "is required: language"},
        {"pointer": "/family", "message": "is required: language"},
    ]


def test_route_objects_are_required_by_the_schema() -> None:
    harm = _example(HARM)
    del harm["reg17"]
    assert _errors(harm) == [{"pointer": "", "message": "is required: reg17"}]
    good = _example(GOOD_PRACTICE)
    del good["good_practice"]
    assert _errors(good) == [{"pointer": "", "message": "is required: good_practice"}]


def test_body_that_is_not_an_object() -> None:
    assert _errors([1, 2]) == [{"pointer": "", "message": "must be of type object"}]


def test_messages_never_contain_the_instance_values() -> None:
    doc = _example(HARM)
    child = doc["children"][0]
    child["given_name"] = "MARKER-XYZ-given"
    child["family_name"] = "MARKER-XYZ" * 30
    child["gender"] = "MARKER-XYZ-gender"
    child["date_of_birth"] = "MARKER-XYZ-dob"
    child["identifiers"][0]["system"] = "MARKER-XYZ-system"
    child["identifiers"][0]["value"] = ["MARKER-XYZ-value"]
    child["other_names"] = ["MARKER-XYZ", "MARKER-XYZ"] * 11
    doc["adults"][0]["relationship"] = "MARKER-XYZ-relationship"
    doc["adults"][1]["lives_with_child"] = "MARKER-XYZ"
    doc["narratives"]["case_outline"] = "MARKER-XYZ " * 2000
    doc["notifier"]["email"] = "MARKER-XYZ"
    doc["family"]["other_jurisdictions"] = ["MARKER-XYZ", "MARKER-XYZ"]
    doc["route"] = "MARKER-XYZ-route"
    errors = _errors(doc)
    assert len(errors) >= 12
    for error in errors:
        assert "MARKER" not in error["message"], error
        assert "XYZ" not in error["message"], error


# Cross-field rules


def test_date_of_birth_after_receipt() -> None:
    doc = _one_child("2026-06-02", "2026-02-10")
    assert _errors(doc) == [
        {"pointer": "/children/0/date_of_birth", "message": "is after the date of receipt"}
    ]


def test_incident_before_birth() -> None:
    doc = _one_child("2026-02-11", "2026-02-10")
    assert _errors(doc) == [
        {"pointer": "/children/0/date_of_birth", "message": "is after the incident date"}
    ]


def test_incident_after_receipt() -> None:
    doc = _example(HARM)
    doc["incident"]["date"] = "2026-06-02"
    assert _errors(doc) == [
        {"pointer": "/incident/date", "message": "is after the date of receipt"}
    ]
    # On the day of receipt itself is fine.
    assert _validator().validate(doc, date(2026, 6, 2)).incident_date == date(2026, 6, 2)


def test_child_must_be_under_18_at_the_incident() -> None:
    doc = _example(HARM)
    doc["children"][1]["date_of_birth"] = "2008-02-10"
    assert _errors(doc) == [
        {
            "pointer": "/children/1/date_of_birth",
            "message": "child must be under 18 at the incident date",
        }
    ]


def test_adult_date_of_birth_after_receipt() -> None:
    doc = _example(HARM)
    doc["adults"][1]["date_of_birth"] = "2026-06-02"
    assert _pointers(doc) == ["/adults/1/date_of_birth"]


def test_harm_route_needs_death_or_significant_harm() -> None:
    doc = _example(HARM)
    doc["reg17"]["child_died"] = False
    doc["reg17"]["significant_harm"] = False
    assert _errors(doc) == [
        {
            "pointer": "/reg17",
            "message": "must have child_died or significant_harm true for route harm",
        }
    ]
    doc["reg17"]["child_died"] = True
    _validator().validate(doc, RECEIVED)


def test_good_practice_route_needs_no_harm_flags() -> None:
    doc = _example(GOOD_PRACTICE)
    doc["reg17"]["significant_harm"] = False
    assert _validator().validate(doc, RECEIVED).route == "good_practice"


def test_good_practice_rule_holds_even_with_a_laxer_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    del schema["allOf"]
    lax = NotificationValidator(schema)
    good = _example(GOOD_PRACTICE)
    del good["good_practice"]
    with pytest.raises(SchemaInvalid) as caught:
        lax.validate(good, RECEIVED)
    assert [e.as_dict() for e in caught.value.errors] == [
        {"pointer": "", "message": "is required: good_practice"}
    ]
    harm = _example(HARM)
    del harm["reg17"]
    with pytest.raises(SchemaInvalid) as caught:
        lax.validate(harm, RECEIVED)
    assert [e.pointer for e in caught.value.errors] == [""]


def test_several_cross_field_errors_are_reported_together() -> None:
    doc = _example(HARM)
    doc["incident"]["date"] = "2026-07-01"
    doc["children"][0]["date_of_birth"] = "2026-06-15"
    doc["reg17"]["significant_harm"] = False
    assert _pointers(doc) == ["/children/0/date_of_birth", "/incident/date", "/reg17"]


def test_invalid_schema_is_refused_at_init() -> None:
    with pytest.raises(Exception, match="is not valid"):
        NotificationValidator({"type": "no-such-type"})


# Age bands


@pytest.mark.parametrize(
    ("date_of_birth", "on", "band"),
    [
        (date(2025, 3, 10), date(2025, 3, 10), "0-11 months"),
        (date(2025, 3, 10), date(2026, 3, 9), "0-11 months"),
        (date(2025, 3, 10), date(2026, 3, 10), "1-5 years"),
        (date(2020, 3, 10), date(2026, 3, 9), "1-5 years"),
        (date(2020, 3, 10), date(2026, 3, 10), "6-11 years"),
        (date(2014, 3, 10), date(2026, 3, 9), "6-11 years"),
        (date(2014, 3, 10), date(2026, 3, 10), "12-17 years"),
        (date(2008, 3, 10), date(2026, 3, 9), "12-17 years"),
        # Born on a leap day: the birthday in a common year is 1 March.
        (date(2024, 2, 29), date(2025, 2, 28), "0-11 months"),
        (date(2024, 2, 29), date(2025, 3, 1), "1-5 years"),
        (date(2020, 2, 29), date(2026, 2, 28), "1-5 years"),
        (date(2020, 2, 29), date(2026, 3, 1), "6-11 years"),
        (date(2012, 2, 29), date(2024, 2, 28), "6-11 years"),
        (date(2012, 2, 29), date(2024, 2, 29), "12-17 years"),
        (date(2008, 2, 29), date(2026, 2, 28), "12-17 years"),
    ],
)
def test_age_band_boundaries(date_of_birth: date, on: date, band: str) -> None:
    assert age_band(date_of_birth, on) == band


@pytest.mark.parametrize(
    ("date_of_birth", "on"),
    [
        (date(2008, 3, 10), date(2026, 3, 10)),
        (date(2008, 2, 29), date(2026, 3, 1)),
        (date(2000, 1, 1), date(2026, 3, 1)),
        (date(2026, 3, 11), date(2026, 3, 10)),
    ],
)
def test_age_band_refuses_18_and_over_and_before_birth(date_of_birth: date, on: date) -> None:
    with pytest.raises(ValueError):
        age_band(date_of_birth, on)


def test_17_years_364_days_is_valid_and_the_18th_birthday_is_not() -> None:
    valid = _validator().validate(_one_child("2008-02-11", "2026-02-10"), RECEIVED)
    assert valid.children == (ChildFacts("female", "12-17 years"),)
    assert _pointers(_one_child("2008-02-10", "2026-02-10")) == ["/children/0/date_of_birth"]


def test_leap_day_child_turns_18_on_1_march() -> None:
    valid = _validator().validate(_one_child("2008-02-29", "2026-02-28"), RECEIVED)
    assert valid.children[0].age_band == "12-17 years"
    assert _pointers(_one_child("2008-02-29", "2026-03-01")) == ["/children/0/date_of_birth"]


def test_born_on_the_day_of_the_incident() -> None:
    valid = _validator().validate(_one_child("2026-02-10", "2026-02-10"), RECEIVED)
    assert valid.children[0].age_band == "0-11 months"


@pytest.mark.parametrize(
    ("years", "months", "band"),
    [
        (0, 0, "0-11 months"),
        (0, 11, "0-11 months"),
        (1, 0, "1-5 years"),
        (5, 11, "1-5 years"),
        (6, 0, "6-11 years"),
        (11, 11, "6-11 years"),
        (12, 0, "12-17 years"),
        (17, 11, "12-17 years"),
    ],
)
def test_age_band_from_stated(years: int, months: int, band: str) -> None:
    assert age_band_from_stated(years, months) == band


@pytest.mark.parametrize(("years", "months"), [(18, 0), (-1, 0), (3, 12), (3, -1)])
def test_age_band_from_stated_refuses_out_of_range(years: int, months: int) -> None:
    with pytest.raises(ValueError):
        age_band_from_stated(years, months)


def test_stated_age_gives_the_band() -> None:
    doc = _example(GOOD_PRACTICE)
    doc["children"][0]["stated_age"] = {"years": 0, "months": 11}
    assert _validator().validate(doc, RECEIVED).children[0].age_band == "0-11 months"


# Properties


def _reference_years(date_of_birth: date, on: date) -> int:
    # Counts anniversaries one by one, a leap-day birthday falling on 1 March in common years:
    # deliberately a different computation from the one under test.
    years = 0
    while True:
        year = date_of_birth.year + years + 1
        try:
            anniversary = date_of_birth.replace(year=year)
        except ValueError:
            anniversary = date(year, 3, 1)
        if anniversary > on:
            return years
        years += 1


def _reference_band(years: int) -> str:
    if years == 0:
        return AGE_BANDS[0]
    return next(
        band
        for band, (low, high) in zip(AGE_BANDS[1:], [(1, 5), (6, 11), (12, 17)], strict=True)
        if low <= years <= high
    )


@st.composite
def _dates(draw: st.DrawFn) -> tuple[date, date, date]:
    date_of_birth = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 12, 31)))
    incident = draw(
        st.dates(min_value=date_of_birth, max_value=date_of_birth + timedelta(days=18 * 366))
    )
    received = draw(st.dates(min_value=incident, max_value=incident + timedelta(days=800)))
    return date_of_birth, incident, received


@settings(max_examples=200, deadline=None)
@given(_dates())
def test_valid_dates_are_accepted_with_the_reference_band(dates: tuple[date, date, date]) -> None:
    date_of_birth, incident, received = dates
    years = _reference_years(date_of_birth, incident)
    doc = _one_child(date_of_birth.isoformat(), incident.isoformat())
    for adult in doc["adults"]:
        adult.pop("date_of_birth", None)
    if years >= 18:
        assert _pointers(doc, received) == ["/children/0/date_of_birth"]
        return
    valid = _validator().validate(doc, received)
    assert valid.children[0].age_band == _reference_band(years)
    assert age_band(date_of_birth, incident) == _reference_band(years)


def _locations(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_locations(value, (*path, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_locations(value, (*path, index)))
    return found


def _required_locations(schema: dict[str, Any], doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    # Where a key can be dropped to break a required rule: walk the document and the schema
    # together, resolving local $refs.
    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = schema
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    found: list[tuple[Any, ...]] = []

    def walk(sub: dict[str, Any], value: Any, path: tuple[Any, ...]) -> None:
        sub = resolve(sub)
        if isinstance(value, dict):
            found.extend((*path, name) for name in sub.get("required", []) if name in value)
            for name, child in value.items():
                walk(sub["properties"][name], child, (*path, name))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(sub["items"], child, (*path, index))

    walk(schema, doc, ())
    return found


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return type(value).__name__


_WRONG_TYPES: list[Any] = [None, True, 12345, 1.5, "wrong", [], {}]


@st.composite
def _mutations(draw: st.DrawFn) -> dict[str, Any]:
    doc = _example(draw(st.sampled_from([HARM, GOOD_PRACTICE])))
    schema = _schema()
    if draw(st.booleans()):
        path = draw(st.sampled_from(_required_locations(schema, doc)))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]
    else:
        path = draw(st.sampled_from(_locations(doc)[1:]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        current = parent[path[-1]]
        # 1.5 rather than 1.0 in the list: 1.0 would pass as an integer.
        choices = [w for w in _WRONG_TYPES if _kind(w) != _kind(current)]
        parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(choices)))
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_mutations_always_raise_schema_invalid(doc: dict[str, Any]) -> None:
    with pytest.raises(SchemaInvalid) as caught:
        _validator().validate(doc, RECEIVED)
    assert caught.value.errors


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)

_shaped = st.fixed_dictionaries(
    {
        "route": st.sampled_from(["harm", "good_practice"]) | _json,
        "incident": st.fixed_dictionaries(
            {"type": st.sampled_from(["death", "serious_harm"]), "date": st.text(max_size=12)}
        )
        | _json,
        "children": st.lists(
            st.dictionaries(
                st.sampled_from(["given_name", "family_name", "gender", "date_of_birth", "x"]),
                _json,
            ),
            max_size=3,
        ),
        "narratives": _json,
        "notifier": _json,
    }
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_json, _shaped), st.dates())
def test_arbitrary_json_raises_only_schema_invalid(body: Any, received_on: date) -> None:
    try:
        _validator().validate(body, received_on)
    except SchemaInvalid as invalid:
        assert invalid.errors
        for error in invalid.errors:
            assert error.pointer == "" or error.pointer.startswith("/")
