"""The secretariat's view of the cases: the inbox by state, and a notification's file (its
decrypted details, the Regulation 17 checklist, its requests and answers, its history). Every
opening of a file is an audit event naming the person: the log shows who read whose details.
Pure orchestration: storage behind the repositories, rules in gateway/lifecycle.py and
checklist.py, no HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from gateway import lifecycle
from gateway.accounts.repository import Account
from gateway.agencies.registry import AgencyRegistry
from gateway.audit.chain import AuditEvent, ChainedEvent
from gateway.audit.repository import AuditRepository
from gateway.clock import Clock
from gateway.errors import NotFound, UsageError
from gateway.keys.datacipher import DataCipher
from gateway.meetings import agenda as ag
from gateway.meetings import pack as pk
from gateway.meetings.calendar import Member
from gateway.meetings.cases import CasesService
from gateway.meetings.model import AgendaVersion, CaseView, Meeting
from gateway.meetings.service import MeetingsService
from gateway.outbox.model import OutgoingMail
from gateway.requests.repository import RequestRow
from gateway.requests.service import RequestsService, Upload
from gateway.secretariat.repository import NotificationRow, SecretariatRepository, Summary

# The states in the order a case moves through them, with the words the pages use.
STATE_LABELS: Mapping[str, str] = {
    lifecycle.RECEIVED: "Received",
    lifecycle.SCREENING: "Screening",
    lifecycle.INFORMATION_GATHERING: "Information gathering",
    lifecycle.READY_FOR_PANEL: "Ready for panel",
    lifecycle.ON_AGENDA: "On an agenda",
    lifecycle.CONSIDERED: "Considered",
    lifecycle.DEFERRED: "Deferred",
    lifecycle.RECOMMENDED: "Recommended for CMR",
    lifecycle.NOT_RECOMMENDED: "Not recommended",
    lifecycle.WITHDRAWN: "Withdrawn",
    lifecycle.COMMISSIONED: "CMR commissioned",
    lifecycle.NOT_COMMISSIONED: "CMR not commissioned",
    lifecycle.CMR_UNDER_WAY: "CMR under way",
    lifecycle.CMR_COMPLETED: "CMR completed",
}
MAX_REASON = 2000
VIEWED = "notification.viewed"


@dataclass(frozen=True)
class StateCount:
    state: str
    label: str
    count: int


@dataclass(frozen=True)
class Inbox:
    counts: list[StateCount]
    total: int
    state: str | None
    cases: list[Summary]


@dataclass(frozen=True)
class RequestFile:
    request: RequestRow
    agency_name: str
    answer: dict[str, Any] | None
    # The extra questions of the request's set, by id, to show beside their answers.
    questions: dict[str, str]


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


@dataclass(frozen=True)
class CaseFile:
    summary: NotificationRow
    agency_name: str
    document: dict[str, Any]
    # The Regulation 17 checklist and the points past reviews found missing, as the agenda
    # shows them (gateway/meetings/agenda.py): one rule, in one place.
    checklist: dict[str, Any]
    flags: list[str]
    # The reasons given for changes (returned, withdrawn), decrypted.
    notes: list[dict[str, Any]]
    # Its meetings (placements and outcomes) and the Board-level record.
    panel: CaseView
    requests: list[RequestFile]
    history: list[HistoryEntry]
    views: list[HistoryEntry]
    # The screening actions the lifecycle allows from the current state.
    may_screen: bool
    may_return: bool
    may_withdraw: bool
    may_ready: bool
    may_request: bool
    requests_settled: bool


@dataclass(frozen=True)
class MeetingPage:
    meeting: Meeting
    # The latest version (a draft, or the last issued), with what agenda_body.html needs.
    agenda: AgendaVersion | None
    pack: Markup | None
    issued_version: int | None
    members: tuple[Member, ...]
    chair: str
    may_compile: bool
    may_issue: bool
    may_record: bool


@dataclass(frozen=True)
class PanelMeeting:
    meeting: Meeting
    version: int


def _entry(event: ChainedEvent) -> HistoryEntry:
    return HistoryEntry(event.at, event.actor, event.action, json.loads(event.details or "{}"))


def note_aad(notification_id: int) -> bytes:
    """Binds an encrypted case note (a reason typed by the secretariat) to its case; the same
    as the meetings feature's notes (gateway/meetings/cases.py), which lists them all."""
    return f"case-note\x00{notification_id}".encode()


def label(state: str) -> str:
    return STATE_LABELS.get(state, state.replace("_", " ").capitalize())


def return_mail(recipient: str, agency_name: str, reference: str) -> OutgoingMail:
    """To the notifying agency: what is asked and where, nothing about the child."""
    text = (
        f"The Case Management Review Panel secretariat has returned notification {reference} "
        f"to {agency_name} for more detail.\n\n"
        "The secretariat's reasons are recorded with the notification. Please contact the panel "
        "secretariat through the usual secure route to see them, and send the additional "
        "detail as an updated notification.\n"
    )
    return OutgoingMail(
        kind="notification_returned",
        recipient=recipient,
        subject=f"CMR notification {reference}: more detail needed",
        text=text,
        about=reference,
    )


class SecretariatService:
    def __init__(
        self,
        *,
        clock: Clock,
        repo: SecretariatRepository,
        cipher: DataCipher,
        agencies: AgencyRegistry,
        audit: AuditRepository,
        requests: RequestsService,
        cases: CasesService,
        meetings: MeetingsService,
    ) -> None:
        self.clock = clock
        self.repo = repo
        self.cipher = cipher
        self.agencies = agencies
        self.audit = audit
        self.requests = requests
        self.cases = cases
        self.meetings = meetings
        self._pack_templates = Environment(
            loader=FileSystemLoader(pk.TEMPLATES), autoescape=select_autoescape(default=True)
        )

    def agency_name(self, code: str) -> str:
        agency = self.agencies.get(code)
        return agency.name if agency else code

    async def inbox(self, state: str | None) -> Inbox:
        if state is not None and state not in lifecycle.STATES:
            raise NotFound(f"no state {state}")
        counts = await self.repo.counts()
        rows = [StateCount(s, text, counts.get(s, 0)) for s, text in STATE_LABELS.items()]
        cases = await self.repo.in_state(state)
        return Inbox(rows, sum(counts.values()), state, cases)

    async def _row(self, reference: str) -> NotificationRow:
        row = await self.repo.by_reference(reference) if len(reference) <= 32 else None
        if row is None:
            raise NotFound(f"no notification {reference}")
        return row

    async def case_file(self, reference: str, viewer: str) -> CaseFile:
        """The whole file, decrypted. Recorded as a view by `viewer` before anything is shown:
        if the audit event cannot be written, nothing is."""
        row = await self._row(reference)
        await self.audit.record(
            AuditEvent(viewer, VIEWED, reference, {"what": "case_file"}), self.clock.now()
        )
        document = json.loads(self.cipher.decrypt(row.key_id, row.payload, row.aad))
        files = []
        for req in await self.requests.all_requests(reference):
            questions = self.requests.questions.get(req.question_set).questions
            files.append(
                RequestFile(
                    req,
                    self.agency_name(req.agency),
                    await self.requests.read_answer(req.public_id),
                    {q.id: q.text for q in questions},
                )
            )
        events = [_entry(e) for e in await self.audit.events(reference)]
        status = row.status
        return CaseFile(
            summary=row,
            agency_name=self.agency_name(row.agency),
            document=document,
            checklist=ag.checklist(row.route, document),
            flags=ag.learning_flags(document),
            notes=await self.cases.notes(reference),
            panel=await self.cases.case(reference),
            requests=files,
            history=[e for e in events if e.action != VIEWED],
            views=[e for e in events if e.action == VIEWED][-20:],
            may_screen=lifecycle.allowed(status, lifecycle.SCREENING),
            may_return=status == lifecycle.SCREENING
            and lifecycle.allowed(status, lifecycle.RECEIVED),
            may_withdraw=lifecycle.allowed(status, lifecycle.WITHDRAWN),
            may_ready=lifecycle.allowed(status, lifecycle.READY_FOR_PANEL),
            may_request=status in lifecycle.WITHDRAWABLE
            and status not in (lifecycle.ON_AGENDA, lifecycle.CONSIDERED),
            requests_settled=await self.requests.settled(reference),
        )

    async def attachment(
        self, reference: str, public_id: str, attachment_id: int, viewer: str
    ) -> Upload:
        """An attachment of an answer to one of this notification's requests, recorded as a
        view by `viewer` before it is handed over."""
        row = await self._row(reference)
        request = await self.requests.get(public_id)
        if request.notification_id != row.id:
            raise NotFound(f"no request {public_id} on notification {reference}")
        found = await self.requests.attachment(request, attachment_id)
        await self.audit.record(
            AuditEvent(
                viewer,
                VIEWED,
                reference,
                {"what": "attachment", "request": public_id, "attachment": attachment_id},
            ),
            self.clock.now(),
        )
        return found

    def _reason(self, reason: str) -> str:
        reason = reason.strip()
        if not reason:
            raise UsageError("give the reason: it is recorded with the notification")
        if len(reason) > MAX_REASON:
            raise UsageError(f"keep the reason under {MAX_REASON} characters")
        return reason

    async def start_screening(self, reference: str, actor: str) -> None:
        row = await self._row(reference)
        await self.repo.transition(
            lifecycle.Transition(
                row.id, reference, row.status, lifecycle.SCREENING, "screening started"
            ),
            actor,
            self.clock.now(),
        )

    async def return_to_agency(self, reference: str, reason: str, actor: str) -> None:
        """Screening hands the notification back to the notifying agency for more detail: the
        state goes back to received, the reason is kept encrypted with the case, and the
        agency's contact gets a mail that says only that detail is needed."""
        reason = self._reason(reason)
        row = await self._row(reference)
        if row.status != lifecycle.SCREENING:
            raise lifecycle.TransitionNotAllowed(reference, row.status, "returned to the agency")
        agency = self.agencies.get(row.agency)
        if agency is None or not agency.contact:
            raise UsageError(
                f"agency {row.agency} has no contact (setting 'agencies.{row.agency}.contact')"
            )
        now = self.clock.now()
        await self.repo.transition(
            lifecycle.Transition(row.id, reference, row.status, lifecycle.RECEIVED, "returned"),
            actor,
            now,
            action="notification.returned",
            note=self._note("returned", row, reason),
            mail=return_mail(agency.contact, agency.name, reference),
        )
        self.requests.wake_outbox()

    def _note(self, kind: str, row: NotificationRow, text: str) -> tuple[str, str, bytes]:
        key_id, payload = self.cipher.encrypt(text.encode(), note_aad(row.id))
        return kind, key_id, payload

    # -- meetings -----------------------------------------------------------------------------

    async def _viewed_agenda(self, agenda: AgendaVersion, viewer: str, what: str) -> None:
        """An agenda's decision items carry the cases' personal data (checklist, answers): each
        case shown is a view of it, recorded under the case's reference."""
        now = self.clock.now()
        for reference in agenda.decision_references():
            await self.audit.record(
                AuditEvent(
                    viewer,
                    VIEWED,
                    reference,
                    {"what": what, "meeting": agenda.meeting, "version": agenda.version},
                ),
                now,
            )

    async def meeting_page(self, public_id: str, viewer: str) -> MeetingPage:
        m = await self.meetings.meeting(public_id)
        try:
            agenda: AgendaVersion | None = await self.meetings.agenda(public_id)
        except NotFound:
            agenda = None
        issued = await self.meetings.issued_agenda(public_id)
        pack = None
        if agenda is not None:
            await self._viewed_agenda(agenda, viewer, "agenda")
            pack = self.agenda_body(pk.document(m, agenda, self.meetings.zone))
        now = self.clock.now()
        return MeetingPage(
            meeting=m,
            agenda=agenda,
            pack=pack,
            issued_version=issued.version if issued else None,
            members=self.meetings.calendar.members,
            chair=self.meetings.calendar.chair.id,
            may_compile=m.is_open and m.starts_at > now,
            may_issue=m.is_open and agenda is not None and agenda.status == "draft",
            may_record=m.status == "issued" and m.starts_at <= now,
        )

    async def pack_file(
        self, public_id: str, fmt: str, account: Account, version: int | None = None
    ) -> tuple[str, bytes]:
        """A version of the pack as a file: (name, bytes). The secretariat may have any version
        (the latest by default, a draft included); a member only the issued one."""
        if fmt not in pk.FORMATS:
            raise NotFound(f"no pack format {fmt}")
        if account.role == "secretariat":
            agenda = await self.meetings.agenda(public_id, version)
        else:
            agenda = await self._issued_for(public_id, account)
        await self._viewed_agenda(agenda, account.actor, f"pack.{fmt}")
        doc = await self.meetings.pack_document(public_id, agenda.version)
        # A large pack takes seconds to lay out: off the event loop, so intake goes on.
        return pk.file_name(doc, fmt), await asyncio.to_thread(pk.render, doc, fmt)

    def agenda_body(self, doc: Mapping[str, Any]) -> Markup:
        """The pack's body as the meetings feature renders it (its own template and
        environment), to sit inside a staff page."""
        template = self._pack_templates.get_template("agenda_body.html")
        return Markup(template.render(**pk.html_context(doc)))  # noqa: S704 (autoescaped)

    # -- panel members ------------------------------------------------------------------------

    def is_member(self, email: str) -> bool:
        """A panel account is a member of the panel by its email address, as the meeting
        calendar's [[members]] list them; notice of every meeting is served on every member
        (Schedule 5), so a member is invited to each meeting."""
        return email.lower() in {m.email.lower() for m in self.meetings.calendar.members}

    async def panel_meetings(self, email: str) -> list[PanelMeeting]:
        """The meetings a member was given notice of: those with an issued agenda."""
        if not self.is_member(email):
            return []
        found = []
        for m in await self.meetings.meetings():
            issued = await self.meetings.issued_agenda(m.public_id)
            if issued is not None:
                found.append(PanelMeeting(m, issued.version))
        return found

    async def _issued_for(self, public_id: str, account: Account) -> AgendaVersion:
        """The issued agenda, if `account` may read it: the secretariat, or a member of the
        panel. Anyone else, and a meeting without an issued agenda, is a 404: that a meeting
        has business is itself not for them."""
        if account.role != "secretariat" and not (
            account.role == "panel" and self.is_member(account.email)
        ):
            raise NotFound(f"no meeting {public_id}")
        issued = await self.meetings.issued_agenda(public_id)
        if issued is None:
            raise NotFound(f"no meeting {public_id}")
        return issued

    async def issued_pack(self, public_id: str, account: Account) -> tuple[int, Markup]:
        """The pack as issued to the members (where the notice's link leads): its version and
        its HTML."""
        m = await self.meetings.meeting(public_id)
        issued = await self._issued_for(public_id, account)
        await self._viewed_agenda(issued, account.actor, "pack")
        return issued.version, self.agenda_body(pk.document(m, issued, self.meetings.zone))
