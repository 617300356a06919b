"""The secretariat's work as a person does it, in a real browser (Debian's Chromium through
Playwright), on one long path: set up the account from its one-time link, enrol the
authenticator, sign in; screen a case that came in through the API, ask an agency, see the
answer arrive; compile and issue an agenda, download its PDF; record the meeting and the
Board's decision; sign out. The mail goes through a real SMTP server; codes come from pyotp
on the gateway's clock, which the test moves instead of waiting."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from gateway.clock import FrozenClock
from gateway.settings import Settings
from tests.mailsink import MailSink, link_in
from tests.staff import FAST_HASHING, PASSWORD
from tests.support import example, running_gateway, with_contacts

EMAIL = "lead@sbni.example"


@pytest.fixture
def sqlite_sink(sqlite_installation: Settings) -> Iterator[MailSink]:
    s = MailSink(sqlite_installation.server_cert, sqlite_installation.server_key)
    s.start()
    yield s
    s.stop()


async def sign_in(page: Any, base: str, secret: str, clock: FrozenClock) -> None:
    await page.goto(base + "/login")
    await page.get_by_label("Email address").fill(EMAIL)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/login/code")
    # A code is good once: each sign-in uses the next time step.
    clock.advance(timedelta(seconds=30))
    await page.get_by_label("Six-digit code").fill(pyotp.TOTP(secret).at(clock.now()))
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url("**/cases")


async def test_the_secretariat_in_a_real_browser(
    sqlite_installation: Settings,
    sqlite_sink: MailSink,
    clock: FrozenClock,
    browser_context: Any,
    tmp_path: Path,
) -> None:
    sink = sqlite_sink
    settings = with_contacts(sqlite_installation).with_overrides(
        **sink.settings(
            sqlite_installation.data_dir / "smtp-password", sqlite_installation.client_ca
        ),
        **FAST_HASHING,
    )
    async with running_gateway(settings, clock) as gw:
        base = gw.web_url
        psni = await gw.agency("PSNI")
        r = await psni.post(psni.seal())
        assert r.status == 202
        reference = r.json()["reference"]
        async with gw.services() as s:
            _, link = await s.accounts.add(EMAIL, "secretariat", "Lead Officer", "cli:test")
            members = s.meetings.calendar.members
            zone = s.meetings.zone
        page = await browser_context.new_page()

        # -- set-up from the link, TOTP enrolment, sign-in --------------------------------
        await page.goto(link.url)
        assert await page.title() == "Set up your account - Safeguarding Board for Northern Ireland"
        await page.get_by_label("Choose a password").fill(PASSWORD)
        await page.get_by_label("Type the password again").fill(PASSWORD)
        await page.get_by_role("button", name="Continue").click()
        secret = (await page.locator("#secret").inner_text()).replace(" ", "")
        assert "otpauth://totp/" in await page.locator("#uri").inner_text()
        await page.get_by_label("The six-digit code the app now shows").fill(
            pyotp.TOTP(secret).at(clock.now())
        )
        await page.get_by_role("button", name="Finish setting up").click()
        await page.wait_for_url("**/login?m=ready")
        assert "Your account is ready" in await page.content()
        await sign_in(page, base, secret, clock)

        # -- screening, a request, its answer ----------------------------------------------
        assert await page.locator("#count-received").inner_text() == "1"
        await page.get_by_role("link", name=reference).click()
        child = example()["children"][0]
        assert f"{child['given_name']} {child['family_name']}" in await page.content()
        await page.get_by_role("button", name="Start screening").click()
        assert await page.locator("#state").inner_text() == "Screening"
        await page.get_by_label("Agency", exact=True).select_option("EA")
        await page.get_by_role("button", name="Send information request").click()
        assert "The information request was sent" in await page.content()
        assert await page.locator("#state").inner_text() == "Information gathering"

        mail = (await asyncio.to_thread(sink.wait_for, 1))[0]
        agency = await browser_context.new_page()
        await agency.goto(link_in(mail))
        await agency.get_by_role("button", name="Open request").click()
        await agency.get_by_label("Yes").check()
        await agency.get_by_label("Summary of what your agency knows").fill(
            "Oliwer's school raised attendance concerns in January."
        )
        await agency.get_by_label("Your name").fill("Máire Officer")
        await agency.get_by_role("button", name="Submit answer").click()
        assert "Your answer has been received" in await agency.content()
        await agency.close()

        await page.reload()
        text = await page.locator("#requests").locator("..").inner_text()
        assert "answered" in text and "Oliwer's school raised attendance concerns" in text
        assert "Máire Officer" in text
        await page.get_by_role("button", name="Mark ready for panel").click()
        assert await page.locator("#state").inner_text() == "Ready for panel"

        # -- a meeting: add, compile, issue, the PDF ---------------------------------------
        day = (clock.now().astimezone(zone) + timedelta(days=12)).date()
        await page.get_by_role("link", name="Meetings").click()
        await page.get_by_label("Date and time").fill(f"{day.isoformat()}T10:00")
        await page.get_by_role("button", name="Add meeting").click()
        assert "The meeting was added" in await page.content()
        meeting = page.url.rsplit("/", 1)[1].split("?")[0]
        await page.get_by_role("button", name="Compile the agenda now").click()
        assert "The agenda was compiled" in await page.content()
        await page.get_by_role("button", name=re.compile("^Issue version 1")).click()
        assert "notice sent to every member" in await page.content()
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="PDF").click()
        download = await download_info.value
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        assert saved.name == f"agenda-{meeting}-v1.pdf"
        assert saved.read_bytes().startswith(b"%PDF-")
        notices = await asyncio.to_thread(sink.wait_for, 1 + len(members))
        assert {m["To"] for m in notices[1:]} >= {m.email for m in members}

        # -- after the meeting: the record, the Board --------------------------------------
        clock.set(datetime.combine(day, datetime.min.time(), zone) + timedelta(hours=14))
        await page.goto(base + f"/meetings/{meeting}")
        await page.wait_for_url("**/login?m=expired")
        await sign_in(page, base, secret, clock)
        await page.goto(base + f"/meetings/{meeting}")
        for member in members:
            await page.locator(f"#present-{member.id}").check()
            await page.locator(f"#vote-{reference}-{member.id}-for").check()
        await page.locator(f"#outcome-{reference}-recommend").check()
        await page.get_by_label(f"Rationale for {reference}").fill(
            "Regulation 17(2) met; learning about moves between trusts."
        )
        await page.get_by_role("button", name="Record the meeting").click()
        assert "The meeting was recorded" in await page.content()
        assert await page.locator("#meeting-status").inner_text() == "held"

        await page.get_by_role("link", name="Board decisions").click()
        await page.get_by_label("Commission a CMR").check()
        await page.get_by_label("Date of the Board's decision").fill(day.isoformat())
        await page.get_by_role("button", name=f"Record the Board's decision on {reference}").click()
        assert "decision was recorded" in await page.content()
        decided = await page.get_by_role("table").inner_text()
        assert reference in decided and "commissioned" in decided

        # -- sign out ------------------------------------------------------------------------
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/login?m=out")
        response = await page.goto(base + "/cases")
        assert response is not None
        assert page.url.endswith("/login")

        async with gw.services() as s:
            actions = [(e.actor, e.action) for e in await s.audit.events(reference)]
            assert (await s.audit.verify()).ok
        me = f"user:{EMAIL}"
        for action in (
            "notification.viewed",
            "notification.screening",
            "request.created",
            "notification.ready_for_panel",
            "notification.commissioned",
        ):
            assert (me, action) in actions, action
