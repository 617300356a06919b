"""A compiled yes/no check of a JSON Schema (2020-12) for the keywords our schema uses.

jsonschema walks the schema for every instance (descend, evolve, reference lookups): about
2.5 ms for one notification here, the largest share of the intake's CPU (docs/performance.md).
This compiles the schema once into plain closures that answer only "valid or not", in tens of
microseconds. It is a fast path, never the judge of an error: NotificationValidator trusts a
"valid", and on "not valid" asks jsonschema, whose error list is what the sender sees (and whose
verdict wins if the two ever disagreed that way).

Each keyword follows jsonschema's own code for it (which applies to which instance type, how
`enum`, `const` and `uniqueItems` compare, the draft's integer rule, format checks through the
same FormatChecker), and tests/test_fastschema.py checks the two agree on thousands of
generated documents. A keyword not implemented here makes `compile_schema` refuse, and the
validator then uses jsonschema alone: the fast path can be missing, never wrong by omission."""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from typing import Any

from jsonschema import FormatChecker
from jsonschema._utils import equal, uniq

Check = Callable[[Any], bool]

# Keywords that never affect validity (annotations and containers of definitions).
_IGNORED = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
    }
)


_KEYWORDS = (
    "ref",
    "type",
    "enum",
    "const",
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "format",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
)


class Unsupported(Exception):
    """The schema uses something this compiler does not implement."""


def _is_number(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, numbers.Number)


def _is_integer(x: Any) -> bool:
    # Draft 6 and later: 1.0 is an integer; bool is never a number.
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


_TYPES: dict[str, Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": _is_number,
    "integer": _is_integer,
}


def _true(_: Any) -> bool:
    return True


def _false(_: Any) -> bool:
    return False


class _Compiler:
    def __init__(self, root: Any, format_checker: FormatChecker | None) -> None:
        self.root = root
        self.format_checker = format_checker
        self.refs: dict[str, Check] = {}
        self.keywords: dict[str, Callable[[Any, dict[str, Any]], Check]] = {
            ("$ref" if name == "ref" else name): getattr(self, "kw_" + name) for name in _KEYWORDS
        }

    def ref(self, pointer: str) -> Check:
        if pointer in self.refs:
            return self.refs[pointer]
        if not pointer.startswith("#"):
            raise Unsupported(f"$ref {pointer!r} (only references within the document)")
        target = self.root
        for raw in pointer[1:].split("/")[1:] if pointer != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise Unsupported(f"$ref {pointer!r} does not resolve")
        # Through a cell, so that a schema referring to itself compiles.
        compiled: list[Check] = []
        self.refs[pointer] = lambda x: compiled[0](x)
        compiled.append(self.node(target))
        self.refs[pointer] = compiled[0]
        return compiled[0]

    def node(self, schema: Any) -> Check:
        if schema is True:
            return _true
        if schema is False:
            return _false
        if not isinstance(schema, dict):
            raise Unsupported("a schema must be an object or a boolean")
        checks: list[Check] = []
        for key, value in schema.items():
            if key in _IGNORED or key in ("then", "else"):
                continue  # then/else are read with "if"; alone they mean nothing
            if key in ("properties", "patternProperties") and "additionalProperties" in schema:
                if key == "properties":
                    checks.append(self.properties(value))
                continue  # patternProperties are checked with additionalProperties
            builder = self.keywords.get(key)
            if builder is None:
                raise Unsupported(f"keyword {key!r}")
            checks.append(builder(value, schema))
        if not checks:
            return _true
        if len(checks) == 1:
            return checks[0]
        if len(checks) == 2:
            first, second = checks
            return lambda x: first(x) and second(x)
        frozen = tuple(checks)

        def every(x: Any) -> bool:
            # A plain loop: this runs for every node of every document, and all() over a
            # generator costs noticeably more.
            for check in frozen:  # noqa: SIM110
                if not check(x):
                    return False
            return True

        return every

    # -- the keywords, each as jsonschema applies it ----------------------------------------

    def kw_ref(self, value: Any, _schema: dict[str, Any]) -> Check:
        if not isinstance(value, str):
            raise Unsupported("$ref must be a string")
        return self.ref(value)

    def kw_type(self, value: Any, _schema: dict[str, Any]) -> Check:
        names = value if isinstance(value, list) else [value]
        try:
            preds = tuple(_TYPES[n] for n in names)
        except (KeyError, TypeError):
            raise Unsupported(f"type {value!r}") from None
        if len(preds) == 1:
            return preds[0]
        return lambda x: any(p(x) for p in preds)

    def kw_enum(self, value: Any, _schema: dict[str, Any]) -> Check:
        members = tuple(value)
        if all(isinstance(m, str) for m in members):
            # equal() on a str is ==, so a set lookup decides the same (for str instances).
            strings = frozenset(members)
            return lambda x: isinstance(x, str) and x in strings
        return lambda x: any(equal(m, x) for m in members)

    def kw_const(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: bool(equal(x, value))

    def properties(self, value: Any) -> Check:
        props = tuple((name, self.node(sub)) for name, sub in value.items())

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            # A plain loop: the hottest check, and all() over a generator costs more.
            for name, sub in props:  # noqa: SIM110
                if name in x and not sub(x[name]):
                    return False
            return True

        return check

    def kw_properties(self, value: Any, _schema: dict[str, Any]) -> Check:
        return self.properties(value)

    def kw_patternProperties(self, value: Any, _schema: dict[str, Any]) -> Check:
        pats = tuple((re.compile(p), self.node(sub)) for p, sub in value.items())

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            for pattern, sub in pats:
                for name, item in x.items():
                    if pattern.search(name) and not sub(item):
                        return False
            return True

        return check

    def kw_additionalProperties(self, value: Any, schema: dict[str, Any]) -> Check:
        known = frozenset(schema.get("properties", {}))
        patterns_map = schema.get("patternProperties", {})
        pattern_props = self.kw_patternProperties(patterns_map, schema) if patterns_map else None
        joined = re.compile("|".join(patterns_map)) if patterns_map else None
        extra = self.node(value)

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            if pattern_props is not None and not pattern_props(x):
                return False
            for name in x:
                if name in known or (joined is not None and joined.search(name)):
                    continue
                if not extra(x[name]):
                    return False
            return True

        return check

    def kw_required(self, value: Any, _schema: dict[str, Any]) -> Check:
        names = tuple(value)
        return lambda x: not isinstance(x, dict) or all(n in x for n in names)

    def kw_minProperties(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) >= value

    def kw_maxProperties(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) <= value

    def kw_items(self, value: Any, schema: dict[str, Any]) -> Check:
        if "prefixItems" in schema:
            raise Unsupported("prefixItems")
        sub = self.node(value)

        def check(x: Any) -> bool:
            if not isinstance(x, list):
                return True
            for item in x:  # noqa: SIM110 (as in node(): the loop is the faster form)
                if not sub(item):
                    return False
            return True

        return check

    def kw_minItems(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not isinstance(x, list) or len(x) >= value

    def kw_maxItems(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not isinstance(x, list) or len(x) <= value

    def kw_uniqueItems(self, value: Any, _schema: dict[str, Any]) -> Check:
        if not value:
            return _true
        return lambda x: not isinstance(x, list) or bool(uniq(x))

    def kw_minLength(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not isinstance(x, str) or len(x) >= value

    def kw_maxLength(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not isinstance(x, str) or len(x) <= value

    def kw_pattern(self, value: Any, _schema: dict[str, Any]) -> Check:
        compiled = re.compile(value)
        return lambda x: not isinstance(x, str) or compiled.search(x) is not None

    def kw_minimum(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not _is_number(x) or not x < value

    def kw_maximum(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not _is_number(x) or not x > value

    def kw_exclusiveMinimum(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not _is_number(x) or x > value

    def kw_exclusiveMaximum(self, value: Any, _schema: dict[str, Any]) -> Check:
        return lambda x: not _is_number(x) or x < value

    def kw_format(self, value: Any, _schema: dict[str, Any]) -> Check:
        checker = self.format_checker
        if checker is None:
            return _true
        return lambda x: bool(checker.conforms(x, value))

    def kw_allOf(self, value: Any, _schema: dict[str, Any]) -> Check:
        subs = tuple(self.node(s) for s in value)
        return lambda x: all(s(x) for s in subs)

    def kw_anyOf(self, value: Any, _schema: dict[str, Any]) -> Check:
        subs = tuple(self.node(s) for s in value)
        return lambda x: any(s(x) for s in subs)

    def kw_oneOf(self, value: Any, _schema: dict[str, Any]) -> Check:
        subs = tuple(self.node(s) for s in value)
        return lambda x: sum(1 for s in subs if s(x)) == 1

    def kw_not(self, value: Any, _schema: dict[str, Any]) -> Check:
        sub = self.node(value)
        return lambda x: not sub(x)

    def kw_if(self, value: Any, schema: dict[str, Any]) -> Check:
        condition = self.node(value)
        then = self.node(schema["then"]) if "then" in schema else _true
        otherwise = self.node(schema["else"]) if "else" in schema else _true
        return lambda x: then(x) if condition(x) else otherwise(x)


def compile_schema(schema: Any, format_checker: FormatChecker | None) -> Check:
    """The schema as one function: instance -> valid. Raises Unsupported."""
    return _Compiler(schema, format_checker).node(schema)
