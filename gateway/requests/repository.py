"""Storage of information requests and their answers. Every change commits with its audit
event and, where it causes mail, with the outbox row: all or nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.keys.datacipher import DataCipher
from gateway.outbox.model import OutgoingMail
from gateway.outbox.repository import enqueue
from gateway.storage.database import Database
from gateway.storage.tables import (
    information_requests as ir,
)
from gateway.storage.tables import (
    job_runs,
    notifications,
    request_answers,
    request_attachments,
)

OPEN_STATES = ("sent", "opened")


async def revoke_open(conn: AsyncConnection, request_ids: list[int], at: datetime) -> int:
    """Revoke those of the requests that are still open (their links die); how many were."""
    result = await conn.execute(
        update(ir)
        .where(ir.c.id.in_(request_ids), ir.c.status.in_(OPEN_STATES))
        .values(status="revoked", token_hash=None, closed_at=at)
    )
    return int(result.rowcount)


@dataclass(frozen=True)
class RequestRow:
    id: int
    public_id: str
    notification_id: int
    reference: str
    notification_status: str
    agency: str
    question_set: str
    status: str
    deadline_on: date
    deadline_at: datetime
    created_at: datetime
    created_by: str
    opened_at: datetime | None
    closed_at: datetime | None
    reminders_sent: tuple[int, ...]
    replaces_id: int | None


@dataclass(frozen=True)
class NewRequest:
    public_id: str
    notification_id: int
    agency: str
    question_set: str
    token_hash: str
    deadline_on: date
    deadline_at: datetime
    created_by: str
    replaces_id: int | None = None


@dataclass(frozen=True)
class NotificationDoc:
    id: int
    reference: str
    agency: str
    status: str
    jti: str
    key_id: str
    payload: bytes


@dataclass(frozen=True)
class StoredAttachment:
    content_type: str
    size: int
    name: bytes
    data: bytes


def _row(r: object) -> RequestRow:
    m = r._mapping  # type: ignore[attr-defined]
    return RequestRow(
        id=m["id"],
        public_id=m["public_id"],
        notification_id=m["notification_id"],
        reference=m["reference"],
        notification_status=m["notification_status"],
        agency=m["agency"],
        question_set=m["question_set"],
        status=m["status"],
        deadline_on=m["deadline_on"],
        deadline_at=m["deadline_at"],
        created_at=m["created_at"],
        created_by=m["created_by"],
        opened_at=m["opened_at"],
        closed_at=m["closed_at"],
        reminders_sent=tuple(json.loads(m["reminders_sent"])),
        replaces_id=m["replaces_id"],
    )


_SELECT = select(
    ir.c.id,
    ir.c.public_id,
    ir.c.notification_id,
    notifications.c.reference,
    notifications.c.status.label("notification_status"),
    ir.c.agency,
    ir.c.question_set,
    ir.c.status,
    ir.c.deadline_on,
    ir.c.deadline_at,
    ir.c.created_at,
    ir.c.created_by,
    ir.c.opened_at,
    ir.c.closed_at,
    ir.c.reminders_sent,
    ir.c.replaces_id,
).join(notifications, notifications.c.id == ir.c.notification_id)


class RequestsRepository:
    def __init__(self, db: Database, cipher: DataCipher, mail_from: str) -> None:
        self.db = db
        self.cipher = cipher
        self.mail_from = mail_from

    async def notification(self, reference: str) -> NotificationDoc | None:
        return await self._notification(notifications.c.reference == reference)

    async def notification_by_id(self, notification_id: int) -> NotificationDoc:
        found = await self._notification(notifications.c.id == notification_id)
        assert found is not None, "a request always belongs to a stored notification"
        return found

    async def _notification(self, where: Any) -> NotificationDoc | None:
        query = select(
            notifications.c.id,
            notifications.c.reference,
            notifications.c.agency,
            notifications.c.status,
            notifications.c.jti,
            notifications.c.key_id,
            notifications.c.payload,
        ).where(where)
        async with self.db.transaction() as conn:
            r = (await conn.execute(query)).first()
        return NotificationDoc(**r._mapping) if r else None

    async def create(
        self,
        new: NewRequest,
        mail: OutgoingMail | None,
        audit: AuditEvent,
        at: datetime,
        revoke_id: int | None = None,
        advance_notification_from: tuple[str, ...] = (),
    ) -> None:
        """Insert a request (revoking `revoke_id` first when re-issuing), queue its mail, and
        move the notification to information gathering if it was still before it."""
        async with self.db.transaction() as conn:
            if revoke_id is not None:
                await conn.execute(
                    update(ir)
                    .where(ir.c.id == revoke_id)
                    .values(status="revoked", token_hash=None, closed_at=at)
                )
            await conn.execute(
                ir.insert().values(
                    public_id=new.public_id,
                    notification_id=new.notification_id,
                    agency=new.agency,
                    question_set=new.question_set,
                    status="sent",
                    token_hash=new.token_hash,
                    deadline_on=new.deadline_on,
                    deadline_at=new.deadline_at,
                    created_at=at,
                    created_by=new.created_by,
                    reminders_sent="[]",
                    replaces_id=new.replaces_id,
                )
            )
            if advance_notification_from:
                await conn.execute(
                    update(notifications)
                    .where(
                        notifications.c.id == new.notification_id,
                        notifications.c.status.in_(advance_notification_from),
                    )
                    .values(status="information_gathering", updated_at=at)
                )
            if mail is not None:
                await enqueue(conn, self.cipher, mail, self.mail_from, at)
            await append(conn, audit, at)

    async def by_public_id(self, public_id: str) -> RequestRow | None:
        async with self.db.transaction() as conn:
            r = (await conn.execute(_SELECT.where(ir.c.public_id == public_id))).first()
        return _row(r) if r else None

    async def by_token_hash(self, token_hash: str) -> RequestRow | None:
        async with self.db.transaction() as conn:
            r = (await conn.execute(_SELECT.where(ir.c.token_hash == token_hash))).first()
        return _row(r) if r else None

    async def all_requests(self, reference: str | None = None) -> list[RequestRow]:
        query = _SELECT.order_by(ir.c.id)
        if reference:
            query = query.where(notifications.c.reference == reference)
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [_row(r) for r in rows]

    async def mark_opened(self, request_id: int, at: datetime, audit: AuditEvent) -> bool:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(ir)
                .where(ir.c.id == request_id, ir.c.status == "sent")
                .values(status="opened", opened_at=at)
            )
            if result.rowcount == 1:
                await append(conn, audit, at)
                return True
        return False

    async def respond(
        self,
        token_hash: str,
        kind: str,
        payload: bytes,
        key_id: str,
        attachments: list[StoredAttachment],
        at: datetime,
        audit: AuditEvent,
    ) -> RequestRow | None:
        """Spend the token and store the answer, or do nothing if the token is no longer
        live. The conditional UPDATE is the one place a token is spent, so of many parallel
        submissions exactly one wins."""
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(
                    _SELECT.where(
                        ir.c.token_hash == token_hash,
                        ir.c.status.in_(OPEN_STATES),
                        ir.c.deadline_at > at,
                    )
                )
            ).first()
            if row is None:
                return None
            result = await conn.execute(
                update(ir)
                .where(
                    ir.c.id == row.id, ir.c.token_hash == token_hash, ir.c.status.in_(OPEN_STATES)
                )
                .values(status=kind, token_hash=None, closed_at=at, opened_at=row.opened_at or at)
            )
            if result.rowcount != 1:
                return None
            await conn.execute(
                request_answers.insert().values(
                    request_id=row.id, kind=kind, received_at=at, key_id=key_id, payload=payload
                )
            )
            for att in attachments:
                await conn.execute(
                    request_attachments.insert().values(
                        request_id=row.id,
                        content_type=att.content_type,
                        size=att.size,
                        key_id=key_id,
                        name_payload=att.name,
                        payload=att.data,
                    )
                )
            await append(conn, audit, at)
        return _row(row)

    async def revoke(self, request_id: int, at: datetime, audit: AuditEvent) -> bool:
        async with self.db.transaction() as conn:
            if await revoke_open(conn, [request_id], at) != 1:
                return False
            await append(conn, audit, at)
        return True

    async def due_for_chasing(self) -> list[RequestRow]:
        async with self.db.transaction() as conn:
            rows = (await conn.execute(_SELECT.where(ir.c.status.in_(OPEN_STATES)))).all()
        return [_row(r) for r in rows]

    async def record_reminder(
        self,
        req: RequestRow,
        offsets: list[int],
        mail: OutgoingMail | None,
        at: datetime,
        audit: AuditEvent,
    ) -> bool:
        sent = sorted({*req.reminders_sent, *offsets})
        async with self.db.transaction() as conn:
            # Guarded by the previous value: two runs of the job cannot both send it.
            result = await conn.execute(
                update(ir)
                .where(
                    ir.c.id == req.id,
                    ir.c.reminders_sent == json.dumps(list(req.reminders_sent)),
                    ir.c.status.in_(OPEN_STATES),
                )
                .values(reminders_sent=json.dumps(sent))
            )
            if result.rowcount != 1:
                return False
            if mail is not None:
                await enqueue(conn, self.cipher, mail, self.mail_from, at)
            await append(conn, audit, at)
        return True

    async def expire(self, req: RequestRow, at: datetime, audit: AuditEvent) -> bool:
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(ir)
                .where(ir.c.id == req.id, ir.c.status.in_(OPEN_STATES), ir.c.deadline_at <= at)
                .values(status="expired", token_hash=None, closed_at=at)
            )
            if result.rowcount != 1:
                return False
            await append(conn, audit, at)
        return True

    async def once(
        self, job: str, run_key: str, at: datetime, mail: OutgoingMail | None, audit: AuditEvent
    ) -> bool:
        """Record a once-per-period job run with its mail; False if it already ran."""
        try:
            async with self.db.transaction() as conn:
                await conn.execute(job_runs.insert().values(job=job, run_key=run_key, at=at))
                if mail is not None:
                    await enqueue(conn, self.cipher, mail, self.mail_from, at)
                await append(conn, audit, at)
        except IntegrityError:
            return False
        return True

    async def answer(self, request_id: int) -> tuple[str, datetime, str, bytes] | None:
        async with self.db.transaction() as conn:
            r = (
                await conn.execute(
                    select(request_answers).where(request_answers.c.request_id == request_id)
                )
            ).first()
        return (r.kind, r.received_at, r.key_id, r.payload) if r else None

    async def attachments(self, request_id: int) -> list[tuple[int, str, int, str, bytes, bytes]]:
        async with self.db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(request_attachments)
                    .where(request_attachments.c.request_id == request_id)
                    .order_by(request_attachments.c.id)
                )
            ).all()
        return [(r.id, r.content_type, r.size, r.key_id, r.name_payload, r.payload) for r in rows]

    async def attachment(
        self, request_id: int, attachment_id: int
    ) -> tuple[str, str, bytes, bytes] | None:
        """(content type, key id, encrypted name, encrypted data) of one attachment."""
        async with self.db.transaction() as conn:
            r = (
                await conn.execute(
                    select(request_attachments).where(
                        request_attachments.c.request_id == request_id,
                        request_attachments.c.id == attachment_id,
                    )
                )
            ).first()
        return (r.content_type, r.key_id, r.name_payload, r.payload) if r else None
