"""Question sets per kind of agency (config/questions.toml), and which identifiers each kind
needs to search its records. Pure data."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import SettingsError

# The least a kind of agency needs to find the family in its records.
IDENTIFIER_SYSTEMS: dict[str, frozenset[str]] = {
    "health": frozenset({"hcn", "nhs_number"}),
    "police": frozenset({"psni_reference"}),
    "education": frozenset({"ea_pupil_number"}),
    "justice": frozenset(),
    "default": frozenset(),
}
NEEDS_ADULTS = frozenset({"police", "justice", "health"})


@dataclass(frozen=True)
class Question:
    id: str
    text: str


@dataclass(frozen=True)
class QuestionSet:
    name: str
    agencies: frozenset[str]
    questions: tuple[Question, ...]


class QuestionSets:
    def __init__(self, sets: dict[str, QuestionSet]) -> None:
        self._sets = sets

    @classmethod
    def load(cls, config_dir: Path) -> QuestionSets:
        path = config_dir / "questions.toml"
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))["sets"]
            sets = {
                name: QuestionSet(
                    name,
                    frozenset(entry.get("agencies", [])),
                    tuple(Question(str(q["id"]), str(q["text"])) for q in entry["questions"]),
                )
                for name, entry in raw.items()
            }
        except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{path} is not a valid question file: {exc}") from None
        if "default" not in sets:
            raise SettingsError(f"{path} needs a [sets.default]")
        return cls(sets)

    def for_agency(self, code: str) -> QuestionSet:
        for qs in self._sets.values():
            if code in qs.agencies:
                return qs
        return self._sets["default"]

    def get(self, name: str) -> QuestionSet:
        return self._sets.get(name) or self._sets["default"]
