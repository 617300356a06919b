"""Storage of meetings, agenda versions, placements and outcomes, meeting records, and the
Board-level record of a case (case_outcomes, which the annual report reads). Every change
commits in one transaction with its audit events (appended last, as the audit chain requires)
and, where it causes mail, with the outbox rows. State changes are conditional updates on the
state that was read, so of two concurrent runs one wins and the other changes nothing."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.keys.datacipher import DataCipher
from gateway.lifecycle import Transition
from gateway.meetings.model import OPEN_STATUSES, CaseOutcome, Meeting, MeetingConflict
from gateway.outbox.model import OutgoingMail
from gateway.outbox.repository import enqueue
from gateway.requests.repository import revoke_open
from gateway.storage.database import Database
from gateway.storage.tables import (
    agenda_items,
    agendas,
    case_notes,
    case_outcomes,
    meeting_records,
    meetings,
    notification_children,
    notifications,
)

_reconvenes = aliased(meetings)
_MEETING = select(meetings, _reconvenes.c.public_id.label("reconvenes_public_id")).outerjoin(
    _reconvenes, _reconvenes.c.id == meetings.c.reconvenes_id
)


def _meeting(r: Any) -> Meeting:
    m = r._mapping
    return Meeting(
        id=m["id"],
        public_id=m["public_id"],
        kind=m["kind"],
        source=m["source"],
        status=m["status"],
        starts_at=m["starts_at"],
        duration_minutes=m["duration_minutes"],
        place=m["place"],
        online_link=m["online_link"],
        cut_off_on=m["cut_off_on"],
        notice_by_on=m["notice_by_on"],
        notice_sent_at=m["notice_sent_at"],
        ics_uid=m["ics_uid"],
        ics_sequence=m["ics_sequence"],
        reconvenes=m["reconvenes_public_id"],
        requisitioned_on=m["requisitioned_on"],
        requisitioned_by=tuple(json.loads(m["requisitioned_by"] or "[]")),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


@dataclass(frozen=True)
class NewMeeting:
    public_id: str
    kind: str
    source: str
    starts_at: datetime
    duration_minutes: int
    place: str | None
    online_link: str | None
    cut_off_on: date
    notice_by_on: date
    ics_uid: str
    created_by: str
    reconvenes_id: int | None = None
    requisitioned_on: date | None = None
    requisitioned_by: tuple[str, ...] = ()

    def values(self, at: datetime) -> dict[str, Any]:
        return {
            "public_id": self.public_id,
            "kind": self.kind,
            "source": self.source,
            "status": "planned",
            "starts_at": self.starts_at,
            "duration_minutes": self.duration_minutes,
            "place": self.place,
            "online_link": self.online_link,
            "cut_off_on": self.cut_off_on,
            "notice_by_on": self.notice_by_on,
            "notice_sent_at": None,
            "ics_uid": self.ics_uid,
            "ics_sequence": 0,
            "reconvenes_id": self.reconvenes_id,
            "requisitioned_on": self.requisitioned_on,
            "requisitioned_by": json.dumps(list(self.requisitioned_by))
            if self.requisitioned_by
            else None,
            "created_at": at,
            "created_by": self.created_by,
            "updated_at": at,
        }


@dataclass(frozen=True)
class Moved:
    starts_at: datetime
    place: str | None
    online_link: str | None
    cut_off_on: date
    notice_by_on: date
    source: str


@dataclass(frozen=True)
class StoredAgenda:
    id: int
    meeting_id: int
    version: int
    status: str
    compiled_at: datetime
    compiled_by: str
    issued_at: datetime | None
    key_id: str
    payload: bytes


@dataclass(frozen=True)
class PlacementRow:
    id: int
    notification_id: int
    meeting_id: int
    meeting: str
    meeting_status: str
    meeting_starts_at: datetime
    section: str
    deferral_count: int
    outcome: str | None
    key_id: str | None
    rationale: bytes | None


@dataclass(frozen=True)
class CaseRow:
    id: int
    reference: str
    agency: str
    jti: str
    key_id: str
    payload: bytes
    received_at: datetime
    route: str
    incident_type: str
    status: str
    children: tuple[tuple[str, str], ...]  # (age band, gender)
    placements: tuple[PlacementRow, ...]
    outcome: CaseOutcome | None

    @property
    def aad(self) -> bytes:
        """The associated data the notification's payload was encrypted with (intake)."""
        return f"{self.agency}\x00{self.jti}".encode()


@dataclass(frozen=True)
class NewPlacement:
    notification_id: int
    section: str
    deferral_count: int
    carried_from_id: int | None = None


@dataclass(frozen=True)
class Decision:
    item_id: int
    outcome: str
    votes: dict[str, list[str]] | None
    interests: list[str]
    casting_vote: str | None
    key_id: str
    rationale: bytes


@dataclass(frozen=True)
class NewRecord:
    result: str
    members: int
    quorum: int
    chair: str
    present: list[str]
    record_sha256: str
    key_id: str
    payload: bytes


@dataclass(frozen=True)
class Note:
    notification_id: int
    kind: str
    key_id: str
    payload: bytes


def _outcome(m: Any) -> CaseOutcome | None:
    if m["co_id"] is None:
        return None
    return CaseOutcome(
        board_considered_on=m["board_considered_on"],
        board_decision=m["board_decision"],
        commissioned_on=m["commissioned_on"],
        cmr_started_on=m["cmr_started_on"],
        cmr_completed_on=m["cmr_completed_on"],
        recommendations=m["recommendations"],
        themes=tuple(json.loads(m["themes"] or "[]")),
    )


async def _apply(
    conn: AsyncConnection, transitions: Iterable[Transition], actor: str, at: datetime
) -> list[AuditEvent]:
    """Move each notification on, if it is still in the state the change was decided from."""
    events = []
    for t in transitions:
        result = await conn.execute(
            update(notifications)
            .where(notifications.c.id == t.notification_id, notifications.c.status == t.current)
            .values(status=t.wanted, updated_at=at)
        )
        if result.rowcount != 1:
            raise MeetingConflict(f"notification {t.reference} changed meanwhile: try again")
        events.append(
            AuditEvent(
                actor,
                f"notification.{t.wanted}",
                t.reference,
                {"from": t.current, "to": t.wanted, "why": t.why},
            )
        )
    return events


async def _append_all(conn: AsyncConnection, events: Iterable[AuditEvent], at: datetime) -> None:
    for event in events:
        await append(conn, event, at)


class MeetingsRepository:
    def __init__(self, db: Database, cipher: DataCipher, mail_from: str) -> None:
        self.db = db
        self.cipher = cipher
        self.mail_from = mail_from

    async def _enqueue(
        self, conn: AsyncConnection, mails: Iterable[OutgoingMail], at: datetime
    ) -> None:
        for mail in mails:
            await enqueue(conn, self.cipher, mail, self.mail_from, at)

    # -- meetings --------------------------------------------------------------------------

    async def meetings(self, open_only: bool = False) -> list[Meeting]:
        query = _MEETING.order_by(meetings.c.starts_at, meetings.c.id)
        if open_only:
            query = query.where(meetings.c.status.in_(OPEN_STATUSES))
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [_meeting(r) for r in rows]

    async def meeting(self, public_id: str) -> Meeting | None:
        async with self.db.transaction() as conn:
            r = (await conn.execute(_MEETING.where(meetings.c.public_id == public_id))).first()
        return _meeting(r) if r else None

    async def insert_meeting(
        self, new: NewMeeting, audit: AuditEvent, at: datetime
    ) -> Meeting | None:
        """None when the public id is taken (by a concurrent run, or before)."""
        try:
            async with self.db.transaction() as conn:
                await conn.execute(meetings.insert().values(**new.values(at)))
                await append(conn, audit, at)
        except IntegrityError:
            return None
        return await self.meeting(new.public_id)

    async def move_meeting(
        self,
        meeting: Meeting,
        moved: Moved,
        noticed_at: datetime | None,
        mails: Sequence[OutgoingMail],
        audit: AuditEvent,
        at: datetime,
    ) -> None:
        """A new time or place: SEQUENCE goes up by one, guarded by the one read."""
        values: dict[str, Any] = {
            "starts_at": moved.starts_at,
            "place": moved.place,
            "online_link": moved.online_link,
            "cut_off_on": moved.cut_off_on,
            "notice_by_on": moved.notice_by_on,
            "source": moved.source,
            "ics_sequence": meeting.ics_sequence + 1,
            "updated_at": at,
        }
        if noticed_at is not None:
            values["notice_sent_at"] = noticed_at
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(meetings)
                .where(
                    meetings.c.id == meeting.id,
                    meetings.c.ics_sequence == meeting.ics_sequence,
                    meetings.c.status.in_(OPEN_STATUSES),
                )
                .values(**values)
            )
            if result.rowcount != 1:
                raise MeetingConflict(f"meeting {meeting.public_id} changed meanwhile")
            await self._enqueue(conn, mails, at)
            await append(conn, audit, at)

    async def cancel_meeting(self, meeting: Meeting, audit: AuditEvent, at: datetime) -> bool:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(meetings)
                .where(
                    meetings.c.id == meeting.id,
                    meetings.c.status == meeting.status,
                    meetings.c.notice_sent_at.is_(None),
                )
                .values(status="cancelled", updated_at=at)
            )
            if result.rowcount != 1:
                return False
            await append(conn, audit, at)
        return True

    # -- agendas ---------------------------------------------------------------------------

    async def _agenda(self, *where: Any) -> StoredAgenda | None:
        query = (
            select(
                agendas.c.id,
                agendas.c.meeting_id,
                agendas.c.version,
                agendas.c.status,
                agendas.c.compiled_at,
                agendas.c.compiled_by,
                agendas.c.issued_at,
                agendas.c.key_id,
                agendas.c.payload,
            )
            .where(*where)
            .order_by(agendas.c.version.desc())
            .limit(1)
        )
        async with self.db.transaction() as conn:
            r = (await conn.execute(query)).first()
        return StoredAgenda(**r._mapping) if r else None

    async def latest_agenda(self, meeting_id: int) -> StoredAgenda | None:
        return await self._agenda(agendas.c.meeting_id == meeting_id)

    async def latest_issued(self, meeting_id: int) -> StoredAgenda | None:
        return await self._agenda(agendas.c.meeting_id == meeting_id, agendas.c.status == "issued")

    async def agenda_version(self, meeting_id: int, version: int) -> StoredAgenda | None:
        return await self._agenda(agendas.c.meeting_id == meeting_id, agendas.c.version == version)

    async def save_agenda(
        self,
        meeting: Meeting,
        version: int,
        replaces_draft: int | None,
        sealed: tuple[str, bytes],
        add: Sequence[NewPlacement],
        remove: Collection[int],
        transitions: Sequence[Transition],
        audit: AuditEvent,
        actor: str,
        at: datetime,
    ) -> None:
        key_id, payload = sealed
        try:
            async with self.db.transaction() as conn:
                result = await conn.execute(
                    update(meetings)
                    .where(meetings.c.id == meeting.id, meetings.c.status == meeting.status)
                    .values(
                        status="compiled" if meeting.status == "planned" else meeting.status,
                        updated_at=at,
                    )
                )
                if result.rowcount != 1:
                    raise MeetingConflict(f"meeting {meeting.public_id} changed meanwhile")
                values = {
                    "compiled_at": at,
                    "compiled_by": actor,
                    "key_id": key_id,
                    "payload": payload,
                }
                if replaces_draft is not None:
                    result = await conn.execute(
                        update(agendas)
                        .where(agendas.c.id == replaces_draft, agendas.c.status == "draft")
                        .values(**values)
                    )
                    if result.rowcount != 1:
                        raise MeetingConflict(f"the agenda of {meeting.public_id} was issued")
                else:
                    await conn.execute(
                        agendas.insert().values(
                            meeting_id=meeting.id, version=version, status="draft", **values
                        )
                    )
                if remove:
                    await conn.execute(
                        delete(agenda_items).where(
                            agenda_items.c.id.in_(list(remove)), agenda_items.c.outcome.is_(None)
                        )
                    )
                for p in add:
                    await conn.execute(
                        agenda_items.insert().values(
                            meeting_id=meeting.id,
                            notification_id=p.notification_id,
                            section=p.section,
                            deferral_count=p.deferral_count,
                            carried_from_id=p.carried_from_id,
                            placed_at=at,
                            placed_by=actor,
                        )
                    )
                events = await _apply(conn, transitions, actor, at)
                await _append_all(conn, [audit, *events], at)
        except IntegrityError:
            raise MeetingConflict(f"the agenda of {meeting.public_id} changed meanwhile") from None

    async def issue_agenda(
        self,
        agenda_id: int,
        meeting: Meeting,
        first_notice: bool,
        mails: Sequence[OutgoingMail],
        events: Sequence[AuditEvent],
        actor: str,
        at: datetime,
    ) -> None:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(agendas)
                .where(agendas.c.id == agenda_id, agendas.c.status == "draft")
                .values(status="issued", issued_at=at, issued_by=actor)
            )
            if result.rowcount != 1:
                raise MeetingConflict(f"the agenda of {meeting.public_id} was issued meanwhile")
            values: dict[str, Any] = {"status": "issued", "updated_at": at}
            guard = [meetings.c.id == meeting.id, meetings.c.status.in_(OPEN_STATUSES)]
            if first_notice:
                values["notice_sent_at"] = at
                guard.append(meetings.c.notice_sent_at.is_(None))
            result = await conn.execute(update(meetings).where(*guard).values(**values))
            if result.rowcount != 1:
                raise MeetingConflict(f"meeting {meeting.public_id} changed meanwhile")
            await self._enqueue(conn, mails, at)
            await _append_all(conn, events, at)

    # -- cases -----------------------------------------------------------------------------

    async def cases(
        self,
        states: Collection[str] | None = None,
        reference: str | None = None,
        references: Collection[str] | None = None,
    ) -> list[CaseRow]:
        """Notifications with their children, placements and Board-level outcome."""
        query = (
            select(
                notifications.c.id,
                notifications.c.reference,
                notifications.c.agency,
                notifications.c.jti,
                notifications.c.key_id,
                notifications.c.payload,
                notifications.c.received_at,
                notifications.c.route,
                notifications.c.incident_type,
                notifications.c.status,
                case_outcomes.c.notification_id.label("co_id"),
                case_outcomes.c.board_considered_on,
                case_outcomes.c.board_decision,
                case_outcomes.c.commissioned_on,
                case_outcomes.c.cmr_started_on,
                case_outcomes.c.cmr_completed_on,
                case_outcomes.c.recommendations,
                case_outcomes.c.themes,
            )
            .select_from(
                notifications.outerjoin(
                    case_outcomes, case_outcomes.c.notification_id == notifications.c.id
                )
            )
            .order_by(notifications.c.id)
        )
        if states is not None:
            query = query.where(notifications.c.status.in_(list(states)))
        if reference is not None:
            query = query.where(notifications.c.reference == reference)
        if references is not None:
            if not references:
                return []
            query = query.where(notifications.c.reference.in_(list(references)))
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
            ids = [r.id for r in rows]
            children: dict[int, list[tuple[str, str]]] = defaultdict(list)
            placed: dict[int, list[PlacementRow]] = defaultdict(list)
            # In chunks: well under SQLite's limit on bound parameters.
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for c in await conn.execute(
                    select(notification_children)
                    .where(notification_children.c.notification_id.in_(chunk))
                    .order_by(notification_children.c.position)
                ):
                    children[c.notification_id].append((c.age_band, c.gender))
                for p in await conn.execute(
                    select(
                        agenda_items.c.id,
                        agenda_items.c.notification_id,
                        agenda_items.c.meeting_id,
                        meetings.c.public_id.label("meeting"),
                        meetings.c.status.label("meeting_status"),
                        meetings.c.starts_at.label("meeting_starts_at"),
                        agenda_items.c.section,
                        agenda_items.c.deferral_count,
                        agenda_items.c.outcome,
                        agenda_items.c.key_id,
                        agenda_items.c.rationale,
                    )
                    .join(meetings, meetings.c.id == agenda_items.c.meeting_id)
                    .where(agenda_items.c.notification_id.in_(chunk))
                    .order_by(meetings.c.starts_at, agenda_items.c.id)
                ):
                    placed[p.notification_id].append(PlacementRow(**p._mapping))
        return [
            CaseRow(
                id=r.id,
                reference=r.reference,
                agency=r.agency,
                jti=r.jti,
                key_id=r.key_id,
                payload=r.payload,
                received_at=r.received_at,
                route=r.route,
                incident_type=r.incident_type,
                status=r.status,
                children=tuple(children[r.id]),
                placements=tuple(placed[r.id]),
                outcome=_outcome(r._mapping),
            )
            for r in rows
        ]

    async def case(self, reference: str) -> CaseRow | None:
        found = await self.cases(reference=reference)
        return found[0] if found else None

    async def change_case(
        self,
        transitions: Sequence[Transition],
        actor: str,
        at: datetime,
        *,
        note: Note | None = None,
        place_on: int | None = None,
        unplace: Collection[int] = (),
        outcome: dict[str, Any] | None = None,
        events: Sequence[AuditEvent] = (),
        revoke_requests: Collection[int] = (),
        mails: Sequence[OutgoingMail] = (),
    ) -> None:
        """One change to a case, all or nothing: its transitions, a note with the reason, a
        placement on a meeting (replacing undecided ones on others), the Board-level record,
        information requests it closes and the mails that say so."""
        notification_id = transitions[0].notification_id if transitions else None
        if notification_id is None and note is not None:
            notification_id = note.notification_id
        async with self.db.transaction() as conn:
            if unplace:
                await conn.execute(
                    delete(agenda_items).where(
                        agenda_items.c.id.in_(list(unplace)), agenda_items.c.outcome.is_(None)
                    )
                )
            if place_on is not None and notification_id is not None:
                placed = (
                    await conn.execute(
                        select(agenda_items.c.id).where(
                            agenda_items.c.meeting_id == place_on,
                            agenda_items.c.notification_id == notification_id,
                        )
                    )
                ).first()
                if placed is None:
                    await conn.execute(
                        agenda_items.insert().values(
                            meeting_id=place_on,
                            notification_id=notification_id,
                            section="new",
                            deferral_count=0,
                            placed_at=at,
                            placed_by=actor,
                        )
                    )
            if note is not None:
                await conn.execute(
                    case_notes.insert().values(
                        notification_id=note.notification_id,
                        kind=note.kind,
                        at=at,
                        actor=actor,
                        key_id=note.key_id,
                        payload=note.payload,
                    )
                )
            if outcome is not None and notification_id is not None:
                await self._upsert_outcome(conn, notification_id, outcome, at)
            if revoke_requests:
                await revoke_open(conn, list(revoke_requests), at)
            await self._enqueue(conn, mails, at)
            changed = await _apply(conn, transitions, actor, at)
            await _append_all(conn, [*events, *changed], at)

    async def _upsert_outcome(
        self, conn: AsyncConnection, notification_id: int, values: dict[str, Any], at: datetime
    ) -> None:
        values = {**values, "updated_at": at}
        if "themes" in values and values["themes"] is not None:
            values["themes"] = json.dumps(list(values["themes"]))
        exists = (
            await conn.execute(
                select(case_outcomes.c.notification_id).where(
                    case_outcomes.c.notification_id == notification_id
                )
            )
        ).first()
        if exists:
            await conn.execute(
                update(case_outcomes)
                .where(case_outcomes.c.notification_id == notification_id)
                .values(**values)
            )
        else:
            await conn.execute(
                case_outcomes.insert().values(notification_id=notification_id, **values)
            )

    async def notes(self, notification_id: int) -> list[tuple[str, datetime, str, str, bytes]]:
        async with self.db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(case_notes)
                    .where(case_notes.c.notification_id == notification_id)
                    .order_by(case_notes.c.id)
                )
            ).all()
        return [(r.kind, r.at, r.actor, r.key_id, r.payload) for r in rows]

    # -- records ---------------------------------------------------------------------------

    async def record_of(self, meeting_id: int) -> tuple[str, str, bytes, str] | None:
        """(sha256 of the record file, key id, encrypted record, result) once recorded."""
        async with self.db.transaction() as conn:
            r = (
                await conn.execute(
                    select(meeting_records).where(meeting_records.c.meeting_id == meeting_id)
                )
            ).first()
        return (r.record_sha256, r.key_id, r.payload, r.result) if r else None

    async def save_record(
        self,
        meeting: Meeting,
        record: NewRecord,
        decisions: Sequence[Decision],
        transitions: Sequence[Transition],
        reconvened: NewMeeting | None,
        events: Sequence[AuditEvent],
        actor: str,
        at: datetime,
    ) -> None:
        try:
            async with self.db.transaction() as conn:
                result = await conn.execute(
                    update(meetings)
                    .where(meetings.c.id == meeting.id, meetings.c.status == "issued")
                    .values(
                        status="held" if record.result == "quorate" else "inquorate",
                        updated_at=at,
                    )
                )
                if result.rowcount != 1:
                    raise MeetingConflict(f"meeting {meeting.public_id} was recorded meanwhile")
                reconvened_id = None
                if reconvened is not None:
                    reconvened_id = (
                        await conn.execute(
                            meetings.insert()
                            .values(**reconvened.values(at))
                            .returning(meetings.c.id)
                        )
                    ).scalar_one()
                await conn.execute(
                    meeting_records.insert().values(
                        meeting_id=meeting.id,
                        recorded_at=at,
                        recorded_by=actor,
                        result=record.result,
                        members=record.members,
                        quorum=record.quorum,
                        chair=record.chair,
                        present=json.dumps(record.present),
                        reconvened_id=reconvened_id,
                        record_sha256=record.record_sha256,
                        key_id=record.key_id,
                        payload=record.payload,
                    )
                )
                for d in decisions:
                    result = await conn.execute(
                        update(agenda_items)
                        .where(agenda_items.c.id == d.item_id, agenda_items.c.outcome.is_(None))
                        .values(
                            outcome=d.outcome,
                            votes=json.dumps(d.votes) if d.votes is not None else None,
                            interests=json.dumps(d.interests),
                            casting_vote=d.casting_vote,
                            decided_at=at,
                            key_id=d.key_id,
                            rationale=d.rationale,
                        )
                    )
                    if result.rowcount != 1:
                        raise MeetingConflict("an item was decided meanwhile")
                changed = await _apply(conn, transitions, actor, at)
                await _append_all(conn, [*events, *changed], at)
        except IntegrityError:
            raise MeetingConflict(f"meeting {meeting.public_id} was recorded meanwhile") from None
