"""Validation of a canonical notification (`cmr-notification/1`).

Two stages: the published JSON Schema, then the rules that span fields (dates against each other
and against the date of receipt, the Regulation 17 route). The outcome is either a
`ValidNotification` carrying the facts kept in clear for the statistics (gender and derived age
band), or `SchemaInvalid` with a list of JSON pointers and messages.

Messages are built from the schema and the keyword that failed, never from the instance: the
instance is the child's personal data, and error lists end up in responses and logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, cast

from jsonschema import Draft202012Validator, FormatChecker, ValidationError

from gateway.errors import FieldError, SchemaInvalid
from gateway.intake.fastschema import Check, Unsupported, compile_schema

AGE_BANDS = ("0-11 months", "1-5 years", "6-11 years", "12-17 years")

# An unexpected property's name is chosen by the sender and may be anything, so only a bounded
# prefix of it goes into a message.
_MAX_NAME_IN_MESSAGE = 64

# jsonschema's own email check only looks for an "@"; a notifier's address must be one the panel
# can write back to, so the gateway asks a little more (no spaces, a dot in the domain).
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

_FORMAT_MESSAGES = {
    "date": "must be a date (YYYY-MM-DD)",
    "email": "must be an email address",
}


def _full_years(date_of_birth: date, on: date) -> int:
    # Comparing (month, day) tuples makes a 29 February birthday fall on 1 March in common
    # years, the usual reading in UK law of when a leap-day child attains an age.
    before_birthday = (on.month, on.day) < (date_of_birth.month, date_of_birth.day)
    return on.year - date_of_birth.year - int(before_birthday)


def _band(years: int) -> str:
    if years < 1:
        return AGE_BANDS[0]
    if years <= 5:
        return AGE_BANDS[1]
    if years <= 11:
        return AGE_BANDS[2]
    return AGE_BANDS[3]


def age_band(date_of_birth: date, on: date) -> str:
    """The age band of a child born on `date_of_birth`, in full years of age on `on`."""
    # The messages name no date: dates of birth are personal data.
    if on < date_of_birth:
        raise ValueError("the date is before the date of birth")
    years = _full_years(date_of_birth, on)
    if years >= 18:
        raise ValueError("the person is 18 or over on the date")
    return _band(years)


def age_band_from_stated(years: int, months: int) -> str:
    """The age band for an age stated in full years and months."""
    if not 0 <= years <= 17:
        raise ValueError("years must be between 0 and 17")
    if not 0 <= months <= 11:
        raise ValueError("months must be between 0 and 11")
    return _band(years)


@dataclass(frozen=True)
class ChildFacts:
    gender: str
    age_band: str


@dataclass(frozen=True)
class ValidNotification:
    document: dict[str, Any]
    route: str
    incident_type: str
    incident_date: date
    children: tuple[ChildFacts, ...]


def _escape(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def _pointer(path: Iterable[str | int]) -> str:
    return "".join("/" + _escape(part) for part in path)


def _sort_key(error: FieldError) -> tuple[list[tuple[int, int | str]], str]:
    # Array indices sort as numbers so that /children/2 comes before /children/10; a part is
    # either all-digits or not, and the tag keeps the two kinds comparable.
    parts: list[tuple[int, int | str]] = [
        (0, int(part)) if part.isascii() and part.isdigit() else (1, part)
        for part in error.pointer.split("/")
    ]
    return parts, error.message


def _show(value: Any) -> str:
    # Only ever called on values taken from the schema (enum members, const), never the instance.
    return value if isinstance(value, str) else json.dumps(value)


def _truncate(name: str) -> str:
    if len(name) <= _MAX_NAME_IN_MESSAGE:
        return name
    return name[:_MAX_NAME_IN_MESSAGE] + "..."


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular}" if count == 1 else f"{count} {plural}"


def _one_of_message(error: ValidationError) -> str:
    alternatives = error.validator_value
    names: list[str] = []
    if isinstance(alternatives, list) and all(
        isinstance(sub, dict) and set(sub) == {"required"} for sub in alternatives
    ):
        names = [name for sub in alternatives for name in sub["required"]]
    if not names or not isinstance(error.instance, dict):
        return "must match exactly one of the allowed forms"
    listed = ", ".join(names)
    if not any(name in error.instance for name in names):
        return f"is required: one of {listed}"
    return f"must have only one of: {listed}"


def _simple_message(error: ValidationError) -> str:
    keyword = error.validator
    value = error.validator_value
    if keyword == "type":
        types = value if isinstance(value, list) else [value]
        return "must be of type " + " or ".join(str(t) for t in types)
    if keyword == "enum":
        return "must be one of: " + ", ".join(_show(v) for v in value)
    if keyword == "const":
        return "must be " + _show(value)
    if keyword == "format":
        return _FORMAT_MESSAGES.get(str(value), f"must be in the format {value}")
    if keyword == "minLength":
        return "must not be empty" if value == 1 else f"is shorter than {value} characters"
    if keyword == "maxLength":
        return f"is longer than {value} characters"
    if keyword == "pattern":
        return "is not in the expected form"
    if keyword == "minimum":
        return f"must be at least {value}"
    if keyword == "maximum":
        return f"must be at most {value}"
    if keyword == "exclusiveMinimum":
        return f"must be more than {value}"
    if keyword == "exclusiveMaximum":
        return f"must be less than {value}"
    if keyword == "minItems":
        return "must have at least " + _plural(value, "item", "items")
    if keyword == "maxItems":
        return "must have at most " + _plural(value, "item", "items")
    if keyword == "uniqueItems":
        return "must not contain duplicate items"
    if keyword == "minProperties":
        return "must have at least " + _plural(value, "property", "properties")
    if keyword == "maxProperties":
        return "must have at most " + _plural(value, "property", "properties")
    if keyword == "oneOf":
        return _one_of_message(error)
    if keyword == "anyOf":
        return "must match at least one of the allowed forms"
    if keyword in (None, "not", "false"):
        # A `false` subschema reports no keyword.
        return "is not allowed here"
    return f"is not valid ({keyword})"


def _additional(schema: Any, instance: dict[str, Any]) -> list[str]:
    known = schema.get("properties", {}) if isinstance(schema, dict) else {}
    patterns = schema.get("patternProperties", {}) if isinstance(schema, dict) else {}
    return [
        name
        for name in instance
        if name not in known and not any(re.search(p, name) for p in patterns)
    ]


def _field_errors(error: ValidationError) -> Iterator[FieldError]:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        # jsonschema reports each missing name separately, but its message quotes it through
        # repr; naming them from the schema keeps the message in our own form. Duplicates
        # from the sibling reports are dropped by the caller.
        for name in error.validator_value:
            if name not in error.instance:
                yield FieldError(_pointer(path), f"is required: {name}")
        return
    if (
        error.validator == "additionalProperties"
        and error.validator_value is False
        and isinstance(error.instance, dict)
    ):
        for name in _additional(error.schema, error.instance):
            yield FieldError(_pointer([*path, name]), f"unexpected property: {_truncate(name)}")
        return
    yield FieldError(_pointer(path), _simple_message(error))


def _finish(errors: Iterable[FieldError]) -> list[FieldError]:
    return sorted(set(errors), key=_sort_key)


def _is_email(instance: object) -> bool:
    return not isinstance(instance, str) or _EMAIL.fullmatch(instance) is not None


def _format_checker() -> FormatChecker:
    # A fresh checker each time: registering on it leaves jsonschema's shared one untouched.
    checker = FormatChecker()
    checker.checks("email")(_is_email)
    return checker


class NotificationValidator:
    """Validates canonical notifications against one compiled schema."""

    def __init__(self, schema: dict[str, Any]) -> None:
        # A broken schema is a deployment fault; failing at start-up beats failing per request.
        Draft202012Validator.check_schema(schema)
        checker = _format_checker()
        self._validator = Draft202012Validator(schema, format_checker=checker)
        # The fast yes/no path (gateway/intake/fastschema.py); None when the schema uses a
        # keyword it does not implement, and jsonschema then decides alone.
        self._fast: Check | None
        try:
            self._fast = compile_schema(schema, checker)
        except Unsupported:
            self._fast = None

    @classmethod
    def from_file(cls, path: Path) -> NotificationValidator:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def validate(self, body: Any, received_on: date) -> ValidNotification:
        if self._fast is None or not self._fast(body):
            # The errors are always jsonschema's, and so is the verdict on anything the fast
            # path did not pass.
            schema_errors = _finish(
                field_error
                for error in self._validator.iter_errors(body)
                for field_error in _field_errors(error)
            )
            if schema_errors:
                raise SchemaInvalid(schema_errors)
        # From here the schema guarantees the structure, so the rules may index it directly.
        document = cast(dict[str, Any], body)
        incident_date = date.fromisoformat(document["incident"]["date"])
        errors: list[FieldError] = []
        errors.extend(_route_errors(document))
        if incident_date > received_on:
            errors.append(FieldError("/incident/date", "is after the date of receipt"))
        children, child_errors = _children(document["children"], incident_date, received_on)
        errors.extend(child_errors)
        errors.extend(_adult_errors(document.get("adults", []), received_on))
        if errors:
            raise SchemaInvalid(_finish(errors))
        return ValidNotification(
            document=document,
            route=document["route"],
            incident_type=document["incident"]["type"],
            incident_date=incident_date,
            children=tuple(children),
        )


def _route_errors(document: dict[str, Any]) -> Iterator[FieldError]:
    # The schema's if/then already demands the route's object; these repeat it so that the
    # statutory rule holds whatever schema the validator was built with.
    route = document["route"]
    if route == "harm":
        reg17 = document.get("reg17")
        if reg17 is None:
            yield FieldError("", "is required: reg17")
        elif not (reg17.get("child_died") or reg17.get("significant_harm")):
            yield FieldError(
                "/reg17", "must have child_died or significant_harm true for route harm"
            )
    elif route == "good_practice" and "good_practice" not in document:
        yield FieldError("", "is required: good_practice")


def _children(
    children: Sequence[dict[str, Any]], incident_date: date, received_on: date
) -> tuple[list[ChildFacts], list[FieldError]]:
    facts: list[ChildFacts] = []
    errors: list[FieldError] = []
    for index, child in enumerate(children):
        if "date_of_birth" in child:
            pointer = f"/children/{index}/date_of_birth"
            date_of_birth = date.fromisoformat(child["date_of_birth"])
            # One message per child is enough: a birth after receipt is also after the
            # incident, and saying so twice would not help the sender.
            if date_of_birth > received_on:
                errors.append(FieldError(pointer, "is after the date of receipt"))
            elif date_of_birth > incident_date:
                errors.append(FieldError(pointer, "is after the incident date"))
            elif _full_years(date_of_birth, incident_date) >= 18:
                errors.append(FieldError(pointer, "child must be under 18 at the incident date"))
            else:
                facts.append(ChildFacts(child["gender"], age_band(date_of_birth, incident_date)))
        else:
            stated = child["stated_age"]
            facts.append(
                ChildFacts(child["gender"], age_band_from_stated(stated["years"], stated["months"]))
            )
    return facts, errors


def _adult_errors(adults: Sequence[dict[str, Any]], received_on: date) -> Iterator[FieldError]:
    for index, adult in enumerate(adults):
        if "date_of_birth" in adult and date.fromisoformat(adult["date_of_birth"]) > received_on:
            yield FieldError(f"/adults/{index}/date_of_birth", "is after the date of receipt")
