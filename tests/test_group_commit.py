"""Group commit keeps every guarantee of intake, on SQLite and PostgreSQL: a caller is answered
only after the COMMIT of its batch, each notification gets its own consecutive number, receipt
and audit event, a jti already stored (or twice in one batch) is that caller's DuplicateMessage
alone, one caller's failure is nobody else's, and a gateway killed mid-batch loses nothing it
gave a receipt for and treats every resend exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from sqlalchemy import select

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import AuditRepository
from gateway.bench.harness import GatewayProcess, Installation
from gateway.bench.loadgen import client_context, seal_envelopes
from gateway.cli import issue_credentials
from gateway.intake.repository import (
    DuplicateMessage,
    IntakeRepository,
    NewNotification,
    SigningKeyRevoked,
)
from gateway.intake.validation import ChildFacts
from gateway.services import open_services
from gateway.settings import Settings
from gateway.storage.database import Database
from gateway.storage.tables import (
    agency_keys,
    notification_children,
    notifications,
    reference_counters,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KID = "test-key"


def new(jti: str | None = None, agency: str = "PSNI", kid: str = KID) -> NewNotification:
    return NewNotification(
        agency=agency,
        jti=jti or f"{agency}-{uuid.uuid4().hex}",
        envelope_sha256=uuid.uuid4().hex * 2,
        format="cmr-notification/1",
        route="harm",
        incident_type="death",
        incident_date=date(2026, 5, 30),
        received_at=NOW,
        key_id="dk-test",
        payload=b"\x00" * 64,
        children=(ChildFacts("female", "1-5 years"), ChildFacts("male", "6-11 years")),
        signing_kid=kid,
    )


def receipt_for(n: NewNotification) -> Callable[[str], str]:
    return lambda reference: f"receipt:{n.jti}:{reference}"


def audit_for(n: NewNotification) -> Callable[[str], AuditEvent]:
    return lambda reference: AuditEvent(
        f"agency:{n.agency}", "notification.received", reference, {"jti": n.jti}
    )


@pytest.fixture(params=["on", "off"])
def group_commit(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "on")


@pytest.fixture
async def db(installation: Settings) -> AsyncIterator[Database]:
    database = Database(installation.effective_database_url)
    # The agencies' signing keys, written directly (no audit events) so that the counts of
    # events below are the notifications' alone.
    async with database.transaction() as conn:
        await conn.execute(
            agency_keys.insert(),
            [
                {"agency": agency, "kid": kid, "alg": "Ed25519", "jwk": "{}", "added_at": NOW}
                for agency in ("PSNI", "EA")
                for kid in (KID, "revoked-key")
            ],
        )
        await conn.execute(
            agency_keys.update().where(agency_keys.c.kid == "revoked-key").values(revoked_at=NOW)
        )
    yield database
    await database.dispose()


def numbers(references: list[str]) -> list[int]:
    return sorted(int(r.rsplit("-", 1)[1]) for r in references)


async def test_concurrent_inserts_each_get_number_receipt_and_audit_event(
    db: Database, group_commit: bool
) -> None:
    repo = IntakeRepository(db, group_commit)
    items = [new() for _ in range(60)]
    stored = await asyncio.gather(*(repo.insert(n, receipt_for(n), audit_for(n)) for n in items))
    assert numbers([s.reference for s in stored]) == list(range(1, 61))
    for n, s in zip(items, stored, strict=True):
        assert s.receipt == f"receipt:{n.jti}:{s.reference}"
        assert s.envelope_sha256 == n.envelope_sha256
    if group_commit:
        assert repo.group_commit is not None
        assert repo.group_commit.batches < len(items)  # they really were batched
    audit = AuditRepository(db)
    assert (await audit.verify()).ok
    events = await audit.events()
    assert sorted(e.subject for e in events if e.subject) == sorted(s.reference for s in stored)
    async with db.read() as conn:
        children = (await conn.execute(select(notification_children))).all()
        rows = (await conn.execute(select(notifications.c.id, notifications.c.jti))).all()
    assert len(children) == 2 * len(items)
    assert {c.notification_id for c in children} == {r.id for r in rows}


async def test_answer_comes_after_the_commit(installation: Settings, db: Database) -> None:
    """Whoever is answered finds the row committed, seen from another connection pool."""
    repo = IntakeRepository(db, True)
    observer = Database(installation.effective_database_url)
    seen: list[bool] = []

    async def one() -> None:
        n = new()
        stored = await repo.insert(n, receipt_for(n), audit_for(n))
        async with observer.read() as conn:
            row = (
                await conn.execute(
                    select(notifications.c.receipt).where(
                        notifications.c.reference == stored.reference
                    )
                )
            ).first()
        seen.append(row is not None and row.receipt == stored.receipt)

    try:
        await asyncio.gather(*(one() for _ in range(40)))
    finally:
        await observer.dispose()
    assert seen == [True] * 40


async def test_duplicates_fail_alone(db: Database, group_commit: bool) -> None:
    repo = IntakeRepository(db, group_commit)
    first = new("PSNI-already")
    await repo.insert(first, receipt_for(first), audit_for(first))
    again = new("PSNI-already")
    twice = [new("PSNI-twice-in-one-batch"), new("PSNI-twice-in-one-batch")]
    other_agency = new("PSNI-already", agency="EA")  # jti is unique per agency only
    fresh = [new() for _ in range(5)]
    batch = [again, *twice, other_agency, *fresh]
    outcomes = await asyncio.gather(
        *(repo.insert(n, receipt_for(n), audit_for(n)) for n in batch), return_exceptions=True
    )
    assert isinstance(outcomes[0], DuplicateMessage)
    assert sum(isinstance(o, DuplicateMessage) for o in outcomes[1:3]) == 1
    good = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(good) == len(batch) - 2
    assert numbers([g.reference for g in good]) == list(range(2, 2 + len(good)))
    assert (await AuditRepository(db).verify()).events == 1 + len(good)


async def test_a_key_revoked_or_unknown_at_the_commit_fails_alone(
    db: Database, group_commit: bool
) -> None:
    """The key that verified a notification is confirmed in the storing transaction: one whose
    key was revoked (or never registered) meanwhile is not stored, and the others are, with
    no number skipped."""
    repo = IntakeRepository(db, group_commit)
    items = [new() for _ in range(6)]
    items[1] = new(kid="revoked-key")
    items[4] = new(agency="EA", kid="no-such-key")
    outcomes = await asyncio.gather(
        *(repo.insert(n, receipt_for(n), audit_for(n)) for n in items), return_exceptions=True
    )
    assert isinstance(outcomes[1], SigningKeyRevoked)
    assert isinstance(outcomes[4], SigningKeyRevoked)
    good = [o for o in outcomes if not isinstance(o, BaseException)]
    assert numbers([g.reference for g in good]) == [1, 2, 3, 4]
    async with db.read() as conn:
        stored = (await conn.execute(select(notifications.c.jti))).scalars().all()
    assert sorted(stored) == sorted(items[i].jti for i in (0, 2, 3, 5))
    assert (await AuditRepository(db).verify()).events == 4


async def test_one_callers_failure_is_nobody_elses(db: Database, group_commit: bool) -> None:
    repo = IntakeRepository(db, group_commit)
    items = [new() for _ in range(10)]

    def failing(reference: str) -> str:
        raise RuntimeError("this caller's receipt cannot be signed")

    calls = [
        repo.insert(n, failing if i == 3 else receipt_for(n), audit_for(n))
        for i, n in enumerate(items)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[3], RuntimeError)
    good = [o for o in outcomes if not isinstance(o, BaseException)]
    # The failed caller's number went to the next one: none is skipped.
    assert numbers([g.reference for g in good]) == list(range(1, 10))


async def test_a_failed_batch_stores_nothing_and_answers_everyone(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.intake.repository as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the last statement of the batch failed")

    monkeypatch.setattr(module, "append_many", broken)
    repo = IntakeRepository(db, True)
    items = [new() for _ in range(8)]
    outcomes = await asyncio.gather(
        *(repo.insert(n, receipt_for(n), audit_for(n)) for n in items), return_exceptions=True
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    async with db.read() as conn:
        assert (await conn.execute(select(notifications))).first() is None
        assert (await conn.execute(select(reference_counters))).first() is None
    assert (await AuditRepository(db).verify()).ok


async def test_conflict_after_the_check_falls_back_to_one_by_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when another process stores the same jti between the batch's check and its insert
    (PostgreSQL): the database's constraint still decides, item by item."""
    repo = IntakeRepository(db, True)
    first = new("PSNI-raced")
    await repo.insert(first, receipt_for(first), audit_for(first))

    def sees_nothing(conn: Any, keys: Any) -> set[tuple[str, str]]:
        return set()  # as if the other process's row were not committed yet

    monkeypatch.setattr(repo, "_stored_keys", sees_nothing)
    items = [new("PSNI-raced"), *(new() for _ in range(4))]
    outcomes = await asyncio.gather(
        *(repo.insert(n, receipt_for(n), audit_for(n)) for n in items), return_exceptions=True
    )
    assert isinstance(outcomes[0], DuplicateMessage)
    good = [o for o in outcomes if not isinstance(o, BaseException)]
    assert numbers([g.reference for g in good]) == [2, 3, 4, 5]
    assert (await AuditRepository(db).verify()).events == 5


# -- a real gateway killed in the middle of a batch ---------------------------------------------


async def _post(session: aiohttp.ClientSession, body: bytes) -> tuple[int, dict[str, Any] | None]:
    try:
        async with session.post(
            "/v1/notifications", data=body, headers={"Content-Type": "application/jose"}
        ) as resp:
            return resp.status, json.loads(await resp.read())
    except (aiohttp.ClientError, OSError, ValueError):
        return 0, None


def _installation(settings: Settings) -> Installation:
    with (settings.data_dir / "settings.toml").open("a") as fh:
        fh.write('\nscheduler = "off"\n')
    credentials = settings.data_dir.parent / "agencies" / "PSNI"
    asyncio.run(issue_credentials(settings, "PSNI", credentials))
    return Installation("test", settings.data_dir, settings, credentials)


def _verify_audit(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextlib.contextmanager
def _writer_busy(settings: Settings) -> Iterator[Callable[[], bool]]:
    """Whether the gateway has a write transaction open right now (a batch being written)."""
    if not settings.database_url:
        path = settings.data_dir / "gateway.db"

        def sqlite_busy() -> bool:
            # Readers never block BEGIN IMMEDIATE in WAL mode; only an open write does, and
            # intake is the only writer under this load.
            conn = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return False
            except sqlite3.OperationalError:
                return True
            finally:
                conn.close()

        yield sqlite_busy
        return
    url = settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as probe:

        def pg_busy() -> bool:
            # A transaction has an xid once it locked or wrote a row: the counter row first.
            row = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
            ).fetchone()
            return bool(row and row[0])

        yield pg_busy


@pytest.mark.slow
def test_killed_mid_batch_loses_nothing_and_resends_are_exactly_once(
    installation: Settings,
) -> None:
    inst = _installation(installation)
    envelopes = seal_envelopes(inst.credentials, 400, 2)
    ctx = client_context(inst.credentials)
    receipts: dict[int, dict[str, Any]] = {}
    killed_mid_batch: list[bool] = []

    gw = GatewayProcess(inst).start()
    try:

        async def load() -> None:
            connector = aiohttp.TCPConnector(ssl=ctx, limit=64)
            async with aiohttp.ClientSession(base_url=gw.api_url, connector=connector) as s:
                pending = iter(enumerate(envelopes))
                stop = asyncio.Event()

                async def worker() -> None:
                    for index, body in pending:
                        if stop.is_set():
                            return
                        status, answer = await _post(s, body)
                        if status == 202 and answer is not None:
                            receipts[index] = answer

                async def killer() -> None:
                    while len(receipts) < 40:
                        await asyncio.sleep(0.01)
                    # Then wait for a batch to be in the middle of its transaction.
                    for _ in range(5000):
                        if busy():
                            killed_mid_batch.append(True)
                            break
                        await asyncio.sleep(0.001)
                    assert gw.proc is not None
                    gw.proc.send_signal(signal.SIGKILL)
                    stop.set()

                await asyncio.gather(killer(), *(worker() for _ in range(64)))

        with _writer_busy(inst.settings) as busy:
            asyncio.run(load())
        assert gw.proc is not None
        assert gw.proc.wait(30) == -signal.SIGKILL
    finally:
        gw.stop()
    assert killed_mid_batch == [True]
    assert 40 <= len(receipts) < len(envelopes)

    async def stored() -> dict[str, tuple[str, str]]:
        async with open_services(inst.settings) as s, s.db.read() as conn:
            rows = (
                await conn.execute(
                    select(
                        notifications.c.envelope_sha256,
                        notifications.c.reference,
                        notifications.c.receipt,
                    )
                )
            ).all()
        return {r.envelope_sha256: (r.reference, r.receipt) for r in rows}

    digests = [hashlib.sha256(e).hexdigest() for e in envelopes]
    before = asyncio.run(stored())
    # Every receipt handed out is for a stored notification, and the same receipt.
    for index, answer in receipts.items():
        assert before[digests[index]] == (answer["reference"], answer["receipt"])
    # Committed rows have consecutive numbers from 1: nothing half-written, nothing skipped.
    assert numbers([ref for ref, _ in before.values()]) == list(range(1, len(before) + 1))

    results: list[tuple[int, dict[str, Any] | None]] = []
    with GatewayProcess(inst) as again:

        async def resend() -> None:
            connector = aiohttp.TCPConnector(ssl=ctx, limit=32)
            async with aiohttp.ClientSession(base_url=again.api_url, connector=connector) as s:
                sem = asyncio.Semaphore(32)

                async def one(body: bytes) -> tuple[int, dict[str, Any] | None]:
                    async with sem:
                        return await _post(s, body)

                results.extend(await asyncio.gather(*(one(e) for e in envelopes)))

        asyncio.run(resend())
    for index, (status, answer) in enumerate(results):
        assert answer is not None, status
        if digests[index] in before:
            assert status == 200, (index, status, answer)
            assert (answer["reference"], answer["receipt"]) == before[digests[index]]
        else:
            assert status == 202, (index, status, answer)
    after = asyncio.run(stored())
    assert set(after) == set(digests)
    assert numbers([ref for ref, _ in after.values()]) == list(range(1, len(envelopes) + 1))
    verified = _verify_audit(inst.data_dir)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain intact" in verified.stdout
