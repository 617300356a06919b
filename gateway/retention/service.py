"""Which cases are due for purging, and the purge as a sequence of steps over a repository.
Pure domain: no SQL and no HTTP here.

A case's clock starts at its last change of state (`updated_at`): a closed case
(withdrawn, not recommended, not commissioned, CMR completed) keeps its personal data for
`retention_closed_days`; a case that never progressed past screening keeps it for
`retention_not_progressed_days` after it last moved. Zero days means keep for ever."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from gateway import lifecycle
from gateway.audit.chain import AuditEvent
from gateway.clock import Clock
from gateway.keys.datacipher import DataCipher

log = structlog.get_logger("gateway.retention")

CLOSED = frozenset(
    {
        lifecycle.WITHDRAWN,
        lifecycle.NOT_RECOMMENDED,
        lifecycle.NOT_COMMISSIONED,
        lifecycle.CMR_COMPLETED,
    }
)
NOT_PROGRESSED = frozenset({lifecycle.RECEIVED, lifecycle.SCREENING})


@dataclass(frozen=True)
class Case:
    id: int
    reference: str
    agency: str
    jti: str
    status: str
    updated_at: datetime


@dataclass(frozen=True)
class Due:
    case: Case
    reason: str  # "closed" or "not_progressed"
    days: int  # since its last change of state

    def describe(self) -> str:
        what = "closed" if self.reason == "closed" else "not progressed"
        return f"{what} ({self.case.status}) {self.days} days ago"


def due_for_purge(
    cases: list[Case], now: datetime, closed_days: int, not_progressed_days: int
) -> list[Due]:
    due = []
    for case in cases:
        age = (now - case.updated_at).days
        if case.status in CLOSED and closed_days and age >= closed_days:
            due.append(Due(case, "closed", age))
        elif case.status in NOT_PROGRESSED and not_progressed_days and age >= not_progressed_days:
            due.append(Due(case, "not_progressed", age))
    return due


def oldest_cutoff(now: datetime, closed_days: int, not_progressed_days: int) -> datetime | None:
    """Only cases that last moved before this can be due (None: retention is off)."""
    periods = [d for d in (closed_days, not_progressed_days) if d]
    return now - timedelta(days=min(periods)) if periods else None


def purged_document(at: datetime) -> bytes:
    """What a purged case's payload holds instead: a valid document that says so."""
    return json.dumps({"purged": True, "purged_at": at.isoformat()}).encode()


class RetentionStore(Protocol):
    async def candidates(self, before: datetime, statuses: frozenset[str]) -> list[Case]: ...
    async def purge(
        self, due: Due, key_id: str, payload: bytes, at: datetime, audit: AuditEvent
    ) -> bool: ...


class RetentionService:
    def __init__(
        self,
        store: RetentionStore,
        cipher: DataCipher,
        clock: Clock,
        closed_days: int,
        not_progressed_days: int,
    ) -> None:
        self.store = store
        self.cipher = cipher
        self.clock = clock
        self.closed_days = closed_days
        self.not_progressed_days = not_progressed_days

    async def due(self) -> list[Due]:
        now = self.clock.now()
        cutoff = oldest_cutoff(now, self.closed_days, self.not_progressed_days)
        if cutoff is None:
            return []
        cases = await self.store.candidates(cutoff, CLOSED | NOT_PROGRESSED)
        return due_for_purge(cases, now, self.closed_days, self.not_progressed_days)

    async def purge(self, actor: str = "system:retention") -> list[Due]:
        """Purge every case that is due, one transaction each; the ones purged. A case that
        changed state meanwhile, or that another process is purging, is left for next time."""
        done = []
        for item in await self.due():
            now = self.clock.now()
            aad = f"{item.case.agency}\x00{item.case.jti}".encode()
            key_id, payload = self.cipher.encrypt(purged_document(now), aad)
            audit = AuditEvent(
                actor,
                "notification.purged",
                item.case.reference,
                {"reason": item.reason, "status": item.case.status, "days": item.days},
            )
            if await self.store.purge(item, key_id, payload, now, audit):
                done.append(item)
                log.info("notification_purged", reference=item.case.reference, why=item.reason)
        return done
