"""The request cycle: sent -> opened -> answered | declined | expired | revoked. Pure domain:
the link's token, deadlines in NI working days, what the agency is shown, answer validation,
and the chasers. Storage, mail and HTTP are behind the repository and the handlers."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from gateway.agencies.registry import AgencyRegistry
from gateway.audit.chain import AuditEvent
from gateway.clock import Clock
from gateway.errors import GatewayError, NotFound, UsageError
from gateway.keys.datacipher import DataCipher
from gateway.outbox.model import OutgoingMail
from gateway.requests import emails
from gateway.requests.questions import IDENTIFIER_SYSTEMS, NEEDS_ADULTS, QuestionSet, QuestionSets
from gateway.requests.repository import (
    OPEN_STATES,
    NewRequest,
    NotificationDoc,
    RequestRow,
    RequestsRepository,
    StoredAttachment,
)
from gateway.workdays import WorkingDays

log = structlog.get_logger("gateway.requests")
LONDON = ZoneInfo("Europe/London")
# States of a notification from which a new request moves it to information gathering.
BEFORE_GATHERING = ("received", "screening")
SETTLED = frozenset({"answered", "declined", "expired", "revoked"})
MAX_TEXT = 20_000


class LinkGone(GatewayError):
    """Spent, expired, revoked or unknown: one answer for all, so a link is no oracle."""

    code = "link_gone"
    status = 410
    title = "This link is no longer valid"


class AnswerInvalid(GatewayError):
    code = "answer_invalid"
    status = 422
    title = "The answer is not complete"

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__(None)
        self.problems = problems


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_public_id() -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "R-" + "".join(secrets.choice(alphabet) for _ in range(8))


@dataclass(frozen=True)
class Created:
    public_id: str
    deadline_on: date
    link: str


@dataclass(frozen=True)
class Landing:
    reference: str
    agency: str
    agency_name: str
    deadline_on: date


@dataclass(frozen=True)
class Opened:
    landing: Landing
    question_set: QuestionSet
    children: list[dict[str, Any]]
    adults: list[dict[str, Any]]


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Answer:
    known: str = ""
    involvement_from: str = ""
    involvement_to: str = ""
    nature: str = ""
    summary: str = ""
    concerns: str = ""
    respondent_name: str = ""
    respondent_role: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Responded:
    reference: str
    received_at: datetime


@dataclass(frozen=True)
class ChaseResult:
    reminders: int
    expired: int


# Files we accept are recognised by their first bytes, not by the name a browser sends.
MAGIC: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (b"PK\x03\x04",),
}


def sniff_ok(content_type: str, data: bytes) -> bool:
    if content_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return b"\x00" not in data
    return any(data.startswith(m) for m in MAGIC.get(content_type, ()))


class RequestsService:
    def __init__(
        self,
        *,
        clock: Clock,
        repo: RequestsRepository,
        cipher: DataCipher,
        agencies: AgencyRegistry,
        questions: QuestionSets,
        workdays: WorkingDays,
        base_url: str,
        deadline_days: int,
        reminder_days: tuple[int, ...],
        secretariat_email: str,
        allowed_types: tuple[str, ...],
        max_attachment_bytes: int,
        intake_rule: tuple[str, ...] = (),
        wake_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self.intake_rule = intake_rule
        self.clock = clock
        self.repo = repo
        self.cipher = cipher
        self.agencies = agencies
        self.questions = questions
        self.workdays = workdays
        self.base_url = base_url.rstrip("/")
        self.deadline_days = deadline_days
        self.reminder_days = reminder_days
        self.secretariat_email = secretariat_email
        self.allowed_types = allowed_types
        self.max_attachment_bytes = max_attachment_bytes
        self.wake_outbox = wake_outbox

    # -- the secretariat's side ---------------------------------------------------------------

    def deadline_for(self, now: datetime, days: int) -> tuple[date, datetime]:
        """`days` NI working days after today; the link dies when that day ends in Belfast."""
        day = self.workdays.add(now.astimezone(LONDON).date(), days)
        end = datetime.combine(day + timedelta(days=1), time(0, 0), LONDON)
        return day, end

    async def create(
        self,
        reference: str,
        agency: str,
        actor: str,
        deadline_days: int | None = None,
        replaces: RequestRow | None = None,
    ) -> Created:
        registered = self.agencies.get(agency)
        if registered is None:
            raise UsageError(f"unknown agency {agency!r}")
        if not registered.contact:
            raise UsageError(
                f"agency {agency} has no contact for information requests "
                f"(setting 'agencies.{agency}.contact')"
            )
        doc = await self.repo.notification(reference)
        if doc is None:
            raise NotFound(f"no notification {reference}")
        if deadline_days is not None and not 1 <= deadline_days <= 60:
            raise UsageError("the deadline must be 1 to 60 working days")
        now = self.clock.now()
        deadline_on, deadline_at = self.deadline_for(now, deadline_days or self.deadline_days)
        token = secrets.token_urlsafe(32)
        public_id = new_public_id()
        link = f"{self.base_url}/respond/{token}"
        qs = self.questions.for_agency(agency)
        mail = emails.request_mail(
            registered.contact, registered.name, reference, public_id, deadline_on, link
        )
        action = "request.reissued" if replaces else "request.created"
        details: dict[str, Any] = {
            "request": public_id,
            "agency": agency,
            "deadline": deadline_on.isoformat(),
            "questions": qs.name,
        }
        if replaces:
            details["replaces"] = replaces.public_id
        await self.repo.create(
            NewRequest(
                public_id,
                doc.id,
                agency,
                qs.name,
                token_hash(token),
                deadline_on,
                deadline_at,
                actor,
                replaces.id if replaces else None,
            ),
            mail,
            AuditEvent(actor, action, reference, details),
            now,
            revoke_id=replaces.id if replaces else None,
            advance_notification_from=BEFORE_GATHERING,
        )
        self.wake_outbox()
        return Created(public_id, deadline_on, link)

    async def after_intake(self, reference: str, notifying_agency: str) -> list[Created]:
        """The configured intake rule: always ask these agencies (less the notifier)."""
        created = []
        for code in self.intake_rule:
            if code == notifying_agency:
                continue
            try:
                created.append(await self.create(reference, code, "system:intake-rule"))
            except UsageError as exc:
                log.warning("intake_rule_request_skipped", agency=code, reason=exc.detail)
        return created

    async def get(self, public_id: str) -> RequestRow:
        row = await self.repo.by_public_id(public_id)
        if row is None:
            raise NotFound(f"no request {public_id}")
        return row

    async def all_requests(self, reference: str | None = None) -> list[RequestRow]:
        return await self.repo.all_requests(reference)

    async def revoke(self, public_id: str, actor: str) -> None:
        row = await self.get(public_id)
        done = await self.repo.revoke(
            row.id,
            self.clock.now(),
            AuditEvent(actor, "request.revoked", row.reference, {"request": public_id}),
        )
        if not done:
            raise UsageError(
                f"request {public_id} is {row.status}: only an open request can be revoked"
            )

    async def closing_on_withdrawal(
        self, reference: str, actor: str
    ) -> tuple[list[int], list[AuditEvent], list[OutgoingMail]]:
        """What withdrawing the notification does to its open requests, for the caller to apply
        in the withdrawal's own transaction: each revoked (its link dies), with its audit event
        and a mail telling the agency that no answer is needed."""
        ids: list[int] = []
        events: list[AuditEvent] = []
        mails: list[OutgoingMail] = []
        for row in await self.repo.all_requests(reference):
            if row.status not in OPEN_STATES:
                continue
            ids.append(row.id)
            events.append(
                AuditEvent(
                    actor,
                    "request.revoked",
                    reference,
                    {"request": row.public_id, "because": "notification withdrawn"},
                )
            )
            registered = self.agencies.get(row.agency)
            if registered is not None and registered.contact:
                mails.append(
                    emails.withdrawn_mail(
                        registered.contact, registered.name, reference, row.public_id
                    )
                )
        return ids, events, mails

    async def reissue(
        self, public_id: str, actor: str, deadline_days: int | None = None
    ) -> Created:
        row = await self.get(public_id)
        if row.status not in (*OPEN_STATES, "expired", "revoked"):
            raise UsageError(f"request {public_id} is {row.status}: it has been answered")
        return await self.create(row.reference, row.agency, actor, deadline_days, replaces=row)

    async def settled(self, reference: str) -> bool:
        """Feeds "ready for panel": every request answered, declined, expired or revoked."""
        return all(r.status in SETTLED for r in await self.repo.all_requests(reference))

    async def read_answer(self, public_id: str) -> dict[str, Any] | None:
        row = await self.get(public_id)
        found = await self.repo.answer(row.id)
        if found is None:
            return None
        kind, received_at, key_id, payload = found
        content = json.loads(self.cipher.decrypt(key_id, payload, self._aad(row.id)))
        files = []
        for att_id, content_type, size, kid, name, _data in await self.repo.attachments(row.id):
            filename = self.cipher.decrypt(kid, name, self._aad(row.id, att_id_name=True)).decode()
            files.append(
                {"id": att_id, "filename": filename, "content_type": content_type, "size": size}
            )
        return {"kind": kind, "received_at": received_at, "content": content, "attachments": files}

    async def attachment(self, row: RequestRow, attachment_id: int) -> Upload:
        """One attachment of an answer to the request, decrypted: its name, type and bytes."""
        found = await self.repo.attachment(row.id, attachment_id)
        if found is None:
            raise NotFound(f"no attachment {attachment_id} on request {row.public_id}")
        content_type, key_id, name, data = found
        return Upload(
            self.cipher.decrypt(key_id, name, self._aad(row.id, att_id_name=True)).decode(),
            content_type,
            self.cipher.decrypt(key_id, data, self._aad(row.id)),
        )

    # -- the agency's side (the link) ---------------------------------------------------------

    async def _live(self, token: str) -> RequestRow:
        if not token or len(token) > 100:
            raise LinkGone()
        row = await self.repo.by_token_hash(token_hash(token))
        if row is None or row.status not in OPEN_STATES or self.clock.now() >= row.deadline_at:
            raise LinkGone()
        return row

    def _landing(self, row: RequestRow) -> Landing:
        agency = self.agencies.get(row.agency)
        return Landing(
            row.reference, row.agency, agency.name if agency else row.agency, row.deadline_on
        )

    async def landing(self, token: str) -> Landing:
        """What GET shows: no personal data, and nothing changes (mail scanners fetch links)."""
        return self._landing(await self._live(token))

    async def open(self, token: str) -> Opened:
        row = await self._live(token)
        now = self.clock.now()
        await self.repo.mark_opened(
            row.id,
            now,
            AuditEvent(
                f"agency:{row.agency}", "request.opened", row.reference, {"request": row.public_id}
            ),
        )
        doc = await self.repo.notification_by_id(row.notification_id)
        children, adults = self._identifiers(doc, row.question_set)
        return Opened(self._landing(row), self.questions.get(row.question_set), children, adults)

    def _identifiers(
        self, doc: NotificationDoc, question_set: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The least the agency needs to search its records: who, born when, where, and the
        identifiers its own systems use. Narratives stay with the panel."""
        document = json.loads(
            self.cipher.decrypt(doc.key_id, doc.payload, f"{doc.agency}\x00{doc.jti}".encode())
        )
        systems = IDENTIFIER_SYSTEMS.get(question_set, frozenset())
        children = []
        for child in document.get("children", []):
            address = child.get("address") or {}
            children.append(
                {
                    "name": " ".join(
                        filter(None, [child.get("given_name"), child.get("family_name")])
                    ),
                    "other_names": child.get("other_names", []),
                    "date_of_birth": child.get("date_of_birth"),
                    "stated_age": child.get("stated_age"),
                    "address": ", ".join(
                        [
                            *address.get("lines", []),
                            address.get("town", ""),
                            address.get("postcode", ""),
                        ]
                    ).strip(", "),
                    "identifiers": [
                        i for i in child.get("identifiers", []) if i.get("system") in systems
                    ],
                }
            )
        adults = []
        if question_set in NEEDS_ADULTS:
            adults = [
                {"name": a.get("name"), "relationship": a.get("relationship")}
                for a in document.get("adults", [])
            ]
        return children, adults

    def _aad(self, request_id: int, att_id_name: bool = False) -> bytes:
        return f"request\x00{request_id}{':name' if att_id_name else ''}".encode()

    def validate_answer(self, answer: Answer, qs: QuestionSet) -> dict[str, Any]:
        problems: dict[str, str] = {}
        if answer.known not in ("yes", "no"):
            problems["known"] = "Say whether the child or family is known to your agency."
        for name in ("involvement_from", "involvement_to"):
            value = getattr(answer, name)
            if value:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    problems[name] = "Give the date as YYYY-MM-DD."
        if answer.known == "yes" and not answer.summary.strip():
            problems["summary"] = "Give a summary of your agency's involvement."
        if not answer.respondent_name.strip():
            problems["respondent_name"] = "Give your name, so the panel can contact you."
        for name in ("nature", "summary", "concerns", "respondent_name", "respondent_role"):
            if len(getattr(answer, name)) > MAX_TEXT:
                problems[name] = f"Keep this under {MAX_TEXT} characters."
        extra = {q.id: answer.extra.get(q.id, "")[:MAX_TEXT] for q in qs.questions}
        if problems:
            raise AnswerInvalid(problems)
        return {
            "known_to_agency": answer.known == "yes",
            "involvement_from": answer.involvement_from or None,
            "involvement_to": answer.involvement_to or None,
            "nature_of_involvement": answer.nature,
            "summary": answer.summary,
            "concerns": answer.concerns,
            "questions": extra,
            "respondent": {"name": answer.respondent_name, "role": answer.respondent_role},
        }

    def _check_uploads(self, uploads: list[Upload]) -> None:
        total = 0
        for up in uploads:
            total += len(up.data)
            if up.content_type not in self.allowed_types or not sniff_ok(up.content_type, up.data):
                raise AnswerInvalid(
                    {"attachments": "Attach only PDF, Word (.docx), text, PNG or JPEG files."}
                )
        if total > self.max_attachment_bytes:
            raise AnswerInvalid({"attachments": "The attachments are too large."})

    async def submit(self, token: str, answer: Answer, uploads: list[Upload]) -> Responded:
        row = await self._live(token)
        content = self.validate_answer(answer, self.questions.get(row.question_set))
        self._check_uploads(uploads)
        return await self._respond(token, row, "answered", content, uploads)

    async def decline(self, token: str, reason: str) -> Responded:
        row = await self._live(token)
        if not reason.strip():
            raise AnswerInvalid({"reason": "Say why your agency declines to answer."})
        return await self._respond(token, row, "declined", {"reason": reason[:MAX_TEXT]}, [])

    async def _respond(
        self, token: str, row: RequestRow, kind: str, content: dict[str, Any], uploads: list[Upload]
    ) -> Responded:
        now = self.clock.now()
        key_id, payload = self.cipher.encrypt(json.dumps(content).encode(), self._aad(row.id))
        stored = []
        for up in uploads:
            # Attachment ids are not known yet: the name is bound to the request instead.
            _, name = self.cipher.encrypt(up.filename.encode(), self._aad(row.id, att_id_name=True))
            _, data = self.cipher.encrypt(up.data, self._aad(row.id))
            stored.append(StoredAttachment(up.content_type, len(up.data), name, data))
        done = await self.repo.respond(
            token_hash(token),
            kind,
            payload,
            key_id,
            stored,
            now,
            AuditEvent(
                f"agency:{row.agency}",
                f"request.{kind}",
                row.reference,
                {"request": row.public_id, "attachments": len(stored)},
            ),
        )
        if done is None:
            raise LinkGone()
        return Responded(row.reference, now)

    # -- chasers (scheduled) ------------------------------------------------------------------

    async def chase(self) -> ChaseResult:
        """Send the reminders that are due and expire what has passed its deadline.
        Idempotent: running it twice at the same moment sends nothing more."""
        now = self.clock.now()
        today = now.astimezone(LONDON).date()
        reminders = expired = 0
        for req in await self.repo.due_for_chasing():
            if now >= req.deadline_at:
                if await self.repo.expire(
                    req,
                    now,
                    AuditEvent(
                        "system:chaser",
                        "request.expired",
                        req.reference,
                        {"request": req.public_id},
                    ),
                ):
                    expired += 1
                continue
            left = self.workdays.between(today, req.deadline_on)
            due = [d for d in self.reminder_days if left <= d and d not in req.reminders_sent]
            if not due:
                continue
            agency = self.agencies.get(req.agency)
            mail = None
            if agency and agency.contact:
                sent_on = req.created_at.astimezone(LONDON)
                mail = emails.reminder_mail(
                    agency.contact,
                    agency.name,
                    req.reference,
                    req.public_id,
                    req.deadline_on,
                    f"Use the link in the request email sent on {sent_on:%d %B %Y}. If you "
                    "cannot find it, ask the panel secretariat to re-issue the request.",
                    left,
                )
            # One reminder however many offsets passed while the gateway was down.
            audit = AuditEvent(
                "system:chaser",
                "request.reminded",
                req.reference,
                {"request": req.public_id, "working_days_left": left},
            )
            if await self.repo.record_reminder(req, due, mail, now, audit):
                reminders += 1
        if reminders:
            self.wake_outbox()
        return ChaseResult(reminders, expired)

    async def overdue_summary(self) -> bool:
        """Once a day: the requests past their deadline, to the secretariat. False if already
        sent today or nobody to send it to."""
        if not self.secretariat_email:
            return False
        now = self.clock.now()
        today = now.astimezone(LONDON).date()
        rows = [
            (r.public_id, r.reference, r.agency, r.deadline_on)
            for r in await self.repo.all_requests()
            if r.status == "expired" or (r.status in OPEN_STATES and now >= r.deadline_at)
        ]
        mail = emails.overdue_summary_mail(self.secretariat_email, today, rows) if rows else None
        sent = await self.repo.once(
            "requests.overdue_summary",
            today.isoformat(),
            now,
            mail,
            AuditEvent(
                "system:chaser",
                "requests.overdue_summary",
                None,
                {"date": today.isoformat(), "overdue": len(rows)},
            ),
        )
        if sent and mail:
            self.wake_outbox()
        return sent
