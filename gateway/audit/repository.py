"""Storage of the audit chain. `append` runs inside the caller's transaction, so an audit event
commits with the change it records, or not at all (fail closed). It is always the last write of
a transaction: the head row is the last lock taken, which keeps lock order the same everywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import structlog
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import (
    AuditEvent,
    ChainedEvent,
    VerifyResult,
    details_json,
    event_hash,
    verify_chain,
)
from gateway.errors import Unavailable
from gateway.storage.database import Database, is_unavailable
from gateway.storage.tables import audit_events, audit_head

log = structlog.get_logger("gateway.audit")


class AuditUnwritable(Unavailable):
    """The audit event could not be written, so the change it records is rolled back with
    it (fail closed). To a client it is an outage: 503 `unavailable`, try again later."""

    def __init__(self) -> None:
        super().__init__(retry_after=60, detail="the audit log cannot be written")


async def append(conn: AsyncConnection, event: AuditEvent, at: datetime) -> int:
    try:
        return await _append(conn, event, at)
    except DBAPIError as exc:
        if is_unavailable(exc):
            raise
        # Loud: nothing that needs an audit event can happen until an operator fixes this.
        log.error("audit_unwritable", action=event.action, error=type(exc.orig).__name__)
        raise AuditUnwritable() from exc


async def _append(conn: AsyncConnection, event: AuditEvent, at: datetime) -> int:
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


def append_many(conn: Connection, events: Sequence[tuple[AuditEvent, datetime]]) -> list[int]:
    """`append` for several events in order, on a synchronous connection (intake's group
    commit writes a whole batch as one synchronous unit, see Database.run_transaction): one
    read and one update of the head for all of them. The same rules: the caller's
    transaction, last, fail closed."""
    if not events:
        return []
    try:
        return _append_many(conn, events)
    except DBAPIError as exc:
        if is_unavailable(exc):
            raise
        log.error("audit_unwritable", action=events[0][0].action, error=type(exc.orig).__name__)
        raise AuditUnwritable() from exc


# Built once: constructing them was half the cost of a small batch's audit writes.
_HEAD_FOR_UPDATE = (
    select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
)
_INSERT_EVENTS = audit_events.insert()
_SET_HEAD = (
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=bindparam("b_seq"), hash=bindparam("b_hash"))
)


def _append_many(conn: Connection, events: Sequence[tuple[AuditEvent, datetime]]) -> list[int]:
    head = conn.execute(_HEAD_FOR_UPDATE).one()
    seq, prev = int(head.seq), str(head.hash)
    rows: list[dict[str, object]] = []
    seqs: list[int] = []
    for event, at in events:
        seq += 1
        seqs.append(seq)
        details = details_json(event.details)
        digest = event_hash(prev, seq, at, event.actor, event.action, event.subject, details)
        rows.append(
            {
                "seq": seq,
                "at": at,
                "actor": event.actor,
                "action": event.action,
                "subject": event.subject,
                "details": details,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    conn.execute(_INSERT_EVENTS, rows)
    conn.execute(_SET_HEAD, {"b_seq": seq, "b_hash": prev})
    return seqs


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
