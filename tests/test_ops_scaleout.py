"""Several `cmr-gateway serve` processes on one database. On PostgreSQL (a private cluster):
three processes, exactly one runs the scheduled jobs, each job's work happens once, each mail
is sent once; kill -9 of the leader and another takes over within seconds. On SQLite: one
process per host runs the jobs (a lock file), and takes over from a killed one."""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select, text, update

from gateway.jobs.scheduler import default_jobs
from gateway.services import open_services
from gateway.settings import Settings
from gateway.storage.tables import audit_events, information_requests, job_runs, outbox
from tests import opsupport
from tests.mailsink import MailSink
from tests.opsupport import GatewayProcess, make_installation, processes, sender_for
from tests.pgcluster import PgCluster
from tests.support import CONTACTS

# The private PostgreSQL (fixtures shared through tests/opsupport.py).
pg_cluster = opsupport.pg_cluster
private_pg = opsupport.private_pg


def _leaders(procs: list[GatewayProcess]) -> list[GatewayProcess]:
    return [p for p in procs if p.log_events("scheduler_leader")]


def _wait(predicate: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _metric(proc: GatewayProcess, ca: Path, name: str) -> float:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
        s.get(f"{proc.web_url}/metrics") as r,
    ):
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def _new_request(settings: Settings, reference: str, agency: str) -> str:
    async with open_services(settings) as s:
        created = await s.requests.create(reference, agency, "secretariat:test", deadline_days=1)
    return created.public_id


async def _outbox_settled(settings: Settings, delivered: int) -> None:
    for _ in range(100):
        async with open_services(settings) as s, s.db.transaction() as conn:
            states = (await conn.execute(select(outbox.c.status))).scalars().all()
        if states.count("delivered") >= delivered:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"outbox not settled: {states}")


@pytest.mark.slow
async def test_three_processes_on_postgres(tmp_path: Path, private_pg: PgCluster) -> None:
    url = private_pg.create_database()
    lines = [f'database_url = "{url}"', 'secretariat_email = "secretariat@sbni.example"']
    for code, addr in CONTACTS.items():
        lines += [f"[agencies.{code}]", f'contact = "{addr}"']
    settings = make_installation(tmp_path / "var", lines)
    sink = MailSink(settings.server_cert, settings.server_key)
    env = {
        f"CMR_GATEWAY_{k.upper()}": str(v)
        for k, v in sink.settings(tmp_path / "smtp-password", settings.client_ca).items()
    }

    # Work for the jobs, made before any process runs: three requests whose first reminder is
    # due, and one past its deadline (the chaser expires it; the summary lists it).
    agency = await sender_for(settings)
    references = []
    async with open_services(settings) as s:
        for i in range(5):
            _jti, raw = agency.seal()
            references.append((await s.intake.submit("PSNI", raw, f"test-{i}")).reference)
    for ref, code in zip(references[:4], ["EA", "BHSCT", "EA", "BHSCT"], strict=True):
        await _new_request(settings, ref, code)
    async with open_services(settings) as s, s.db.transaction() as conn:
        last = (await conn.execute(select(func.max(information_requests.c.id)))).scalar_one()
        await conn.execute(
            update(information_requests)
            .where(information_requests.c.id == last)
            .values(deadline_at=datetime.now(UTC) - timedelta(hours=1))
        )

    procs = [GatewayProcess(settings.data_dir, f"gw{i}", env) for i in range(3)]
    sink.start()
    try:
        with processes(*procs):
            for p in procs:
                await asyncio.to_thread(p.start)
            await asyncio.to_thread(_wait, lambda: _leaders(procs), 20, "a leader")
            # 4 requests + 3 reminders + 1 overdue summary.
            await asyncio.to_thread(sink.wait_for, 8, 30)
            await asyncio.sleep(3)  # time for any duplicate to show
            leaders = _leaders(procs)
            assert len(leaders) == 1, [p.name for p in leaders]
            leader = leaders[0]
            assert await _metric(leader, settings.client_ca, "cmr_scheduler_leader") == 1
            for p in procs:
                if p is not leader:
                    assert await _metric(p, settings.client_ca, "cmr_scheduler_leader") == 0

            async with open_services(settings) as s, s.db.transaction() as conn:
                job_ids = (await conn.execute(text("SELECT id FROM apscheduler_jobs"))).scalars()
                assert sorted(job_ids) == sorted(j.id for j in default_jobs())
                summaries = (
                    await conn.execute(
                        select(func.count())
                        .select_from(job_runs)
                        .where(job_runs.c.job == "requests.overdue_summary")
                    )
                ).scalar_one()
                assert summaries == 1
                actions = collections.Counter(
                    (await conn.execute(select(audit_events.c.action))).scalars()
                )
                assert actions["request.reminded"] == 3
                assert actions["request.expired"] == 1

            # The leader dies; another takes over and runs the jobs: a new request's reminder
            # is sent by the new leader's catch-up run.
            await _new_request(settings, references[4], "EA")
            await asyncio.to_thread(sink.wait_for, 9, 30)
            # Not between the SMTP server's OK and the commit of `delivered` (mail sent then is
            # sent again when its lease runs out: at least once, sender.py).
            await _outbox_settled(settings, 9)
            leader.kill9()
            killed_at = time.monotonic()
            survivors = [p for p in procs if p is not leader]
            await asyncio.to_thread(_wait, lambda: _leaders(survivors), 15, "a new leader")
            takeover = time.monotonic() - killed_at
            assert takeover < 10, f"takeover took {takeover:.1f}s"
            await asyncio.to_thread(sink.wait_for, 10, 30)
            await asyncio.sleep(3)
            new = _leaders(survivors)
            assert len(new) == 1
            assert await _metric(new[0], settings.client_ca, "cmr_scheduler_leader") == 1
            for p in survivors:
                p.stop()
    finally:
        sink.stop()

    with sink.lock:
        messages = list(sink.messages)
    seen = collections.Counter((m["To"], m["Subject"]) for m in messages)
    assert len(messages) == 10, seen
    assert all(n == 1 for n in seen.values()), seen
    async with open_services(settings) as s, s.db.transaction() as conn:
        states = (await conn.execute(select(outbox.c.status, outbox.c.attempts))).all()
    assert [tuple(r) for r in states] == [("delivered", 1)] * 10


async def test_sqlite_one_scheduler_per_host(tmp_path: Path) -> None:
    settings = make_installation(tmp_path / "var")
    procs = [GatewayProcess(settings.data_dir, f"gw{i}") for i in range(2)]
    with processes(*procs):
        for p in procs:
            await asyncio.to_thread(p.start)
        await asyncio.to_thread(_wait, lambda: _leaders(procs), 20, "a leader")
        await asyncio.sleep(2.5)  # a second check round of the other process
        leaders = _leaders(procs)
        assert len(leaders) == 1
        leaders[0].kill9()
        other = [p for p in procs if p is not leaders[0]]
        took = await asyncio.to_thread(_wait, lambda: _leaders(other), 15, "the other to lead")
        assert took < 10
