"""What the secretariat's pages read about notifications: counts by state, the list of one
state, one notification's stored row. Writes go through the features that own them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select, update

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.keys.datacipher import DataCipher
from gateway.lifecycle import Transition
from gateway.outbox.model import OutgoingMail
from gateway.outbox.repository import enqueue
from gateway.storage.database import Database
from gateway.storage.tables import case_notes, notifications


class StateChanged(Exception):
    """The notification moved on since the change was decided: nothing was written."""


@dataclass(frozen=True)
class Summary:
    id: int
    reference: str
    agency: str
    status: str
    route: str
    incident_type: str
    incident_date: date
    received_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NotificationRow(Summary):
    jti: str
    key_id: str
    payload: bytes

    @property
    def aad(self) -> bytes:
        """The associated data the intake encrypted the document with."""
        return f"{self.agency}\x00{self.jti}".encode()


_SUMMARY = (
    notifications.c.id,
    notifications.c.reference,
    notifications.c.agency,
    notifications.c.status,
    notifications.c.route,
    notifications.c.incident_type,
    notifications.c.incident_date,
    notifications.c.received_at,
    notifications.c.updated_at,
)
_COLUMNS = (
    *_SUMMARY,
    notifications.c.jti,
    notifications.c.key_id,
    notifications.c.payload,
)


class SecretariatRepository:
    def __init__(self, db: Database, cipher: DataCipher, mail_from: str) -> None:
        self.db = db
        self.cipher = cipher
        self.mail_from = mail_from

    async def counts(self) -> dict[str, int]:
        query = select(notifications.c.status, func.count()).group_by(notifications.c.status)
        async with self.db.read() as conn:
            return {status: int(n) for status, n in (await conn.execute(query)).all()}

    async def in_state(self, state: str | None, limit: int = 500) -> list[Summary]:
        query = select(*_SUMMARY).order_by(notifications.c.received_at.desc()).limit(limit)
        if state is not None:
            query = query.where(notifications.c.status == state)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [Summary(**r._mapping) for r in rows]

    async def by_reference(self, reference: str) -> NotificationRow | None:
        async with self.db.read() as conn:
            r = (
                await conn.execute(select(*_COLUMNS).where(notifications.c.reference == reference))
            ).first()
        return NotificationRow(**r._mapping) if r else None

    async def transition(
        self,
        t: Transition,
        actor: str,
        at: datetime,
        *,
        action: str | None = None,
        note: tuple[str, str, bytes] | None = None,
        mail: OutgoingMail | None = None,
    ) -> None:
        """Move one notification on, if it is still in the state the change was decided from,
        with its note (kind, key id, encrypted text), its mail and its audit event: all or
        nothing."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(notifications)
                .where(notifications.c.id == t.notification_id, notifications.c.status == t.current)
                .values(status=t.wanted, updated_at=at)
            )
            if result.rowcount != 1:
                raise StateChanged()
            if note is not None:
                kind, key_id, payload = note
                await conn.execute(
                    case_notes.insert().values(
                        notification_id=t.notification_id,
                        kind=kind,
                        at=at,
                        actor=actor,
                        key_id=key_id,
                        payload=payload,
                    )
                )
            if mail is not None:
                await enqueue(conn, self.cipher, mail, self.mail_from, at)
            await append(
                conn,
                AuditEvent(
                    actor,
                    action or f"notification.{t.wanted}",
                    t.reference,
                    {"from": t.current, "to": t.wanted, "why": t.why},
                ),
                at,
            )
