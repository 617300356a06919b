"""Storage of the outbox. `enqueue` runs inside the caller's transaction. Claims take a lease
(`claimed_until`) with SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL, so several gateway
processes never send the same message at once; a lease that runs out (a process died while
sending) makes the message due again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.keys.datacipher import DataCipher
from gateway.outbox.model import OutgoingMail, build_message
from gateway.storage.database import Database
from gateway.storage.tables import outbox


def _aad(recipient: str) -> bytes:
    return f"outbox\x00{recipient}".encode()


async def enqueue(
    conn: AsyncConnection, cipher: DataCipher, mail: OutgoingMail, sender: str, now: datetime
) -> int:
    key_id, payload = cipher.encrypt(build_message(mail, sender, now), _aad(mail.recipient))
    result = await conn.execute(
        outbox.insert()
        .values(
            created_at=now,
            kind=mail.kind,
            about=mail.about,
            recipient=mail.recipient,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            key_id=key_id,
            payload=payload,
        )
        .returning(outbox.c.id)
    )
    return int(result.scalar_one())


@dataclass(frozen=True)
class Claimed:
    id: int
    recipient: str
    kind: str
    attempts: int
    message: bytes


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    created_at: datetime
    kind: str
    about: str | None
    recipient: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None


class OutboxRepository:
    def __init__(self, db: Database, cipher: DataCipher) -> None:
        self.db = db
        self.cipher = cipher

    async def claim_due(self, now: datetime, lease: timedelta, limit: int = 20) -> list[Claimed]:
        query = (
            select(
                outbox.c.id,
                outbox.c.recipient,
                outbox.c.kind,
                outbox.c.attempts,
                outbox.c.key_id,
                outbox.c.payload,
            )
            .where(
                outbox.c.status.in_(("pending", "sending")),
                outbox.c.next_attempt_at <= now,
                or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
            )
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
            if rows:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_([r.id for r in rows]))
                    .values(status="sending", claimed_until=now + lease)
                )
        return [
            Claimed(
                r.id,
                r.recipient,
                r.kind,
                r.attempts,
                self.cipher.decrypt(r.key_id, r.payload, _aad(r.recipient)),
            )
            for r in rows
        ]

    async def pending_count(self) -> int:
        """Mail still to be delivered (due or waiting for its next attempt)."""
        query = (
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.status.in_(("pending", "sending")))
        )
        async with self.db.transaction() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def delivered(self, conn: AsyncConnection, id: int, now: datetime) -> None:
        # The message is wiped: it may hold a live link, and it has done its job.
        await conn.execute(
            update(outbox)
            .where(outbox.c.id == id)
            .values(
                status="delivered",
                delivered_at=now,
                claimed_until=None,
                payload=None,
                key_id=None,
                attempts=outbox.c.attempts + 1,
                last_error=None,
            )
        )

    async def retry_later(
        self, conn: AsyncConnection, id: int, attempts: int, at: datetime, error: str
    ) -> None:
        await conn.execute(
            update(outbox)
            .where(outbox.c.id == id)
            .values(
                status="pending",
                attempts=attempts,
                next_attempt_at=at,
                claimed_until=None,
                last_error=error[:500],
            )
        )

    async def failed(self, conn: AsyncConnection, id: int, attempts: int, error: str) -> None:
        await conn.execute(
            update(outbox)
            .where(outbox.c.id == id)
            .values(
                status="failed",
                attempts=attempts,
                claimed_until=None,
                last_error=error[:500],
            )
        )

    async def entries(self, status: str | None = None, limit: int = 200) -> list[OutboxEntry]:
        query = (
            select(
                outbox.c.id,
                outbox.c.created_at,
                outbox.c.kind,
                outbox.c.about,
                outbox.c.recipient,
                outbox.c.status,
                outbox.c.attempts,
                outbox.c.next_attempt_at,
                outbox.c.last_error,
                outbox.c.delivered_at,
            )
            .order_by(outbox.c.id.desc())
            .limit(limit)
        )
        if status:
            query = query.where(outbox.c.status == status)
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [OutboxEntry(**r._mapping) for r in rows]

    async def retry(self, conn: AsyncConnection, id: int, now: datetime) -> bool:
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.id == id, outbox.c.status == "failed")
            .values(status="pending", attempts=0, next_attempt_at=now, last_error=None)
        )
        return result.rowcount == 1
