"""An automated accessibility check of every staff page: axe-core (from the npm registry,
installed with `npm --prefix tests/a11y ci`) run inside each page by Playwright in Debian's
Chromium. No violation of "serious" or "critical" impact is allowed. The pages forbid every
script (CSP), so only this check's browser context bypasses the CSP to inject axe; the pages
themselves are exactly what people get (the script is added to each page by Playwright, not
served)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from gateway.clock import FrozenClock
from gateway.requests.service import Answer
from gateway.settings import Settings
from tests.mailsink import MailSink
from tests.staff import FAST_HASHING, PASSWORD
from tests.support import RunningGateway, running_gateway, with_contacts

AXE = Path(__file__).parent / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")
MEMBER = "ciara.sample@sbni.example"  # a member in config/meetings.toml


@pytest.fixture
def axe_script() -> Path:
    if not AXE.exists():
        if os.environ.get("CMR_TEST_STRICT") == "1":
            pytest.fail(f"{AXE} is missing: run `npm --prefix tests/a11y ci`")
        pytest.skip("axe-core is not installed (npm --prefix tests/a11y ci)")
    return AXE


@pytest.fixture
def sqlite_sink(sqlite_installation: Settings) -> Iterator[MailSink]:
    s = MailSink(sqlite_installation.server_cert, sqlite_installation.server_key)
    s.start()
    yield s
    s.stop()


async def axe(page: Any) -> list[dict[str, Any]]:
    """The page's violations; axe-core is in every page of the context (add_init_script)."""
    found: list[dict[str, Any]] = await page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))
            }));
        }"""
    )
    return found


async def cases_of_every_kind(gw: RunningGateway) -> dict[str, str]:
    """Data for every page to show something: a case with an answered request, a meeting
    recorded (its case awaiting the Board, another under review), and a meeting whose record
    form is open."""
    psni = await gw.agency("PSNI")
    refs = []
    for _ in range(4):
        r = await psni.post(psni.seal())
        refs.append(r.json()["reference"])
    answered, board, review, later = refs
    async with gw.services() as s:
        zone = s.meetings.zone
        created = await s.requests.create(answered, "EA", "cli:test")
        await s.requests.submit(
            created.link.rsplit("/", 1)[1],
            Answer(known="yes", summary="Known since 2024.", respondent_name="A. Officer"),
            [],
        )
        for ref in (board, review):
            await s.cases.mark_ready(ref, "cli:test")
        day = (gw.clock.now().astimezone(zone) + timedelta(days=12)).date()
        first = await s.meetings.add_meeting(
            datetime.combine(day, datetime.min.time()).replace(hour=10), "cli:test"
        )
        await s.meetings.compile(first.public_id, "cli:test")
        await s.meetings.issue(first.public_id, "cli:test")
        await s.cases.mark_ready(later, "cli:test")
        second = await s.meetings.add_meeting(
            datetime.combine(day, datetime.min.time()).replace(hour=15), "cli:test"
        )
        await s.meetings.compile(second.public_id, "cli:test")
        await s.meetings.issue(second.public_id, "cli:test")
        gw.clock.set(datetime.combine(day + timedelta(days=1), datetime.min.time(), zone))
        members = [m.id for m in s.meetings.calendar.members]
        await s.meetings.record(
            {
                "format": "cmr-meeting-record/1",
                "meeting": first.public_id,
                "present": members,
                "items": [
                    {
                        "reference": ref,
                        "outcome": "recommend",
                        "votes": {"for": members},
                        "rationale": "Criteria met.",
                    }
                    for ref in (board, review)
                ],
            },
            "cli:test",
        )
        await s.cases.board_decide(review, "commissioned", day, "cli:test")
        await s.cases.start_cmr(review, day, "cli:test")
        links = {}
        for email, role in (("lead@sbni.example", "secretariat"), ("admin@sbni.example", "admin")):
            links[role] = (await s.accounts.add(email, role, "", "cli:test"))[1].url
        links["panel"] = (await s.accounts.add(MEMBER, "panel", "", "cli:test"))[1].url
    return {
        "answered": answered,
        "first": first.public_id,
        "second": second.public_id,
        **{f"link-{k}": v for k, v in links.items()},
    }


async def test_every_page_has_no_serious_accessibility_violation(
    sqlite_installation: Settings,
    sqlite_sink: MailSink,
    clock: FrozenClock,
    browser_context: Any,
    axe_script: Path,
) -> None:
    settings = with_contacts(sqlite_installation).with_overrides(
        **sqlite_sink.settings(
            sqlite_installation.data_dir / "smtp-password", sqlite_installation.client_ca
        ),
        **FAST_HASHING,
    )
    async with running_gateway(settings, clock) as gw:
        data = await cases_of_every_kind(gw)
        context = await browser_context.browser.new_context(
            ignore_https_errors=True, bypass_csp=True
        )
        # Registered once, evaluated in each page before it is checked: cheaper than sending
        # the half-megabyte script again for every page.
        await context.add_init_script(path=str(axe_script))
        page = await context.new_page()
        base = gw.web_url
        problems: list[str] = []
        checked: list[str] = []

        async def check(what: str) -> None:
            for v in await axe(page):
                if v["impact"] in BLOCKING:
                    problems.append(f"{what}: {v['id']} ({v['impact']}) {v['help']} {v['nodes']}")
            checked.append(what)

        async def sign_out() -> None:
            await page.goto(base + "/account")
            await page.get_by_role("button", name="Sign out", exact=True).click()

        async def visit(path: str) -> None:
            await page.goto(base + path)
            await check(path)

        async def set_up(role: str, email: str) -> str:
            await page.goto(data[f"link-{role}"])
            await check(f"set-up form ({role})")
            await page.get_by_label("Choose a password").fill("short")
            await page.get_by_label("Type the password again").fill("short")
            await page.locator("form button[type=submit]").click()
            await check("set-up form with problems")
            await page.get_by_label("Choose a password").fill(PASSWORD)
            await page.get_by_label("Type the password again").fill(PASSWORD)
            await page.locator("form button[type=submit]").click()
            secret = ""
            if await page.locator("#secret").count():
                await check("authenticator enrolment")
                secret = (await page.locator("#secret").inner_text()).replace(" ", "")
                await page.get_by_label("The six-digit code the app now shows").fill("000000")
                await page.get_by_role("button", name="Finish setting up").click()
                await check("authenticator enrolment with a wrong code")
                await page.get_by_label("The six-digit code the app now shows").fill(
                    pyotp.TOTP(secret).at(clock.now())
                )
                await page.get_by_role("button", name="Finish setting up").click()
            await check("sign-in, account ready")
            await page.get_by_label("Email address").fill(email)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            if secret:
                await check("code form")
                clock.advance(timedelta(seconds=30))
                await page.get_by_label("Six-digit code").fill(pyotp.TOTP(secret).at(clock.now()))
                await page.get_by_role("button", name="Continue").click()
            return secret

        await visit("/login")
        await page.get_by_label("Email address").fill("nobody@sbni.example")
        await page.get_by_label("Password").fill("not a password at all")
        await page.get_by_role("button", name="Sign in").click()
        await check("sign-in failed")
        await visit("/account/setup/" + "x" * 43)

        await set_up("secretariat", "lead@sbni.example")
        for path in (
            "/cases",
            "/cases?state=ready_for_panel",
            f"/cases/{data['answered']}",
            "/meetings",
            f"/meetings/{data['first']}",
            f"/meetings/{data['second']}",
            f"/meetings/{data['second']}/pack",
            "/board",
            "/progress",
            "/account",
            "/cases/CMRN-1999-0001",
        ):
            await visit(path)
        await sign_out()

        await set_up("admin", "admin@sbni.example")
        for path in ("/admin/users", "/admin/agencies", "/admin/settings", "/cases"):
            await visit(path)
        await page.goto(base + "/admin/users")
        await page.get_by_label("Email address").fill("new@sbni.example")
        await page.get_by_label("Panel member").check()
        await page.get_by_role("button", name="Add user").click()
        await check("set-up link shown")
        await sign_out()

        await set_up("panel", MEMBER)
        for path in ("/panel", f"/meetings/{data['first']}/pack"):
            await visit(path)
        await context.close()

    assert len(checked) >= 30, checked
    assert not problems, "\n".join(problems)
