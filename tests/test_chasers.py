"""Deadlines, reminders, expiry and the overdue summary, by moving an injected clock across NI
bank holidays (St Patrick's Day, the Twelfth and its observed Monday)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.clock import FrozenClock
from gateway.settings import Settings
from tests.support import running_gateway
from tests.test_requests import with_contacts

LONDON = ZoneInfo("Europe/London")


def at(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=LONDON)


async def _notified(gw: object, clock: FrozenClock) -> str:
    psni = await gw.agency("PSNI")  # type: ignore[attr-defined]
    r = await psni.post(psni.seal(iat=int(clock.now().timestamp())))
    assert r.status == 202, r.body
    return str(r.json()["reference"])


async def test_reminders_and_expiry_across_st_patricks_day(installation: Settings) -> None:
    clock = FrozenClock(at(2027, 3, 5))  # a Friday
    settings = with_contacts(installation)
    async with running_gateway(settings, clock) as gw:
        reference = await _notified(gw, clock)
        async with gw.services() as s:
            created = await s.requests.create(reference, "EA", "t")
            assert created.deadline_on == date(2027, 3, 22)

            async def chase_on(when: datetime) -> tuple[int, int]:
                clock.set(when)
                r = await s.requests.chase()
                return r.reminders, r.expired

            assert await chase_on(at(2027, 3, 15)) == (0, 0)  # 4 working days left
            assert await chase_on(at(2027, 3, 16)) == (1, 0)  # 3 left: 17 March is a holiday
            assert await chase_on(at(2027, 3, 16, 14)) == (0, 0)  # not twice
            assert await chase_on(at(2027, 3, 17)) == (0, 0)
            assert await chase_on(at(2027, 3, 18)) == (0, 0)  # 2 left
            assert await chase_on(at(2027, 3, 19)) == (1, 0)  # 1 left
            assert await chase_on(at(2027, 3, 22, 23, 59)) == (0, 0)  # still the deadline day
            assert (await s.requests.get(created.public_id)).status == "sent"
            assert await chase_on(at(2027, 3, 23, 0, 0)) == (0, 1)
            assert await chase_on(at(2027, 3, 23, 9)) == (0, 0)
            row = await s.requests.get(created.public_id)
            assert row.status == "expired"
            assert row.reminders_sent == (1, 3)
            reminders = [e for e in await s.outbox.entries() if e.kind == "reminder"]
            assert len(reminders) == 2
            actions = [e.action for e in await s.audit.events(reference)]
            assert actions.count("request.reminded") == 2
            assert actions[-1] == "request.expired"

            # The overdue summary goes once a day.
            assert await s.requests.overdue_summary()
            assert not await s.requests.overdue_summary()
            clock.set(at(2027, 3, 24, 8))
            assert await s.requests.overdue_summary()
            summaries = [e for e in await s.outbox.entries() if e.kind == "overdue_summary"]
            assert [e.recipient for e in summaries] == ["secretariat@sbni.example"] * 2


async def test_deadline_across_the_twelfth(installation: Settings) -> None:
    clock = FrozenClock(at(2026, 7, 6))  # Monday; 12 July 2026 is a Sunday
    settings = with_contacts(installation)
    async with running_gateway(settings, clock) as gw:
        reference = await _notified(gw, clock)
        async with gw.services() as s:
            created = await s.requests.create(reference, "BHSCT", "t", deadline_days=5)
            assert created.deadline_on == date(2026, 7, 14)
            clock.set(at(2026, 7, 10))  # Friday: 1 working day left (the 13th is a holiday)
            assert (await s.requests.chase()).reminders == 1
            clock.set(at(2026, 7, 13, 12))
            assert (await s.requests.chase()) == type(await s.requests.chase())(0, 0)
            clock.set(at(2026, 7, 14, 23, 59) + timedelta(minutes=1))
            assert (await s.requests.chase()).expired == 1


async def test_a_reminder_missed_while_down_is_sent_once(installation: Settings) -> None:
    clock = FrozenClock(at(2027, 3, 5))
    settings = with_contacts(installation)
    async with running_gateway(settings, clock) as gw:
        reference = await _notified(gw, clock)
        async with gw.services() as s:
            created = await s.requests.create(reference, "EA", "t")
            clock.set(at(2027, 3, 19))  # both the 3-day and the 1-day reminder are past
            assert (await s.requests.chase()).reminders == 1
            assert (await s.requests.chase()).reminders == 0
            assert (await s.requests.get(created.public_id)).reminders_sent == (1, 3)
