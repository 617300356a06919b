"""Failure behaviour: the database away (503 `unavailable` with Retry-After, nothing
half-stored, recovery without a restart), the mail server away for a whole chaser run (mail
waits in the outbox, then goes once), the audit log unwritable (intake refuses: fail
closed), and the per-agency rate limit on the API."""

from __future__ import annotations

import asyncio
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select, text

from gateway.clock import FrozenClock
from gateway.settings import Settings
from gateway.storage.tables import (
    audit_events,
    notification_children,
    notifications,
    outbox,
    reference_counters,
)
from tests import opsupport
from tests.mailsink import MailSink
from tests.opsupport import (
    check_stored_once,
    make_installation,
    sender_for,
)
from tests.pgcluster import PgCluster
from tests.support import RunningGateway, running_gateway

# The private PostgreSQL (fixtures shared through tests/opsupport.py).
pg_cluster = opsupport.pg_cluster
private_pg = opsupport.private_pg


async def _counts(gw: RunningGateway) -> tuple[int, int, int, int]:
    async with gw.services() as s, s.db.transaction() as conn:
        values = []
        for table in (notifications, notification_children, audit_events, reference_counters):
            values.append(
                int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
            )
    return values[0], values[1], values[2], values[3]


# -- the audit log unwritable ---------------------------------------------------------------


async def _refuse_audit_writes(gw: RunningGateway) -> None:
    async with gw.services() as s, s.db.transaction() as conn:
        if s.db.dialect == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER audit_refuse BEFORE INSERT ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit log unwritable'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'audit log unwritable'; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER audit_refuse BEFORE INSERT ON audit_events "
                    "FOR EACH ROW EXECUTE FUNCTION audit_refuse()"
                )
            )


async def _allow_audit_writes(gw: RunningGateway) -> None:
    async with gw.services() as s, s.db.transaction() as conn:
        await conn.execute(
            text(
                "DROP TRIGGER audit_refuse"
                + ("" if s.db.dialect == "sqlite" else " ON audit_events")
            )
        )


async def test_audit_unwritable_intake_fails_closed(
    gateway: RunningGateway, log_stream: io.StringIO
) -> None:
    psni = await gateway.agency("PSNI")
    before = await _counts(gateway)
    await _refuse_audit_writes(gateway)
    envelope = psni.seal()
    r = await psni.post(envelope)
    assert r.status == 503, r.body
    assert r.content_type == "application/problem+json"
    body = r.json()
    assert body["code"] == "unavailable" and "receipt" not in body
    assert int(r.headers["Retry-After"]) >= 1
    # Nothing of it was stored, not even its reference number.
    assert await _counts(gateway) == before
    assert '"audit_unwritable"' in log_stream.getvalue()
    # An envelope that fails to open is refused too, not let through unaudited.
    r = await psni.post(b"not.an.envelope.at.all")
    assert r.status == 503

    await _allow_audit_writes(gateway)
    r = await psni.post(envelope)
    assert r.status == 202, r.body
    assert r.json()["reference"].endswith("-0001")
    async with gateway.services() as s:
        assert (await s.audit.verify()).ok


# -- rate limit -----------------------------------------------------------------------------


async def test_rate_limit_per_agency(
    sqlite_installation: Settings, clock: FrozenClock, log_stream: io.StringIO
) -> None:
    settings = sqlite_installation.with_overrides(api_rate_per_minute=3)
    async with running_gateway(settings, clock) as gw:
        psni = await gw.agency("PSNI")
        ea = await gw.agency("EA")
        for _ in range(3):
            assert (await psni.get("/v1/notifications/CMRN-2020-0001")).status == 404
        r = await psni.get("/v1/notifications/CMRN-2020-0001")
        assert r.status == 429
        assert r.content_type == "application/problem+json"
        assert r.json()["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 20
        # Submissions count against the same bucket, and nothing is stored.
        r = await psni.post(psni.seal())
        assert r.status == 429
        async with gw.services() as s:
            assert await s.notifications.count() == 0
        # Another agency has a bucket of its own; the public paths have none.
        r = await ea.post(ea.seal())
        assert r.status == 202, r.body
        async with gw.web_session() as web, web.get("/healthz") as h:
            assert h.status == 200


# -- SMTP away for a whole chaser run ---------------------------------------------------------


async def test_smtp_down_for_a_chaser_run_then_every_mail_once(
    mail_settings: Settings, sink: MailSink, clock: FrozenClock
) -> None:
    async with running_gateway(mail_settings, clock) as gw:
        psni = await gw.agency("PSNI")
        references = []
        for _ in range(3):
            r = await psni.post(psni.seal())
            assert r.status == 202
            references.append(r.json()["reference"])
        async with gw.services() as s:
            # Three working days to go: the first reminder (3) is due at the first chase.
            for ref, agency in zip(references, ["EA", "BHSCT", "EA"], strict=True):
                await s.requests.create(ref, agency, "secretariat:test", deadline_days=3)
        await asyncio.to_thread(sink.wait_for, 3)

        sink.stop()
        async with gw.services() as s:
            first = await s.requests.chase()
            assert first.reminders == 3
            # The sender tries, fails, and the mail waits (backoff on the gateway's clock).
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                waiting = [e for e in await s.outbox.entries() if e.status != "delivered"]
                if len(waiting) == 3 and all(e.attempts >= 1 for e in waiting):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the sender never tried while SMTP was away")
            assert all(e.status == "pending" and e.last_error for e in waiting)
            # A second chase while the mail waits adds nothing.
            assert (await s.requests.chase()).reminders == 0

        sink.start()
        clock.advance(timedelta(minutes=2))
        messages = await asyncio.to_thread(sink.wait_for, 6)
        await asyncio.sleep(2.5)  # two more polls: anything sent twice would show now
        with sink.lock:
            messages = list(sink.messages)
        assert len(messages) == 6
        reminders = [m for m in messages if "eminder" in str(m["Subject"])]
        assert len(reminders) == 3
        assert len({m["Message-ID"] for m in messages}) == 6
        async with gw.services() as s, s.db.transaction() as conn:
            states = (await conn.execute(select(outbox.c.status, outbox.c.attempts))).all()
        assert sorted(st for st, _ in states) == ["delivered"] * 6
        assert sorted(a for _, a in states) == [1, 1, 1, 2, 2, 2]


# -- PostgreSQL stopped and started during a load -----------------------------------------------


@pytest.mark.slow
async def test_postgres_stopped_and_started_during_load(
    tmp_path: Path, private_pg: PgCluster, log_stream: io.StringIO
) -> None:
    url = private_pg.create_database()
    settings = make_installation(tmp_path / "var", [f'database_url = "{url}"'])
    agency = await sender_for(settings)
    total = 160
    envelopes = dict(agency.seal() for _ in range(total))
    order = list(envelopes)
    receipts: dict[str, tuple[str, str]] = {}
    answers: list[tuple[str, int, str | None, str | None]] = []  # phase, status, code, retry
    phase = "before"
    clock = FrozenClock(datetime.now(UTC))

    async with running_gateway(settings, clock) as gw:

        async def post(session: aiohttp.ClientSession, jti: str) -> None:
            try:
                async with session.post(
                    "/v1/notifications",
                    data=envelopes[jti],
                    headers={"Content-Type": "application/jose"},
                ) as r:
                    body = await r.json(content_type=None)
                    answers.append(
                        (phase, r.status, body.get("code"), r.headers.get("Retry-After"))
                    )
                    if r.status in (200, 202):
                        receipts[jti] = (body["reference"], body["receipt"])
            except (aiohttp.ClientError, TimeoutError) as exc:
                answers.append((phase, 0, type(exc).__name__, None))

        async def load(jtis: list[str], pause: float) -> None:
            async with agency.session(gw.api_url, timeout=30) as session:
                for i in range(0, len(jtis), 4):
                    await asyncio.gather(*(post(session, j) for j in jtis[i : i + 4]))
                    await asyncio.sleep(pause)

        await load(order[:40], 0)
        assert len(receipts) == 40

        # Stop the database while submissions are in flight.
        phase = "down"
        loader = asyncio.create_task(load(order[40:120], 0.05))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(private_pg.stop, "fast")
        async with gw.web_session() as web, web.get("/readyz") as ready:
            assert ready.status == 503
            assert (await ready.json())["checks"]["database"] == "unreachable"
        await asyncio.sleep(2)
        await asyncio.to_thread(private_pg.start)
        phase = "after"
        await asyncio.wait_for(loader, timeout=120)
        await load(order[120:], 0)

        # The agency's retries of everything without a receipt (bounded).
        for _ in range(10):
            missing = [j for j in order if j not in receipts]
            if not missing:
                break
            await load(missing, 0)
            await asyncio.sleep(0.5)
        async with gw.web_session() as web, web.get("/readyz") as ready:
            assert ready.status == 200

    down = [a for a in answers if a[0] == "down"]
    assert any(status == 503 for _, status, _, _ in down), down
    unhandled = [line for line in log_stream.getvalue().splitlines() if "unhandled_error" in line]
    for _, status, code, retry in answers:
        if status >= 500:
            assert (status, code) == (503, "unavailable"), [
                (e.get("exc_type"), e.get("exc_value"))
                for e in (json.loads(u)["exception"][0] for u in unhandled[:3])
            ]
            assert retry is not None and int(retry) >= 1
    assert [a for a in answers if a[0] == "after" and a[1] == 202], "no recovery after restart"
    assert not [a for a in answers if a[1] not in (200, 202, 503)], answers
    await check_stored_once(settings, receipts, total)
