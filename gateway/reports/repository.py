"""Storage for the report: the import of history files, in one transaction with an audit event
`history.imported` per notification, and the records the figures are computed from.

One event per notification, with the reference as its subject, so that the audit trail of any
record says where it came from, like that of a notification received through the gateway.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.errors import UsageError
from gateway.reports.figures import CaseRecord, Child
from gateway.reports.history import (
    HistoryChild,
    HistoryInvalid,
    HistoryNotification,
    ParsedHistory,
    RowProblem,
    SourcedNotification,
    first_difference,
)
from gateway.storage.database import Database
from gateway.storage.tables import (
    case_outcomes,
    history_children,
    history_notifications,
    notification_children,
    notifications,
)

LONDON = ZoneInfo("Europe/London")
IMPORTED = "history.imported"
# Well under SQLite's limit on bound parameters, and a round trip per chunk on PostgreSQL.
CHUNK = 500

Progress = Callable[[int, int], None]
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class ImportResult:
    imported: int
    children: int
    # Already imported with the same values (from this file before, or from another).
    unchanged: int


class ReportsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def import_history(
        self,
        parsed: ParsedHistory,
        source_sha256: str,
        actor: str,
        at: datetime,
        progress: Progress | None = None,
    ) -> ImportResult:
        """All of the file or nothing. A reference already stored with the same values is
        skipped; with other values, or taken by a live notification, it is a bad row."""
        if parsed.problems:
            raise HistoryInvalid(parsed.problems)
        report = progress or (lambda _done, _total: None)
        try:
            async with self.db.transaction() as conn:
                new, unchanged = await self._new(conn, parsed.notifications)
                total, done = 2 * len(new), 0
                report(done, total)
                for chunk in _chunks(new):
                    await self._insert(conn, chunk, source_sha256, at)
                    done += len(chunk)
                    report(done, total)
                # The audit events last: the chain's head is the last lock a transaction takes.
                for item in new:
                    n = item.notification
                    details = {
                        "source_sha256": source_sha256,
                        "agency": n.agency,
                        "children": len(n.children),
                        "line": item.first_line,
                    }
                    await append(conn, AuditEvent(actor, IMPORTED, n.reference, details), at)
                    done += 1
                    report(done, total)
        except IntegrityError:
            # Only a concurrent import of the same references gets here; its rows won.
            raise UsageError(
                "another import stored some of these references at the same time: run it again"
            ) from None
        return ImportResult(
            len(new), sum(len(item.notification.children) for item in new), unchanged
        )

    async def _new(
        self, conn: AsyncConnection, items: Sequence[SourcedNotification]
    ) -> tuple[list[SourcedNotification], int]:
        references = [item.notification.reference for item in items]
        stored = await self._stored(conn, references)
        live = await self._live_references(conn, references)
        problems: list[RowProblem] = []
        new: list[SourcedNotification] = []
        unchanged = 0
        for item in items:
            reference = item.notification.reference
            if reference in live:
                problems.append(
                    RowProblem(
                        item.first_line,
                        "reference",
                        "is the reference of a notification received through the gateway",
                    )
                )
            elif reference in stored:
                problem = first_difference(item, stored[reference])
                if problem is None:
                    unchanged += 1
                else:
                    problems.append(problem)
            else:
                new.append(item)
        if problems:
            raise HistoryInvalid(problems)
        return new, unchanged

    async def _stored(
        self, conn: AsyncConnection, references: Sequence[str]
    ) -> dict[str, HistoryNotification]:
        rows: list[Any] = []
        children: dict[str, list[HistoryChild]] = defaultdict(list)
        for chunk in _chunks(references):
            rows.extend(
                (
                    await conn.execute(
                        select(history_notifications).where(
                            history_notifications.c.reference.in_(chunk)
                        )
                    )
                ).all()
            )
            for child in await conn.execute(
                select(history_children)
                .where(history_children.c.reference.in_(chunk))
                .order_by(history_children.c.reference, history_children.c.position)
            ):
                children[child.reference].append(HistoryChild(child.gender, child.age_band))
        return {
            row.reference: HistoryNotification(
                reference=row.reference,
                agency=row.agency,
                received_on=row.received_on,
                incident_date=row.incident_date,
                board_considered_on=row.board_considered_on,
                board_decision=row.board_decision,
                commissioned_on=row.commissioned_on,
                cmr_completed_on=row.cmr_completed_on,
                recommendations=row.recommendations,
                children=tuple(children[row.reference]),
            )
            for row in rows
        }

    async def _live_references(self, conn: AsyncConnection, references: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(references):
            result = await conn.execute(
                select(notifications.c.reference).where(notifications.c.reference.in_(chunk))
            )
            found.update(result.scalars())
        return found

    async def _insert(
        self,
        conn: AsyncConnection,
        items: Iterable[SourcedNotification],
        source_sha256: str,
        at: datetime,
    ) -> None:
        parents: list[dict[str, Any]] = []
        kids: list[dict[str, Any]] = []
        for item in items:
            n = item.notification
            parents.append(
                {
                    "reference": n.reference,
                    "agency": n.agency,
                    "received_on": n.received_on,
                    "incident_date": n.incident_date,
                    "board_considered_on": n.board_considered_on,
                    "board_decision": n.board_decision,
                    "commissioned_on": n.commissioned_on,
                    "cmr_completed_on": n.cmr_completed_on,
                    "recommendations": n.recommendations,
                    "source_sha256": source_sha256,
                    "imported_at": at,
                }
            )
            kids.extend(
                {
                    "reference": n.reference,
                    "position": i,
                    "gender": c.gender,
                    "age_band": c.age_band,
                }
                for i, c in enumerate(n.children)
            )
        if parents:
            await conn.execute(history_notifications.insert(), parents)
            await conn.execute(history_children.insert(), kids)

    async def records(self) -> list[CaseRecord]:
        """Every notification, imported and live, as the figures need it."""
        async with self.db.transaction() as conn:
            return [*await self._history_records(conn), *await self._live_records(conn)]

    async def _history_records(self, conn: AsyncConnection) -> list[CaseRecord]:
        children: dict[str, list[Child]] = defaultdict(list)
        for row in await conn.execute(
            select(history_children).order_by(
                history_children.c.reference, history_children.c.position
            )
        ):
            children[row.reference].append(Child(row.gender, row.age_band))
        return [
            CaseRecord(
                reference=row.reference,
                received_on=row.received_on,
                children=tuple(children[row.reference]),
                board_considered_on=row.board_considered_on,
                board_decision=row.board_decision,
                commissioned_on=row.commissioned_on,
                cmr_completed_on=row.cmr_completed_on,
                recommendations=row.recommendations,
            )
            for row in await conn.execute(
                select(history_notifications).order_by(history_notifications.c.reference)
            )
        ]

    async def _live_records(self, conn: AsyncConnection) -> list[CaseRecord]:
        children: dict[int, list[Child]] = defaultdict(list)
        for row in await conn.execute(
            select(notification_children).order_by(
                notification_children.c.notification_id, notification_children.c.position
            )
        ):
            children[row.notification_id].append(Child(row.gender, row.age_band))
        query = (
            select(
                notifications.c.id,
                notifications.c.reference,
                notifications.c.received_at,
                case_outcomes.c.board_considered_on,
                case_outcomes.c.board_decision,
                case_outcomes.c.commissioned_on,
                case_outcomes.c.cmr_completed_on,
                case_outcomes.c.recommendations,
            )
            .select_from(
                notifications.outerjoin(
                    case_outcomes, case_outcomes.c.notification_id == notifications.c.id
                )
            )
            .order_by(notifications.c.id)
        )
        return [
            CaseRecord(
                reference=row.reference,
                # The day of receipt is the day in Northern Ireland, as on the receipt.
                received_on=row.received_at.astimezone(LONDON).date(),
                children=tuple(children[row.id]),
                board_considered_on=row.board_considered_on,
                board_decision=row.board_decision,
                commissioned_on=row.commissioned_on,
                cmr_completed_on=row.cmr_completed_on,
                recommendations=row.recommendations,
            )
            for row in await conn.execute(query)
        ]
