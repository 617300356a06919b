"""The request cycle as agency staff live it, in a real browser: the mail arrives at a real
SMTP server, the link is opened in Chromium, the form is filled and submitted, the link is
dead afterwards, and the answer is stored and audited."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.clock import FrozenClock
from gateway.settings import Settings
from tests.mailsink import MailSink, link_in
from tests.support import example, running_gateway


async def test_answer_in_a_real_browser(
    mail_settings: Settings,
    sink: MailSink,
    clock: FrozenClock,
    browser_context: Any,
) -> None:
    async with running_gateway(mail_settings, clock) as gw:
        psni = await gw.agency("PSNI")
        r = await psni.post(psni.seal())
        assert r.status == 202
        reference = r.json()["reference"]
        async with gw.services() as s:
            created = await s.requests.create(reference, "BHSCT", "secretariat:test")
        link = link_in((await asyncio.to_thread(sink.wait_for, 1))[0])

        page = await browser_context.new_page()
        response = await page.goto(link)
        assert response.status == 200
        assert await page.title() == "Information request - Safeguarding Board for Northern Ireland"
        child = example()["children"][0]
        assert child["given_name"] not in await page.content()
        await page.get_by_role("button", name="Open request").click()
        await page.wait_for_load_state()
        assert child["given_name"] in await page.content()

        await page.get_by_label("Yes").check()
        await page.get_by_label("Summary of what your agency knows").fill(
            "Health visiting since birth; two missed appointments in January."
        )
        await page.get_by_label("Your name").fill("Róisín Ní Bhriain")
        await page.get_by_label("Your role").fill("Named nurse for safeguarding")
        await page.get_by_role("button", name="Submit answer").click()
        await page.wait_for_load_state()
        assert "Your answer has been received" in await page.content()

        again = await page.goto(link)
        assert again.status == 410
        assert "This link is no longer valid" in await page.content()

        async with gw.services() as s:
            answer = await s.requests.read_answer(created.public_id)
            actions = [e.action for e in await s.audit.events(reference)]
            assert (await s.audit.verify()).ok
        assert answer is not None
        assert answer["content"]["respondent"]["name"] == "Róisín Ní Bhriain"
        assert answer["content"]["known_to_agency"] is True
        assert actions[-2:] == ["request.opened", "request.answered"]
