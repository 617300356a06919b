"""`fhir-r4`: a FHIR R4 Bundle, as JSON, mapped to the canonical notification.

The profile (docs/formats.md has it element by element): a `document` or `collection` Bundle
with one Composition (the route, the narratives as sections, the notifier as author), one
Encounter (the incident), a Patient for each child, a RelatedPerson for each adult, an
Organization for each body involved, Flags or Conditions for the categories of abuse, and
Observations for the Regulation 17 and family facts, coded in the SBNI code systems below.

Three stages, each failing with SchemaInvalid and JSON pointers into the Bundle as sent:
1. bounds and the resource types this profile allows, checked on the raw JSON, so that the
   library never sees a resource type it cannot load nor a nesting it would recurse into;
2. validation of the whole Bundle by fhir.resources (its R4B models: see below) for FHIR's
   structure, types and cardinalities;
3. the mapping, reading the validated JSON strictly typed (pydantic reads "yes" as true; a
   FHIR boolean must be a JSON boolean), and then the canonical schema and cross-field rules,
   whose errors are pointed back at the FHIR element each value came from.

fhir.resources 8 ships R5 at the top level and R4B (4.3) in `fhir.resources.R4B`; it has no R4
(4.0.1) models. R4B only changed medication and regulatory resources, so every resource this
profile uses has the same structure in R4 and R4B, and an R4 Bundle validates as R4B.

Messages name the element and the rule only: every value in the Bundle is personal data.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from datetime import date
from typing import Any, NamedTuple

from pydantic import ValidationError

from gateway.errors import FieldError, SchemaInvalid
from gateway.intake.validation import NotificationValidator
from gateway.paths import DEFAULT_SCHEMAS_DIR

BASE = "https://sbni.example/fhir"
EXTENSION = f"{BASE}/StructureDefinition/"
CODE_SYSTEM = f"{BASE}/CodeSystem/"
IDENTIFIER = f"{BASE}/Id/"

EXT_STATED_AGE = EXTENSION + "stated-age"
EXT_ETHNICITY = EXTENSION + "ethnicity"
EXT_LIVES_WITH_CHILD = EXTENSION + "lives-with-child"
EXT_INTERPRETER_NEEDED = EXTENSION + "interpreter-needed"
EXT_JURISDICTION = EXTENSION + "jurisdiction"
EXT_INVOLVEMENT = EXTENSION + "involvement"
# The core extension is declared for Patient only; RelatedPerson uses the SBNI one above.
EXT_PATIENT_INTERPRETER = "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired"

CS_ROUTE = CODE_SYSTEM + "cmr-route"
CS_SECTION = CODE_SYSTEM + "cmr-section"
CS_FACT = CODE_SYSTEM + "cmr-fact"
CS_INCIDENT_TYPE = CODE_SYSTEM + "cmr-incident-type"
CS_ABUSE_OR_NEGLECT = CODE_SYSTEM + "cmr-abuse-or-neglect"
CS_ABUSE_CATEGORY = CODE_SYSTEM + "cmr-abuse-category"
CS_REGISTER_STATUS = CODE_SYSTEM + "cmr-register-status"
CS_RELATIONSHIP = CODE_SYSTEM + "cmr-relationship"
CS_JURISDICTION = CODE_SYSTEM + "cmr-jurisdiction"
V3_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ID_AGENCY = IDENTIFIER + "agency-code"

# Identifier systems of a child, to the canonical `system`; any other system is "other".
IDENTIFIER_SYSTEMS = {
    IDENTIFIER + "hcn": "hcn",
    "https://fhir.nhs.uk/Id/nhs-number": "nhs_number",
    IDENTIFIER + "pps-number": "pps_number",
    IDENTIFIER + "ea-pupil-number": "ea_pupil_number",
    IDENTIFIER + "psni-reference": "psni_reference",
}

# HL7 v3 RoleCode family relationships, for systems that code relationships that way.
V3_RELATIONSHIPS = {
    "MTH": "mother",
    "NMTH": "mother",
    "FTH": "father",
    "NFTH": "father",
    "STPPRN": "step_parent",
    "STPMTH": "step_parent",
    "STPFTH": "step_parent",
    "GRPRN": "grandparent",
    "GRMTH": "grandparent",
    "GRFTH": "grandparent",
    "MGRMTH": "grandparent",
    "MGRFTH": "grandparent",
    "PGRMTH": "grandparent",
    "PGRFTH": "grandparent",
    "SIB": "sibling_adult",
    "BRO": "sibling_adult",
    "SIS": "sibling_adult",
}

# Composition section code -> canonical pointer of its text.
SECTIONS = {
    "incident-description": "/incident/description",
    "case-outline": "/narratives/case_outline",
    "inter-agency-concerns": "/narratives/inter_agency_concerns",
    "actions-taken": "/narratives/actions_taken",
    "effective-working": "/good_practice/effective_working",
    "positive-learning": "/good_practice/positive_learning",
}


class Fact(NamedTuple):
    pointer: str
    value: str  # "boolean", "string" or the code system of a valueCodeableConcept
    repeats: bool = False


# Observation code (in CS_FACT) -> where its value goes.
FACTS = {
    "child-died": Fact("/reg17/child_died", "boolean"),
    "significant-harm": Fact("/reg17/significant_harm", "boolean"),
    "abuse-or-neglect": Fact("/reg17/abuse_or_neglect", CS_ABUSE_OR_NEGLECT),
    "child-protection-register-child": Fact(
        "/reg17/child_protection_register/child", CS_REGISTER_STATUS
    ),
    "child-protection-register-siblings": Fact(
        "/reg17/child_protection_register/siblings", CS_REGISTER_STATUS
    ),
    "looked-after-child": Fact("/reg17/looked_after/child", CS_REGISTER_STATUS),
    "looked-after-siblings": Fact("/reg17/looked_after/siblings", CS_REGISTER_STATUS),
    "protection-history-before-birth": Fact("/reg17/protection_history_before_birth", "boolean"),
    "family-interpreter-needed": Fact("/family/interpreter_needed", "boolean"),
    "family-language": Fact("/family/language", "string"),
    "moved-between-trusts": Fact("/family/moved_between_trusts", "boolean"),
    "other-jurisdiction": Fact("/family/other_jurisdictions", CS_JURISDICTION, repeats=True),
}

ALLOWED_RESOURCES = (
    "Composition",
    "Condition",
    "Encounter",
    "Flag",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
)
BUNDLE_TYPES = ("document", "collection")
# A notification has at most 20 children, 50 adults and 50 bodies: 500 entries is ample, and
# the bounds keep the library's recursive validation away from hostile shapes.
MAX_ENTRIES = 500
MAX_DEPTH = 32
MAX_VALUES = 50_000
MAX_ERRORS = 100

XHTML = "http://www.w3.org/1999/xhtml"
_BLOCKS = frozenset(
    {"p", "div", "li", "ul", "ol", "tr", "table", "blockquote", "pre", "h1", "h2", "h3", "h4"}
    | {"h5", "h6"}
)
_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@functools.cache
def _default_validator() -> NotificationValidator:
    return NotificationValidator.from_file(DEFAULT_SCHEMAS_DIR / "cmr-notification-1.schema.json")


def _escape(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


class _At(NamedTuple):
    """A value of the Bundle and its JSON pointer."""

    value: Any
    pointer: str

    def get(self, key: str) -> _At | None:
        if isinstance(self.value, dict) and self.value.get(key) is not None:
            return _At(self.value[key], f"{self.pointer}/{_escape(key)}")
        return None

    def items(self, key: str) -> list[_At]:
        child = self.get(key)
        if child is None or not isinstance(child.value, list):
            return []
        return [_At(v, f"{child.pointer}/{i}") for i, v in enumerate(child.value) if v is not None]

    def first(self, key: str) -> _At | None:
        found = self.items(key)
        return found[0] if found else None


class FhirR4:
    name = "fhir-r4"

    def __init__(self, validator: NotificationValidator | None = None) -> None:
        self._validator = validator

    def to_canonical(self, body: Any) -> Any:
        _check_shape(body)
        _check_with_library(body)
        mapper = _Mapper(body)
        document = mapper.run()
        _check_mapped(document, mapper.sources, self._validator or _default_validator())
        return document


def _fail(pointer: str, message: str) -> SchemaInvalid:
    return SchemaInvalid([FieldError(pointer, message)])


def _check_shape(body: Any) -> None:
    if not isinstance(body, dict):
        raise _fail("", "must be a FHIR Bundle as a JSON object")
    if body.get("resourceType") != "Bundle":
        raise _fail("/resourceType", "must be Bundle")
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    values = 0
    while stack:
        value, pointer, depth = stack.pop()
        values += 1
        if depth > MAX_DEPTH:
            raise _fail(pointer, f"is nested more than {MAX_DEPTH} levels deep")
        if values > MAX_VALUES:
            raise _fail("", f"has more than {MAX_VALUES} values")
        if isinstance(value, dict):
            stack.extend((v, f"{pointer}/{_escape(k)}", depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{pointer}/{i}", depth + 1) for i, v in enumerate(value))
    if body.get("type") not in BUNDLE_TYPES:
        raise _fail("/type", "must be one of: " + ", ".join(BUNDLE_TYPES))
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries:
        raise _fail("/entry", "is required: the resources of the notification")
    if len(entries) > MAX_ENTRIES:
        raise _fail("/entry", f"must have at most {MAX_ENTRIES} items")
    errors: list[FieldError] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(entry, dict):
            errors.append(FieldError(f"/entry/{index}", "must be an object"))
        elif not isinstance(resource, dict):
            errors.append(FieldError(f"/entry/{index}", "is required: resource"))
        elif resource.get("resourceType") not in ALLOWED_RESOURCES:
            errors.append(
                FieldError(
                    f"/entry/{index}/resource/resourceType",
                    "must be one of: " + ", ".join(ALLOWED_RESOURCES),
                )
            )
        elif "contained" in resource:
            # Contained resources could be of any type; nothing in the profile needs them.
            errors.append(
                FieldError(f"/entry/{index}/resource/contained", "is not allowed in this profile")
            )
    if errors:
        raise SchemaInvalid(errors)


def _check_with_library(body: dict[str, Any]) -> None:
    from fhir.resources.R4B.bundle import Bundle

    try:
        Bundle.model_validate(body)
    except ValidationError as exc:
        errors = [
            FieldError(_loc_pointer(error["loc"]), _library_message(error["type"]))
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise SchemaInvalid(_dedupe(errors)) from None
    except Exception:
        # The library also fails with KeyError and kin on shapes it cannot take (the resource
        # types were checked above); the exception's text may quote the body, so none is kept.
        raise _fail("", "is not a valid FHIR R4 Bundle") from None


def _loc_pointer(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(str(part))
        elif part == "resource_type":
            parts.append("resourceType")
        elif re.fullmatch(r"_?[A-Za-z][A-Za-z0-9]*", part):
            parts.append(part)
        # Anything else is pydantic naming its own validators (unions, wrappers), not a place
        # in the JSON.
    return "".join("/" + _escape(p) for p in parts)


_LIBRARY_MESSAGES = {
    "missing": "is required",
    "model_field_validation.missing": "is required",
    "extra_forbidden": "is not an element of this FHIR type",
    "string_type": "must be a string",
    "list_type": "must be an array",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "string_pattern_mismatch": "is not in the form its FHIR type requires",
    "string_too_short": "is too short for its FHIR type",
    "string_too_long": "is too long for its FHIR type",
    "value_error": "is not a valid value for its FHIR type",
    "fhir-validation-wrong-resource-type": "is not the resource type expected here",
    "model_validation_format": "is not the resource type expected here",
}


def _library_message(kind: str) -> str:
    # Built from the error's type only: pydantic's own `msg` may quote the input.
    if kind in _LIBRARY_MESSAGES:
        return _LIBRARY_MESSAGES[kind]
    for prefix, message in (
        ("bool", "must be a boolean"),
        ("int", "must be an integer"),
        ("float", "must be a number"),
        ("decimal", "must be a number"),
        ("datetime", "must be a FHIR dateTime"),
        ("date", "must be a FHIR date"),
        ("time", "must be a FHIR time"),
        ("url", "must be a URI"),
    ):
        if kind.startswith(prefix):
            return message
    return f"is not valid FHIR ({kind[:64]})"


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    return list(dict.fromkeys(errors))[:MAX_ERRORS]


def _check_mapped(document: Any, sources: dict[str, str], validator: NotificationValidator) -> None:
    """Validate the mapped document now, pointing each error at the FHIR element it came from.

    The service validates it again with the date of receipt; with date.max here every rule
    but "not after the date of receipt" is checked, so only those come back with canonical
    pointers. (A twin of this lives in adapters/formats/xml.py.)
    """
    try:
        validator.validate(document, date.max)
    except SchemaInvalid as exc:
        raise SchemaInvalid(
            _dedupe(
                [
                    FieldError(
                        _source(e.pointer, sources), f"{e.message} (canonical {e.pointer or '/'})"
                    )
                    for e in exc.errors
                ]
            )
        ) from None


def _source(pointer: str, sources: dict[str, str]) -> str:
    while pointer not in sources:
        pointer = pointer.rsplit("/", 1)[0] if "/" in pointer else ""
    return sources[pointer]


class _XhtmlText:
    """A parser target that keeps the text of an XHTML div as a browser would lay it out:
    runs of white space as one space, each block and <br> a new line."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.depth = 0
        self.root: str | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _TooDeep()
        if self.root is None:
            self.root = tag
        if _local(tag) == "br":
            self.parts.append("\n")

    def end(self, tag: str) -> None:
        self.depth -= 1
        if _local(tag) in _BLOCKS:
            self.parts.append("\n")

    def data(self, data: str) -> None:
        self.parts.append(re.sub(r"[ \t\r\n]+", " ", data))

    def close(self) -> str:
        lines = (line.strip() for line in "".join(self.parts).split("\n"))
        return "\n".join(line for line in lines if line)


class _TooDeep(Exception):
    pass


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def xhtml_text(div: str) -> str:
    """The text of a Narrative div. Raises ValueError with a message naming no content."""
    from xml.etree.ElementTree import ParseError
    from xml.parsers.expat import ErrorString

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    target = _XhtmlText()
    parser = DefusedXMLParser(
        target=target, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(div)
        text: str = parser.close()
    except DefusedXmlException:
        raise ValueError("DTDs and entities are not allowed") from None
    except _TooDeep:
        raise ValueError(f"is nested more than {MAX_DEPTH} levels deep") from None
    except ParseError as exc:
        line, column = exc.position
        raise ValueError(
            f"must be well-formed XHTML ({ErrorString(exc.code)} at line {line}, column {column})"
        ) from None
    except (ValueError, UnicodeError):
        raise ValueError("must be well-formed XHTML") from None
    if target.root != f"{{{XHTML}}}div":
        raise ValueError("must be a div in the XHTML namespace")
    return text


class _Mapper:
    """Builds the canonical document from a validated Bundle, recording for every canonical
    pointer the JSON pointer of the element it came from."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        self.document: dict[str, Any] = {}
        self.sources: dict[str, str] = {"": ""}
        self.errors: list[FieldError] = []
        self.resources: dict[str, list[_At]] = defaultdict(list)
        self._references: dict[str, _At] = {}
        for entry in _At(bundle, "").items("entry"):
            resource = entry.get("resource")
            if resource is None:
                continue
            kind = resource.value["resourceType"]
            self.resources[kind].append(resource)
            full_url = entry.value.get("fullUrl")
            if isinstance(full_url, str):
                self._references[full_url] = resource
            if isinstance(resource.value.get("id"), str):
                self._references[f"{kind}/{resource.value['id']}"] = resource

    # -- building ------------------------------------------------------------------------------

    def put(self, pointer: str, value: Any, source: str, parent_source: str | None = None) -> None:
        """Set the canonical value at `pointer`; objects on the way are made as needed (their
        source is `parent_source`, else `source`), and list items are appended (callers give
        indices in order)."""
        *parents, last = pointer.split("/")[1:]
        node: Any = self.document
        path = ""
        for part in parents:
            path += "/" + part
            if isinstance(node, list):
                node = node[int(part)]
            else:
                if part not in node:
                    node[part] = {}
                    self.sources.setdefault(path, parent_source or source)
                node = node[part]
        if isinstance(node, list):
            node.append(value)
        else:
            node[last] = value
        self.sources.setdefault(pointer, source)

    def error(self, pointer: str, message: str) -> None:
        self.errors.append(FieldError(pointer, message))

    # -- reading -------------------------------------------------------------------------------

    def string(self, at: _At | None) -> str | None:
        if at is None:
            return None
        if not isinstance(at.value, str):
            self.error(at.pointer, "must be a string")
            return None
        return at.value

    def boolean(self, at: _At | None) -> bool | None:
        if at is None:
            return None
        if not isinstance(at.value, bool):
            self.error(at.pointer, "must be a boolean (true or false)")
            return None
        return at.value

    def integer(self, at: _At | None) -> int | None:
        if at is None:
            return None
        if isinstance(at.value, bool) or not isinstance(at.value, int):
            self.error(at.pointer, "must be an integer")
            return None
        return at.value

    def code(self, concepts: list[_At], system: str) -> _At | None:
        """The `code` of the first coding in `system` among these CodeableConcepts."""
        for concept in concepts:
            for coding in concept.items("coding"):
                if coding.value.get("system") == system:
                    found = coding.get("code")
                    if found is None:
                        self.error(coding.pointer, "is required: code")
                    return found
        return None

    def extension(self, resource: _At, url: str) -> _At | None:
        found = [e for e in resource.items("extension") if e.value.get("url") == url]
        for extra in found[1:]:
            self.error(extra.pointer, "must not repeat this extension")
        return found[0] if found else None

    def resolve(self, reference: _At | None, kinds: tuple[str, ...]) -> _At | None:
        if reference is None:
            return None
        target = reference.get("reference")
        value = self.string(target)
        resource = self._references.get(value) if value is not None else None
        if resource is None or resource.value["resourceType"] not in kinds:
            self.error(
                (target or reference).pointer,
                "must refer to a " + " or ".join(kinds) + " in this Bundle",
            )
            return None
        return resource

    def one(self, kind: str, what: str) -> _At | None:
        found = self.resources.get(kind, [])
        if not found:
            article = "an" if kind[0] in "AEIOU" else "a"
            self.error("/entry", f"is required: {article} {kind} ({what})")
            return None
        for extra in found[1:]:
            self.error(extra.pointer, f"must be the only {kind} in the Bundle")
        return found[0]

    def human_name(self, name: _At) -> tuple[str | None, _At]:
        """A HumanName as one string: its text, else its given names and family name."""
        text = name.get("text")
        if text is not None:
            return self.string(text), text
        parts = [self.string(g) for g in name.items("given")]
        family = self.string(name.get("family"))
        words = [p for p in [*parts, family] if p]
        return (" ".join(words) if words else None), name

    # -- the mapping ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        composition = self.one("Composition", "the notification document")
        encounter = self.one("Encounter", "the incident")
        patients = self.resources.get("Patient", [])
        if not patients:
            self.error("/entry", "is required: a Patient for each child")
        if composition is None or encounter is None or not patients:
            raise SchemaInvalid(self.errors)

        route = self.code(composition.items("category"), CS_ROUTE)
        if route is None:
            self.error(f"{composition.pointer}/category", f"is required: a coding in {CS_ROUTE}")
        else:
            self.put("/route", route.value, route.pointer)
        self.incident(encounter)
        self.sections(composition)
        self.facts()
        self.abuse_categories()
        self.put("/children", [], composition.pointer)
        for index, patient in enumerate(patients):
            self.child(index, patient)
        related = self.resources.get("RelatedPerson", [])
        if related:
            self.put("/adults", [], related[0].pointer)
            for index, person in enumerate(related):
                self.adult(index, person)
        organizations = self.resources.get("Organization", [])
        if organizations:
            self.put("/agencies_involved", [], organizations[0].pointer)
            for index, organization in enumerate(organizations):
                self.agency(index, organization)
        self.notifier(composition)
        if self.errors:
            raise SchemaInvalid(_dedupe(self.errors))
        return self.document

    def incident(self, encounter: _At) -> None:
        self.put("/incident", {}, encounter.pointer)
        kind = self.code(encounter.items("type"), CS_INCIDENT_TYPE)
        if kind is not None:
            self.put("/incident/type", kind.value, kind.pointer)
        period = encounter.get("period")
        start = period.get("start") if period is not None else None
        started = self.string(start)
        if start is not None and started is not None:
            # The date as written, in the sender's local time: the incident's calendar date.
            day = started[:10] if _FULL_DATE.match(started) else started
            self.put("/incident/date", day, start.pointer)
        location = encounter.first("location")
        place = location.get("location") if location is not None else None
        display = place.get("display") if place is not None else None
        value = self.string(display)
        if display is not None and value is not None:
            self.put("/incident/place", value, display.pointer)

    def sections(self, composition: _At) -> None:
        seen: set[str] = set()
        for section in composition.items("section"):
            code = self.code([c for c in [section.get("code")] if c], CS_SECTION)
            if code is None:
                continue  # another section of the sender's document: not ours to map
            target = SECTIONS.get(code.value) if isinstance(code.value, str) else None
            if target is None:
                self.error(code.pointer, f"must be a code of {CS_SECTION}")
                continue
            if target in seen:
                self.error(code.pointer, "must not repeat a section")
                continue
            seen.add(target)
            narrative = section.get("text")
            div = narrative.get("div") if narrative is not None else None
            markup = self.string(div)
            if div is None or markup is None:
                self.error(section.pointer, "is required: text.div")
                continue
            try:
                text = xhtml_text(markup)
            except ValueError as exc:
                self.error(div.pointer, str(exc))
                continue
            self.put(target, text, div.pointer, f"{composition.pointer}/section")

    def facts(self) -> None:
        seen: set[str] = set()
        counts: dict[str, int] = defaultdict(int)
        for observation in self.resources.get("Observation", []):
            code = self.code([c for c in [observation.get("code")] if c], CS_FACT)
            if code is None:
                continue  # a clinical observation, not one of the notification's facts
            fact = FACTS.get(code.value) if isinstance(code.value, str) else None
            if fact is None:
                self.error(code.pointer, f"must be a code of {CS_FACT}")
                continue
            if fact.pointer in seen and not fact.repeats:
                self.error(code.pointer, "must not repeat a fact")
                continue
            found = self.fact_value(observation, fact)
            if found is None:
                continue
            value, source = found
            if fact.repeats:
                if fact.pointer not in seen:
                    self.put(fact.pointer, [], observation.pointer)
                self.put(f"{fact.pointer}/{counts[fact.pointer]}", value, source)
                counts[fact.pointer] += 1
            else:
                self.put(fact.pointer, value, source, observation.pointer)
            seen.add(fact.pointer)

    def fact_value(self, observation: _At, fact: Fact) -> tuple[Any, str] | None:
        if fact.value == "boolean":
            at = observation.get("valueBoolean")
            value: Any = self.boolean(at)
        elif fact.value == "string":
            at = observation.get("valueString")
            value = self.string(at)
        else:
            concept = observation.get("valueCodeableConcept")
            at = self.code([concept] if concept else [], fact.value)
            if concept is not None and at is None:
                self.error(concept.pointer, f"is required: a coding in {fact.value}")
                return None
            value = at.value if at is not None else None
        if at is None:
            element = {"boolean": "valueBoolean", "string": "valueString"}.get(
                fact.value, "valueCodeableConcept"
            )
            self.error(observation.pointer, f"is required: {element}")
            return None
        if value is None:
            return None
        return value, at.pointer

    def abuse_categories(self) -> None:
        concerns = [
            *self.resources.get("Flag", []),
            *self.resources.get("Condition", []),
        ]
        # Entry order, whatever the resource type: senders list the main concern first.
        concerns.sort(key=lambda at: int(at.pointer.split("/")[2]))
        found = [
            (code, concern)
            for concern in concerns
            if (code := self.code([c for c in [concern.get("code")] if c], CS_ABUSE_CATEGORY))
        ]
        if found:
            self.put("/reg17/abuse_categories", [], found[0][1].pointer, found[0][1].pointer)
            for index, (code, _) in enumerate(found):
                self.put(f"/reg17/abuse_categories/{index}", code.value, code.pointer)

    def names(self, base: str, person: _At) -> None:
        names = person.items("name")
        official = next((n for n in names if n.value.get("use") == "official"), None)
        official = official or (names[0] if names else None)
        if official is None:
            return
        given = [g for g in official.items("given")]
        given_names = [s for s in (self.string(g) for g in given) if s]
        if given_names:
            self.put(f"{base}/given_name", " ".join(given_names), given[0].pointer)
        family = official.get("family")
        family_name = self.string(family)
        if family is not None and family_name is not None:
            self.put(f"{base}/family_name", family_name, family.pointer)
        others = [n for n in names if n is not official]
        if others:
            self.put(f"{base}/other_names", [], others[0].pointer)
            for index, name in enumerate(others):
                text, source = self.human_name(name)
                self.put(f"{base}/other_names/{index}", text or "", source.pointer)

    def child(self, index: int, patient: _At) -> None:
        base = f"/children/{index}"
        self.put(base, {}, patient.pointer)
        self.names(base, patient)
        self.birth_date(base, patient)
        stated = self.extension(patient, EXT_STATED_AGE)
        if stated is not None:
            self.put(f"{base}/stated_age", {}, stated.pointer)
            for part in ("years", "months"):
                sub = self.extension(stated, part)
                at = sub.get("valueInteger") if sub is not None else None
                value = self.integer(at)
                if at is not None and value is not None:
                    self.put(f"{base}/stated_age/{part}", value, at.pointer)
        gender = patient.get("gender")
        if gender is not None:
            self.put(f"{base}/gender", gender.value, gender.pointer)
        self.address(base, patient)
        identifiers = patient.items("identifier")
        if identifiers:
            self.put(f"{base}/identifiers", [], identifiers[0].pointer)
            for position, identifier in enumerate(identifiers):
                self.identifier(f"{base}/identifiers/{position}", identifier)
        ethnicity = self.extension(patient, EXT_ETHNICITY)
        at = ethnicity.get("valueString") if ethnicity is not None else None
        recorded = self.string(at)
        if at is not None and recorded is not None:
            self.put(f"{base}/ethnicity", recorded, at.pointer)
        elif ethnicity is not None:
            self.error(ethnicity.pointer, "is required: valueString")
        died = patient.get("deceasedBoolean")
        if died is not None:
            alive_or_not = self.boolean(died)
            if alive_or_not is not None:
                self.put(f"{base}/died", alive_or_not, died.pointer)
        elif patient.get("deceasedDateTime") is not None:
            self.put(f"{base}/died", True, f"{patient.pointer}/deceasedDateTime")
        self.interpreter(base, patient, EXT_PATIENT_INTERPRETER)

    def birth_date(self, base: str, person: _At) -> None:
        born = person.get("birthDate")
        value = self.string(born)
        if born is not None and value is not None:
            self.put(f"{base}/date_of_birth", value, born.pointer)

    def address(self, base: str, person: _At) -> None:
        addresses = person.items("address")
        address = next((a for a in addresses if a.value.get("use") == "home"), None)
        address = address or (addresses[0] if addresses else None)
        if address is None:
            return
        self.put(f"{base}/address", {}, address.pointer)
        lines = address.items("line")
        if lines:
            self.put(f"{base}/address/lines", [], lines[0].pointer)
            for index, line in enumerate(lines):
                self.put(f"{base}/address/lines/{index}", self.string(line), line.pointer)
        for element, key in (("city", "town"), ("postalCode", "postcode"), ("country", "country")):
            at = address.get(element)
            value = self.string(at)
            if at is not None and value is not None:
                self.put(f"{base}/address/{key}", value, at.pointer)

    def identifier(self, base: str, identifier: _At) -> None:
        system = identifier.value.get("system")
        self.put(base, {}, identifier.pointer)
        self.put(
            f"{base}/system",
            IDENTIFIER_SYSTEMS.get(system, "other") if isinstance(system, str) else "other",
            f"{identifier.pointer}/system",
        )
        at = identifier.get("value")
        value = self.string(at)
        if at is not None and value is not None:
            self.put(f"{base}/value", value, at.pointer)

    def interpreter(self, base: str, person: _At, url: str) -> None:
        flag = self.extension(person, url)
        if flag is None:
            return
        at = flag.get("valueBoolean")
        needed = self.boolean(at)
        if at is None:
            self.error(flag.pointer, "is required: valueBoolean")
            return
        if needed is None:
            return
        self.put(f"{base}/interpreter", {"needed": needed}, at.pointer)
        self.sources.setdefault(f"{base}/interpreter/needed", at.pointer)
        communications = person.items("communication")
        chosen = next((c for c in communications if c.value.get("preferred") is True), None)
        chosen = chosen or (communications[0] if communications else None)
        language = chosen.get("language") if chosen is not None else None
        if language is None:
            return
        text = language.get("text")
        if text is None:
            coding = language.first("coding")
            text = coding.get("display") if coding is not None else None
        value = self.string(text)
        if text is not None and value is not None:
            self.put(f"{base}/interpreter/language", value, text.pointer)

    def adult(self, index: int, person: _At) -> None:
        base = f"/adults/{index}"
        self.put(base, {}, person.pointer)
        names = person.items("name")
        official = next((n for n in names if n.value.get("use") == "official"), None)
        official = official or (names[0] if names else None)
        if official is not None:
            text, source = self.human_name(official)
            if text is not None:
                self.put(f"{base}/name", text, source.pointer)
        relationships = person.items("relationship")
        own = self.code(relationships, CS_RELATIONSHIP)
        if own is not None:
            self.put(f"{base}/relationship", own.value, own.pointer)
        else:
            v3 = self.code(relationships, V3_ROLE_CODE)
            mapped = V3_RELATIONSHIPS.get(v3.value) if v3 is not None else None
            if v3 is not None and mapped is not None:
                self.put(f"{base}/relationship", mapped, v3.pointer)
            else:
                self.error(
                    f"{person.pointer}/relationship",
                    f"is required: a coding in {CS_RELATIONSHIP}, or a family relationship "
                    f"of {V3_ROLE_CODE}",
                )
        lives = self.extension(person, EXT_LIVES_WITH_CHILD)
        if lives is not None:
            at = lives.get("valueBoolean")
            value = self.boolean(at)
            if at is None:
                self.error(lives.pointer, "is required: valueBoolean")
            elif value is not None:
                self.put(f"{base}/lives_with_child", value, at.pointer)
        self.birth_date(base, person)
        self.address(base, person)
        self.interpreter(base, person, EXT_INTERPRETER_NEEDED)

    def agency(self, index: int, organization: _At) -> None:
        base = f"/agencies_involved/{index}"
        self.put(base, {}, organization.pointer)
        name = organization.get("name")
        value = self.string(name)
        if name is not None and value is not None:
            self.put(f"{base}/name", value, name.pointer)
        for identifier in organization.items("identifier"):
            if identifier.value.get("system") == ID_AGENCY:
                code = identifier.get("value")
                if code is not None:
                    self.put(f"{base}/agency_code", code.value, code.pointer)
                break
        jurisdiction = self.extension(organization, EXT_JURISDICTION)
        if jurisdiction is not None:
            at = jurisdiction.get("valueCode")
            if at is None:
                self.error(jurisdiction.pointer, "is required: valueCode")
            else:
                self.put(f"{base}/jurisdiction", at.value, at.pointer)
        involvement = self.extension(organization, EXT_INVOLVEMENT)
        if involvement is not None:
            at = involvement.get("valueString")
            text = self.string(at)
            if at is None:
                self.error(involvement.pointer, "is required: valueString")
            elif text is not None:
                self.put(f"{base}/involvement", text, at.pointer)

    def notifier(self, composition: _At) -> None:
        author = composition.first("author")
        found = self.resolve(author, ("PractitionerRole", "Practitioner"))
        if author is None or found is None:
            return
        self.put("/notifier", {}, author.pointer)
        holders = [found]
        if found.value["resourceType"] == "PractitionerRole":
            role = found.first("code")
            text = role.get("text") if role is not None else None
            value = self.string(text)
            if text is not None and value is not None:
                self.put("/notifier/role", value, text.pointer)
            practitioner = self.resolve(found.get("practitioner"), ("Practitioner",))
            if practitioner is None:
                return
            holders.append(practitioner)
            person = practitioner
        else:
            person = found
        name = person.first("name")
        if name is not None:
            full, source = self.human_name(name)
            if full is not None:
                self.put("/notifier/name", full, source.pointer)
        for system, key in (("email", "email"), ("phone", "phone")):
            telecom = next(
                (
                    t
                    for holder in holders
                    for t in holder.items("telecom")
                    if t.value.get("system") == system
                ),
                None,
            )
            at = telecom.get("value") if telecom is not None else None
            value = self.string(at)
            if at is not None and value is not None:
                self.put(f"/notifier/{key}", value, at.pointer)
