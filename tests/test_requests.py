"""Information requests end to end: the mail arrives at a real SMTP server, the link is taken
from it, the pages are driven over real HTTPS with cookies, and the state is checked in the
database. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from gateway.clock import FrozenClock
from gateway.settings import Settings
from tests.mailsink import MailSink, link_in, text_of
from tests.support import RunningGateway, example, running_gateway, with_contacts


async def notify(gw: RunningGateway, body: dict[str, Any] | None = None) -> str:
    psni = await gw.agency("PSNI")
    r = await psni.post(psni.seal(body=body))
    assert r.status == 202, r.body
    return str(r.json()["reference"])


@dataclass
class Browser:
    """What a person's browser does: keeps cookies, follows the forms."""

    session: aiohttp.ClientSession

    async def get(self, url: str) -> tuple[int, str, dict[str, str]]:
        async with self.session.get(url) as r:
            return r.status, await r.text(), dict(r.headers)

    async def post(self, url: str, data: Any) -> tuple[int, str, dict[str, str]]:
        async with self.session.post(url, data=data) as r:
            return r.status, await r.text(), dict(r.headers)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@pytest.fixture
async def browser(gw: RunningGateway) -> AsyncIterator[Browser]:
    ctx = ssl.create_default_context(cafile=str(gw.settings.client_ca))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx), cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as s:
        yield Browser(s)


async def request_status(gw: RunningGateway, public_id: str) -> str:
    async with gw.services() as s:
        return (await s.requests.get(public_id)).status


async def open_form(browser: Browser, sink: MailSink) -> tuple[str, str]:
    """The link of the first mail, opened as a person would: landing page, then Open."""
    link = link_in((await asyncio.to_thread(sink.wait_for, 1))[0])
    _, page, _ = await browser.get(link)
    status, form_page, _ = await browser.post(link + "/open", {"csrf": csrf_of(page)})
    assert status == 200
    return link, form_page


def answer_form(csrf: str, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    values = {
        "csrf": csrf,
        "action": "answer",
        "known": "yes",
        "summary": "Known since 2024.",
        "respondent_name": "A. Officer",
        "respondent_role": "Safeguarding lead",
        **fields,
    }
    for k, v in values.items():
        form.add_field(k, v)
    return form


async def test_request_cycle_end_to_end(
    gw: RunningGateway, sink: MailSink, browser: Browser
) -> None:
    reference = await notify(gw)
    async with gw.services() as s:
        created = await s.requests.create(reference, "EA", "secretariat:test")
    mails = await asyncio.to_thread(sink.wait_for, 1)
    mail = mails[0]
    assert mail["To"] == "cmr@ea.example"
    assert reference in mail["Subject"]
    body = text_of(mail)
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None
    # No personal data in the mail: nobody of the notification is named in it.
    child = example()["children"][0]
    for secret in (
        child["given_name"],
        child["family_name"],
        example()["narratives"]["case_outline"][:30],
    ):
        assert secret not in mail.as_string()
    link = link_in(mail)
    assert created.deadline_on.strftime("%d %B %Y") in body

    # A mail scanner's GET changes nothing and shows nothing personal.
    for _ in range(3):
        status, page, headers = await browser.get(link)
        assert status == 200
    assert await request_status(gw, created.public_id) == "sent"
    assert child["given_name"] not in page
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert "script-src" not in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "Open request" in page

    # Opening without the CSRF token is refused; with it, the request is opened.
    status, _, _ = await browser.post(link + "/open", {"csrf": "forged"})
    assert status == 403
    assert await request_status(gw, created.public_id) == "sent"
    status, form_page, _ = await browser.post(link + "/open", {"csrf": csrf_of(page)})
    assert status == 200
    assert child["given_name"] in form_page
    assert await request_status(gw, created.public_id) == "opened"

    status, done, _ = await browser.post(link, answer_form(csrf_of(form_page)))
    assert status == 200, done
    assert "Your answer has been received" in done
    assert re.search(r"Received at <strong>\d\d \w+ \d{4} at \d\d:\d\d:\d\d", done)
    assert await request_status(gw, created.public_id) == "answered"

    # The link is dead now, for GET and POST alike.
    status, gone, _ = await browser.get(link)
    assert status == 410 and "no longer valid" in gone
    status, _, _ = await browser.post(link, answer_form(csrf_of(form_page)))
    assert status == 410

    async with gw.services() as s:
        answer = await s.requests.read_answer(created.public_id)
        events = [e.action for e in await s.audit.events(reference)]
        assert (await s.audit.verify()).ok
        assert await s.requests.settled(reference)
    assert answer is not None and answer["kind"] == "answered"
    assert answer["content"]["summary"] == "Known since 2024."
    assert answer["content"]["respondent"]["name"] == "A. Officer"
    assert events == [
        "notification.received",
        "request.created",
        "request.opened",
        "request.answered",
    ]


async def test_parallel_submissions_store_one_answer(
    gw: RunningGateway, sink: MailSink, browser: Browser
) -> None:
    reference = await notify(gw)
    async with gw.services() as s:
        created = await s.requests.create(reference, "EA", "t")
    link, form_page = await open_form(browser, sink)
    token = csrf_of(form_page)
    results = await asyncio.gather(*(browser.post(link, answer_form(token)) for _ in range(20)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] + [410] * 19
    async with gw.services() as s, s.db.transaction() as conn:
        from sqlalchemy import func, select

        from gateway.storage.tables import request_answers

        n = (await conn.execute(select(func.count()).select_from(request_answers))).scalar_one()
    assert n == 1
    assert await request_status(gw, created.public_id) == "answered"


async def test_every_dead_link_gets_the_same_page(
    gw: RunningGateway, sink: MailSink, browser: Browser
) -> None:
    reference = await notify(gw)
    async with gw.services() as s:
        revoked = await s.requests.create(reference, "EA", "t")
        expiring = await s.requests.create(reference, "BHSCT", "t")
        await s.requests.create(reference, "PSNI", "t")
        await s.requests.revoke(revoked.public_id, "t")
    mails = {m["To"]: link_in(m) for m in await asyncio.to_thread(sink.wait_for, 3)}
    # Spend one.
    _, page, _ = await browser.get(mails["cmr@psni.example"])
    status, _, _ = await browser.post(
        mails["cmr@psni.example"],
        {"csrf": csrf_of(page), "action": "decline", "reason": "No records."},
    )
    assert status == 200
    # Expire one by moving the clock past its deadline.
    gw.clock.set(
        expiring_deadline := datetime.combine(
            expiring.deadline_on + timedelta(days=1), datetime.min.time(), UTC
        )
        + timedelta(hours=2)
    )
    assert expiring_deadline
    random_link = mails["cmr@ea.example"].rsplit("/", 1)[0] + "/" + "A" * 43
    pages = []
    for link in (
        mails["cmr@ea.example"],
        mails["cmr@belfasttrust.example"],
        mails["cmr@psni.example"],
        random_link,
    ):
        status, text, _ = await browser.get(link)
        assert status == 410, link
        pages.append(text)
        status, _, _ = await browser.post(link, answer_form(csrf_of(page)))
        assert status == 410
    assert len(set(pages)) == 1


async def test_csrf_missing_or_wrong_is_403(
    gw: RunningGateway, sink: MailSink, browser: Browser
) -> None:
    reference = await notify(gw)
    async with gw.services() as s:
        created = await s.requests.create(reference, "EA", "t")
    link, form_page = await open_form(browser, sink)
    for fields in ({"csrf": "wrong" * 9}, {}):
        form = answer_form("x")
        if not fields:
            form = aiohttp.FormData({"action": "answer", "known": "no", "respondent_name": "x"})
        else:
            form = answer_form(fields["csrf"])
        status, text, _ = await browser.post(link, form)
        assert status == 403
        assert "did not come from this site" in text
    # A fresh browser without the cookie, even with the field copied, is refused too.
    ctx = ssl.create_default_context(cafile=str(gw.settings.client_ca))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as other,
        other.post(link, data=answer_form(csrf_of(form_page))) as r,
    ):
        assert r.status == 403
    assert await request_status(gw, created.public_id) == "opened"


async def test_xss_in_answers_is_inert(
    gw: RunningGateway, sink: MailSink, browser: Browser
) -> None:
    reference = await notify(gw)
    async with gw.services() as s:
        await s.requests.create(reference, "EA", "t")
    link, form_page = await open_form(browser, sink)
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    # Invalid (no name) so that the form is shown again with what was typed.
    status, again, _ = await browser.post(
        link, answer_form(csrf_of(form_page), summary=payload, respondent_name="")
    )
    assert status == 422
    assert "<script>alert(1)" not in again
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in again
    assert "Give your name" in again


async def test_revoke_and_reissue(gw: RunningGateway, sink: MailSink, browser: Browser) -> None:
    reference = await notify(gw)
    async with gw.services() as s:
        first = await s.requests.create(reference, "EA", "t")
        second = await s.requests.reissue(first.public_id, "t")
        assert (await s.requests.get(first.public_id)).status == "revoked"
        assert (await s.requests.get(second.public_id)).replaces_id is not None
    old, new = (link_in(m) for m in await asyncio.to_thread(sink.wait_for, 2))
    assert (await browser.get(old))[0] == 410
    assert (await browser.get(new))[0] == 200


async def test_withdrawing_the_notification_closes_its_open_requests(
    gw: RunningGateway, sink: MailSink, browser: Browser
) -> None:
    reference = await notify(gw)
    async with gw.services() as s:
        answered = await s.requests.create(reference, "PSNI", "t")
        open_one = await s.requests.create(reference, "EA", "t")
    links = {m["To"]: link_in(m) for m in await asyncio.to_thread(sink.wait_for, 2)}
    _, page, _ = await browser.get(links["cmr@psni.example"])
    status, _, _ = await browser.post(
        links["cmr@psni.example"],
        {"csrf": csrf_of(page), "action": "decline", "reason": "No records."},
    )
    assert status == 200
    async with gw.services() as s:
        await s.cases.withdraw(reference, "Withdrawn: Kieran Markerson was not involved.", "t")
    assert await request_status(gw, open_one.public_id) == "revoked"
    assert await request_status(gw, answered.public_id) == "declined"
    assert (await browser.get(links["cmr@ea.example"]))[0] == 410
    told = (await asyncio.to_thread(sink.wait_for, 3))[2]
    assert told["To"] == "cmr@ea.example"
    assert open_one.public_id in told["Subject"] and "no longer needed" in text_of(told)
    assert "Markerson" not in told.as_string()
    # Only the open request's agency is told: the one that already declined gets nothing more.
    async with gw.services() as s:
        withdrawn = [e for e in await s.outbox.entries() if e.kind == "request_withdrawn"]
    assert [(e.recipient, e.about) for e in withdrawn] == [("cmr@ea.example", open_one.public_id)]


async def test_smtp_down_then_back(gw: RunningGateway, sink: MailSink) -> None:
    sink.stop()
    reference = await notify(gw)
    async with gw.services() as s:
        created = await s.requests.create(reference, "EA", "t")
        assert (await s.requests.get(created.public_id)).status == "sent"
        assert await s.sender.deliver_due() == 0
        [entry] = await s.outbox.entries()
        assert entry.status == "pending" and entry.attempts == 1 and entry.last_error
        sink.start()
        assert await s.sender.deliver_due() == 0  # not due again yet: backoff
        gw.clock.advance(timedelta(minutes=2))
        assert await s.sender.deliver_due() == 1
        assert await s.sender.deliver_due() == 0
        [entry] = await s.outbox.entries()
        assert entry.status == "delivered"
    await asyncio.sleep(0.5)
    assert len(sink.messages) == 1


async def test_mail_failing_every_try_is_marked_failed(gw: RunningGateway, sink: MailSink) -> None:
    sink.stop()
    reference = await notify(gw)
    async with gw.services() as s:
        await s.requests.create(reference, "EA", "t")
        for _ in range(gw.settings.outbox_max_attempts + 2):
            await s.sender.deliver_due()
            gw.clock.advance(timedelta(hours=7))
        [entry] = await s.outbox.entries()
        assert entry.status == "failed"
        assert entry.attempts == gw.settings.outbox_max_attempts
        assert [e.action for e in await s.audit.events(f"outbox:{entry.id}")] == ["mail.failed"]
        # The secretariat sees it, and can send it again once the server is back.
        from gateway.requests.cli import cmd_outbox_list  # noqa: F401  (listed by `outbox list`)

        assert [e.id for e in await s.outbox.entries("failed")] == [entry.id]
        sink.start()
        async with s.db.transaction() as conn:
            assert await s.outbox.retry(conn, entry.id, gw.clock.now())
        assert await s.sender.deliver_due() == 1


async def test_rate_limit_on_respond(mail_settings: Settings, clock: FrozenClock) -> None:
    settings = mail_settings.with_overrides(respond_rate_per_minute=5)
    async with running_gateway(settings, clock) as g, g.web_session() as web:
        statuses = []
        for _ in range(8):
            async with web.get("/respond/" + "B" * 43) as r:
                statuses.append(r.status)
                retry = r.headers.get("Retry-After")
        assert statuses[:5] == [410] * 5
        assert statuses[5:] == [429] * 3
        assert retry is not None and int(retry) >= 1


async def test_attachments(gw: RunningGateway, sink: MailSink, browser: Browser) -> None:
    reference = await notify(gw)
    async with gw.services() as s:
        created = await s.requests.create(reference, "EA", "t")
    link, form_page = await open_form(browser, sink)
    bad = answer_form(csrf_of(form_page))
    bad.add_field(
        "attachments",
        b"MZ\x90\x00 not a pdf",
        filename="report.pdf",
        content_type="application/pdf",
    )
    status, text, _ = await browser.post(link, bad)
    assert status == 422 and "Attach only" in text
    good = answer_form(csrf_of(form_page))
    good.add_field(
        "attachments",
        b"%PDF-1.4\n% chronology\n",
        filename="chronology.pdf",
        content_type="application/pdf",
    )
    status, _, _ = await browser.post(link, good)
    assert status == 200
    async with gw.services() as s:
        answer = await s.requests.read_answer(created.public_id)
    assert answer is not None
    assert [(a["filename"], a["content_type"]) for a in answer["attachments"]] == [
        ("chronology.pdf", "application/pdf")
    ]


async def test_intake_rule_creates_requests(installation: Settings, clock: FrozenClock) -> None:
    settings = with_contacts(installation, auto_request_agencies=["EA", "BHSCT", "PSNI"])
    async with running_gateway(settings, clock) as g:
        reference = await notify(g)  # PSNI notifies: it is not asked itself
        async with g.services() as s:
            rows = await s.requests.all_requests(reference)
            status = await s.notifications.status("PSNI", reference)
    assert sorted(r.agency for r in rows) == ["BHSCT", "EA"]
    assert status is not None and status.status == "information_gathering"


async def test_request_cli(gw: RunningGateway, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    reference = await notify(gw)
    d = str(gw.settings.data_dir)
    assert (
        await asyncio.to_thread(
            main,
            [
                "--data-dir",
                d,
                "request",
                "create",
                reference,
                "--agency",
                "EA",
                "--deadline-days",
                "5",
            ],
        )
        == 0
    )
    out = capsys.readouterr().out
    public_id = re.search(r"request (R-\w+)", out).group(1)  # type: ignore[union-attr]
    assert await asyncio.to_thread(main, ["--data-dir", d, "request", "list", reference]) == 0
    assert public_id in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["--data-dir", d, "request", "reissue", public_id]) == 0
    assert await asyncio.to_thread(main, ["--data-dir", d, "request", "revoke", public_id]) == 2
    assert "only an open request" in capsys.readouterr().err
    assert (
        await asyncio.to_thread(
            main, ["--data-dir", d, "request", "create", "CMRN-1999-0001", "--agency", "EA"]
        )
        == 2
    )
    assert (
        await asyncio.to_thread(
            main, ["--data-dir", d, "request", "create", reference, "--agency", "YJA"]
        )
        == 2
    )
    assert "no contact" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["--data-dir", d, "outbox", "list"]) == 0
    assert "cmr@ea.example" in capsys.readouterr().out


async def test_the_sender_stops_when_cancelled_as_it_is_woken(installation: Settings) -> None:
    # Python 3.11's asyncio.wait_for drops a cancellation that arrives as the awaited thing
    # completes: the sender then ran on and the gateway's shutdown waited for it for ever.
    from gateway.services import open_services

    async with open_services(installation) as s:
        for _ in range(20):
            task = asyncio.create_task(s.sender.run())
            await asyncio.sleep(0.05)  # waiting to be woken
            s.sender.wake()
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done == {task}, "the sender went on after it was cancelled"
            assert task.cancelled()
