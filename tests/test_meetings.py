"""Panel meetings on a running gateway, by moving an injected clock through 2027 (with its NI
bank holidays): agendas compiled at their cut-offs and once only, a cut-off missed while the
gateway was down caught up at start, deferrals carried with their count, a late answer marked
on the re-issued agenda, the pack's PDF, HTML and JSON, the notice through a real SMTP server
with its iCalendar invitation, the Schedule 5 rules when recording, and the real scheduler
running the tick. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
from icalendar import Calendar
from pypdf import PdfReader
from sqlalchemy import select

from gateway.clock import FrozenClock
from gateway.errors import UsageError
from gateway.meetings.calendar import MeetingCalendar, clear_days
from gateway.meetings.model import RecordInvalid
from gateway.requests.service import Answer
from gateway.services import Services
from gateway.settings import Settings
from gateway.storage.tables import outbox
from tests.mailsink import MailSink, link_in, text_of
from tests.support import REPO, RunningGateway, example, running_gateway
from tests.test_requests import with_contacts

LONDON = ZoneInfo("Europe/London")
CALENDAR = MeetingCalendar.load(REPO / "config" / "meetings.toml")
MEMBERS = [m.id for m in CALENDAR.members]
RECIPIENTS = {m.email for m in CALENDAR.members} | {"secretariat@sbni.example"}
AGENDA_SCHEMA = json.loads((REPO / "schemas" / "agenda-1.schema.json").read_text())
MARCH, JUNE, SEPTEMBER, DECEMBER = "M-2027-03", "M-2027-06", "M-2027-09", "M-2027-12"


def at(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=LONDON)


def meeting_settings(installation: Settings, **extra: Any) -> Settings:
    # The gateway's own sender waits an hour between passes, so the tests decide when mail
    # goes (and can read a request's link while it is still queued).
    return with_contacts(installation, outbox_poll_seconds=3600, **extra)


async def notify(gw: RunningGateway, body: dict[str, Any] | None = None) -> str:
    psni = await gw.agency("PSNI")
    r = await psni.post(psni.seal(body=body, iat=int(gw.clock.now().timestamp())))
    assert r.status == 202, r.body
    return str(r.json()["reference"])


async def queued(s: Services, kind: str | None = None, about: str | None = None) -> list[Any]:
    query = select(outbox).order_by(outbox.c.id)
    if kind:
        query = query.where(outbox.c.kind == kind)
    if about:
        query = query.where(outbox.c.about == about)
    async with s.db.transaction() as conn:
        return list((await conn.execute(query)).all())


def message(s: Services, row: Any) -> EmailMessage:
    if row.payload is not None:
        raw = s.cipher.decrypt(row.key_id, row.payload, f"outbox\x00{row.recipient}".encode())
    else:  # the gateway's own sender got to it first: it is in the development mail folder
        [path] = (s.settings.data_dir / "outbox").glob(f"*-{row.id}.eml")
        raw = path.read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def answer(s: Services, request_id: str, summary: str = "Known since 2024.") -> None:
    """Answer a request through its link, as the agency would, taking the link from the mail
    still in the outbox."""
    [row] = await queued(s, "request", request_id)
    token = link_in(message(s, row)).rsplit("/", 1)[1]
    await s.requests.submit(
        token, Answer(known="yes", summary=summary, respondent_name="A. Officer"), []
    )


def votes(**ways: list[str]) -> dict[str, list[str]]:
    return {w: v for w, v in ways.items()}


def item(
    reference: str, outcome: str, rationale: str = "As discussed.", **kw: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"reference": reference, "outcome": outcome, "rationale": rationale}
    if outcome != "withdrawn" and "votes" not in kw:
        entry["votes"] = {"for": ["chair", "ea", "bhsct", "nhsct"], "against": ["shsct"]}
    entry.update(kw)
    return entry


def record(meeting: str, items: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "format": "cmr-meeting-record/1",
        "meeting": meeting,
        "present": kw.pop("present", MEMBERS[:7]),
        "items": items,
        **kw,
    }


def section_of(content: dict[str, Any], reference: str) -> tuple[str, dict[str, Any]] | None:
    for s in content["sections"]:
        for i in s["items"]:
            if i.get("reference") == reference:
                return s["id"], i
    return None


def pdf_pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


# -- a year ------------------------------------------------------------------------------------


async def test_a_year_of_meetings(installation: Settings) -> None:
    clock = FrozenClock(at(2027, 1, 4, 9))
    expected_cut_offs = {
        MARCH: date(2027, 2, 26),
        JUNE: date(2027, 5, 27),  # three working days before 2 June: 31 May is a bank holiday
        SEPTEMBER: date(2027, 8, 26),  # 30 August is a bank holiday
        DECEMBER: date(2027, 11, 26),
    }
    async with running_gateway(meeting_settings(installation), clock) as gw:
        reference = await notify(gw)
        async with gw.services() as s:
            await s.cases.mark_ready(reference, "secretariat:test")
            compiled: dict[str, list[date]] = defaultdict(list)
            noticed: dict[str, date] = {}
            deferrals: dict[str, int] = {}
            meeting_days = {
                m.public_id: m.starts_at.astimezone(LONDON).date()
                for m in await s.meetings.meetings(2027)
            }
            assert list(meeting_days) == [MARCH, JUNE, SEPTEMBER, DECEMBER]
            assert await s.meetings.calendar_warnings() == []
            day = date(2027, 1, 4)
            while day <= date(2027, 12, 10):
                if day in expected_cut_offs.values():
                    clock.set(at(day.year, day.month, day.day, 16, 30))  # before the cut-off
                    assert (await s.meetings.tick()).compiled == []
                clock.set(at(day.year, day.month, day.day, 17, 30))
                result = await s.meetings.tick()
                for m in result.compiled:
                    compiled[m].append(day)
                for m in result.noticed:
                    noticed[m] = day
                for public_id, meeting_day in meeting_days.items():
                    if day != meeting_day:
                        continue
                    content = (await s.meetings.issued_agenda(public_id)).content  # type: ignore[union-attr]
                    found = section_of(content, reference)
                    assert found is not None
                    deferrals[public_id] = found[1]["deferrals"]["count"]
                    await s.meetings.record(
                        record(public_id, [item(reference, "defer", f"Deferred at {public_id}")]),
                        "secretariat:test",
                    )
                day += timedelta(days=1)
            assert {m: days for m, days in compiled.items() if m in meeting_days} == {
                m: [d] for m, d in expected_cut_offs.items()
            }
            for public_id, meeting_day in meeting_days.items():
                meeting = await s.meetings.meeting(public_id)
                assert noticed[public_id] == meeting.notice_by_on
                assert clear_days(noticed[public_id], meeting_day) >= 7
                notices = await queued(s, "meeting_notice", public_id)
                assert {r.recipient for r in notices} == RECIPIENTS
                assert meeting.status == "held"
                events = [e.action for e in await s.audit.events(public_id)]
                assert events.count("agenda.compiled") == 1
                assert events.count("meeting.notice_sent") == 1
            # Deferred at each meeting: carried to the next with its count.
            assert deferrals == {MARCH: 0, JUNE: 1, SEPTEMBER: 2, DECEMBER: 3}
            case = await s.cases.case(reference)
            assert case.status == "deferred"
            assert [p[2] for p in case.placements] == ["defer"] * 4
            assert (await s.audit.verify()).ok


async def test_a_cut_off_missed_while_down_is_compiled_once_at_start(
    installation: Settings,
) -> None:
    clock = FrozenClock(at(2027, 2, 22))
    settings = meeting_settings(installation)
    async with running_gateway(settings, clock) as gw:
        reference = await notify(gw)
        async with gw.services() as s:
            await s.cases.mark_ready(reference, "t")
            assert (await s.meetings.tick()).compiled == []
    # Down over the cut-off (Friday 26 February, 17:00); back on Monday morning.
    clock.set(at(2027, 3, 1, 8))
    async with running_gateway(settings, clock) as gw, gw.services() as s:
        first = await s.meetings.tick()  # what the scheduler runs at start
        assert first.compiled == [MARCH] and first.noticed == []
        assert (await s.meetings.tick()).compiled == []
        agenda = await s.meetings.agenda(MARCH)
        assert agenda.version == 1 and agenda.status == "draft"
        assert section_of(agenda.content, reference) is not None
        events = [e.action for e in await s.audit.events(MARCH)]
        assert events.count("agenda.compiled") == 1
        assert (await s.cases.case(reference)).status == "on_agenda"
        # The notice follows on its own day.
        clock.set(at(2027, 3, 3, 9, 15))
        assert (await s.meetings.tick()).noticed == [MARCH]
        assert (await s.meetings.tick()).noticed == []


async def test_a_late_answer_is_marked_changed_on_the_reissued_agenda(
    installation: Settings,
) -> None:
    clock = FrozenClock(at(2027, 2, 15))
    async with running_gateway(meeting_settings(installation), clock) as gw:
        ready, late = await notify(gw), await notify(gw)
        async with gw.services() as s:
            await s.cases.mark_ready(ready, "t")
            request = await s.requests.create(late, "EA", "t")
            with pytest.raises(UsageError, match=r"open information requests \(EA\)"):
                await s.cases.mark_ready(late, "t")
            clock.set(at(2027, 2, 26, 17, 5))
            assert (await s.meetings.tick()).compiled == [MARCH]
            first = await s.meetings.agenda(MARCH)
            where = section_of(first.content, late)
            assert where is not None and where[0] == "noting"
            assert where[1]["not_answered"] == ["EA"]
            issued = await s.meetings.issue(MARCH, "secretariat:test")
            assert (issued.version, issued.notice, issued.recipients) == (1, "notice", 10)
            with pytest.raises(UsageError, match="already issued"):
                await s.meetings.issue(MARCH, "secretariat:test")
            # EA answers after the cut-off; the case is ready and the agenda re-issued.
            clock.set(at(2027, 3, 1, 11))
            await answer(s, request.public_id, "Known to the school since 2025.")
            await s.cases.mark_ready(late, "t")
            compiled = await s.meetings.compile(MARCH, "secretariat:test")
            assert (compiled.version, compiled.changed, compiled.changes) == (2, True, 1)
            again = await s.meetings.compile(MARCH, "secretariat:test")
            assert (again.version, again.changed) == (2, False)
            second = await s.meetings.agenda(MARCH)
            assert second.content["compared_with_version"] == 1
            where = section_of(second.content, late)
            assert where is not None and where[0] == "new"
            assert where[1]["change"] == "changed"
            assert where[1]["changed_fields"][0] == "section"
            assert where[1]["answers"][0]["summary"] == "Known to the school since 2025."
            unchanged = section_of(second.content, ready)
            assert unchanged is not None and unchanged[1]["change"] is None
            revised = await s.meetings.issue(MARCH, "secretariat:test")
            assert (revised.version, revised.notice) == (2, "revised")
            assert {r.recipient for r in await queued(s, "meeting_revised", MARCH)} == RECIPIENTS
            text = "\n".join(pdf_pages(await s.meetings.pack(MARCH, "pdf")))
            assert f"{late} [CHANGED: section" in text
            assert f"{ready} [" not in text


# -- the pack ----------------------------------------------------------------------------------


async def test_the_pack_in_pdf_html_and_json(installation: Settings) -> None:
    clock = FrozenClock(at(2027, 2, 15))
    async with running_gateway(meeting_settings(installation), clock) as gw:
        harm = await notify(gw)
        good = await notify(gw, example("good-practice"))
        later = await notify(gw)
        gathering = await notify(gw)
        async with gw.services() as s:
            asked = await s.requests.create(harm, "BHSCT", "t")
            await answer(s, asked.public_id, "Health visiting in Łódź and Belfast; Ørsted ward.")
            await s.cases.mark_ready(harm, "t")
            await s.cases.mark_ready(good, "t")
            await s.cases.mark_ready(later, "t", meeting=JUNE)
            await s.requests.create(gathering, "EA", "t")
            await s.meetings.compile(MARCH, "t", aob=["Dates of the 2028 meetings"])
            await s.meetings.compile(JUNE, "t")
            pdf = await s.meetings.pack(MARCH, "pdf")
            html = (await s.meetings.pack(MARCH, "html")).decode()
            document = json.loads(await s.meetings.pack(MARCH, "json"))
            june = "\n".join(pdf_pages(await s.meetings.pack(JUNE, "pdf")))
    pages = pdf_pages(pdf)
    assert len(pages) >= 3
    for n, page in enumerate(pages, start=1):
        assert page.count("OFFICIAL-SENSITIVE") >= 2, n  # at the head and the foot
        assert f"Page {n} of {len(pages)}" in page
    text = "\n".join(pages)
    assert "Contents" in pages[0] and f"1.1 {harm}" in pages[0]
    for reference in (harm, good, gathering):
        assert reference in text
    assert later not in text  # it is kept for June
    assert later in june and harm not in june
    assert "Łódź" in text and "Ørsted" in text  # full Latin coverage
    assert "17(2)(c)" in text and "For the panel's judgement" in text
    assert "Regulation 17(3)" in text
    assert "Dates of the 2028 meetings" in text
    assert "Not answered" in text and "EA" in text
    jsonschema.Draft202012Validator(
        AGENDA_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(document)
    assert document["marking"] == "OFFICIAL-SENSITIVE"
    assert [s["id"] for s in document["sections"]] == [
        "new",
        "deferred",
        "noting",
        "cmr_progress",
        "aob",
    ]
    assert [i["reference"] for i in document["sections"][0]["items"]] == [harm, good]
    doc = example()
    personal = [c["given_name"] for c in doc["children"]] + [
        doc["children"][0]["date_of_birth"],
        doc["adults"][0]["name"],
        doc["narratives"]["case_outline"][:40],
    ]
    for value in personal:
        assert value not in text and value not in html
    assert html.count("OFFICIAL-SENSITIVE") >= 2
    assert harm in html and later not in html
    assert "Łódź" in html


# -- the notice ------------------------------------------------------------------------------


def calendar_part(msg: EmailMessage) -> Calendar:
    parts = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return Calendar.from_ical(payload)


async def test_the_notice_mail_and_its_invitation(installation: Settings) -> None:
    from tests.test_privacy import MARK, marked_notification

    sink = MailSink(installation.server_cert, installation.server_key)
    sink.start()
    try:
        settings = meeting_settings(installation)
        settings = settings.with_overrides(
            **sink.settings(settings.data_dir / "smtp-password", settings.client_ca)
        )
        clock = FrozenClock(at(2027, 2, 22))
        async with running_gateway(settings, clock) as gw:
            reference = await notify(gw, marked_notification())
            async with gw.services() as s:
                await s.cases.mark_ready(reference, "t")
                clock.set(at(2027, 2, 26, 17, 30))
                await s.meetings.tick()
                await s.meetings.issue(MARCH, "secretariat:test")
                # The gateway's own sender may take some of them: each goes once either way.
                await s.sender.deliver_due()
                mails = await asyncio.to_thread(sink.wait_for, 10)
                link = f"{gw.settings.web_base_url}/meetings/{MARCH}/pack"
                uids = set()
                for msg in mails:
                    raw = msg.as_string()
                    assert MARK not in raw and MARK.lower() not in raw
                    body = text_of(msg)
                    assert link in body
                    assert "Thursday 11 March 2027" in body and "10:00 to 13:00" in body
                    assert f"1. New cases ready for the panel: 1 ({reference})" in body
                    cal = calendar_part(msg)
                    assert str(cal["METHOD"]) == "REQUEST"
                    [event] = cal.events
                    uids.add(str(event["UID"]))
                    assert int(event["SEQUENCE"]) == 0
                    assert event.decoded("dtstart") == at(2027, 3, 11, 10)
                    assert str(event["ATTENDEE"]) == f"mailto:{msg['To']}"
                    assert MARK not in cal.to_ical().decode()
                assert {m["To"] for m in mails} == RECIPIENTS
                assert len(uids) == 1
                # The meeting moves: the same event, one sequence on, in every calendar.
                moved = await s.meetings.move_meeting(MARCH, datetime(2027, 3, 18, 14), "t")
                assert moved.ics_sequence == 1 and moved.source == "manual"
                await s.sender.deliver_due()
                mails = (await asyncio.to_thread(sink.wait_for, 20))[10:]
                assert len(mails) == 10
                for msg in mails:
                    assert msg["Subject"].startswith("Meeting moved")
                    [event] = calendar_part(msg).events
                    assert str(event["UID"]) in uids
                    assert int(event["SEQUENCE"]) == 1
                    assert event.decoded("dtstart") == at(2027, 3, 18, 14)
                # The calendar file no longer moves it back.
                await s.meetings.tick()
                assert (await s.meetings.meeting(MARCH)).starts_at == at(2027, 3, 18, 14)
    finally:
        sink.stop()


# -- recording -------------------------------------------------------------------------------


async def test_recording_follows_schedule_5(installation: Settings) -> None:
    clock = FrozenClock(at(2027, 2, 15))
    async with running_gateway(meeting_settings(installation), clock) as gw:
        a, b = await notify(gw), await notify(gw)
        async with gw.services() as s:
            for ref in (a, b):
                await s.cases.mark_ready(ref, "t")
            await s.meetings.compile(MARCH, "t")
            await s.meetings.issue(MARCH, "t")
            good = [item(a, "recommend"), item(b, "do_not_recommend")]
            with pytest.raises(UsageError, match="has not happened yet"):
                await s.meetings.record(record(MARCH, good), "t")
            clock.set(at(2027, 3, 11, 14))

            async def refused(doc: dict[str, Any], *expected: str) -> None:
                with pytest.raises(RecordInvalid) as raised:
                    await s.meetings.record(doc, "t")
                for text in expected:
                    assert any(text in p for p in raised.value.problems), raised.value.problems

            await refused({"meeting": MARCH}, "'present' is a required property")
            interest = [{"member": "bhsct", "reference": a, "nature": "Line manager"}]
            await refused(
                record(MARCH, good, interests=interest),
                f"{a}: bhsct declared an interest in this item and may not vote",
            )
            tie = votes(**{"for": ["chair", "ea"], "against": ["bhsct", "nhsct"]})
            await refused(
                record(MARCH, [item(a, "recommend", votes=tie), good[1]]),
                f"{a}: the votes are equal: record the Chair's casting vote",
            )
            lost = votes(**{"for": ["ea"], "against": ["bhsct", "nhsct"], "abstain": ["chair"]})
            await refused(
                record(MARCH, [item(a, "recommend", votes=lost), good[1]]),
                "do not carry recommend",
            )
            await refused(record(MARCH, [good[0]]), f"{b}: no outcome recorded")
            await refused(
                record(MARCH, good, present=MEMBERS[:5]), "inquorate (5 of 9 present, quorum 6"
            )
            # Without the Chair the meeting is inquorate, whatever the numbers.
            await refused(record(MARCH, good, present=MEMBERS[1:]), "inquorate (8 of 9")
            await refused(record(MARCH, [item("CMRN-2027-9999", "defer"), *good]), "CMRN-2027-9999")

            # Inquorate: no decisions, reconvened two weeks on, the items carried.
            result = await s.meetings.record(record(MARCH, [], present=MEMBERS[:5]), "t")
            assert (result.quorate, result.quorum, result.reconvened) == (False, 6, "M-2027-03-25")
            assert (await s.meetings.meeting(MARCH)).status == "inquorate"
            again = await s.meetings.record(record(MARCH, [], present=MEMBERS[:5]), "t")
            assert again.already_recorded
            with pytest.raises(UsageError, match="already recorded"):
                await s.meetings.record(record(MARCH, [], present=MEMBERS[:6]), "t")
            reconvened = await s.meetings.meeting("M-2027-03-25")
            assert (reconvened.kind, reconvened.reconvenes) == ("reconvened", MARCH)
            assert reconvened.notice_by_on == date(2027, 3, 16)  # the 17th is St Patrick's Day
            clock.set(at(2027, 3, 16, 9, 30))
            ticked = await s.meetings.tick()
            assert ticked.compiled == ["M-2027-03-25"] and ticked.noticed == ["M-2027-03-25"]
            content = (await s.meetings.agenda("M-2027-03-25")).content
            for ref in (a, b):
                found = section_of(content, ref)
                assert found is not None and found[1]["carried_from"] == MARCH
            # Quorate, with an interest declared and the Chair's casting vote on a tie.
            clock.set(at(2027, 3, 25, 15))
            decided = await s.meetings.record(
                record(
                    "M-2027-03-25",
                    [
                        item(
                            a,
                            "recommend",
                            votes={"for": ["chair", "ea"], "against": ["nhsct", "shsct"]},
                            casting_vote="for",
                        ),
                        item(b, "request_information", "Ask the Southern Trust."),
                    ],
                    interests=[{"member": "pbni", "reference": a}],
                ),
                "t",
            )
            assert decided.quorate and decided.outcomes == {
                a: "recommend",
                b: "request_information",
            }
            assert (await s.cases.case(a)).status == "recommended"
            assert (await s.cases.case(b)).status == "information_gathering"
            actions = [e.action for e in await s.audit.events(a)]
            assert actions[-2:] == ["notification.considered", "notification.recommended"]
            # The Board decides; the annual report reads what was written.
            decision = await s.cases.board_decide(a, "commissioned", date(2027, 3, 25), "t")
            assert decision.status == "commissioned"
            with pytest.raises(UsageError, match="in the future"):
                await s.cases.start_cmr(a, date(2027, 4, 1), "t")
            clock.set(at(2027, 12, 1, 12))
            await s.cases.start_cmr(a, date(2027, 4, 1), "t")
            done = await s.cases.complete_cmr(
                a, date(2027, 11, 30), 6, ["information sharing", "interpreters"], "t"
            )
            assert done.status == "cmr_completed" and done.outcome is not None
            assert done.outcome.themes == ("information sharing", "interpreters")
            from gateway.reports.repository import ReportsRepository

            [mine] = [r for r in await ReportsRepository(s.db).records() if r.reference == a]
            assert mine.board_decision == "commissioned"
            assert mine.commissioned_on == date(2027, 3, 25)
            assert mine.cmr_completed_on == date(2027, 11, 30) and mine.recommendations == 6
            assert (await s.audit.verify()).ok


async def test_a_requisitioned_meeting_and_a_withdrawal(installation: Settings) -> None:
    clock = FrozenClock(at(2027, 4, 2))  # a Friday
    async with running_gateway(meeting_settings(installation), clock) as gw:
        reference = await notify(gw)
        async with gw.services() as s:
            with pytest.raises(UsageError, match="three quarters"):
                await s.meetings.add_meeting(
                    datetime(2027, 4, 12, 10), "t", requisitioned_by=MEMBERS[:6]
                )
            with pytest.raises(UsageError, match="within 14 days"):
                await s.meetings.add_meeting(
                    datetime(2027, 4, 20, 10), "t", requisitioned_by=MEMBERS[:7]
                )
            with pytest.raises(UsageError, match="seven clear days"):
                await s.meetings.add_meeting(
                    datetime(2027, 4, 9, 10), "t", requisitioned_by=MEMBERS[:7]
                )
            extra = await s.meetings.add_meeting(
                datetime(2027, 4, 12, 10), "t", requisitioned_by=MEMBERS[:7]
            )
            assert (extra.public_id, extra.kind, extra.requisitioned_on) == (
                "M-2027-04-12",
                "extra",
                date(2027, 4, 2),
            )
            # Notice by today (the 4th is a Sunday), so the cut-off has passed already.
            assert extra.notice_by_on == date(2027, 4, 2)
            # The next tick compiles and serves the notice.
            await s.cases.mark_ready(reference, "t")
            ticked = await s.meetings.tick()
            assert ticked.compiled == [extra.public_id] and ticked.noticed == [extra.public_id]
            assert (await s.meetings.issued_agenda(extra.public_id)) is not None
            await s.cases.withdraw(reference, "The notifying agency withdrew it.", "t")
            recompiled = await s.meetings.agenda(extra.public_id)
            assert recompiled.version == 1  # not recompiled by itself
            second = await s.meetings.compile(extra.public_id, "t")
            assert second.version == 2
            content = (await s.meetings.agenda(extra.public_id)).content
            assert content["removed"] == [{"section": "new", "item": reference}]
            notes = await s.cases.notes(reference)
            assert notes[0]["text"] == "The notifying agency withdrew it."
            assert "withdrew" not in json.dumps(
                [e.details for e in await s.audit.events(reference)]
            )


async def test_a_short_year_is_a_loud_warning_at_start(
    sqlite_installation: Settings, tmp_path: Path, log_stream: io.StringIO
) -> None:
    short = tmp_path / "meetings.toml"
    text = (REPO / "config" / "meetings.toml").read_text()
    short.write_text(text.replace('"March", "June", "September", "December"', '"March", "June"'))
    clock = FrozenClock(at(2027, 1, 4))
    settings = meeting_settings(sqlite_installation, meetings_file=str(short))
    async with running_gateway(settings, clock) as gw, gw.services() as s:
        logged = [json.loads(line) for line in log_stream.getvalue().splitlines()]
        warned = [e for e in logged if e["event"] == "meetings_calendar_short"]
        assert [e["level"] for e in warned] == ["warning", "warning"]
        assert warned[0]["warning"] == (
            "WARNING: 2027 has 2 panel meetings planned; Schedule 5 requires at least 4"
        )
        await s.meetings.add_meeting(datetime(2027, 10, 7, 10), "t")
        await s.meetings.add_meeting(datetime(2027, 11, 4, 10), "t")
        assert await s.meetings.calendar_warnings([2027]) == []
        assert len(await s.meetings.calendar_warnings()) == 1  # 2028 is still short


async def test_the_real_scheduler_runs_the_meetings_tick(sqlite_installation: Settings) -> None:
    clock = FrozenClock(at(2027, 2, 27, 9))  # past the March cut-off
    settings = meeting_settings(sqlite_installation)
    async with running_gateway(settings, clock, scheduler=True) as gw, gw.services() as s:
        for _ in range(100):
            found = await s.meetings.repo.meeting(MARCH)
            if found is not None and found.status == "compiled":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the scheduler did not compile the agenda")
        assert (await s.meetings.agenda(MARCH)).compiled_by == "system:scheduler"
        assert re.fullmatch(r"m-2027-03\.[0-9a-f]{16}@\S+", found.ics_uid)
