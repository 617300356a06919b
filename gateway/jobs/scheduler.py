"""The scheduler. APScheduler 3 (AsyncIOScheduler) with a persistent SQLAlchemy job store on
the sync URL of the gateway's database, Europe/London, coalesce, one instance at a time and a
misfire grace. Only the leader runs it: the holder of a PostgreSQL advisory lock on a
dedicated connection, or on SQLite of a lock file (SQLite is for one host).

Jobs are stored as "module:function" references (APScheduler pickles them). The functions
take a JobContext first: the executor below passes it in, so no job needs a global to find
the services. Each job is a "tick" that decides from the injected clock what is due and is
idempotent, so a tick missed while the gateway was down does its work once at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import psycopg
import structlog
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from gateway.services import Services
from gateway.storage.database import sync_url

log = structlog.get_logger("gateway.jobs")
LONDON = ZoneInfo("Europe/London")
ADVISORY_KEY = 0x434D5247  # "CMRG"
# How long a stopping scheduler waits for its running jobs.
DRAIN_SECONDS = 30


@dataclass(frozen=True)
class JobContext:
    services: Services


@dataclass(frozen=True)
class JobSpec:
    id: str
    func: str  # "module:function", the function taking (JobContext)
    trigger: BaseTrigger


def default_jobs() -> list[JobSpec]:
    return [
        JobSpec("requests.chase", "gateway.requests.jobs:chase", IntervalTrigger(minutes=15)),
        JobSpec(
            "requests.overdue_summary",
            "gateway.requests.jobs:overdue_summary",
            CronTrigger(hour=8, minute=0, day_of_week="mon-fri", timezone=LONDON),
        ),
        JobSpec(
            "retention.purge",
            "gateway.retention.jobs:purge",
            CronTrigger(hour=2, minute=30, timezone=LONDON),
        ),
        JobSpec("meetings.tick", "gateway.meetings.jobs:tick", IntervalTrigger(minutes=15)),
    ]


# Stored in place of the context among a job's arguments, and swapped for it when it runs.
CONTEXT = "$context"


class _Bound:
    """A job with its context argument filled in, as APScheduler runs it."""

    def __init__(self, job: Any, ctx: JobContext) -> None:
        self._job = job
        self.args = tuple(ctx if a == CONTEXT else a for a in job.args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


class ContextExecutor(AsyncIOExecutor):  # type: ignore[misc]
    def __init__(self, ctx: JobContext) -> None:
        super().__init__()
        self.ctx = ctx

    def _do_submit_job(self, job: Any, run_times: Any) -> None:
        super()._do_submit_job(_Bound(job, self.ctx), run_times)

    async def drain(self) -> None:
        """Let running jobs end. APScheduler's shutdown only cancels them without waiting, and
        a job cancelled mid-query could outlive the database it was using."""
        pending = [f for f in getattr(self, "_pending_futures", ()) if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=DRAIN_SECONDS)


class Leadership(Protocol):
    async def acquire(self) -> bool: ...
    async def still_held(self) -> bool: ...
    async def release(self) -> None: ...


class FileLeadership:
    """SQLite: one process on this host holds an exclusive lock on a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


class PostgresLeadership:
    """PostgreSQL: a session advisory lock on a dedicated connection. If this process dies
    its connection closes and the lock is free for another at once."""

    def __init__(self, url: str) -> None:
        self.url = sync_url(url).replace("postgresql+psycopg://", "postgresql://", 1)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def acquire(self) -> bool:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5
            )
        except psycopg.Error:
            return False
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,))
        row = await cur.fetchone()
        if not row or not row[0]:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            await self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            await self.release()
            return False

    async def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None


def leadership_for(services: Services) -> Leadership:
    if services.db.dialect == "postgresql":
        return PostgresLeadership(services.db.url)
    return FileLeadership(services.settings.data_dir / "scheduler.lock")


class Scheduler:
    def __init__(
        self,
        services: Services,
        jobs: list[JobSpec] | None = None,
        leadership: Leadership | None = None,
        check_seconds: float = 2.0,
    ) -> None:
        self.services = services
        self.jobs = jobs if jobs is not None else default_jobs()
        self.leadership = leadership or leadership_for(services)
        self.check_seconds = check_seconds
        self._aps: AsyncIOScheduler | None = None
        self._executor: ContextExecutor | None = None
        self.is_leader = False
        self.on_leader: Callable[[bool], Awaitable[None] | None] | None = None

    def _start_aps(self) -> None:
        store = SQLAlchemyJobStore(url=sync_url(self.services.db.url), tablename="apscheduler_jobs")
        self._executor = ContextExecutor(JobContext(self.services))
        aps = AsyncIOScheduler(
            jobstores={"default": store},
            executors={"default": self._executor},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
            timezone=LONDON,
        )
        aps.start()
        for spec in self.jobs:
            aps.add_job(spec.func, spec.trigger, args=[CONTEXT], id=spec.id, replace_existing=True)
            # Catch up at once on whatever became due while no leader ran.
            # APScheduler keeps time by the system clock; the job asks the injected clock
            # what is due, so a test clock set elsewhere in time must not delay the catch-up.
            aps.modify_job(spec.id, next_run_time=datetime.now(UTC))
        self._aps = aps

    def _stop_aps(self) -> None:
        if self._aps is not None:
            with contextlib.suppress(Exception):
                self._aps.shutdown(wait=False)
            self._aps = None

    async def _set_leader(self, value: bool) -> None:
        self.is_leader = value
        if self.on_leader is not None:
            result = self.on_leader(value)
            if result is not None:
                await result

    async def _step(self) -> None:
        if not self.is_leader:
            if await self.leadership.acquire():
                log.info("scheduler_leader", pid=os.getpid())
                self._start_aps()
                await self._set_leader(True)
        elif not await self.leadership.still_held():
            log.warning("scheduler_leadership_lost")
            await self._set_leader(False)
            self._stop_aps()

    async def run(self) -> None:
        """Until cancelled: become leader when possible, run the jobs while leader."""
        try:
            while True:
                try:
                    await self._step()
                except Exception:
                    log.exception("scheduler_step_failed")
                    self._stop_aps()
                    await self.leadership.release()
                    await self._set_leader(False)
                await asyncio.sleep(self.check_seconds)
        finally:
            if self._aps is not None and self._executor is not None:
                self._aps.pause()
                await self._executor.drain()
            self._stop_aps()
            await self.leadership.release()
            with contextlib.suppress(Exception):
                await self._set_leader(False)
