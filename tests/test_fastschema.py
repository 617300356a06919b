"""The compiled fast path agrees with jsonschema: on the examples, on thousands of documents
made from them by random edits, and on the corner cases of the keywords' semantics."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from gateway.intake.fastschema import Unsupported, compile_schema
from gateway.intake.validation import NotificationValidator, _format_checker

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "schemas" / "cmr-notification-1.schema.json").read_text())
EXAMPLES = [
    json.loads((REPO / "schemas" / "examples" / f"{name}.notification.json").read_text())
    for name in ("harm-route", "good-practice")
]
CHECKER = _format_checker()
FAST = compile_schema(SCHEMA, CHECKER)
SLOW = Draft202012Validator(SCHEMA, format_checker=CHECKER)


def _schema_values(node: Any, out: list[Any]) -> list[Any]:
    """Every enum member and const of the schema: edits that are sometimes valid."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "enum":
                out.extend(value)
            elif key == "const":
                out.append(value)
            else:
                _schema_values(value, out)
    elif isinstance(node, list):
        for item in node:
            _schema_values(item, out)
    return out


SCHEMA_VALUES = _schema_values(SCHEMA, [])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 200),
    st.sampled_from([0.0, 1.0, 2.5, -1.0, 17.0, 18.0]),
    st.sampled_from(SCHEMA_VALUES),
    st.sampled_from(
        [
            "",
            "x",
            "2020-02-29",
            "2021-02-29",
            "2024-13-01",
            "2023-06-01",
            "a@b.example",
            "not an email",
            "a@b",
            "x" * 300,
            "x" * 5000,
            "é",
        ]
    ),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _edit(doc: Any, path: tuple[Any, ...], op: str, value: Any, key: str) -> Any:
    if not path:
        return value if op == "set" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "set":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif op == "add_key" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif op == "duplicate" and isinstance(parent[last], list) and parent[last]:
        parent[last].append(copy.deepcopy(parent[last][0]))
    elif op == "empty" and isinstance(parent[last], list | dict | str):
        parent[last] = type(parent[last])()
    return doc


edit = st.tuples(
    st.sampled_from(["set", "set", "delete", "add_key", "duplicate", "empty"]),
    values,
    st.sampled_from(["extra", "route", "type", "date", "gender", "x"]),
    st.integers(0, 10_000),
)


@pytest.mark.parametrize("doc", EXAMPLES)
def test_examples_are_valid_both_ways(doc: Any) -> None:
    assert FAST(doc) is True
    assert SLOW.is_valid(doc)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(EXAMPLES))), st.lists(edit, min_size=1, max_size=3))
def test_agrees_with_jsonschema_on_edited_documents(which: int, edits: list[Any]) -> None:
    doc = copy.deepcopy(EXAMPLES[which])
    for op, value, key, pick in edits:
        paths = _paths(doc)
        doc = _edit(doc, paths[pick % len(paths)], op, copy.deepcopy(value), key)
    assert FAST(doc) == SLOW.is_valid(doc), json.dumps(doc)[:2000]


@settings(max_examples=500, deadline=None)
@given(values)
def test_agrees_on_arbitrary_values(value: Any) -> None:
    assert FAST(value) == SLOW.is_valid(value)


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"type": "integer"}, 1.0),
        ({"type": "integer"}, 1.5),
        ({"type": "integer"}, True),
        ({"type": "number"}, False),
        ({"enum": [1, 2]}, True),
        ({"enum": [True]}, 1),
        ({"const": 0}, False),
        ({"const": [1, {"a": 1}]}, [1.0, {"a": 1}]),
        ({"uniqueItems": True}, [1, True]),
        ({"uniqueItems": True}, [1, 1.0]),
        ({"uniqueItems": True}, [{"a": 1}, {"a": 1}]),
        ({"minLength": 2}, "é"),
        ({"maxLength": 1}, 5),
        ({"minimum": 0}, "a"),
        ({"required": ["a"]}, []),
        ({"additionalProperties": False, "patternProperties": {"^x": {}}}, {"xa": 1}),
        ({"additionalProperties": False, "patternProperties": {"^x": {}}}, {"ya": 1}),
        ({"if": {"const": 1}, "then": {"type": "string"}}, 1),
        ({"if": {"const": 1}, "else": {"type": "string"}}, 2),
        ({"then": False}, 1),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 1),
        ({"format": "email"}, "a b@c.d"),
        ({"format": "date"}, "2023-02-29"),
        ({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a", "maxLength": 1}, "ab"),
    ],
)
def test_keyword_semantics(schema: dict[str, Any], instance: Any) -> None:
    fast = compile_schema(schema, CHECKER)
    assert fast(instance) == Draft202012Validator(schema, format_checker=CHECKER).is_valid(instance)


@pytest.mark.parametrize(
    "schema",
    [
        {"unevaluatedProperties": False},
        {"$ref": "https://elsewhere.example/schema.json"},
        {"prefixItems": [{}], "items": False},
        {"$dynamicRef": "#x"},
        {"dependentRequired": {"a": ["b"]}},
    ],
)
def test_refuses_what_it_does_not_implement(schema: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        compile_schema(schema, CHECKER)


def test_validator_falls_back_to_jsonschema_alone() -> None:
    schema = {**SCHEMA, "unevaluatedProperties": False}
    validator = NotificationValidator(schema)
    assert validator._fast is None
    validator.validate(EXAMPLES[0], date(2026, 12, 1))
