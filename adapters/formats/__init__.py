"""Format adapters and their registry by format name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from adapters.formats.canonical import CanonicalJson
from adapters.formats.fhir import FhirR4
from adapters.formats.xml import CmrXml


class FormatAdapter(Protocol):
    name: str

    def to_canonical(self, body: Any) -> Any:
        """The canonical `cmr-notification/1` document for `body`, still to be validated
        against the schema. Raises gateway.errors.SchemaInvalid with the paths of mapping
        problems in the original body."""
        ...


class FormatRegistry:
    def __init__(self, adapters: Iterable[FormatAdapter]) -> None:
        self._adapters = {a.name: a for a in adapters}

    def get(self, name: str) -> FormatAdapter | None:
        return self._adapters.get(name)

    def names(self) -> list[str]:
        return sorted(self._adapters)


def default_formats() -> FormatRegistry:
    return FormatRegistry([CanonicalJson(), FhirR4(), CmrXml()])
