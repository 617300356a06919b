"""The agency registry: codes, names and allowed formats from config/agencies.toml, contacts and
narrower format lists from the installation's settings. Pure data, loaded once at start-up."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import SettingsError

CODE_PATTERN = re.compile(r"[A-Z]{2,8}")
KNOWN_FORMATS = frozenset({"cmr-notification/1", "fhir-r4", "cmr-xml/1"})


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    formats: frozenset[str]
    contact: str | None = None
    # Registered sender addresses for the email channel (lower case). Spoofable: the signature
    # inside the envelope is what authenticates; these only route a message to an agency.
    senders: frozenset[str] = frozenset()


class AgencyRegistry:
    def __init__(self, agencies: Mapping[str, Agency]) -> None:
        self._agencies = dict(agencies)

    @classmethod
    def load(
        cls, config_dir: Path, installation: Mapping[str, Any] | None = None
    ) -> AgencyRegistry:
        path = config_dir / "agencies.toml"
        try:
            shipped = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"the agency registry {path} is missing") from None
        local = dict(installation or {})
        agencies: dict[str, Agency] = {}
        for code, entry in shipped.items():
            if not CODE_PATTERN.fullmatch(code):
                raise SettingsError(f"agency code {code!r} in {path} is not valid")
            formats = frozenset(entry.get("formats", []))
            if not formats <= KNOWN_FORMATS:
                raise SettingsError(f"agency {code} in {path} names an unknown format")
            override = local.pop(code, {})
            if not isinstance(override, dict) or not set(override) <= {
                "contact",
                "formats",
                "senders",
            }:
                raise SettingsError(
                    f"setting 'agencies.{code}' may hold only contact, formats and senders"
                )
            narrowed = frozenset(override.get("formats", formats))
            if not narrowed <= formats:
                raise SettingsError(f"setting 'agencies.{code}.formats' names a format not allowed")
            contact = override.get("contact")
            if contact is not None and (not isinstance(contact, str) or "@" not in contact):
                raise SettingsError(f"setting 'agencies.{code}.contact' must be an email address")
            senders = override.get("senders", [])
            if not isinstance(senders, list) or not all(
                isinstance(a, str) and "@" in a for a in senders
            ):
                raise SettingsError(
                    f"setting 'agencies.{code}.senders' must be a list of email addresses"
                )
            owned = frozenset(a.strip().lower() for a in senders)
            for other in agencies.values():
                if owned & other.senders:
                    raise SettingsError(
                        f"setting 'agencies.{code}.senders' names an address of {other.code}"
                    )
            agencies[code] = Agency(code, str(entry["name"]), narrowed, contact, owned)
        if local:
            raise SettingsError(f"setting 'agencies.{sorted(local)[0]}' names an unknown agency")
        return cls(agencies)

    def get(self, code: str) -> Agency | None:
        return self._agencies.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._agencies

    def __iter__(self) -> Iterator[Agency]:
        return iter(self._agencies.values())

    def codes(self) -> list[str]:
        return list(self._agencies)
