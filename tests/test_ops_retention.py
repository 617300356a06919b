"""Retention: after the configured periods the personal data of closed and of not-progressed
cases is purged (payload, answers, attachments), the statistics fields stay, each purge is
an audit event, and a dry run lists references and reasons and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from datetime import date, timedelta

from sqlalchemy import func, insert, select, update

from gateway.cli import main
from gateway.jobs.scheduler import JobContext, default_jobs
from gateway.requests.service import Answer, Upload
from gateway.retention import jobs as retention_jobs
from gateway.retention.service import Case, due_for_purge
from gateway.storage.tables import (
    case_outcomes,
    notification_children,
    notifications,
    request_answers,
    request_attachments,
)
from tests.support import RunningGateway, example

DAY = timedelta(days=1)


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


async def _payload(gw: RunningGateway, reference: str) -> dict[str, object]:
    async with gw.services() as s:
        doc = await s.requests.repo.notification(reference)
        assert doc is not None
        plain = s.cipher.decrypt(doc.key_id, doc.payload, f"{doc.agency}\x00{doc.jti}".encode())
    result: dict[str, object] = json.loads(plain)
    return result


def test_due_for_purge_is_pure_and_uses_both_periods() -> None:
    from datetime import UTC, datetime

    now = datetime(2030, 1, 1, tzinfo=UTC)

    def case(status: str, days: int) -> Case:
        return Case(1, f"R-{status}-{days}", "PSNI", "j", status, now - days * DAY)

    cases = [
        case("withdrawn", 100),
        case("withdrawn", 99),
        case("cmr_completed", 150),
        case("received", 50),
        case("screening", 49),
        case("information_gathering", 1000),
        case("commissioned", 1000),
    ]
    due = due_for_purge(cases, now, closed_days=100, not_progressed_days=50)
    assert [(d.case.reference, d.reason) for d in due] == [
        ("R-withdrawn-100", "closed"),
        ("R-cmr_completed-150", "closed"),
        ("R-received-50", "not_progressed"),
    ]
    assert due_for_purge(cases, now, closed_days=0, not_progressed_days=0) == []


async def test_retention_purge(gw: RunningGateway) -> None:
    psni = await gw.agency("PSNI")
    refs = []
    for _ in range(4):
        r = await psni.post(psni.seal())
        assert r.status == 202
        refs.append(r.json()["reference"])
    closed, stale, live, recent = refs
    async with gw.services() as s:
        created = await s.requests.create(closed, "EA", "secretariat:test")
        token = created.link.rsplit("/", 1)[1]
        await s.requests.submit(
            token,
            Answer(
                known="yes",
                summary="Known to us since 2024.",
                respondent_name="A. Officer",
                respondent_role="Lead",
            ),
            [Upload("notes.txt", "text/plain", b"what we know")],
        )
        long_ago = gw.clock.now() - 3000 * DAY
        async with s.db.transaction() as conn:
            for ref, status, at in [
                (closed, "withdrawn", long_ago),
                (stale, "received", long_ago),
                (live, "information_gathering", long_ago),
                (recent, "withdrawn", gw.clock.now() - 10 * DAY),
            ]:
                await conn.execute(
                    update(notifications)
                    .where(notifications.c.reference == ref)
                    .values(status=status, updated_at=at)
                )
            closed_id = (
                await conn.execute(
                    select(notifications.c.id).where(notifications.c.reference == closed)
                )
            ).scalar_one()
            await conn.execute(
                insert(case_outcomes).values(
                    notification_id=closed_id,
                    board_considered_on=date(2020, 1, 1),
                    recommendations=0,
                    updated_at=long_ago,
                )
            )
            children_before = (
                await conn.execute(select(func.count()).select_from(notification_children))
            ).scalar_one()

    d = str(gw.settings.data_dir)
    code, out = await asyncio.to_thread(_cli, "--data-dir", d, "retention", "purge", "--dry-run")
    assert code == 0, out
    assert f"{closed}\tclosed (withdrawn)" in out
    assert f"{stale}\tnot progressed (received)" in out
    assert live not in out and recent not in out
    assert "would purge 2 cases" in out
    # A dry run changes nothing.
    given_name = example()["children"][0]["given_name"]
    assert given_name in json.dumps(await _payload(gw, closed))

    code, out = await asyncio.to_thread(_cli, "--data-dir", d, "retention", "purge")
    assert code == 0, out
    assert "purged 2 cases" in out

    for ref in (closed, stale):
        doc = await _payload(gw, ref)
        assert doc.get("purged") is True and given_name not in json.dumps(doc)
    for ref in (live, recent):
        assert given_name in json.dumps(await _payload(gw, ref))
    async with gw.services() as s:
        async with s.db.transaction() as conn:
            answers = (
                await conn.execute(select(func.count()).select_from(request_answers))
            ).scalar_one()
            files = (
                await conn.execute(select(func.count()).select_from(request_attachments))
            ).scalar_one()
            children_after = (
                await conn.execute(select(func.count()).select_from(notification_children))
            ).scalar_one()
            outcome = (
                await conn.execute(
                    select(case_outcomes.c.board_considered_on).where(
                        case_outcomes.c.notification_id == closed_id
                    )
                )
            ).scalar_one()
            row = (
                await conn.execute(
                    select(notifications.c.status, notifications.c.incident_date).where(
                        notifications.c.reference == closed
                    )
                )
            ).one()
        assert (answers, files) == (0, 0)
        assert children_after == children_before  # the statistics stay
        assert outcome == date(2020, 1, 1)
        assert row.status == "withdrawn" and row.incident_date is not None
        purged = [e for e in await s.audit.events() if e.action == "notification.purged"]
        assert sorted(e.subject for e in purged) == sorted([closed, stale])
        assert json.loads(purged[0].details)["reason"] in ("closed", "not_progressed")
        # The answer of the purged case cannot be read any more, and nothing breaks.
        assert await s.requests.read_answer(created.public_id) is None
        # Idempotent: the daily job finds nothing more to do.
        await retention_jobs.purge(JobContext(s))
        assert len([e for e in await s.audit.events() if e.action == "notification.purged"]) == 2
        assert (await s.audit.verify()).ok
    assert "retention.purge" in {j.id for j in default_jobs()}
