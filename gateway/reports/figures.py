"""The figures of the annual learning report, from plain records (docs/reports.md, "The figures").
Pure: the records come from the repository, live and imported alike, and nothing here knows which
is which.

Everything is counted as at the last day of the business year, so that the report of a closed
year says the same whenever it is produced.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Any

from gateway.intake.validation import AGE_BANDS

GENDERS = ("male", "female", "other", "unknown")
# The Board's first business year: CMRs have been commissioned since 2012.
FIRST_YEAR = 2012
# The average month, 365.25 / 12 days, exactly.
MONTH_DAYS = Fraction(487, 16)

_YEAR = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True, order=True)
class BusinessYear:
    """1 April to 31 March, named like the Board's reports: 2023-24."""

    start_year: int

    @classmethod
    def parse(cls, text: str) -> BusinessYear:
        match = _YEAR.fullmatch(text.strip())
        if not match or int(match.group(2)) != (int(match.group(1)) + 1) % 100:
            raise ValueError("a business year is written like 2023-24")
        return cls(int(match.group(1)))

    @classmethod
    def containing(cls, day: date) -> BusinessYear:
        return cls(day.year if day.month >= 4 else day.year - 1)

    @property
    def label(self) -> str:
        return f"{self.start_year}-{(self.start_year + 1) % 100:02d}"

    @property
    def start(self) -> date:
        return date(self.start_year, 4, 1)

    @property
    def end(self) -> date:
        return date(self.start_year + 1, 3, 31)

    def holds(self, day: date | None) -> bool:
        return day is not None and self.start <= day <= self.end


@dataclass(frozen=True)
class Child:
    gender: str
    age_band: str


@dataclass(frozen=True)
class CaseRecord:
    """A notification as the report sees it, received through the gateway or imported."""

    reference: str
    received_on: date
    children: tuple[Child, ...]
    board_considered_on: date | None = None
    board_decision: str | None = None
    commissioned_on: date | None = None
    cmr_completed_on: date | None = None
    recommendations: int | None = None

    @property
    def commissioned_date(self) -> date | None:
        """When the CMR was commissioned; the Board's decision date where none was recorded."""
        if self.board_decision != "commissioned":
            return None
        return self.commissioned_on or self.board_considered_on

    def commissioned_by(self, day: date) -> bool:
        when = self.commissioned_date
        return when is not None and when <= day

    def completed_by(self, day: date) -> bool:
        return (
            self.commissioned_by(day)
            and self.cmr_completed_on is not None
            and self.cmr_completed_on <= day
        )


def _gender(value: str) -> str:
    return value if value in GENDERS else "unknown"


def by_gender(children: Iterable[Child]) -> dict[str, int]:
    counts = Counter(_gender(c.gender) for c in children)
    return {g: counts[g] for g in GENDERS}


def by_age_band(children: Iterable[Child]) -> dict[str, dict[str, int]]:
    counts = Counter((c.age_band, _gender(c.gender)) for c in children)
    table: dict[str, dict[str, int]] = {}
    for band in AGE_BANDS:
        row = {g: counts[(band, g)] for g in GENDERS}
        table[band] = {"total": sum(row.values()), **row}
    return table


def _children(records: Iterable[CaseRecord]) -> list[Child]:
    return [child for r in records for child in r.children]


def average_months(days: Sequence[int]) -> float | None:
    """The mean of the durations in months of 30.4375 days, to one decimal, halves rounded up."""
    if not days:
        return None
    months = Fraction(sum(days)) / (len(days) * MONTH_DAYS)
    return math.floor(months * 10 + Fraction(1, 2)) / 10


def annual_figures(records: Iterable[CaseRecord], year: BusinessYear) -> dict[str, Any]:
    records = list(records)
    end = year.end

    received = [r for r in records if year.holds(r.received_on)]
    received_children = _children(received)

    considered = [r for r in records if year.holds(r.board_considered_on)]

    from_year = [r for r in received if r.commissioned_by(end)]

    commissioned = [r for r in records if r.commissioned_by(end)]
    completed = [r for r in commissioned if r.completed_by(end)]
    completion_years = [
        BusinessYear.containing(r.cmr_completed_on).start_year
        for r in completed
        if r.cmr_completed_on is not None
    ]
    first = min([FIRST_YEAR, *completion_years])
    per_year = Counter(completion_years)
    completed_by_year = {
        BusinessYear(y).label: per_year[y] for y in range(first, year.start_year + 1)
    }

    in_year = [r for r in completed if year.holds(r.cmr_completed_on)]
    in_year_children = _children(in_year)
    durations = [
        (r.cmr_completed_on - r.commissioned_on).days
        for r in in_year
        if r.cmr_completed_on is not None and r.commissioned_on is not None
    ]

    return {
        "year": year.label,
        "period": {"start": year.start.isoformat(), "end": end.isoformat()},
        "notifications_received": {
            "notifications": len(received),
            "children": len(received_children),
            "by_gender": by_gender(received_children),
            "by_age_band": by_age_band(received_children),
        },
        "considered_by_board": {
            "notifications": len(considered),
            "received_in_previous_years": sum(1 for r in considered if r.received_on < year.start),
            "commissioned": sum(1 for r in considered if r.board_decision == "commissioned"),
        },
        "commissioned_from_year_received": {
            "notifications": len(from_year),
            "children_by_gender": by_gender(_children(from_year)),
        },
        "since_inception": {
            "commissioned": len(commissioned),
            "completed": len(completed),
            "under_way": len(commissioned) - len(completed),
            "completed_by_year": completed_by_year,
        },
        "completed_in_year": {
            "reviews": len(in_year),
            "children": len(in_year_children),
            "by_gender": by_gender(in_year_children),
            "by_age_band": by_age_band(in_year_children),
            "average_completion_months": average_months(durations),
            "recommendations": sum(r.recommendations or 0 for r in in_year),
        },
    }
