"""Storage side of retention. Each purge is one transaction that claims its case row with
SELECT ... FOR UPDATE SKIP LOCKED (on PostgreSQL; SQLite's immediate transaction serialises),
re-checks that the case has not moved, and records the purge with its audit event."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.retention.service import Case, Due
from gateway.storage.database import Database
from gateway.storage.tables import (
    information_requests,
    metadata,
    notifications,
    outbox,
    request_answers,
    request_attachments,
    retention_purges,
)

# Other features' per-case personal data: tables whose rows go, and encrypted columns that are
# emptied, keyed by notification_id. Looked up by name so that a feature not installed yet
# (or renamed) does not break retention; a feature that adds personal data per case adds
# its table here (docs/operations.md, Retention).
CASE_ROWS_DELETED = ("case_notes",)
CASE_COLUMNS_EMPTIED = {"agenda_items": ("rationale", "key_id")}


class RetentionRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def candidates(self, before: datetime, statuses: frozenset[str]) -> list[Case]:
        n = notifications
        query = (
            select(n.c.id, n.c.reference, n.c.agency, n.c.jti, n.c.status, n.c.updated_at)
            .outerjoin(retention_purges, retention_purges.c.notification_id == n.c.id)
            .where(
                retention_purges.c.notification_id.is_(None),
                n.c.status.in_(sorted(statuses)),
                n.c.updated_at < before,
            )
            .order_by(n.c.id)
        )
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [Case(**r._mapping) for r in rows]

    async def purge(
        self, due: Due, key_id: str, payload: bytes, at: datetime, audit: AuditEvent
    ) -> bool:
        case = due.case
        try:
            async with self.db.transaction() as conn:
                claimed = (
                    await conn.execute(
                        select(notifications.c.id)
                        .where(
                            notifications.c.id == case.id,
                            notifications.c.status == case.status,
                            notifications.c.updated_at == case.updated_at,
                        )
                        .with_for_update(skip_locked=True)
                    )
                ).first()
                if claimed is None:
                    return False
                # First, so that a second purger of the same case fails before doing anything.
                await conn.execute(
                    retention_purges.insert().values(
                        notification_id=case.id, purged_at=at, reason=due.reason, status=case.status
                    )
                )
                await conn.execute(
                    update(notifications)
                    .where(notifications.c.id == case.id)
                    .values(key_id=key_id, payload=payload)
                )
                await self._purge_requests(conn, case)
                await self._purge_features(conn, case.id)
                await append(conn, audit, at)
        except IntegrityError:
            return False
        return True

    async def _purge_requests(self, conn: AsyncConnection, case: Case) -> None:
        ir = information_requests
        rows = (
            await conn.execute(
                select(ir.c.id, ir.c.public_id).where(ir.c.notification_id == case.id)
            )
        ).all()
        ids = [r.id for r in rows]
        if ids:
            await conn.execute(
                delete(request_attachments).where(request_attachments.c.request_id.in_(ids))
            )
            await conn.execute(delete(request_answers).where(request_answers.c.request_id.in_(ids)))
            await conn.execute(update(ir).where(ir.c.id.in_(ids)).values(token_hash=None))
        # Mail not yet sent about the case could still carry a live link.
        abouts = [case.reference, *(r.public_id for r in rows)]
        await conn.execute(
            update(outbox)
            .where(outbox.c.about.in_(abouts), outbox.c.status != "delivered")
            .values(status="failed", payload=None, key_id=None, last_error="purged (retention)")
        )

    async def _purge_features(self, conn: AsyncConnection, notification_id: int) -> None:
        for name in CASE_ROWS_DELETED:
            table = metadata.tables.get(name)
            if table is not None and "notification_id" in table.c:
                await conn.execute(delete(table).where(table.c.notification_id == notification_id))
        for name, columns in CASE_COLUMNS_EMPTIED.items():
            table = metadata.tables.get(name)
            if table is not None and "notification_id" in table.c:
                present = {c: None for c in columns if c in table.c}
                if present:
                    await conn.execute(
                        update(table)
                        .where(table.c.notification_id == notification_id)
                        .values(**present)
                    )
