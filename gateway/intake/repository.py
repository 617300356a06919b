"""Storage of notifications. Idempotency and numbering hold under concurrency because the
database decides: a unique (agency, jti) constraint, and a per-year counter row updated in the
same transaction as the insert (a rolled-back insert rolls the number back, so none is skipped)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.intake.validation import ChildFacts
from gateway.storage.database import Database
from gateway.storage.tables import notification_children, notifications, reference_counters

LONDON = ZoneInfo("Europe/London")


@dataclass(frozen=True)
class NewNotification:
    agency: str
    jti: str
    envelope_sha256: str
    format: str
    route: str
    incident_type: str
    incident_date: date
    received_at: datetime
    key_id: str
    payload: bytes
    children: tuple[ChildFacts, ...]


@dataclass(frozen=True)
class StoredReceipt:
    reference: str
    receipt: str
    envelope_sha256: str


@dataclass(frozen=True)
class NotificationStatus:
    reference: str
    status: str
    format: str
    received_at: datetime
    updated_at: datetime


class DuplicateMessage(Exception):
    """(agency, jti) is already stored."""


def format_reference(year: int, number: int) -> str:
    return f"CMRN-{year}-{number:04d}"


class IntakeRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find_by_envelope(self, agency: str, envelope_sha256: str) -> StoredReceipt | None:
        return await self._find(
            (notifications.c.envelope_sha256 == envelope_sha256)
            & (notifications.c.agency == agency)
        )

    async def find_by_jti(self, agency: str, jti: str) -> StoredReceipt | None:
        return await self._find((notifications.c.agency == agency) & (notifications.c.jti == jti))

    async def _find(self, where: object) -> StoredReceipt | None:
        query = select(
            notifications.c.reference, notifications.c.receipt, notifications.c.envelope_sha256
        ).where(where)  # type: ignore[arg-type]
        async with self.db.transaction() as conn:
            row = (await conn.execute(query)).first()
        return StoredReceipt(row.reference, row.receipt, row.envelope_sha256) if row else None

    async def _next_number(self, conn: AsyncConnection, year: int) -> int:
        insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        await conn.execute(
            insert(reference_counters).values(year=year, last_number=0).on_conflict_do_nothing()
        )
        result = await conn.execute(
            update(reference_counters)
            .where(reference_counters.c.year == year)
            .values(last_number=reference_counters.c.last_number + 1)
            .returning(reference_counters.c.last_number)
        )
        return int(result.scalar_one())

    async def insert(
        self,
        new: NewNotification,
        sign_receipt: Callable[[str], str],
        audit: Callable[[str], AuditEvent],
    ) -> StoredReceipt:
        """Store the notification, its receipt and its audit event in one transaction.
        `sign_receipt` and `audit` are given the reference once it is allocated."""
        year = new.received_at.astimezone(LONDON).year
        try:
            async with self.db.transaction() as conn:
                reference = format_reference(year, await self._next_number(conn, year))
                receipt = sign_receipt(reference)
                result = await conn.execute(
                    notifications.insert()
                    .values(
                        reference=reference,
                        agency=new.agency,
                        jti=new.jti,
                        envelope_sha256=new.envelope_sha256,
                        format=new.format,
                        status="received",
                        route=new.route,
                        incident_type=new.incident_type,
                        incident_date=new.incident_date,
                        received_at=new.received_at,
                        updated_at=new.received_at,
                        key_id=new.key_id,
                        payload=new.payload,
                        receipt=receipt,
                    )
                    .returning(notifications.c.id)
                )
                notification_id = result.scalar_one()
                await conn.execute(
                    notification_children.insert(),
                    [
                        {
                            "notification_id": notification_id,
                            "position": i,
                            "gender": c.gender,
                            "age_band": c.age_band,
                        }
                        for i, c in enumerate(new.children)
                    ],
                )
                await append(conn, audit(reference), new.received_at)
        except IntegrityError as exc:
            if "jti" in str(exc.orig) or "uq_notifications_agency_jti" in str(exc.orig):
                raise DuplicateMessage() from None
            raise
        return StoredReceipt(reference, receipt, new.envelope_sha256)

    async def status(self, agency: str, reference: str) -> NotificationStatus | None:
        query = select(
            notifications.c.reference,
            notifications.c.status,
            notifications.c.format,
            notifications.c.received_at,
            notifications.c.updated_at,
        ).where(notifications.c.reference == reference, notifications.c.agency == agency)
        async with self.db.transaction() as conn:
            row = (await conn.execute(query)).first()
        return NotificationStatus(**row._mapping) if row else None

    async def count(self) -> int:
        async with self.db.transaction() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(notifications))).scalar_one()
            )
