"""kill -9 of the gateway at random points during a load of 500 submissions, restarted each
time: every notification that got a receipt is stored, every retry of one that did not is
treated exactly once (stored once, same reference), and `audit verify` passes. On SQLite and
on a private PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiohttp
import pytest

from tests import opsupport
from tests.opsupport import (
    GatewayProcess,
    audit_verify,
    check_stored_once,
    make_installation,
    processes,
    sender_for,
)
from tests.pgcluster import PgCluster

TOTAL = 500
WORKERS = 8

TRANSIENT = (aiohttp.ClientError, TimeoutError, ConnectionError, OSError)

# The private PostgreSQL (fixtures shared through tests/opsupport.py).
pg_cluster = opsupport.pg_cluster
private_pg = opsupport.private_pg


async def _kill_test(data_dir: Path, lines: list[str], seed: int, kills: int) -> None:
    rng = random.Random(seed)
    settings = make_installation(data_dir, [*lines, 'scheduler = "off"'])
    agency = await sender_for(settings)
    envelopes = dict(agency.seal() for _ in range(TOTAL))
    order = list(envelopes)
    gw = GatewayProcess(data_dir, "gw")
    receipts: dict[str, tuple[str, str]] = {}
    failed_once: set[str] = set()
    statuses: list[int] = []
    kill_points = sorted(rng.sample(range(40, TOTAL - 40), kills))
    kills_done = 0
    up = asyncio.Event()
    up.set()

    async def post(session: aiohttp.ClientSession, jti: str) -> tuple[int, dict[str, str]]:
        async with session.post(
            "/v1/notifications",
            data=envelopes[jti],
            headers={"Content-Type": "application/jose"},
        ) as r:
            return r.status, await r.json(content_type=None)

    async def worker(queue: asyncio.Queue[str]) -> None:
        session = agency.session(gw.api_url, timeout=10)
        try:
            while True:
                try:
                    jti = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    status, body = await post(session, jti)
                except TRANSIENT:
                    failed_once.add(jti)
                    # Wait for the restart rather than spin (it competes with the start-up for
                    # the CPU), then a fresh pool: the old one points at a killed process.
                    await asyncio.wait_for(up.wait(), timeout=90)
                    await session.close()
                    session = agency.session(gw.api_url, timeout=10)
                    continue
                statuses.append(status)
                if status in (200, 202):
                    receipts[jti] = (body["reference"], body["receipt"])
                else:
                    failed_once.add(jti)
        finally:
            await session.close()

    async def killer() -> None:
        nonlocal kills_done
        for point in kill_points:
            while len(receipts) < point:
                await asyncio.sleep(0.01)
            up.clear()
            gw.kill9()
            kills_done += 1
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            await asyncio.to_thread(gw.start)
            up.set()

    with processes(gw):
        await asyncio.to_thread(gw.start)
        kill_task = asyncio.create_task(killer())
        # Rounds until everything is receipted (bounded): what failed goes round again, as an
        # agency system would retry it.
        for _round in range(40):
            missing = [j for j in order if j not in receipts]
            if not missing:
                break
            queue: asyncio.Queue[str] = asyncio.Queue()
            for jti in missing:
                queue.put_nowait(jti)
            await asyncio.wait_for(
                asyncio.gather(*(worker(queue) for _ in range(WORKERS))), timeout=120
            )
            if kill_task.done():
                kill_task.result()
            elif len(receipts) >= kill_points[-1]:
                await asyncio.wait_for(kill_task, timeout=60)
        await asyncio.wait_for(kill_task, timeout=60)
        assert kills_done == kills
        assert len(receipts) == TOTAL, f"only {len(receipts)} receipted"
        assert set(statuses) <= {200, 202, 503}, sorted(set(statuses))

        # Retries: every one that failed at least once, and a sample of the receipted ones,
        # answer with the original reference and receipt.
        again = sorted(failed_once | set(rng.sample(order, 50)))
        async with agency.session(gw.api_url) as session:
            for jti in again:
                status, body = await post(session, jti)
                assert status == 200, (status, body)
                assert (body["reference"], body["receipt"]) == receipts[jti]
        gw.stop()

    await check_stored_once(settings, receipts, TOTAL)
    code, output = await asyncio.to_thread(audit_verify, data_dir)
    assert code == 0, output
    assert "audit chain intact: " in output


SEED = int(os.environ.get("CMR_TEST_SEED", random.randrange(1 << 30)))


@pytest.mark.slow
async def test_kill9_during_load_sqlite(tmp_path: Path) -> None:
    print(f"seed {SEED}")
    await _kill_test(tmp_path / "var", [], SEED, kills=3)


@pytest.mark.slow
async def test_kill9_during_load_postgres(tmp_path: Path, private_pg: PgCluster) -> None:
    print(f"seed {SEED}")
    url = private_pg.create_database()
    await _kill_test(tmp_path / "var", [f'database_url = "{url}"'], SEED, kills=2)
