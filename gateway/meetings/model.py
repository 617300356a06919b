"""The meetings feature's values, as its service hands them out (to the command line and to the
web pages). Pure dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from gateway.errors import GatewayError, UsageError

PLANNED, COMPILED, ISSUED, HELD, INQUORATE, CANCELLED = (
    "planned",
    "compiled",
    "issued",
    "held",
    "inquorate",
    "cancelled",
)
# A meeting whose business can still change: not yet held, not cancelled.
OPEN_STATUSES = frozenset({PLANNED, COMPILED, ISSUED})
SCHEDULED, EXTRA, RECONVENED = "scheduled", "extra", "reconvened"
MARKING = "OFFICIAL-SENSITIVE"


class Refused(UsageError):
    """A step the rules do not allow now: a meeting already held, a date too soon, a case not
    ready. The detail says why, in words for the person who asked."""

    code = "refused"
    status = 409
    title = "Not allowed"


class MeetingConflict(GatewayError):
    """Someone else changed the same thing at the same moment; doing it again is safe."""

    code = "conflict"
    status = 409
    title = "This changed while it was being done: try again"


class RecordInvalid(GatewayError):
    code = "record_invalid"
    status = 422
    title = "The meeting record is not valid"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems), problems=problems)
        self.problems = problems


@dataclass(frozen=True)
class Meeting:
    id: int
    public_id: str
    kind: str
    source: str
    status: str
    starts_at: datetime
    duration_minutes: int
    place: str | None
    online_link: str | None
    cut_off_on: date
    notice_by_on: date
    notice_sent_at: datetime | None
    ics_uid: str
    ics_sequence: int
    reconvenes: str | None
    requisitioned_on: date | None
    requisitioned_by: tuple[str, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(minutes=self.duration_minutes)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class AgendaVersion:
    meeting: str
    version: int
    status: str
    compiled_at: datetime
    compiled_by: str
    issued_at: datetime | None
    # Decrypted: sections (with change marks), removed items, the version compared with.
    content: dict[str, Any]

    def decision_references(self) -> list[str]:
        return [
            item["reference"]
            for s in self.content["sections"]
            if s["id"] in ("new", "deferred")
            for item in s["items"]
        ]


@dataclass(frozen=True)
class CompileResult:
    meeting: str
    version: int
    changed: bool
    counts: dict[str, int]
    changes: int = 0


@dataclass(frozen=True)
class IssueResult:
    meeting: str
    version: int
    notice: str  # "notice" (the first), "revised" (a re-issue), or "none"
    recipients: int
    late: bool


@dataclass(frozen=True)
class RecordResult:
    meeting: str
    quorate: bool
    present: int
    quorum: int
    outcomes: dict[str, str]
    reconvened: str | None = None
    already_recorded: bool = False


@dataclass(frozen=True)
class TickResult:
    compiled: list[str] = field(default_factory=list)
    noticed: list[str] = field(default_factory=list)
    scheduled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CaseOutcome:
    board_considered_on: date | None
    board_decision: str | None
    commissioned_on: date | None
    cmr_started_on: date | None
    cmr_completed_on: date | None
    recommendations: int | None
    themes: tuple[str, ...]


@dataclass(frozen=True)
class CaseView:
    """A notification as the panel's work sees it: no personal data."""

    id: int
    reference: str
    agency: str
    status: str
    route: str
    received_at: datetime
    outcome: CaseOutcome | None
    # (meeting, section, outcome) of each placement, oldest first.
    placements: tuple[tuple[str, str, str | None], ...] = ()
