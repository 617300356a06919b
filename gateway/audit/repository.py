"""Storage of the audit chain. `append` runs inside the caller's transaction, so an audit event
commits with the change it records, or not at all (fail closed). It is always the last write of
a transaction: the head row is the last lock taken, which keeps lock order the same everywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import (
    AuditEvent,
    ChainedEvent,
    VerifyResult,
    details_json,
    event_hash,
    verify_chain,
)
from gateway.storage.database import Database
from gateway.storage.tables import audit_events, audit_head


async def append(conn: AsyncConnection, event: AuditEvent, at: datetime) -> int:
    head = (
        await conn.execute(
            select(audit_head.c.seq, audit_head.c.hash)
            .where(audit_head.c.id == 1)
            .with_for_update()
        )
    ).one()
    seq = int(head.seq) + 1
    details = details_json(event.details)
    digest = event_hash(head.hash, seq, at, event.actor, event.action, event.subject, details)
    await conn.execute(
        audit_events.insert().values(
            seq=seq,
            at=at,
            actor=event.actor,
            action=event.action,
            subject=event.subject,
            details=details,
            prev_hash=head.hash,
            hash=digest,
        )
    )
    await conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    return seq


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, event: AuditEvent, at: datetime) -> None:
        async with self.db.transaction() as conn:
            await append(conn, event, at)

    async def events(self, subject: str | None = None) -> list[ChainedEvent]:
        query = select(audit_events).order_by(audit_events.c.seq)
        if subject is not None:
            query = query.where(audit_events.c.subject == subject)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ChainedEvent(**row._mapping) for row in rows]

    async def _stream(self, conn: AsyncConnection) -> AsyncIterator[ChainedEvent]:
        result = await conn.stream(select(audit_events).order_by(audit_events.c.seq))
        async for row in result:
            yield ChainedEvent(**row._mapping)

    async def verify(self) -> VerifyResult:
        async with self.db.engine.connect() as conn:
            head = (await conn.execute(select(audit_head).where(audit_head.c.id == 1))).one()
            events = [ev async for ev in self._stream(conn)]
        return verify_chain(events, head.seq, head.hash)
