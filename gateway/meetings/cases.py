"""A case's own steps around the panel (DESIGN.md, "Lifecycle of a notification"): ready for the
panel once its information is settled, withdrawn, the Board's decision on the panel's outcome,
and the CMR's start and completion, which the annual report counts (case_outcomes).

The API, for the command line and the web pages:
  case(reference) / cases(states)                            state, placements, Board record
  mark_ready(reference, actor, meeting=None)                 needs every request settled
  withdraw(reference, reason, actor)                         the reason is kept encrypted
  board_decide(reference, decision, on, actor)               commissioned | not_commissioned
  start_cmr(reference, on, actor) / complete_cmr(...)        dates, recommendations, themes
Every step is one checked transition (gateway/lifecycle.py) with its audit event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import date
from typing import Any

from gateway import lifecycle as lc
from gateway.clock import Clock
from gateway.errors import NotFound
from gateway.keys.datacipher import DataCipher
from gateway.lifecycle import Transition
from gateway.meetings.model import OPEN_STATUSES, CaseView, Meeting, Refused
from gateway.meetings.repository import CaseRow, MeetingsRepository, Note
from gateway.requests.service import SETTLED, RequestsService

DECISIONS = (lc.COMMISSIONED, lc.NOT_COMMISSIONED)
MAX_THEMES = 40
MAX_THEME = 120
MAX_REASON = 5000


def _note_aad(notification_id: int) -> bytes:
    return f"case-note\x00{notification_id}".encode()


def view(row: CaseRow) -> CaseView:
    return CaseView(
        id=row.id,
        reference=row.reference,
        agency=row.agency,
        status=row.status,
        route=row.route,
        received_at=row.received_at,
        outcome=row.outcome,
        placements=tuple((p.meeting, p.section, p.outcome) for p in row.placements),
    )


class CasesService:
    def __init__(
        self,
        *,
        clock: Clock,
        repo: MeetingsRepository,
        requests: RequestsService,
        cipher: DataCipher,
        zone: Any,
        find_meeting: Callable[[str], Awaitable[Meeting]],
    ) -> None:
        self.find_meeting = find_meeting
        self.clock = clock
        self.repo = repo
        self.requests = requests
        self.cipher = cipher
        self.zone = zone

    def today(self) -> date:
        return self.clock.now().astimezone(self.zone).date()

    async def _row(self, reference: str) -> CaseRow:
        row = await self.repo.case(reference)
        if row is None:
            raise NotFound(f"no notification {reference}")
        return row

    async def case(self, reference: str) -> CaseView:
        return view(await self._row(reference))

    async def cases(self, states: Collection[str] | None = None) -> list[CaseView]:
        return [view(r) for r in await self.repo.cases(states)]

    def _check_day(self, on: date, what: str, not_before: date | None, since: str) -> None:
        if on > self.today():
            raise Refused(f"the {what} date {on.isoformat()} is in the future")
        if not_before is not None and on < not_before:
            raise Refused(
                f"the {what} date {on.isoformat()} is before {since} ({not_before.isoformat()})"
            )

    async def mark_ready(self, reference: str, actor: str, meeting: str | None = None) -> CaseView:
        """Ready for the panel: every information request answered, declined, expired or
        revoked. With `meeting`, the case is kept for that meeting's agenda (and off the
        agendas of any meeting before it)."""
        row = await self._row(reference)
        if not await self.requests.settled(reference):
            open_requests = sorted(
                {
                    r.agency
                    for r in await self.requests.all_requests(reference)
                    if r.status not in SETTLED
                }
            )
            raise Refused(
                f"notification {reference} still has open information requests "
                f"({', '.join(open_requests)}): it is ready for the panel once each is answered, "
                "declined, expired or revoked"
            )
        target = None
        if meeting is not None:
            target = await self.find_meeting(meeting)
            if not target.is_open or target.starts_at <= self.clock.now():
                raise Refused(f"meeting {meeting} is {target.status}: choose a later meeting")
        transitions = []
        if not (row.status == lc.READY_FOR_PANEL and target is not None):
            why = "information settled" + (f"; kept for {meeting}" if meeting else "")
            transitions.append(Transition(row.id, reference, row.status, lc.READY_FOR_PANEL, why))
        unplace = []
        if target is not None:
            unplace = [
                p.id
                for p in row.placements
                if p.outcome is None
                and p.meeting_status in OPEN_STATUSES
                and p.meeting_id != target.id
            ]
        await self.repo.change_case(
            transitions,
            actor,
            self.clock.now(),
            place_on=target.id if target else None,
            unplace=unplace,
            note=None,
        )
        return await self.case(reference)

    async def withdraw(self, reference: str, reason: str, actor: str) -> CaseView:
        """Withdrawn (by the notifying agency or the panel). It leaves any agenda not yet held
        and revokes its open information requests (the agencies are told no answer is needed);
        the reason may name people, so it is stored encrypted and kept out of the audit log."""
        if not reason.strip():
            raise Refused("give the reason for withdrawing")
        row = await self._row(reference)
        t = Transition(row.id, reference, row.status, lc.WITHDRAWN, "withdrawn (reason recorded)")
        key_id, payload = self.cipher.encrypt(
            reason.strip()[:MAX_REASON].encode(), _note_aad(row.id)
        )
        revoke, events, mails = await self.requests.closing_on_withdrawal(reference, actor)
        await self.repo.change_case(
            [t],
            actor,
            self.clock.now(),
            note=Note(row.id, "withdrawn", key_id, payload),
            unplace=[
                p.id
                for p in row.placements
                if p.outcome is None and p.meeting_status in OPEN_STATUSES
            ],
            events=events,
            revoke_requests=revoke,
            mails=mails,
        )
        if mails:
            self.requests.wake_outbox()
        return await self.case(reference)

    async def notes(self, reference: str) -> list[dict[str, Any]]:
        """The reasons given for changes to the case (personal data: for the secretariat)."""
        row = await self._row(reference)
        return [
            {
                "kind": kind,
                "at": at,
                "actor": actor,
                "text": self.cipher.decrypt(key_id, payload, _note_aad(row.id)).decode(),
            }
            for kind, at, actor, key_id, payload in await self.repo.notes(row.id)
        ]

    async def board_decide(self, reference: str, decision: str, on: date, actor: str) -> CaseView:
        """The Board's decision on the panel's outcome, dated. "commissioned" also dates the
        commission; either way the case counts as considered by the Board that day."""
        decision = decision.replace("-", "_")
        if decision not in DECISIONS:
            raise Refused("the Board's decision is commissioned or not-commissioned")
        row = await self._row(reference)
        decided = [p for p in row.placements if p.outcome is not None]
        panel_day = decided[-1].meeting_starts_at.astimezone(self.zone).date() if decided else None
        self._check_day(on, "decision", panel_day, "the panel meeting that considered it")
        t = Transition(
            row.id, reference, row.status, decision, f"Board decision of {on.isoformat()}"
        )
        await self.repo.change_case(
            [t],
            actor,
            self.clock.now(),
            outcome={
                "board_considered_on": on,
                "board_decision": decision,
                "commissioned_on": on if decision == lc.COMMISSIONED else None,
            },
        )
        return await self.case(reference)

    async def start_cmr(self, reference: str, on: date, actor: str) -> CaseView:
        row = await self._row(reference)
        commissioned = row.outcome.commissioned_on if row.outcome else None
        self._check_day(on, "start", commissioned, "the commission")
        t = Transition(
            row.id, reference, row.status, lc.CMR_UNDER_WAY, f"CMR started {on.isoformat()}"
        )
        await self.repo.change_case([t], actor, self.clock.now(), outcome={"cmr_started_on": on})
        return await self.case(reference)

    async def complete_cmr(
        self,
        reference: str,
        on: date,
        recommendations: int,
        themes: Sequence[str],
        actor: str,
    ) -> CaseView:
        """The review is complete: its date, the number of its recommendations and their
        themes (short labels such as "information sharing", never about a person)."""
        if not 0 <= recommendations <= 1000:
            raise Refused("the number of recommendations must be 0 to 1000")
        cleaned = list(dict.fromkeys(t.strip() for t in themes if t.strip()))
        if len(cleaned) > MAX_THEMES or any(len(t) > MAX_THEME for t in cleaned):
            raise Refused(f"at most {MAX_THEMES} themes, each at most {MAX_THEME} characters")
        row = await self._row(reference)
        started = row.outcome.cmr_started_on if row.outcome else None
        self._check_day(on, "completion", started, "the start of the review")
        t = Transition(
            row.id, reference, row.status, lc.CMR_COMPLETED, f"CMR completed {on.isoformat()}"
        )
        await self.repo.change_case(
            [t],
            actor,
            self.clock.now(),
            outcome={
                "cmr_completed_on": on,
                "recommendations": recommendations,
                "themes": cleaned,
            },
        )
        return await self.case(reference)
