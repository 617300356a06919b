"""`cmr-xml/1`: an XML document valid against schemas/cmr-xml-1.xsd, mapped to the canonical
notification.

The XML mirrors the canonical document member for member (camelCase element names, a wrapper
element for each array; docs/formats.md has the table), so the mapping is the SPEC below.

Four stages, each failing with SchemaInvalid, the element's path in `pointer` (an XPath such as
/notification/children/child[1]/dateOfBirth) and its line in the message:
1. parsing with defusedxml: a DTD, an entity declaration or an external reference stops the
   parse where it starts (before anything is expanded or fetched), so billion laughs, external
   entities and DTD retrieval cannot happen; nesting and size are bounded while parsing, and
   attributes (xsi:type, xsi:schemaLocation and the like included) are refused, the schema
   having none;
2. validation of the tree against the XSD with xmlschema, which never reads a location hint
   and may read no resource at all for an instance;
3. the mapping;
4. the canonical JSON Schema and cross-field rules, whose errors are pointed back at the
   element each value came from.

Messages name the element and the rule only: every value in the document is personal data.
"""

from __future__ import annotations

import functools
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple
from xml.etree.ElementTree import Element, ParseError, TreeBuilder
from xml.parsers.expat import ErrorString

from gateway.errors import FieldError, SchemaInvalid
from gateway.intake.validation import NotificationValidator
from gateway.paths import DEFAULT_SCHEMAS_DIR

NAMESPACE = "https://sbni.example/schemas/cmr-xml/1"
XSD_FILE = "cmr-xml-1.xsd"
# The canonical document nests six levels at most; thirty-two leaves room for nothing hostile.
MAX_DEPTH = 32
# A notification of 20 children, 50 adults and 50 bodies has about 2,500 elements.
MAX_ELEMENTS = 20_000
MAX_ERRORS = 100
# The sender's element names may be anything: only a bounded prefix goes into a message.
_MAX_NAME_IN_MESSAGE = 64

HOSTILE = "DTDs and entities are not allowed"


# -- the mapping specification -------------------------------------------------------------------


class Obj(NamedTuple):
    """An element with child elements: (XML name, canonical name, shape) for each."""

    fields: tuple[tuple[str, str, Shape], ...]


class Many(NamedTuple):
    """A wrapper element around repeated `item` elements: a canonical array."""

    item: str
    shape: Shape


class Repeated(NamedTuple):
    """An element that repeats in place (address lines): a canonical array."""

    shape: Shape


# Leaves: "text" is kept as written (xs:string preserves white space); "date", "boolean" and
# "integer" are XSD types that collapse white space, so they are read stripped.
Shape = Obj | Many | Repeated | str

_ADDRESS = Obj(
    (
        ("line", "lines", Repeated("text")),
        ("town", "town", "text"),
        ("postcode", "postcode", "text"),
        ("country", "country", "text"),
    )
)
_INTERPRETER = Obj((("needed", "needed", "boolean"), ("language", "language", "text")))
_REGISTER = Obj((("child", "child", "text"), ("siblings", "siblings", "text")))
_CHILD = Obj(
    (
        ("givenName", "given_name", "text"),
        ("familyName", "family_name", "text"),
        ("otherNames", "other_names", Many("name", "text")),
        ("dateOfBirth", "date_of_birth", "date"),
        (
            "statedAge",
            "stated_age",
            Obj((("years", "years", "integer"), ("months", "months", "integer"))),
        ),
        ("gender", "gender", "text"),
        ("address", "address", _ADDRESS),
        (
            "identifiers",
            "identifiers",
            Many("identifier", Obj((("system", "system", "text"), ("value", "value", "text")))),
        ),
        ("ethnicity", "ethnicity", "text"),
        ("died", "died", "boolean"),
        ("interpreter", "interpreter", _INTERPRETER),
    )
)
_ADULT = Obj(
    (
        ("name", "name", "text"),
        ("relationship", "relationship", "text"),
        ("livesWithChild", "lives_with_child", "boolean"),
        ("dateOfBirth", "date_of_birth", "date"),
        ("address", "address", _ADDRESS),
        ("interpreter", "interpreter", _INTERPRETER),
    )
)
SPEC = Obj(
    (
        ("route", "route", "text"),
        (
            "incident",
            "incident",
            Obj(
                (
                    ("type", "type", "text"),
                    ("date", "date", "date"),
                    ("place", "place", "text"),
                    ("description", "description", "text"),
                )
            ),
        ),
        (
            "reg17",
            "reg17",
            Obj(
                (
                    ("childDied", "child_died", "boolean"),
                    ("significantHarm", "significant_harm", "boolean"),
                    ("abuseOrNeglect", "abuse_or_neglect", "text"),
                    ("abuseCategories", "abuse_categories", Many("category", "text")),
                    ("childProtectionRegister", "child_protection_register", _REGISTER),
                    ("lookedAfter", "looked_after", _REGISTER),
                    ("protectionHistoryBeforeBirth", "protection_history_before_birth", "boolean"),
                )
            ),
        ),
        (
            "goodPractice",
            "good_practice",
            Obj(
                (
                    ("effectiveWorking", "effective_working", "text"),
                    ("positiveLearning", "positive_learning", "text"),
                )
            ),
        ),
        ("children", "children", Many("child", _CHILD)),
        ("adults", "adults", Many("adult", _ADULT)),
        (
            "family",
            "family",
            Obj(
                (
                    ("interpreterNeeded", "interpreter_needed", "boolean"),
                    ("language", "language", "text"),
                    ("movedBetweenTrusts", "moved_between_trusts", "boolean"),
                    ("otherJurisdictions", "other_jurisdictions", Many("jurisdiction", "text")),
                )
            ),
        ),
        (
            "agenciesInvolved",
            "agencies_involved",
            Many(
                "agency",
                Obj(
                    (
                        ("name", "name", "text"),
                        ("agencyCode", "agency_code", "text"),
                        ("jurisdiction", "jurisdiction", "text"),
                        ("involvement", "involvement", "text"),
                    )
                ),
            ),
        ),
        (
            "narratives",
            "narratives",
            Obj(
                (
                    ("caseOutline", "case_outline", "text"),
                    ("interAgencyConcerns", "inter_agency_concerns", "text"),
                    ("actionsTaken", "actions_taken", "text"),
                )
            ),
        ),
        (
            "notifier",
            "notifier",
            Obj(
                (
                    ("name", "name", "text"),
                    ("role", "role", "text"),
                    ("email", "email", "text"),
                    ("phone", "phone", "text"),
                )
            ),
        ),
    )
)

# Elements whose position is always given in a path, because they repeat.
_REPEATING = frozenset({"child", "adult", "agency", "identifier", "name", "category", "line"})
_REPEATING |= {"jurisdiction"}
_DATES = frozenset({"date", "dateOfBirth"})
_BOOLEANS = frozenset(
    {"childDied", "significantHarm", "protectionHistoryBeforeBirth", "died", "needed"}
    | {"livesWithChild", "interpreterNeeded", "movedBetweenTrusts"}
)
_INTEGERS = frozenset({"years", "months"})


# -- parsing ------------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class _Builder(TreeBuilder):
    """A tree builder that bounds the document while it is parsed and notes each element's
    path and line, which ElementTree does not keep."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: dict[int, str] = {}
        self.lines: dict[int, int] = {}
        self.parser: Any = None
        # The path of each open element, and how often each name occurred inside it so far.
        self._open: list[tuple[str, dict[str, int]]] = [("", {})]
        self._count = 0

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        self._count += 1
        line = self.parser.parser.CurrentLineNumber if self.parser is not None else 0
        parent, seen = self._open[-1]
        name = _local(tag)
        seen[name] = seen.get(name, 0) + 1
        path = f"{parent}/{name}[{seen[name]}]" if name in _REPEATING else f"{parent}/{name}"
        if len(self._open) > MAX_DEPTH:
            raise _Refused(parent, f"is nested more than {MAX_DEPTH} levels deep (line {line})")
        if self._count > MAX_ELEMENTS:
            raise _Refused("/", f"has more than {MAX_ELEMENTS} elements (line {line})")
        if attrs:
            raise _Refused(path, f"attributes are not allowed (line {line})")
        self._open.append((path, {}))
        element = super().start(tag, attrs)
        self.paths[id(element)] = path
        self.lines[id(element)] = line
        return element

    def end(self, tag: str) -> Element:
        self._open.pop()
        return super().end(tag)


class _Parsed(NamedTuple):
    root: Element
    paths: dict[int, str]
    lines: dict[int, int]

    def path(self, element: Element) -> str:
        return self.paths.get(id(element), "/")

    def where(self, element: Element) -> str:
        line = self.lines.get(id(element))
        return f" (line {line})" if line else ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _truncate(name: str) -> str:
    return name if len(name) <= _MAX_NAME_IN_MESSAGE else name[:_MAX_NAME_IN_MESSAGE] + "..."


def _fail(path: str, message: str) -> SchemaInvalid:
    return SchemaInvalid([FieldError(path, message)])


def _parse(body: Any) -> _Parsed:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    if not isinstance(body, str):
        raise _fail("/", "must be an XML document as a string")
    builder = _Builder()
    parser = DefusedXMLParser(
        target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    builder.parser = parser
    try:
        parser.feed(body)
        root: Element = parser.close()
    except DefusedXmlException:
        raise _fail("/", HOSTILE) from None
    except _Refused as exc:
        raise _fail(exc.path, exc.message) from None
    except ParseError as exc:
        line, column = exc.position
        raise _fail(
            "/", f"is not well-formed XML: {ErrorString(exc.code)} (line {line}, column {column})"
        ) from None
    except (ValueError, UnicodeError):
        # A lone surrogate in the string cannot be encoded for the parser.
        raise _fail("/", "is not well-formed XML: not a sequence of Unicode characters") from None
    return _Parsed(root, builder.paths, builder.lines)


# -- validation against the XSD -----------------------------------------------------------------


@functools.cache
def _load_schema(path: Path) -> Any:
    import xmlschema

    # The schema is ours and local; "sandbox" keeps even it from reaching outside its folder.
    return xmlschema.XMLSchema(
        str(path), allow="sandbox", base_url=str(path.parent), defuse="always"
    )


@functools.cache
def _default_validator() -> NotificationValidator:
    return NotificationValidator.from_file(DEFAULT_SCHEMAS_DIR / "cmr-notification-1.schema.json")


def _xsd_errors(schema: Any, parsed: _Parsed) -> list[FieldError]:
    import xmlschema

    resource = xmlschema.XMLResource(parsed.root, allow="none")
    errors: list[FieldError] = []
    try:
        for error in schema.iter_errors(resource):
            errors.append(_xsd_error(error, parsed))
            if len(errors) >= MAX_ERRORS:
                break
    except Exception:
        # xmlschema fails outright on a few shapes rather than reporting them; its message
        # may quote the document, so none of it is kept.
        errors.append(FieldError("/", "is not valid against the cmr-xml/1 schema"))
    return errors


def _names(particles: Any) -> str:
    names = [_local(str(getattr(p, "name", "") or "")) for p in (particles or [])]
    return ", ".join(n for n in names if n)


def _xsd_error(error: Any, parsed: _Parsed) -> FieldError:
    from xmlschema.validators import (
        XsdElement,
        XsdEnumerationFacets,
        XsdGroup,
        XsdMaxInclusiveFacet,
        XsdMaxLengthFacet,
        XsdMinLengthFacet,
        XsdPatternFacets,
    )
    from xmlschema.validators.exceptions import XMLSchemaChildrenValidationError

    element = error.elem if isinstance(error.elem, Element) else parsed.root
    validator = error.validator
    name = _local(element.tag)
    if isinstance(error, XMLSchemaChildrenValidationError):
        expected = _names(error.expected)
        if error.invalid_child is not None:
            child = error.invalid_child
            message = f"unexpected element {_truncate(_local(child.tag))}"
            if expected:
                message += f" (expected {expected})"
            return FieldError(parsed.path(child), message + parsed.where(child))
        return FieldError(
            parsed.path(element), f"is missing an element: {expected}{parsed.where(element)}"
        )
    if name in _DATES:
        message = "must be a date (YYYY-MM-DD)"
    elif name in _BOOLEANS:
        message = "must be true or false (or 1 or 0)"
    elif isinstance(validator, XsdEnumerationFacets):
        message = "must be one of: " + ", ".join(str(v) for v in validator.enumeration)
    elif isinstance(validator, XsdMinLengthFacet):
        message = "must not be empty"
    elif isinstance(validator, XsdMaxLengthFacet):
        message = "is longer than " + str(validator.value) + " characters"
    elif isinstance(validator, XsdMaxInclusiveFacet):
        message = "must be at most " + str(validator.value)
    elif name in _INTEGERS:
        message = "must be a whole number, 0 or more"
    elif isinstance(validator, XsdPatternFacets):
        message = "must be an email address" if name == "email" else "is not in the expected form"
    elif isinstance(validator, XsdGroup):
        message = "must hold elements only, no text between them"
    elif isinstance(validator, XsdElement) and len(element):
        message = "must hold text only, no elements"
    elif element is parsed.root and error.elem is not None:
        message = f"must be the element notification in namespace {NAMESPACE}"
    else:
        message = "is not valid against the cmr-xml/1 schema"
    return FieldError(parsed.path(element), message + parsed.where(element))


# -- mapping ------------------------------------------------------------------------------------


class _Mapper:
    def __init__(self, parsed: _Parsed) -> None:
        self.parsed = parsed
        self.sources: dict[str, str] = {}
        self.lines: dict[str, int] = {}
        self.note("", parsed.root)

    def note(self, pointer: str, element: Element) -> None:
        self.sources[pointer] = self.parsed.path(element)
        line = self.parsed.lines.get(id(element))
        if line:
            self.lines[self.sources[pointer]] = line

    def value(self, element: Element, shape: Shape, pointer: str) -> Any:
        self.note(pointer, element)
        if isinstance(shape, Obj):
            return self.obj(element, shape, pointer)
        if isinstance(shape, Many):
            items = [child for child in element if _local(child.tag) == shape.item]
            return [
                self.value(child, shape.shape, f"{pointer}/{index}")
                for index, child in enumerate(items)
            ]
        text = element.text or ""
        if shape == "boolean":
            return text.strip() in ("true", "1")
        if shape == "integer":
            return int(text.strip())
        if shape == "date":
            return text.strip()
        return text

    def obj(self, element: Element, shape: Obj, pointer: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        children = list(element)
        for tag, key, field in shape.fields:
            found = [child for child in children if _local(child.tag) == tag]
            if not found:
                continue
            if isinstance(field, Repeated):
                self.note(f"{pointer}/{key}", found[0])
                result[key] = [
                    self.value(child, field.shape, f"{pointer}/{key}/{index}")
                    for index, child in enumerate(found)
                ]
            else:
                result[key] = self.value(found[0], field, f"{pointer}/{key}")
        return result


def _check_mapped(
    document: Any,
    sources: dict[str, str],
    lines: dict[str, int],
    validator: NotificationValidator,
) -> None:
    """Validate the mapped document now, pointing each error at the element it came from.

    The service validates it again with the date of receipt; with date.max here every rule
    but "not after the date of receipt" is checked, so only those come back with canonical
    pointers. (A twin of this lives in adapters/formats/fhir.py.)
    """
    try:
        validator.validate(document, date.max)
    except SchemaInvalid as exc:
        errors = []
        for error in exc.errors:
            pointer = error.pointer
            while pointer not in sources:
                pointer = pointer.rsplit("/", 1)[0] if "/" in pointer else ""
            path = sources[pointer]
            line = f"; line {lines[path]}" if path in lines else ""
            canonical = error.pointer or "/"
            errors.append(FieldError(path, f"{error.message} (canonical {canonical}{line})"))
        raise SchemaInvalid(list(dict.fromkeys(errors))[:MAX_ERRORS]) from None


class CmrXml:
    name = "cmr-xml/1"

    def __init__(
        self, xsd: Path | None = None, validator: NotificationValidator | None = None
    ) -> None:
        self._xsd = (xsd or DEFAULT_SCHEMAS_DIR / XSD_FILE).resolve()
        self._validator = validator

    def to_canonical(self, body: Any) -> Any:
        parsed = _parse(body)
        if parsed.root.tag != f"{{{NAMESPACE}}}notification":
            raise _fail(
                parsed.path(parsed.root),
                f"must be the element notification in namespace {NAMESPACE}"
                + parsed.where(parsed.root),
            )
        errors = _xsd_errors(_load_schema(self._xsd), parsed)
        if errors:
            raise SchemaInvalid(list(dict.fromkeys(errors)))
        mapper = _Mapper(parsed)
        document = mapper.obj(parsed.root, SPEC, "")
        _check_mapped(
            document, mapper.sources, mapper.lines, self._validator or _default_validator()
        )
        return document
