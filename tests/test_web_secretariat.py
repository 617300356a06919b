"""The secretariat's pages over real HTTPS, on SQLite and PostgreSQL: the inbox and its counts,
a notification's file (decrypted, audited as viewed by the person), the screening actions with
their state changes, mail and audit events, and hostile text from agencies and answers rendered
inert."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import markupsafe
import pytest

from gateway.clock import FrozenClock
from gateway.requests.service import Answer, Upload
from gateway.settings import Settings
from tests.mailsink import MailSink, text_of
from tests.staff import FAST_HASHING, signed_in
from tests.support import RunningGateway, example, running_gateway


@pytest.fixture
async def gw(mail_settings: Settings, clock: FrozenClock) -> AsyncIterator[RunningGateway]:
    async with running_gateway(mail_settings.with_overrides(**FAST_HASHING), clock) as g:
        yield g


async def notify(gw: RunningGateway, body: dict[str, Any] | None = None, code: str = "PSNI") -> str:
    agency = await gw.agency(code)
    r = await agency.post(agency.seal(body=body))
    assert r.status == 202, r.body
    return str(r.json()["reference"])


async def status_of(gw: RunningGateway, reference: str) -> str:
    async with gw.services() as s:
        row = await s.secretariat.repo.by_reference(reference)
    assert row is not None
    return row.status


def count_in(html_text: str, state: str) -> int:
    found = re.search(rf'id="count-{state}">(\d+)<', html_text)
    assert found, state
    return int(found.group(1))


async def test_inbox_counts_and_the_audited_case_file(gw: RunningGateway) -> None:
    first = await notify(gw)
    second = await notify(gw)
    async with signed_in(gw, "clerk@sbni.example", "secretariat") as clerk:
        inbox = await clerk.get("/cases")
        assert inbox.status == 200
        assert count_in(inbox.html, "received") == 2
        assert count_in(inbox.html, "screening") == 0
        assert first in inbox.html and second in inbox.html
        # Lists show no personal data; only the file does.
        child = example()["children"][0]
        assert child["given_name"] not in inbox.html
        only = await clerk.get("/cases?state=screening")
        assert first not in only.html and "No notifications in this state" in only.html
        assert (await clerk.get("/cases?state=nonsense")).status == 404

        page = await clerk.get(f"/cases/{first}")
        assert page.status == 200
        assert page.headers["Cache-Control"] == "no-store"
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        text = page.text()
        assert f"{child['given_name']} {child['family_name']}" in text
        assert example()["narratives"]["case_outline"][:60] in text
        assert "17(2)(a) The child has been significantly harmed Yes" in text
        assert "As notified: 17(2)(a) met; 17(2)(b) met; 17(2)(c) is for the panel" in text
        assert "Interpreter needed (Polish)" in text
        assert (await clerk.get("/cases/CMRN-1999-0001")).status == 404

    async with gw.services() as s:
        events = await s.audit.events(first)
        assert (await s.audit.verify()).ok
    viewed = [e for e in events if e.action == "notification.viewed"]
    assert [e.actor for e in viewed] == ["user:clerk@sbni.example"]
    assert not [e for e in await_events(events, second) if e.action == "notification.viewed"]


def await_events(events: list[Any], reference: str) -> list[Any]:
    return [e for e in events if e.subject == reference]


async def test_screening_actions(gw: RunningGateway, sink: MailSink) -> None:
    reference = await notify(gw)
    other = await notify(gw)
    async with signed_in(gw, "clerk@sbni.example", "secretariat") as clerk:
        await clerk.get(f"/cases/{reference}")
        page = await clerk.post(f"/cases/{reference}/screening")
        assert page.status == 200 and "Screening has started" in page.html
        assert await status_of(gw, reference) == "screening"

        # Back to the agency: the reason stays with the case, the mail says only that more
        # detail is needed.
        reason = "Please add the father's current address and the GP practice."
        page = await clerk.post(f"/cases/{reference}/return", {"reason": reason})
        assert "returned to the agency" in page.html
        assert await status_of(gw, reference) == "received"
        mail = (await asyncio.to_thread(sink.wait_for, 1))[0]
        assert mail["To"] == "cmr@psni.example"
        assert reference in mail["Subject"]
        for secret in (reason, example()["children"][0]["given_name"]):
            assert secret not in mail.as_string()
        assert "more detail" in text_of(mail)
        # The reason is in the case's notes (the meetings feature's list), decrypted.
        page = await clerk.get(f"/cases/{reference}")
        assert "Reasons recorded" in page.html and reason in page.text()

        await clerk.post(f"/cases/{reference}/screening")
        page = await clerk.post(
            f"/cases/{reference}/requests", {"agency": "EA", "deadline_days": "5"}
        )
        assert "The information request was sent" in page.html
        assert await status_of(gw, reference) == "information_gathering"
        public_id = re.search(r"(R-[A-Z0-9]{8}) to Education Authority", page.html)
        assert public_id, page.html

        # Not ready while a request is open: refused with the reason, nothing changed.
        refused = await clerk.post(f"/cases/{reference}/ready")
        assert refused.status == 409 and "open information requests" in refused.html
        assert await status_of(gw, reference) == "information_gathering"

        await clerk.get(f"/cases/{reference}")
        page = await clerk.post(f"/requests/{public_id.group(1)}/revoke")
        assert "The request was revoked" in page.html
        page = await clerk.post(f"/cases/{reference}/ready")
        assert "ready for the panel" in page.html
        assert await status_of(gw, reference) == "ready_for_panel"

        await clerk.get(f"/cases/{other}")
        refused = await clerk.post(f"/cases/{other}/withdraw", {"reason": " "})
        assert refused.status == 409
        await clerk.get(f"/cases/{other}")
        page = await clerk.post(f"/cases/{other}/withdraw", {"reason": "Agency withdrew it."})
        assert "was withdrawn" in page.html and "No screening action applies" in page.html
        assert await status_of(gw, other) == "withdrawn"
        # A final state allows nothing more.
        refused = await clerk.post(f"/cases/{other}/screening", csrf=page.csrf)
        assert refused.status == 409 and "cannot become screening" in refused.html

    async with gw.services() as s:
        actions = [(e.actor, e.action) for e in await s.audit.events(reference)]
        assert (await s.audit.verify()).ok
    me = "user:clerk@sbni.example"
    for action in (
        "notification.screening",
        "notification.returned",
        "request.created",
        "request.revoked",
        "notification.ready_for_panel",
    ):
        assert (me, action) in actions, actions


XSS = ("<script>alert({n})</script>", '"><img src=x onerror=alert({n})>')
# Fields whose values the schema fixes (enums, dates): no text can be planted there.
FIXED = {"route", "type", "date", "date_of_birth", "gender", "relationship", "system"}
FIXED |= {"abuse_or_neglect", "child", "siblings", "agency_code", "jurisdiction"}
FIXED |= {"other_jurisdictions", "abuse_categories"}


def plant(document: Any, planted: list[str]) -> Any:
    """Every free-text field of a notification, filled with markup (the agency's side)."""
    if isinstance(document, dict):
        return {
            k: v
            if k in FIXED
            else _hostile(k, v, planted)
            if isinstance(v, str)
            else plant(v, planted)
            for k, v in document.items()
        }
    if isinstance(document, list):
        return [
            _hostile("", v, planted) if isinstance(v, str) else plant(v, planted) for v in document
        ]
    return document


def _hostile(key: str, value: str, planted: list[str]) -> str:
    n = len(planted) + 1
    if key == "email":
        payload = f'"/onmouseover=alert({n})>@x.example'
    elif key == "postcode":
        payload = f"<b{n}>"
    elif key == "value":
        payload = f"<i onclick={n}>"
    else:
        payload = XSS[n % 2].format(n=n)
    planted.append(payload)
    return payload


def assert_inert(page_html: str, payloads: list[str]) -> None:
    """Each payload is on the page, escaped as Jinja escapes, and nowhere as markup."""
    assert "<script" not in page_html.lower()
    for payload in payloads:
        assert payload not in page_html, payload
        assert str(markupsafe.escape(payload)) in page_html, payload


async def test_hostile_text_from_agencies_and_answers_is_inert(gw: RunningGateway) -> None:
    planted: list[str] = []
    reference = await notify(gw, plant(copy.deepcopy(example()), planted))
    assert len(planted) > 30
    answer = {
        "nature": "<script>alert('nature')</script>",
        "summary": '"><img src=x onerror=alert("summary")>',
        "concerns": "<svg onload=alert('concerns')>",
        "respondent_name": "<script>alert('name')</script>",
        "respondent_role": '"><script>alert("role")</script>',
    }
    filename = '"><img src=x onerror=alert("file")>.txt'
    declined = "<script>alert('declined')</script>"
    async with gw.services() as s:
        questions = s.requests.questions.for_agency("EA").questions
        extra = {q.id: f"<script>alert('{q.id}')</script>" for q in questions}
        created = await s.requests.create(reference, "EA", "cli:test")
        await s.requests.submit(
            created.link.rsplit("/", 1)[1],
            Answer(known="yes", extra=extra, **answer),
            [Upload(filename, "text/plain", b"notes")],
        )
        created = await s.requests.create(reference, "BHSCT", "cli:test")
        await s.requests.decline(created.link.rsplit("/", 1)[1], declined)
    async with signed_in(gw, "clerk@sbni.example", "secretariat") as clerk:
        page = await clerk.get(f"/cases/{reference}")
        assert page.status == 200, page.html
    assert_inert(page.html, [*planted, *answer.values(), *extra.values(), filename, declined])


async def test_answer_attachments_download_from_the_case_file(gw: RunningGateway) -> None:
    reference = await notify(gw)
    other = await notify(gw)
    data = b"%PDF-1.4\n% chronology of contact\n"
    name = 'Chronología "final";\r\nX-Evil: 1.pdf'
    async with gw.services() as s:
        created = await s.requests.create(reference, "EA", "cli:test")
        await s.requests.submit(
            created.link.rsplit("/", 1)[1],
            Answer(known="yes", summary="See the chronology.", respondent_name="A. Officer"),
            [Upload(name, "application/pdf", data)],
        )
        answer = await s.requests.read_answer(created.public_id)
    assert answer is not None
    att = answer["attachments"][0]["id"]
    path = f"/cases/{reference}/requests/{created.public_id}/attachments/{att}"
    async with signed_in(gw, "clerk@sbni.example", "secretariat") as clerk:
        page = await clerk.get(f"/cases/{reference}")
        assert f'href="{path}"' in page.html
        status, body, headers = await clerk.get_bytes(path)
        assert status == 200 and body == data
        assert headers["Content-Type"] == "application/pdf"
        disposition = headers["Content-Disposition"]
        assert disposition.startswith('attachment; filename="Chronolog_a _final__')
        assert "filename*=UTF-8''Chronolog%C3%ADa%20%22final%22%3B%0D%0AX-Evil" in disposition
        assert "X-Evil" not in headers and headers["Cache-Control"] == "no-store"
        assert headers["Content-Security-Policy"] == "sandbox"
        # Only through its own notification, and only attachments that exist.
        assert (await clerk.get_bytes(path.replace(reference, other)))[0] == 404
        assert (await clerk.get_bytes(path[: -len(str(att))] + str(att + 99)))[0] == 404
    # Other roles: tests/test_web_accounts.py::test_every_page_is_closed_to_other_roles.
    async with gw.services() as s:
        events = await s.secretariat.audit.events(reference)
    seen = [e for e in events if e.action == "notification.viewed"]
    assert any(
        json.loads(e.details).get("what") == "attachment" and "clerk@sbni.example" in e.actor
        for e in seen
    ), seen


MEMBER = "ciara.sample@sbni.example"  # "ea" in config/meetings.toml


async def ready_case(gw: RunningGateway) -> str:
    reference = await notify(gw)
    async with gw.services() as s:
        await s.cases.mark_ready(reference, "cli:test")
    return reference


async def test_meeting_from_agenda_to_board_and_review(gw: RunningGateway, sink: MailSink) -> None:
    from datetime import datetime, timedelta

    reference = await ready_case(gw)
    async with gw.services() as s:
        members = [m.id for m in s.meetings.calendar.members]
        zone = s.meetings.zone
    day = (gw.clock.now().astimezone(zone) + timedelta(days=12)).date()
    async with signed_in(gw, "clerk@sbni.example", "secretariat") as clerk:
        await clerk.get("/meetings")
        page = await clerk.post("/meetings", {"starts_at": f"{day.isoformat()}T10:00"})
        assert "The meeting was added" in page.html, page.html
        public_id = page.url.rsplit("/", 1)[1].split("?")[0]
        page = await clerk.post(f"/meetings/{public_id}/compile", {"aob": "Annual report"})
        assert "The agenda was compiled" in page.html
        assert reference in page.html and "Annual report" in page.html
        page = await clerk.post(f"/meetings/{public_id}/issue")
        assert "notice sent to every member" in page.html
        status, pdf, headers = await clerk.get_bytes(f"/meetings/{public_id}/pack/pdf")
        assert status == 200 and pdf.startswith(b"%PDF-")
        assert headers["Content-Type"] == "application/pdf"
        assert "attachment" in headers["Content-Disposition"]

    # The day after the meeting: record it, then the Board decides, then the review runs.
    gw.clock.set(datetime.combine(day + timedelta(days=1), datetime.min.time(), zone))
    async with signed_in(gw, "clerk2@sbni.example", "secretariat") as clerk:
        page = await clerk.get(f"/meetings/{public_id}")
        assert "Record the meeting" in page.html
        form: list[tuple[str, str]] = [("csrf", page.csrf)]
        form += [("present", m) for m in members]
        form += [("outcome-" + reference, "recommend"), ("rationale-" + reference, "Criteria met.")]
        form += [(f"vote-{reference}-{m}", "for") for m in members]
        async with clerk.session.post(
            clerk.gw.web_url + f"/meetings/{public_id}/record", data=form
        ) as r:
            text = await r.text()
            assert r.status == 200 and "The meeting was recorded" in text, text
        assert await status_of(gw, reference) == "recommended"

        page = await clerk.get("/board")
        assert reference in page.html
        page = await clerk.post(
            f"/cases/{reference}/board", {"decision": "commissioned", "on": day.isoformat()}
        )
        assert "The Board's decision was recorded" in page.text()
        assert await status_of(gw, reference) == "commissioned"
        await clerk.get("/progress")
        page = await clerk.post(f"/cases/{reference}/cmr/start", {"on": day.isoformat()})
        assert await status_of(gw, reference) == "cmr_under_way"
        page = await clerk.post(
            f"/cases/{reference}/cmr/complete",
            {
                "on": (day + timedelta(days=1)).isoformat(),
                "recommendations": "4",
                "themes": "information sharing\ninterpreters",
            },
        )
        assert "The review's completion was recorded" in page.text()
        assert "information sharing, interpreters" in page.html
        assert await status_of(gw, reference) == "cmr_completed"

    # A member reads the pack; an account not on the member list sees no meeting at all.
    async with signed_in(gw, MEMBER, "panel") as member:
        page = await member.get("/panel")
        assert public_id in page.html
        page = await member.get(f"/meetings/{public_id}/pack")
        assert page.status == 200 and reference in page.html
        status, pdf, _ = await member.get_bytes(f"/meetings/{public_id}/pack/pdf")
        assert status == 200 and pdf.startswith(b"%PDF-")
        assert (await member.get(f"/cases/{reference}")).status == 403
        assert (await member.get(f"/meetings/{public_id}")).status == 403
    async with signed_in(gw, "stranger@sbni.example", "panel") as stranger:
        page = await stranger.get("/panel")
        assert public_id not in page.html and "not on the panel's list" in page.text()
        assert (await stranger.get(f"/meetings/{public_id}/pack")).status == 404
        assert (await stranger.get(f"/meetings/{public_id}/pack/pdf")).status == 404
        assert (await stranger.get("/meetings/M-1999-01/pack")).status == 404

    async with gw.services() as s:
        views = [
            e.actor for e in await s.audit.events(reference) if e.action == "notification.viewed"
        ]
        assert (await s.audit.verify()).ok
    assert f"user:{MEMBER}" in views and "user:clerk@sbni.example" in views
    assert "user:stranger@sbni.example" not in views
