"""Reading and checking a history file: notifications from before the gateway, one CSV row per
child (docs/reports.md, "The import format"). Pure: text in, notifications or bad rows out.

A child's date of birth is read only to derive the age band and goes no further than this
module. Messages never quote a value from the file: a misplaced column could put personal data
in any of them, and the messages end up on terminals and in logs.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gateway.errors import GatewayError
from gateway.intake.validation import AGE_BANDS, age_band

HEADER = (
    "reference",
    "notifying_agency",
    "received_on",
    "child_gender",
    "child_date_of_birth",
    "child_age_band",
    "incident_date",
    "board_considered_on",
    "board_decision",
    "commissioned_on",
    "cmr_completed_on",
    "recommendations",
)
# The columns that belong to the notification, not to a child: every row of a reference repeats
# them and they must agree.
NOTIFICATION_COLUMNS = (
    "notifying_agency",
    "received_on",
    "incident_date",
    "board_considered_on",
    "board_decision",
    "commissioned_on",
    "cmr_completed_on",
    "recommendations",
)
GENDERS = ("male", "female", "other", "unknown")
DECISIONS = ("commissioned", "not_commissioned")
MAX_REFERENCE = 64
MAX_RECOMMENDATIONS = 999
ALREADY_IMPORTED = "reference already imported with other values"

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INTEGER = re.compile(r"\d+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The gateway numbers its own notifications CMRN-YYYY-NNNN: history in that form would take a
# number the gateway has yet to give, and the annual figures would count one case twice.
_GATEWAY_FORM = re.compile(r"\s*cmrn-\d{4}-\d+\s*", re.IGNORECASE)
_BANDS = {band.lower(): band for band in AGE_BANDS}


@dataclass(frozen=True, order=True)
class RowProblem:
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class HistoryInvalid(GatewayError):
    code = "history_invalid"
    status = 422
    title = "The history file has bad rows"

    def __init__(self, problems: Iterable[RowProblem]) -> None:
        self.problems = sorted(set(problems))
        lines = len({p.line for p in self.problems})
        super().__init__(f"{lines} bad {'row' if lines == 1 else 'rows'}; nothing was imported")


@dataclass(frozen=True)
class HistoryChild:
    gender: str
    age_band: str


@dataclass(frozen=True)
class HistoryNotification:
    """What is stored of an imported notification; equal content means the same import."""

    reference: str
    agency: str
    received_on: date
    incident_date: date | None
    board_considered_on: date | None
    board_decision: str | None
    commissioned_on: date | None
    cmr_completed_on: date | None
    recommendations: int | None
    children: tuple[HistoryChild, ...]

    def column_value(self, column: str) -> Any:
        return getattr(self, "agency" if column == "notifying_agency" else column)


@dataclass(frozen=True)
class ChildRow:
    """Where a child came from in the file, to point at the right cell later."""

    line: int
    band_column: str


@dataclass(frozen=True)
class SourcedNotification:
    notification: HistoryNotification
    rows: tuple[ChildRow, ...]

    @property
    def first_line(self) -> int:
        return self.rows[0].line


@dataclass(frozen=True)
class ParsedHistory:
    notifications: tuple[SourcedNotification, ...]
    problems: tuple[RowProblem, ...]

    @property
    def children(self) -> int:
        return sum(len(s.notification.children) for s in self.notifications)


# -- one row --------------------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    cells: dict[str, str]
    problems: list[RowProblem] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def problem(self, column: str, message: str) -> None:
        self.problems.append(RowProblem(self.line, column, message))

    def ok(self, column: str) -> bool:
        """Whether the column was read without a problem (so rules across columns may use it)."""
        return not any(p.column == column for p in self.problems)


def _date(row: _Row, column: str, required: bool = False) -> None:
    text = row.cells[column]
    if not text:
        if required:
            row.problem(column, "is required")
        row.values[column] = None
        return
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        row.values[column] = date.fromisoformat(text)
    except ValueError:
        row.problem(column, "must be a date (YYYY-MM-DD)")


def _read_row(row: _Row, agencies: Container[str]) -> None:
    """Each cell on its own."""
    reference = row.cells["reference"]
    if not reference:
        row.problem("reference", "is required")
    elif len(reference) > MAX_REFERENCE:
        row.problem("reference", f"is longer than {MAX_REFERENCE} characters")
    elif _CONTROL.search(reference):
        row.problem("reference", "must not contain control characters")
    elif _GATEWAY_FORM.fullmatch(reference):
        row.problem(
            "reference", "is in the gateway's own form CMRN-YYYY-NNNN: give the earlier system's"
        )
    row.values["reference"] = reference

    agency = row.cells["notifying_agency"].upper()
    if not agency:
        row.problem("notifying_agency", "is required")
    elif agency not in agencies:
        row.problem("notifying_agency", "is not an agency of the registry")
    row.values["notifying_agency"] = agency

    _date(row, "received_on", required=True)
    _date(row, "incident_date")
    _date(row, "board_considered_on")
    _date(row, "commissioned_on")
    _date(row, "cmr_completed_on")
    _date(row, "child_date_of_birth")

    gender = row.cells["child_gender"].lower()
    if not gender:
        row.problem("child_gender", "is required")
    elif gender not in GENDERS:
        row.problem("child_gender", "must be one of: " + ", ".join(GENDERS))
    row.values["child_gender"] = gender

    band_text = row.cells["child_age_band"]
    band = _BANDS.get(" ".join(band_text.replace("\u2013", "-").split()).lower())
    if band_text and band is None:
        row.problem("child_age_band", "must be one of: " + ", ".join(AGE_BANDS))
    row.values["child_age_band"] = band

    decision = row.cells["board_decision"].lower().replace(" ", "_")
    if decision and decision not in DECISIONS:
        row.problem("board_decision", "must be one of: " + ", ".join(DECISIONS) + " (or empty)")
    row.values["board_decision"] = decision or None

    text = row.cells["recommendations"]
    row.values["recommendations"] = None
    if text:
        if _INTEGER.fullmatch(text) and int(text) <= MAX_RECOMMENDATIONS:
            row.values["recommendations"] = int(text)
        else:
            row.problem(
                "recommendations", f"must be a whole number from 0 to {MAX_RECOMMENDATIONS}"
            )


def _check_dates(row: _Row, today: date) -> None:
    """The rules across the notification's columns."""
    v, ok = row.values, row.ok
    received = v.get("received_on") if ok("received_on") else None
    if received is not None and received > today:
        row.problem("received_on", "is in the future")
    incident = v.get("incident_date") if ok("incident_date") else None
    if incident is not None and received is not None and incident > received:
        row.problem("incident_date", "is after received_on")

    considered = v.get("board_considered_on") if ok("board_considered_on") else None
    if considered is not None:
        if received is not None and considered < received:
            row.problem("board_considered_on", "is before received_on")
        if considered > today:
            row.problem("board_considered_on", "is in the future")

    decision = v.get("board_decision") if ok("board_decision") else None
    if decision is not None and v.get("board_considered_on") is None and ok("board_considered_on"):
        row.problem("board_considered_on", "is required when board_decision is given")

    commissioned = v.get("commissioned_on") if ok("commissioned_on") else None
    if ok("board_decision") and ok("commissioned_on"):
        if decision == "commissioned" and commissioned is None:
            row.problem("commissioned_on", "is required when board_decision is commissioned")
        elif decision != "commissioned" and commissioned is not None:
            row.problem("commissioned_on", "is given only when board_decision is commissioned")
    if commissioned is not None:
        if considered is not None and commissioned < considered:
            row.problem("commissioned_on", "is before board_considered_on")
        if commissioned > today:
            row.problem("commissioned_on", "is in the future")

    completed = v.get("cmr_completed_on") if ok("cmr_completed_on") else None
    if completed is not None:
        if v.get("commissioned_on") is None and ok("commissioned_on"):
            row.problem("cmr_completed_on", "is given only for a commissioned CMR")
        elif commissioned is not None and completed < commissioned:
            row.problem("cmr_completed_on", "is before commissioned_on")
        if completed > today:
            row.problem("cmr_completed_on", "is in the future")

    if (
        v.get("recommendations") is not None
        and v.get("cmr_completed_on") is None
        and ok("cmr_completed_on")
    ):
        row.problem("recommendations", "is given only for a completed CMR")


def _check_child(row: _Row) -> None:
    """The age band: given, or derived from the date of birth, which is then forgotten."""
    v, ok = row.values, row.ok
    has_birth = bool(row.cells["child_date_of_birth"])
    has_band = bool(row.cells["child_age_band"])
    if has_birth and has_band:
        row.problem("child_date_of_birth", "give the date of birth or the age band, not both")
        return
    if not has_birth and not has_band:
        row.problem("child_date_of_birth", "give the date of birth or the age band")
        return
    if has_band:
        return
    birth = v.pop("child_date_of_birth", None)
    if birth is None or not ok("child_date_of_birth"):
        return
    # The age at the incident, or at receipt where no incident date is known.
    if row.cells["incident_date"]:
        on, what = (v.get("incident_date") if ok("incident_date") else None), "the incident date"
    else:
        on, what = (v.get("received_on") if ok("received_on") else None), "receipt"
    if on is None:
        return
    if birth > on:
        row.problem("child_date_of_birth", f"is after {what}")
        return
    try:
        v["child_age_band"] = age_band(birth, on)
    except ValueError:
        row.problem("child_date_of_birth", f"the child is 18 or over at {what}")


# -- the file -------------------------------------------------------------------------------------


def _header(cells: list[str], line: int) -> tuple[dict[str, int], list[RowProblem]]:
    names = [c.strip().lstrip("\ufeff").lower() for c in cells]
    # A spreadsheet may save empty cells after the last column.
    while names and not names[-1]:
        names.pop()
    problems: list[RowProblem] = []
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in index:
            problems.append(RowProblem(line, name, "appears twice in the header"))
        elif name not in HEADER:
            label = name if name and len(name) <= 40 else str(position + 1)
            problems.append(RowProblem(line, label, "is not a column of the import format"))
        else:
            index[name] = position
    for name in HEADER:
        if name not in index:
            problems.append(RowProblem(line, name, "is missing from the header"))
    return index, problems


class _Unreadable(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, cells); a quoted cell may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error:
            # The file cannot be read past this point, so nothing after it can be checked.
            raise _Unreadable(start) from None
        # Blank lines, including a spreadsheet's rows of empty cells, are not records.
        if any(cell.strip() for cell in cells):
            yield start, cells


def parse_history(text: str, agencies: Container[str], today: date) -> ParsedHistory:
    """Every problem of every row, or the notifications when there is none."""
    problems: list[RowProblem] = []
    records = _records(text)
    try:
        first = next(records, None)
        if first is None:
            return ParsedHistory((), (RowProblem(1, "reference", "the file has no header"),))
        header_line, header_cells = first
        index, header_problems = _header(header_cells, header_line)
        if header_problems:
            return ParsedHistory((), tuple(header_problems))
        rows: list[_Row] = []
        for line, cells in records:
            rows.append(_row(line, cells, index, agencies, today))
    except _Unreadable as exc:
        return ParsedHistory((), (RowProblem(exc.line, "-", "is not valid CSV"),))
    if not rows:
        return ParsedHistory((), (RowProblem(header_line, "reference", "the file has no rows"),))

    groups: dict[str, list[_Row]] = {}
    for row in rows:
        # A row too short to be read has no values, and is already a bad row.
        if "reference" in row.values and row.ok("reference"):
            groups.setdefault(row.values["reference"], []).append(row)
    for members in groups.values():
        _check_agreement(members)
    for row in rows:
        problems.extend(row.problems)
    if problems:
        return ParsedHistory((), tuple(sorted(set(problems))))
    return ParsedHistory(tuple(_notification(members) for members in groups.values()), ())


def _row(
    line: int, cells: list[str], index: dict[str, int], agencies: Container[str], today: date
) -> _Row:
    width = len(HEADER)
    row = _Row(line, {})
    for name, position in index.items():
        row.cells[name] = cells[position].strip() if position < len(cells) else ""
    if len(cells) < width:
        missing = min((pos, name) for name, pos in index.items() if pos >= len(cells))[1]
        row.problem(missing, "is missing: the row has fewer cells than the header")
        return row
    if any(cell.strip() for cell in cells[width:]):
        row.problem(str(width + 1), "the row has more cells than the header")
        return row
    _read_row(row, agencies)
    _check_dates(row, today)
    _check_child(row)
    return row


def _check_agreement(members: list[_Row]) -> None:
    first = members[0]
    for row in members[1:]:
        for column in NOTIFICATION_COLUMNS:
            if not (first.ok(column) and row.ok(column)):
                continue
            if row.values.get(column) != first.values.get(column):
                row.problem(
                    column,
                    f"differs from line {first.line}, the first row of its reference",
                )


def _notification(members: list[_Row]) -> SourcedNotification:
    v = members[0].values
    notification = HistoryNotification(
        reference=v["reference"],
        agency=v["notifying_agency"],
        received_on=v["received_on"],
        incident_date=v["incident_date"],
        board_considered_on=v["board_considered_on"],
        board_decision=v["board_decision"],
        commissioned_on=v["commissioned_on"],
        cmr_completed_on=v["cmr_completed_on"],
        recommendations=v["recommendations"],
        children=tuple(
            HistoryChild(row.values["child_gender"], row.values["child_age_band"])
            for row in members
        ),
    )
    rows = tuple(
        ChildRow(
            row.line,
            "child_age_band" if row.cells["child_age_band"] else "child_date_of_birth",
        )
        for row in members
    )
    return SourcedNotification(notification, rows)


def first_difference(new: SourcedNotification, stored: HistoryNotification) -> RowProblem | None:
    """Where a notification already imported differs from the file's, pointing at the cell.
    The children are compared as a collection: their order in a file means nothing."""
    n = new.notification
    for column in NOTIFICATION_COLUMNS:
        if n.column_value(column) != stored.column_value(column):
            return RowProblem(new.first_line, column, ALREADY_IMPORTED)
    remaining = Counter(stored.children)
    counted = f"{ALREADY_IMPORTED} ({len(stored.children)} children, not {len(n.children)})"
    for row, child in zip(new.rows, n.children, strict=True):
        if remaining[child]:
            remaining[child] -= 1
            continue
        if not remaining.total():
            return RowProblem(row.line, "reference", counted)
        if any(c.gender == child.gender for c in +remaining):
            return RowProblem(row.line, row.band_column, ALREADY_IMPORTED)
        return RowProblem(row.line, "child_gender", ALREADY_IMPORTED)
    if remaining.total():
        return RowProblem(new.rows[-1].line, "reference", counted)
    return None
