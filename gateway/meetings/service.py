"""The panel's meetings: the calendar kept in the database, agendas compiled at their cut-off
and issued with the notice, the record of what each meeting decided, and the scheduled tick that
does what is due (docs/meetings.md).

The API, for the command line and the web pages:
  meetings(year) / meeting(id) / calendar_warnings()        what is planned, and what is short
  add_meeting(...) / move_meeting(...)                      extra meetings; moves (SEQUENCE + 1)
  compile(id, actor, aob) -> CompileResult                  a draft agenda from the cases now
  issue(id, actor) -> IssueResult                           draft -> issued, with the notice
  agenda(id, version) -> AgendaVersion / pack(id, fmt)      one version, decrypted / rendered
  record(document, actor) -> RecordResult                   attendance, interests, outcomes
  tick() -> TickResult                                      the scheduled job: idempotent
The case's own steps (ready for panel, withdraw, the Board's decision, the CMR) are in
gateway/meetings/cases.py. No HTTP and no SQL here: those are the handlers' and the repository's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, time
from typing import Any

import jsonschema
import structlog

from gateway import lifecycle as lc
from gateway.agencies.registry import AgencyRegistry
from gateway.audit.chain import AuditEvent
from gateway.clock import Clock
from gateway.errors import NotFound, Unavailable
from gateway.keys.datacipher import DataCipher
from gateway.lifecycle import Transition
from gateway.meetings import agenda as ag
from gateway.meetings import notice as nt
from gateway.meetings import pack as pk
from gateway.meetings import rules
from gateway.meetings.calendar import MeetingCalendar, earliest_meeting_day
from gateway.meetings.cases import CasesService
from gateway.meetings.model import (
    EXTRA,
    OPEN_STATUSES,
    RECONVENED,
    SCHEDULED,
    AgendaVersion,
    CompileResult,
    IssueResult,
    Meeting,
    MeetingConflict,
    RecordInvalid,
    RecordResult,
    Refused,
    TickResult,
)
from gateway.meetings.repository import (
    CaseRow,
    Decision,
    MeetingsRepository,
    Moved,
    NewMeeting,
    NewPlacement,
    NewRecord,
    PlacementRow,
    StoredAgenda,
)
from gateway.outbox.model import OutgoingMail
from gateway.requests.service import RequestsService
from gateway.settings import Settings
from gateway.storage.database import Database
from gateway.workdays import WorkingDays

log = structlog.get_logger("gateway.meetings")
SYSTEM = "system:scheduler"
CALENDAR_FILE = "meetings.toml"
RECORD_SCHEMA = "meeting-record-1.schema.json"
# States whose cases may be on an agenda in some section.
AGENDA_STATES = frozenset(
    {lc.READY_FOR_PANEL, lc.ON_AGENDA, lc.DEFERRED, *ag.NOTING_STATES, *ag.CMR_STATES}
)


def _agenda_aad(meeting_id: int, version: int) -> bytes:
    return f"agenda\x00{meeting_id}\x00{version}".encode()


def _record_aad(meeting_id: int) -> bytes:
    return f"meeting-record\x00{meeting_id}".encode()


def _item_aad(item_id: int) -> bytes:
    return f"agenda-item\x00{item_id}".encode()


def new_ics_uid(public_id: str, domain: str) -> str:
    return f"{public_id.lower()}.{secrets.token_hex(8)}@{domain}"


class MeetingsService:
    def __init__(
        self,
        *,
        clock: Clock,
        repo: MeetingsRepository,
        calendar: MeetingCalendar,
        workdays: WorkingDays,
        cipher: DataCipher,
        requests: RequestsService,
        agencies: AgencyRegistry,
        base_url: str,
        mail_from: str,
        secretariat_email: str,
        record_schema: Mapping[str, Any],
        wake_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self.clock = clock
        self.repo = repo
        self.calendar = calendar
        self.workdays = workdays
        self.cipher = cipher
        self.requests = requests
        self.agencies = agencies
        self.base_url = base_url.rstrip("/")
        self.mail_from = mail_from
        self.secretariat_email = secretariat_email
        self.wake_outbox = wake_outbox
        self.record_validator = jsonschema.Draft202012Validator(
            record_schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )

    @property
    def zone(self) -> Any:
        return self.calendar.zone

    def today(self) -> date:
        return self.clock.now().astimezone(self.zone).date()

    def _new_meeting(
        self,
        public_id: str,
        kind: str,
        source: str,
        starts_at: datetime,
        place: str | None,
        online_link: str | None,
        actor: str,
        **extra: Any,
    ) -> NewMeeting:
        dates = self.calendar.dates_for(starts_at, self.workdays)
        return NewMeeting(
            public_id=public_id,
            kind=kind,
            source=source,
            starts_at=starts_at,
            duration_minutes=int(self.calendar.duration.total_seconds() // 60),
            place=place,
            online_link=online_link,
            cut_off_on=dates.cut_off_on,
            notice_by_on=dates.notice_by_on,
            ics_uid=new_ics_uid(public_id, self.mail_from.rsplit("@", 1)[-1]),
            created_by=actor,
            **extra,
        )

    # -- the calendar ----------------------------------------------------------------------

    async def sync_calendar(self) -> list[str]:
        """Bring the calendar file's meetings of this year and the next into the database:
        new ones added, changed ones moved (unless moved by hand), and vanished ones that no
        notice was sent for cancelled. Only meetings still to come; idempotent."""
        now = self.clock.now()
        year = now.astimezone(self.zone).year
        stored = {m.public_id: m for m in await self.repo.meetings()}
        planned = [
            p
            for p in [*self.calendar.planned(year), *self.calendar.planned(year + 1)]
            if p.starts_at > now
        ]
        done: list[str] = []
        for p in planned:
            place, link = self.calendar.place_of(p)
            m = stored.get(p.public_id)
            if m is None:
                new = self._new_meeting(
                    p.public_id, SCHEDULED, "config", p.starts_at, place, link, SYSTEM
                )
                audit = AuditEvent(
                    SYSTEM, "meeting.scheduled", p.public_id, {"starts_at": p.starts_at}
                )
                if await self.repo.insert_meeting(new, audit, now):
                    done.append(p.public_id)
            elif (
                m.source == "config"
                and m.is_open
                and (m.starts_at, m.place, m.online_link) != (p.starts_at, place, link)
            ):
                try:
                    await self._move(m, p.starts_at, place, link, SYSTEM, "config")
                    done.append(p.public_id)
                except Refused as exc:
                    log.warning("meeting_not_moved", meeting=m.public_id, reason=exc.detail)
        planned_ids = {p.public_id for p in planned}
        window = (year, year + 1)
        for m in stored.values():
            if (
                m.source == "config"
                and m.status in ("planned", "compiled")
                and m.notice_sent_at is None
                and m.starts_at > now
                and m.starts_at.astimezone(self.zone).year in window
                and m.public_id not in planned_ids
            ):
                audit = AuditEvent(SYSTEM, "meeting.cancelled", m.public_id, {"why": "calendar"})
                if await self.repo.cancel_meeting(m, audit, now):
                    done.append(m.public_id)
        return done

    async def meetings(self, year: int | None = None) -> list[Meeting]:
        """Every meeting in the database (of one year in the panel's zone), soonest first."""
        await self.sync_calendar()
        found = await self.repo.meetings()
        if year is not None:
            found = [m for m in found if m.starts_at.astimezone(self.zone).year == year]
        return found

    async def meeting(self, public_id: str) -> Meeting:
        m = await self.repo.meeting(public_id)
        if m is None:
            # A meeting of the calendar file that no tick has brought in yet.
            await self.sync_calendar()
            m = await self.repo.meeting(public_id)
        if m is None:
            raise NotFound(f"no meeting {public_id}")
        return m

    async def calendar_warnings(self, years: Iterable[int] | None = None) -> list[str]:
        """A line for each year (this one and the next by default) with fewer than four
        meetings planned: Schedule 5 asks for four. Reconvened meetings do not count (they
        continue one that was inquorate); cancelled ones do not either."""
        this_year = self.today().year
        years = list(years) if years is not None else [this_year, this_year + 1]
        stored = await self.repo.meetings()
        warnings = []
        for year in years:
            ids = {p.public_id for p in self.calendar.planned(year)}
            for m in stored:
                in_year = m.starts_at.astimezone(self.zone).year == year
                if m.kind == RECONVENED or m.status == "cancelled":
                    ids.discard(m.public_id)
                elif in_year:
                    ids.add(m.public_id)
                else:
                    ids.discard(m.public_id)  # moved into another year
            if rules.too_few_meetings(len(ids)):
                warnings.append(
                    f"WARNING: {year} has {len(ids)} panel meeting{'s' if len(ids) != 1 else ''} "
                    f"planned; Schedule 5 requires at least {rules.MIN_MEETINGS_A_YEAR}"
                )
        return warnings

    async def log_calendar_warnings(self) -> list[str]:
        """At start-up: loud, but never in the way of starting."""
        try:
            warnings = await self.calendar_warnings()
        except Unavailable:
            return []
        except Exception:  # an unmigrated database, say: /readyz reports that, not this
            log.exception("meetings_calendar_not_checked")
            return []
        for w in warnings:
            log.warning("meetings_calendar_short", warning=w)
        return warnings

    # -- extra meetings and moves ----------------------------------------------------------

    def _check_notice_possible(self, starts_at: datetime) -> None:
        day = starts_at.astimezone(self.zone).date()
        earliest = earliest_meeting_day(self.today())
        if day < earliest:
            raise Refused(
                f"a meeting on {day.isoformat()} cannot have seven clear days' notice: "
                f"the earliest day is {earliest.isoformat()}"
            )

    async def add_meeting(
        self,
        starts_at: datetime,
        actor: str,
        place: str | None = None,
        online_link: str | None = None,
        requisitioned_by: Sequence[str] = (),
        requisitioned_on: date | None = None,
    ) -> Meeting:
        """An additional meeting, for example one requisitioned by three quarters of the
        members, which the Chair calls within 14 days (Schedule 5)."""
        starts_at = self.calendar.to_utc(starts_at)
        self._check_notice_possible(starts_at)
        day = starts_at.astimezone(self.zone).date()
        if requisitioned_by or requisitioned_on:
            on = requisitioned_on or self.today()
            members = [m.id for m in self.calendar.members]
            unknown = sorted(set(requisitioned_by) - set(members))
            if unknown:
                raise Refused(f"not panel members: {', '.join(unknown)}")
            if not rules.requisition_valid(requisitioned_by, members):
                raise Refused(
                    f"a requisition needs three quarters of the {len(members)} members; "
                    f"{len(set(requisitioned_by))} signed it"
                )
            if day > rules.requisitioned_meeting_by(on):
                raise Refused(
                    f"a requisitioned meeting is held within 14 days of the requisition: by "
                    f"{rules.requisitioned_meeting_by(on).isoformat()}"
                )
            requisitioned_on = on
        if online_link is not None and not online_link.startswith("https://"):
            raise Refused("the online link must be an https:// URL")
        if place is None and online_link is None:
            place, online_link = self.calendar.place, self.calendar.online_link
        now = self.clock.now()
        for suffix in ("", "-b", "-c", "-d", "-e"):
            public_id = f"M-{day:%Y-%m-%d}{suffix}"
            new = self._new_meeting(
                public_id,
                EXTRA,
                "manual",
                starts_at,
                place,
                online_link,
                actor,
                requisitioned_on=requisitioned_on,
                requisitioned_by=tuple(requisitioned_by),
            )
            details: dict[str, Any] = {"starts_at": starts_at, "kind": EXTRA}
            if requisitioned_by:
                details["requisitioned_by"] = sorted(requisitioned_by)
            added = await self.repo.insert_meeting(
                new, AuditEvent(actor, "meeting.added", public_id, details), now
            )
            if added is not None:
                return added
        raise Refused(f"too many meetings on {day.isoformat()}")

    async def move_meeting(
        self,
        public_id: str,
        starts_at: datetime,
        actor: str,
        place: str | None = None,
        online_link: str | None = None,
    ) -> Meeting:
        """A new time (and place). Members who had the notice get the invitation again with
        SEQUENCE one higher, which moves the event in their calendars. A meeting of the
        calendar file moved here is no longer managed by the file."""
        m = await self.meeting(public_id)
        await self._move(
            m,
            self.calendar.to_utc(starts_at),
            place if place is not None else m.place,
            online_link if online_link is not None else m.online_link,
            actor,
            "manual",
        )
        return await self.meeting(public_id)

    async def _move(
        self,
        m: Meeting,
        starts_at: datetime,
        place: str | None,
        online_link: str | None,
        actor: str,
        source: str,
    ) -> None:
        if not m.is_open:
            raise Refused(f"meeting {m.public_id} is {m.status}: it cannot move")
        self._check_notice_possible(starts_at)
        now = self.clock.now()
        dates = self.calendar.dates_for(starts_at, self.workdays)
        moved = Moved(starts_at, place, online_link, dates.cut_off_on, dates.notice_by_on, source)
        after = replace(
            m,
            starts_at=starts_at,
            place=place,
            online_link=online_link,
            cut_off_on=dates.cut_off_on,
            notice_by_on=dates.notice_by_on,
            ics_sequence=m.ics_sequence + 1,
        )
        mails: list[OutgoingMail] = []
        if m.notice_sent_at is not None:
            issued = await self.repo.latest_issued(m.id)
            if issued is not None:
                mails = self._notices("moved", after, self._open(issued), issued.version, False)
        audit = AuditEvent(
            actor,
            "meeting.moved",
            m.public_id,
            {
                "from": m.starts_at,
                "to": starts_at,
                "sequence": after.ics_sequence,
                "notified": len(mails),
            },
        )
        await self.repo.move_meeting(m, moved, now if mails else None, mails, audit, now)
        if mails:
            self.wake_outbox()

    # -- compiling -------------------------------------------------------------------------

    def _open(self, stored: StoredAgenda) -> dict[str, Any]:
        content: dict[str, Any] = json.loads(
            self.cipher.decrypt(
                stored.key_id, stored.payload, _agenda_aad(stored.meeting_id, stored.version)
            )
        )
        return content

    def _agency_name(self, code: str) -> str:
        agency = self.agencies.get(code)
        return agency.name if agency else code

    def _placement(self, p: PlacementRow) -> ag.Placement:
        reason = None
        if p.outcome == rules.DEFER and p.key_id and p.rationale:
            reason = self.cipher.decrypt(p.key_id, p.rationale, _item_aad(p.id)).decode()
        return ag.Placement(
            p.meeting, p.meeting_status in OPEN_STATUSES, p.section, p.outcome, reason
        )

    async def _answers(self, reference: str) -> tuple[ag.AgencyAnswer, ...]:
        """The latest request to each agency, with a summary of its answer."""
        latest: dict[str, Any] = {}
        for r in await self.requests.all_requests(reference):
            latest[r.agency] = r
        found = []
        for code, r in sorted(latest.items()):
            known = summary = concerns = reason = None
            answered_on = None
            if r.status in ("answered", "declined"):
                answer = await self.requests.read_answer(r.public_id)
                if answer is not None:
                    content = answer["content"]
                    answered_on = answer["received_at"].astimezone(self.zone).date()
                    if answer["kind"] == "answered":
                        known = bool(content.get("known_to_agency"))
                        summary = content.get("summary") or None
                        concerns = content.get("concerns") or None
                    else:
                        reason = content.get("reason")
            found.append(
                ag.AgencyAnswer(
                    code,
                    self._agency_name(code),
                    r.status,
                    r.deadline_on,
                    answered_on,
                    known,
                    summary,
                    concerns,
                    reason,
                )
            )
        return tuple(found)

    async def _case(self, row: CaseRow, meeting: str) -> ag.Case:
        """A stored case as the agenda needs it: decrypted and with answers only when it is
        this meeting's business."""
        case = ag.Case(
            reference=row.reference,
            agency=row.agency,
            agency_name=self._agency_name(row.agency),
            received_on=row.received_at.astimezone(self.zone).date(),
            route=row.route,
            incident_type=row.incident_type,
            status=row.status,
            children=tuple(ag.Child(band, gender) for band, gender in row.children),
            placements=tuple(self._placement(p) for p in row.placements),
            board_decided_on=row.outcome.board_considered_on if row.outcome else None,
            commissioned_on=row.outcome.commissioned_on if row.outcome else None,
            cmr_started_on=row.outcome.cmr_started_on if row.outcome else None,
        )
        where = ag.place(case, meeting)
        if where is None or where.section in (ag.CMR_PROGRESS,):
            return case
        document = None
        if where.section in ag.DECISION_SECTIONS:
            document = json.loads(self.cipher.decrypt(row.key_id, row.payload, row.aad))
        return replace(case, document=document, answers=await self._answers(row.reference))

    async def compile(self, public_id: str, actor: str, aob: Sequence[str] = ()) -> CompileResult:
        """Compile a draft of the meeting's agenda from the cases as they are now. Over an
        issued version it is a new version whose changes are marked; over a draft it replaces
        the draft. With no change in the business it stores nothing."""
        m = await self.meeting(public_id)
        if not m.is_open:
            raise Refused(f"meeting {public_id} is {m.status}: its agenda is closed")
        if m.starts_at <= self.clock.now():
            raise Refused(f"meeting {public_id} has begun: its agenda is closed")
        return await self._compile(m, actor, aob)

    async def _compile(self, m: Meeting, actor: str, extra_aob: Sequence[str]) -> CompileResult:
        now = self.clock.now()
        latest = await self.repo.latest_agenda(m.id)
        issued = await self.repo.latest_issued(m.id)
        previous = self._open(latest) if latest else None
        aob: list[str] = []
        if previous is not None:
            aob = [
                i["title"] for s in previous["sections"] if s["id"] == ag.AOB for i in s["items"]
            ]
        for text in extra_aob:
            text = text.strip()
            if text and text not in aob:
                aob.append(text)
        rows = await self.repo.cases(AGENDA_STATES)
        cases = [await self._case(row, m.public_id) for row in rows]
        compiled = ag.compile_sections(m.public_id, cases, aob)
        counts = {s["id"]: len(s["items"]) for s in compiled.sections}
        if (
            previous is not None
            and latest is not None
            and ag.same_business(compiled.sections, previous["sections"])
        ):
            return CompileResult(m.public_id, latest.version, False, counts)
        issued_content = self._open(issued) if issued else None
        marked, removed = ag.mark_changes(
            compiled.sections, issued_content["sections"] if issued_content else None
        )
        content = {
            "compared_with_version": issued.version if issued else None,
            "sections": marked,
            "removed": removed,
        }
        if latest is None:
            version, replaces = 1, None
        elif latest.status == "draft":
            version, replaces = latest.version, latest.id
        else:
            version, replaces = latest.version + 1, None
        by_ref = {row.reference: row for row in rows}
        add: list[NewPlacement] = []
        transitions: list[Transition] = []
        meeting_ids = {p.meeting: p.meeting_id for row in rows for p in row.placements}
        why = f"on the agenda of {m.public_id}"
        for reference, where in compiled.placements.items():
            row = by_ref[reference]
            here = [p for p in row.placements if p.meeting_id == m.id and p.outcome is None]
            if not here:
                add.append(
                    NewPlacement(
                        row.id,
                        where.section,
                        sum(p.outcome == rules.DEFER for p in row.placements),
                        meeting_ids.get(where.carried_from) if where.carried_from else None,
                    )
                )
            if row.status != lc.ON_AGENDA:
                transitions.append(Transition(row.id, reference, row.status, lc.ON_AGENDA, why))
        # Undecided placements here of cases that are no longer this meeting's business (sent
        # back to gathering, say): dropped, and listed as removed against the issued version.
        remove = [
            p.id
            for row in rows
            for p in row.placements
            if p.meeting_id == m.id
            and p.outcome is None
            and row.reference not in compiled.placements
        ]
        changes = sum(1 for s in marked for i in s["items"] if i["change"]) + len(removed)
        audit = AuditEvent(
            actor,
            "agenda.compiled",
            m.public_id,
            {"version": version, "items": counts, "changes": changes},
        )
        await self.repo.save_agenda(
            m,
            version,
            replaces,
            self.cipher.encrypt(json.dumps(content).encode(), _agenda_aad(m.id, version)),
            add,
            remove,
            transitions,
            audit,
            actor,
            now,
        )
        return CompileResult(m.public_id, version, True, counts, changes)

    # -- issuing and the notice --------------------------------------------------------------

    def _recipients(self) -> list[str]:
        found = [m.email for m in self.calendar.members]
        if self.secretariat_email and self.secretariat_email not in found:
            found.append(self.secretariat_email)
        return found

    def _notices(
        self, kind: str, m: Meeting, content: Mapping[str, Any], version: int, late: bool
    ) -> list[OutgoingMail]:
        notice = nt.Notice(
            meeting=m,
            zone=self.zone,
            outline=nt.outline(content),
            link=nt.pack_link(self.base_url, m.public_id),
            version=version,
            organizer=self.secretariat_email or self.mail_from,
            late=late,
        )
        now = self.clock.now()
        return [nt.notice_mail(kind, to, notice, now) for to in self._recipients()]

    async def issue(self, public_id: str, actor: str) -> IssueResult:
        """Issue the latest draft. The first issue serves the notice on every member and the
        secretariat; a re-issue sends the revised agenda with its changes marked."""
        m = await self.meeting(public_id)
        if not m.is_open:
            raise Refused(f"meeting {public_id} is {m.status}: its agenda is closed")
        if m.starts_at <= self.clock.now():
            raise Refused(f"meeting {public_id} has begun: its agenda is closed")
        latest = await self.repo.latest_agenda(m.id)
        if latest is None:
            raise Refused(f"meeting {public_id} has no agenda yet: compile it first")
        if latest.status == "issued":
            raise Refused(
                f"version {latest.version} of the agenda of {public_id} is already issued; "
                "compile again after changes"
            )
        return await self._issue(m, latest, actor)

    async def _issue(self, m: Meeting, latest: StoredAgenda, actor: str) -> IssueResult:
        now = self.clock.now()
        first = m.notice_sent_at is None
        late = now.astimezone(self.zone).date() > m.notice_by_on
        content = self._open(latest)
        mails = self._notices("notice" if first else "revised", m, content, latest.version, late)
        events = [
            AuditEvent(actor, "agenda.issued", m.public_id, {"version": latest.version}),
            AuditEvent(
                actor,
                "meeting.notice_sent" if first else "meeting.revised_agenda_sent",
                m.public_id,
                {
                    "version": latest.version,
                    "recipients": len(mails),
                    "sequence": m.ics_sequence,
                    "late": late,
                },
            ),
        ]
        await self.repo.issue_agenda(latest.id, m, first, mails, events, actor, now)
        if late:
            log.warning("meeting_notice_late", meeting=m.public_id, notice_by=m.notice_by_on)
        self.wake_outbox()
        return IssueResult(
            m.public_id, latest.version, "notice" if first else "revised", len(mails), late
        )

    # -- reading ---------------------------------------------------------------------------

    async def agenda(self, public_id: str, version: int | None = None) -> AgendaVersion:
        """One version of the agenda, decrypted (personal data: for the panel's eyes)."""
        m = await self.meeting(public_id)
        stored = (
            await self.repo.latest_agenda(m.id)
            if version is None
            else await self.repo.agenda_version(m.id, version)
        )
        if stored is None:
            raise NotFound(
                f"meeting {public_id} has no agenda" + (f" version {version}" if version else "")
            )
        return AgendaVersion(
            m.public_id,
            stored.version,
            stored.status,
            stored.compiled_at,
            stored.compiled_by,
            stored.issued_at,
            self._open(stored),
        )

    async def issued_agenda(self, public_id: str) -> AgendaVersion | None:
        """The latest issued version: what the members were sent (and the web page shows)."""
        m = await self.meeting(public_id)
        stored = await self.repo.latest_issued(m.id)
        if stored is None:
            return None
        return await self.agenda(public_id, stored.version)

    async def pack_document(self, public_id: str, version: int | None = None) -> dict[str, Any]:
        m = await self.meeting(public_id)
        return pk.document(m, await self.agenda(public_id, version), self.zone)

    async def pack(self, public_id: str, fmt: str, version: int | None = None) -> bytes:
        doc = await self.pack_document(public_id, version)
        # A large pack takes seconds to lay out: off the event loop, so intake goes on.
        return await asyncio.to_thread(pk.render, doc, fmt)

    # -- the record ------------------------------------------------------------------------

    def _validate(self, document: Any) -> None:
        errors = sorted(self.record_validator.iter_errors(document), key=lambda e: list(e.path))
        if errors:
            raise RecordInvalid(
                [
                    f"{'/' + '/'.join(str(p) for p in e.path) if e.path else 'the record'}: "
                    f"{e.message}"
                    for e in errors[:20]
                ]
            )

    async def record(self, document: Any, actor: str) -> RecordResult:
        """Record a meeting from a record document (schemas/meeting-record-1.schema.json): who
        was present, interests declared, and the outcome of each item with its votes. An
        inquorate meeting records no decisions and is reconvened within a month. Recording
        the same document again changes nothing."""
        self._validate(document)
        m = await self.meeting(document["meeting"])
        sha = hashlib.sha256(
            json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        existing = await self.repo.record_of(m.id)
        if existing is not None:
            if existing[0] != sha:
                raise Refused(f"meeting {m.public_id} is already recorded, differently")
            return self._result_of(
                m, json.loads(self.cipher.decrypt(existing[1], existing[2], _record_aad(m.id)))
            )
        now = self.clock.now()
        if m.status != "issued":
            raise Refused(
                f"meeting {m.public_id} is {m.status}: only a meeting whose agenda was issued "
                "(notice served) can be recorded"
            )
        if now < m.starts_at:
            raise Refused(f"meeting {m.public_id} has not happened yet")
        issued = await self.repo.latest_issued(m.id)
        assert issued is not None
        on_agenda = self._open(issued)
        members = [x.id for x in self.calendar.members]
        chair = self.calendar.chair.id
        present = list(dict.fromkeys(document["present"]))
        problems = [f"{x} is not a member of the panel" for x in present if x not in members]
        quorum = rules.quorum(len(members))
        quorate = rules.is_quorate(present, members, chair)
        interests: dict[str, set[str]] = {}
        for i in document.get("interests", []):
            if i["member"] not in present:
                problems.append(f"{i['member']} declared an interest but is not present")
            interests.setdefault(i["reference"], set()).add(i["member"])
        decision_refs = [
            item["reference"]
            for s in on_agenda["sections"]
            if s["id"] in ag.DECISION_SECTIONS
            for item in s["items"]
        ]
        items = {i["reference"]: i for i in document.get("items", [])}
        if len(items) != len(document.get("items", [])):
            problems.append("an item is recorded twice")
        for ref in interests:
            if ref not in decision_refs:
                problems.append(f"{ref} is not an item for decision on the issued agenda")
        decisions: list[Decision] = []
        transitions: list[Transition] = []
        reconvened: NewMeeting | None = None
        outcomes: dict[str, str] = {}
        if not quorate:
            if items:
                problems.append(
                    f"the meeting was inquorate ({len(set(present) & set(members))} of "
                    f"{len(members)} present, quorum {quorum} including the Chair): it records "
                    "no decisions"
                )
            if not problems:
                reconvened = self._reconvened(m, document.get("reconvene_at"), problems)
        else:
            decisions, transitions, outcomes = await self._decisions(
                m, decision_refs, items, present, interests, problems
            )
        if problems:
            raise RecordInvalid(problems)
        key_id, payload = self.cipher.encrypt(
            json.dumps(document, ensure_ascii=False).encode(), _record_aad(m.id)
        )
        record = NewRecord(
            "quorate" if quorate else "inquorate",
            len(members),
            quorum,
            chair,
            present,
            sha,
            key_id,
            payload,
        )
        events = [
            AuditEvent(
                actor,
                "meeting.recorded",
                m.public_id,
                {
                    "quorate": quorate,
                    "present": len(present),
                    "quorum": quorum,
                    "outcomes": outcomes,
                    "interests": sorted(
                        f"{member}:{ref}" for ref, who in interests.items() for member in who
                    ),
                },
            )
        ]
        if reconvened is not None:
            events.append(
                AuditEvent(
                    actor,
                    "meeting.reconvened",
                    reconvened.public_id,
                    {"reconvenes": m.public_id, "starts_at": reconvened.starts_at},
                )
            )
        await self.repo.save_record(
            m, record, decisions, transitions, reconvened, events, actor, now
        )
        return RecordResult(
            m.public_id,
            quorate,
            len(present),
            quorum,
            outcomes,
            reconvened.public_id if reconvened else None,
        )

    async def _decisions(
        self,
        m: Meeting,
        decision_refs: Sequence[str],
        items: Mapping[str, Mapping[str, Any]],
        present: Sequence[str],
        interests: Mapping[str, set[str]],
        problems: list[str],
    ) -> tuple[list[Decision], list[Transition], dict[str, str]]:
        """The outcome of each item for decision of a quorate meeting, checked; what is wrong
        goes into `problems`."""
        chair = self.calendar.chair.id
        rows = {r.reference: r for r in await self.repo.cases(references=decision_refs)}
        problems += [
            f"{ref} is not an item for decision on the issued agenda"
            for ref in items
            if ref not in decision_refs
        ]
        decisions: list[Decision] = []
        transitions: list[Transition] = []
        outcomes: dict[str, str] = {}
        for ref in decision_refs:
            row = rows.get(ref)
            placement = (
                next(
                    (p for p in row.placements if p.meeting_id == m.id and p.outcome is None), None
                )
                if row
                else None
            )
            if row is None or placement is None:
                continue  # withdrawn since the issue: nothing left to decide
            item = items.get(ref)
            if item is None:
                problems.append(f"{ref}: no outcome recorded (defer it if it was not reached)")
                continue
            interested = interests.get(ref, set())
            found = self._item_problems(item, present, interested, chair)
            problems += [f"{ref}: {p}" for p in found]
            if found:
                continue
            outcome = item["outcome"]
            outcomes[ref] = outcome
            key_id, rationale = self.cipher.encrypt(
                item["rationale"].encode(), _item_aad(placement.id)
            )
            item_votes = item.get("votes")
            decisions.append(
                Decision(
                    placement.id,
                    outcome,
                    {w: list(item_votes.get(w, [])) for w in ("for", "against", "abstain")}
                    if item_votes is not None
                    else None,
                    sorted(interested),
                    item.get("casting_vote"),
                    key_id,
                    rationale,
                )
            )
            wanted = rules.OUTCOME_STATE[outcome]
            transitions += [
                Transition(row.id, ref, row.status, lc.CONSIDERED, f"considered at {m.public_id}"),
                Transition(row.id, ref, lc.CONSIDERED, wanted, f"{wanted} at {m.public_id}"),
            ]
        return decisions, transitions, outcomes

    def _item_problems(
        self, item: Mapping[str, Any], present: Sequence[str], interested: set[str], chair: str
    ) -> list[str]:
        outcome = item["outcome"]
        if not str(item.get("rationale", "")).strip():
            return ["give the rationale"]
        if outcome not in rules.VOTED_OUTCOMES:
            return []
        votes = item.get("votes")
        if votes is None:
            return [f"{outcome} is a decision of the panel: record the votes"]
        casting = item.get("casting_vote")
        problems = rules.vote_problems(votes, casting, present, interested, chair)
        if not problems and not rules.carried(rules.tally(votes), casting):
            t = rules.tally(votes)
            problems.append(
                f"the votes ({t.votes_for} for, {t.against} against, {t.abstaining} "
                f"abstaining) do not carry {outcome}: record what the panel decided"
            )
        return problems

    def _reconvened(
        self, m: Meeting, requested: str | None, problems: list[str]
    ) -> NewMeeting | None:
        local = m.starts_at.astimezone(self.zone)
        by = rules.reconvene_by(local.date())
        if requested:
            when = self.calendar.to_utc(datetime.fromisoformat(requested))
        else:
            day = max(
                rules.proposed_reconvene_day(local.date()), earliest_meeting_day(self.today())
            )
            when = self.calendar.to_utc(datetime.combine(day, time(local.hour, local.minute)))
        day = when.astimezone(self.zone).date()
        if day > by:
            problems.append(
                f"an inquorate meeting is reconvened within one month: by {by.isoformat()}"
            )
        if day < earliest_meeting_day(self.today()):
            problems.append(
                f"the reconvened meeting needs seven clear days' notice: on or after "
                f"{earliest_meeting_day(self.today()).isoformat()}"
            )
        if problems:
            return None
        return self._new_meeting(
            f"M-{day:%Y-%m-%d}",
            RECONVENED,
            "manual",
            when,
            m.place,
            m.online_link,
            "system:record",
            reconvenes_id=m.id,
        )

    def _result_of(self, m: Meeting, document: Mapping[str, Any]) -> RecordResult:
        members = [x.id for x in self.calendar.members]
        present = list(dict.fromkeys(document["present"]))
        quorate = m.status == "held"
        return RecordResult(
            m.public_id,
            quorate,
            len(present),
            rules.quorum(len(members)),
            {i["reference"]: i["outcome"] for i in document.get("items", [])} if quorate else {},
            already_recorded=True,
        )

    # -- the scheduled tick ----------------------------------------------------------------

    def _cut_off_at(self, m: Meeting) -> datetime:
        return self.calendar.to_utc(datetime.combine(m.cut_off_on, self.calendar.cut_off_time))

    def _notice_at(self, m: Meeting) -> datetime:
        return self.calendar.to_utc(datetime.combine(m.notice_by_on, self.calendar.notice_time))

    async def tick(self) -> TickResult:
        """What is due now, done once: the calendar brought in, each agenda compiled once its
        cut-off has passed, and the notice served once its day has come if nobody issued the
        agenda by hand. Running it twice, or in two processes at once, does nothing more; a
        cut-off passed while the gateway was down is caught up at the next run."""
        scheduled = await self.sync_calendar()
        compiled: list[str] = []
        noticed: list[str] = []
        for m in await self.repo.meetings(open_only=True):
            now = self.clock.now()
            if m.starts_at <= now:
                continue
            try:
                if m.status == "planned" and now >= self._cut_off_at(m):
                    await self._compile(m, SYSTEM, ())
                    compiled.append(m.public_id)
                    m = await self.meeting(m.public_id)
                if m.notice_sent_at is None and now >= self._notice_at(m):
                    latest = await self.repo.latest_agenda(m.id)
                    if latest is None:
                        await self._compile(m, SYSTEM, ())
                        compiled.append(m.public_id)
                        m = await self.meeting(m.public_id)
                        latest = await self.repo.latest_agenda(m.id)
                    assert latest is not None
                    if latest.status == "draft":
                        await self._issue(m, latest, SYSTEM)
                        noticed.append(m.public_id)
            except MeetingConflict:
                log.info("meetings_tick_conflict", meeting=m.public_id)
        return TickResult(compiled, noticed, scheduled)


def build_meetings(
    settings: Settings,
    clock: Clock,
    db: Database,
    cipher: DataCipher,
    requests: RequestsService,
    agencies: AgencyRegistry,
    workdays: WorkingDays,
    wake_outbox: Callable[[], None],
) -> tuple[MeetingsService, CasesService]:
    """The feature's two services, for the composition root (gateway/services.py)."""
    calendar = MeetingCalendar.load(settings.meetings_file or settings.config_dir / CALENDAR_FILE)
    repo = MeetingsRepository(db, cipher, settings.mail_from)
    schema = json.loads((settings.schemas_dir / RECORD_SCHEMA).read_text(encoding="utf-8"))
    meetings = MeetingsService(
        clock=clock,
        repo=repo,
        calendar=calendar,
        workdays=workdays,
        cipher=cipher,
        requests=requests,
        agencies=agencies,
        base_url=settings.web_base_url,
        mail_from=settings.mail_from,
        secretariat_email=settings.secretariat_email,
        record_schema=schema,
        wake_outbox=wake_outbox,
    )
    cases = CasesService(
        clock=clock,
        repo=repo,
        requests=requests,
        cipher=cipher,
        zone=calendar.zone,
        find_meeting=meetings.meeting,
    )
    return meetings, cases
