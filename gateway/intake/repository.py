"""Storage of notifications. Idempotency and numbering hold under concurrency because the
database decides: a unique (agency, jti) constraint, and a per-year counter row updated in the
same transaction as the insert (a rolled-back insert rolls the number back, so none is skipped).

With group commit (the default) concurrent inserts are written together: one transaction per
batch, in which every notification still gets its own number, its own receipt, its own audit
event in the chain and, on a jti that is already stored, its own DuplicateMessage. Each caller
is answered after the batch's COMMIT, never before.

The agency key that verified a notification is confirmed registered and unrevoked in the same
transaction that stores it (SigningKeyRevoked otherwise): the intake service may then keep the
keys it has found instead of asking before every envelope, and a revocation made by any
process still holds from the next commit on."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append, append_many
from gateway.intake.batcher import GroupCommit
from gateway.intake.validation import ChildFacts
from gateway.storage.coalesce import Coalesce
from gateway.storage.database import Database
from gateway.storage.tables import (
    agency_keys,
    notification_children,
    notifications,
    reference_counters,
)

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
    signing_kid: str  # the agency's key that verified it, confirmed at the commit


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


class SigningKeyRevoked(Exception):
    """The agency key that verified the notification is no longer registered and unrevoked."""


# Built once: constructing the expression is a noticeable share of a lookup's CPU, and every
# submission makes one.
_RECEIPT_COLUMNS = (
    notifications.c.reference,
    notifications.c.receipt,
    notifications.c.envelope_sha256,
)
_BY_DIGESTS = select(notifications.c.agency, *_RECEIPT_COLUMNS).where(
    notifications.c.envelope_sha256.in_(bindparam("b_digests", expanding=True))
)
_BY_JTI = select(*_RECEIPT_COLUMNS).where(
    notifications.c.agency == bindparam("agency"), notifications.c.jti == bindparam("value")
)

_COUNTER_FOR_UPDATE = (
    select(reference_counters.c.last_number)
    .where(reference_counters.c.year == bindparam("b_year"))
    .with_for_update()
)
_SET_COUNTER = (
    update(reference_counters)
    .where(reference_counters.c.year == bindparam("b_year"))
    .values(last_number=bindparam("b_number"))
)
_INSERT_RETURNING_IDS = notifications.insert().returning(
    notifications.c.id, sort_by_parameter_order=True
)
_INSERT_CHILDREN = notification_children.insert()
# Two IN lists, not a row-value IN: SQLite answers `(agency, jti) IN (VALUES ...)` by scanning
# the whole index, and these by searching it. The pairs are then matched exactly.
_STORED_KEYS = select(notifications.c.agency, notifications.c.jti).where(
    notifications.c.agency.in_(bindparam("b_agencies", expanding=True)),
    notifications.c.jti.in_(bindparam("b_jtis", expanding=True)),
)
# FOR SHARE on PostgreSQL: a revocation waits for this commit instead of passing it unseen.
# (SQLite's BEGIN IMMEDIATE already keeps every other writer out.)
_VALID_SIGNING_KEYS = (
    select(agency_keys.c.agency, agency_keys.c.kid)
    .where(
        agency_keys.c.agency.in_(bindparam("b_agencies", expanding=True)),
        agency_keys.c.kid.in_(bindparam("b_kids", expanding=True)),
        agency_keys.c.revoked_at.is_(None),
    )
    .with_for_update(read=True)
)


def format_reference(year: int, number: int) -> str:
    return f"CMRN-{year}-{number:04d}"


@dataclass(frozen=True)
class _Insert:
    new: NewNotification
    sign_receipt: Callable[[str], str]
    audit: Callable[[str], AuditEvent]

    @property
    def year(self) -> int:
        return self.new.received_at.astimezone(LONDON).year


class _BatchConflict(Exception):
    """The batch met a constraint after its own duplicate check (another process stored the
    same jti meanwhile, on PostgreSQL): it is rolled back and written item by item."""


def _is_jti_conflict(exc: IntegrityError) -> bool:
    return "jti" in str(exc.orig) or "uq_notifications_agency_jti" in str(exc.orig)


def _row(new: NewNotification, reference: str, receipt: str) -> dict[str, object]:
    return {
        "reference": reference,
        "agency": new.agency,
        "jti": new.jti,
        "envelope_sha256": new.envelope_sha256,
        "format": new.format,
        "status": "received",
        "route": new.route,
        "incident_type": new.incident_type,
        "incident_date": new.incident_date,
        "received_at": new.received_at,
        "updated_at": new.received_at,
        "key_id": new.key_id,
        "payload": new.payload,
        "receipt": receipt,
    }


class IntakeRepository:
    def __init__(self, db: Database, group_commit: bool = True) -> None:
        self.db = db
        self._group: GroupCommit[_Insert, StoredReceipt] | None = (
            GroupCommit(self._write_batch) if group_commit else None
        )
        self._by_envelope: Coalesce[tuple[str, str], StoredReceipt] = Coalesce(
            self._fetch_by_envelope
        )

    @property
    def group_commit(self) -> GroupCommit[_Insert, StoredReceipt] | None:
        return self._group

    async def find_by_envelope(self, agency: str, envelope_sha256: str) -> StoredReceipt | None:
        # Every submission asks this first: concurrent ones share one query.
        return await self._by_envelope.get((agency, envelope_sha256))

    async def _fetch_by_envelope(
        self, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredReceipt]:
        # By the indexed digest alone, the agency checked here: a row-value IN over
        # (agency, digest) would not use the index on SQLite.
        params = {"b_digests": sorted({digest for _, digest in keys})}
        rows = await self.db.run_read(lambda conn: conn.execute(_BY_DIGESTS, params).all())
        wanted = set(keys)
        return {
            (row.agency, row.envelope_sha256): StoredReceipt(
                row.reference, row.receipt, row.envelope_sha256
            )
            for row in rows
            if (row.agency, row.envelope_sha256) in wanted
        }

    async def find_by_jti(self, agency: str, jti: str) -> StoredReceipt | None:
        return await self._find(_BY_JTI, {"agency": agency, "value": jti})

    async def _find(self, query: Select[Any], params: dict[str, str]) -> StoredReceipt | None:
        async with self.db.read() as conn:
            row = (await conn.execute(query, params)).first()
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
        """Store the notification, its receipt and its audit event, committed before this
        returns. `sign_receipt` and `audit` are given the reference once it is allocated."""
        item = _Insert(new, sign_receipt, audit)
        if self._group is None:
            return await self._insert_one(item)
        return await self._group.submit(item)

    async def _insert_one(self, item: _Insert) -> StoredReceipt:
        """One notification in a transaction of its own."""
        new = item.new
        try:
            async with self.db.transaction() as conn:
                # The counter row first, then the key: the lock order of the batches.
                reference = format_reference(item.year, await self._next_number(conn, item.year))
                params = {"b_agencies": [new.agency], "b_kids": [new.signing_kid]}
                if (await conn.execute(_VALID_SIGNING_KEYS, params)).first() is None:
                    raise SigningKeyRevoked()
                receipt = item.sign_receipt(reference)
                result = await conn.execute(
                    notifications.insert()
                    .values(**_row(new, reference, receipt))
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
                await append(conn, item.audit(reference), new.received_at)
        except IntegrityError as exc:
            if _is_jti_conflict(exc):
                raise DuplicateMessage() from None
            raise
        return StoredReceipt(reference, receipt, new.envelope_sha256)

    async def _write_batch(
        self, items: Sequence[_Insert]
    ) -> Sequence[StoredReceipt | BaseException]:
        try:
            return await self._write_together(items)
        except _BatchConflict:
            outcomes: list[StoredReceipt | BaseException] = []
            for item in items:
                try:
                    outcomes.append(await self._insert_one(item))
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes

    async def _write_together(
        self, items: Sequence[_Insert]
    ) -> Sequence[StoredReceipt | BaseException]:
        try:
            return await self.db.run_transaction(lambda conn: self._write_batch_sync(conn, items))
        except IntegrityError as exc:
            raise _BatchConflict() from exc

    def _write_batch_sync(
        self, conn: Connection, items: Sequence[_Insert]
    ) -> list[StoredReceipt | BaseException]:
        """The batch as one synchronous unit of work (one hand-off on SQLite)."""
        outcomes: list[StoredReceipt | BaseException | None] = [None] * len(items)
        # The counter rows first and the audit head last, as in _insert_one: the same lock
        # order everywhere. On SQLite BEGIN IMMEDIATE already excludes other writers.
        years = sorted({item.year for item in items})
        last: dict[int, int] = {}
        for year in years:
            found = conn.execute(_COUNTER_FOR_UPDATE, {"b_year": year}).scalar_one_or_none()
            last[year] = -1 if found is None else int(found)
        stored = self._stored_keys(conn, {(item.new.agency, item.new.jti) for item in items})
        valid = self._valid_signing_keys(conn, {(i.new.agency, i.new.signing_kid) for i in items})
        numbers = {year: max(n, 0) for year, n in last.items()}
        rows: list[dict[str, object]] = []
        kept: list[int] = []
        events: list[tuple[AuditEvent, datetime]] = []
        for index, item in enumerate(items):
            key = (item.new.agency, item.new.jti)
            if (item.new.agency, item.new.signing_kid) not in valid:
                outcomes[index] = SigningKeyRevoked()
                continue
            if key in stored:
                outcomes[index] = DuplicateMessage()
                continue
            reference = format_reference(item.year, numbers[item.year] + 1)
            try:
                receipt = item.sign_receipt(reference)
                event = item.audit(reference)
            except Exception as exc:
                # That caller's failure alone; the number is not used, so none is skipped.
                outcomes[index] = exc
                continue
            numbers[item.year] += 1
            stored.add(key)  # a second copy later in this batch is a duplicate
            rows.append(_row(item.new, reference, receipt))
            events.append((event, item.new.received_at))
            kept.append(index)
            outcomes[index] = StoredReceipt(reference, receipt, item.new.envelope_sha256)
        if rows:
            self._save_counters(conn, last, numbers)
            ids = conn.execute(_INSERT_RETURNING_IDS, rows).scalars()
            children = [
                {
                    "notification_id": notification_id,
                    "position": position,
                    "gender": child.gender,
                    "age_band": child.age_band,
                }
                for notification_id, index in zip(ids, kept, strict=True)
                for position, child in enumerate(items[index].new.children)
            ]
            if children:
                conn.execute(_INSERT_CHILDREN, children)
            append_many(conn, events)
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(items)  # every item has its outcome, in order
        return done

    def _stored_keys(self, conn: Connection, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (agency, jti) of a batch are stored already. Asked after the counter rows
        are locked, so on PostgreSQL no other intake can commit one meanwhile."""
        result = conn.execute(
            _STORED_KEYS,
            {"b_agencies": sorted({a for a, _ in keys}), "b_jtis": sorted({j for _, j in keys})},
        )
        return {(row.agency, row.jti) for row in result} & keys

    def _valid_signing_keys(
        self, conn: Connection, keys: set[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        params = {
            "b_agencies": sorted({agency for agency, _ in keys}),
            "b_kids": sorted({kid for _, kid in keys}),
        }
        return {(row.agency, row.kid) for row in conn.execute(_VALID_SIGNING_KEYS, params)} & keys

    def _save_counters(
        self, conn: Connection, before: dict[int, int], after: dict[int, int]
    ) -> None:
        for year, number in after.items():
            if before[year] < 0:
                if number > 0:
                    # The year's first notification. A row another process made meanwhile is
                    # an IntegrityError, and the batch is then written item by item.
                    conn.execute(reference_counters.insert().values(year=year, last_number=number))
            elif number != before[year]:
                conn.execute(_SET_COUNTER, {"b_year": year, "b_number": number})

    async def status(self, agency: str, reference: str) -> NotificationStatus | None:
        query = select(
            notifications.c.reference,
            notifications.c.status,
            notifications.c.format,
            notifications.c.received_at,
            notifications.c.updated_at,
        ).where(notifications.c.reference == reference, notifications.c.agency == agency)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return NotificationStatus(**row._mapping) if row else None

    async def count(self) -> int:
        async with self.db.read() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(notifications))).scalar_one()
            )
