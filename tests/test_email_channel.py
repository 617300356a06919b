"""The email channel end to end: a real SMTP client (aiosmtplib, STARTTLS) talks to the
gateway's own listener, and the answer is read where it arrives, at a real SMTP server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import func, select

from gateway.clock import FrozenClock
from gateway.intake.receipts import verify_receipt
from gateway.settings import Settings, load_settings
from gateway.storage.tables import notifications
from tests.mailsink import MailSink, free_port, text_of
from tests.support import Agency, RunningGateway, example, running_gateway

ADDRESS = "notifications@cmr.sbni.example"
PSNI_SENDER = "CMR-Intake@psni.example"
SENDERS = {"PSNI": [PSNI_SENDER, "duty@psni.example"], "EA": ["cmr@ea.example"]}
MAX_BYTES = 64 * 1024


def with_senders(settings: Settings) -> Settings:
    lines = []
    for code, addresses in SENDERS.items():
        lines += [f"[agencies.{code}]", f"senders = {json.dumps(addresses)}"]
    path = settings.data_dir / "settings.toml"
    path.write_text(path.read_text() + "\n" + "\n".join(lines) + "\n")
    return load_settings(settings.data_dir, environ={})


def email_settings(settings: Settings, sink: MailSink) -> Settings:
    settings = with_senders(settings)
    return settings.with_overrides(
        **sink.settings(settings.data_dir / "smtp-password", settings.client_ca),
        email_channel="on",
        smtp_listen_port=free_port(),
        email_address=ADDRESS,
        email_max_bytes=MAX_BYTES,
    )


def _sink(settings: Settings) -> Iterator[MailSink]:
    s = MailSink(settings.server_cert, settings.server_key)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def sink(installation: Settings) -> Iterator[MailSink]:
    yield from _sink(installation)


@pytest.fixture
async def gw(
    installation: Settings, sink: MailSink, clock: FrozenClock
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(email_settings(installation, sink), clock) as g:
        yield g


@pytest.fixture
def sqlite_sink(sqlite_installation: Settings) -> Iterator[MailSink]:
    yield from _sink(sqlite_installation)


@pytest.fixture
async def sqlite_gw(
    sqlite_installation: Settings, sqlite_sink: MailSink, clock: FrozenClock
) -> AsyncIterator[RunningGateway]:
    """For refusals in the SMTP dialogue, which never reach the database."""
    async with running_gateway(email_settings(sqlite_installation, sqlite_sink), clock) as g:
        yield g


def message(*envelopes: bytes, sender: str = PSNI_SENDER) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"PSNI CMR desk <{sender}>"
    msg["To"] = ADDRESS
    msg["Subject"] = "Notification"
    msg["Message-ID"] = make_msgid(domain="psni.example")
    msg.set_content("Please find the notification attached.")
    for i, envelope in enumerate(envelopes):
        msg.add_attachment(
            envelope, maintype="application", subtype="jose", filename=f"notification-{i}.jwe"
        )
    return msg


async def send(
    gw: RunningGateway,
    msg: EmailMessage,
    sender: str = PSNI_SENDER,
    recipient: str = ADDRESS,
    start_tls: bool = True,
) -> str:
    ctx = ssl.create_default_context(cafile=str(gw.settings.client_ca))
    _, response = await aiosmtplib.send(
        msg,
        sender=sender,
        recipients=[recipient],
        hostname="127.0.0.1",
        port=gw.settings.smtp_listen_port,
        start_tls=start_tls,
        tls_context=ctx if start_tls else None,
        timeout=20,
    )
    return response


async def stored(gw: RunningGateway) -> int:
    async with gw.services() as s, s.db.transaction() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(notifications))).scalar_one()
        )


async def outbox_recipients(gw: RunningGateway) -> list[str]:
    async with gw.services() as s:
        return [e.recipient for e in await s.outbox.entries()]


async def reply(sink: MailSink, count: int = 1) -> EmailMessage:
    return (await asyncio.to_thread(sink.wait_for, count))[count - 1]


def attachment(mail: EmailMessage, filename: str) -> Any:
    for part in mail.iter_attachments():
        if part.get_filename() == filename:
            return json.loads(part.get_content())
    raise AssertionError(f"no {filename} in the reply")


async def psni(gw: RunningGateway) -> Agency:
    return await gw.agency("PSNI")


async def test_accepted_envelope_gets_the_receipt_by_mail(
    gw: RunningGateway, sink: MailSink
) -> None:
    agency = await psni(gw)
    envelope = agency.seal()
    msg = message(envelope)
    response = await send(gw, msg)
    assert response.startswith("2.0.0 Accepted as CMRN-")
    reference = response.split()[3].rstrip(";")

    mail = await reply(sink)
    assert mail["To"] == PSNI_SENDER
    assert mail["From"] == gw.settings.mail_from
    assert reference in mail["Subject"]
    text = text_of(mail)
    assert reference in text and msg["Message-ID"] in text
    result = attachment(mail, "receipt.json")
    assert result["reference"] == reference
    assert result["receipt"] in text
    payload = verify_receipt(result["receipt"], gw.jwks())
    assert payload["sub"] == "PSNI"
    assert payload["envelope_sha256"] == hashlib.sha256(envelope).hexdigest()
    # The reply carries the reference and the receipt, never the notification.
    child = example()["children"][0]
    for secret in (child["given_name"], child["family_name"]):
        assert secret not in mail.as_string()

    # The sending server tries again (it never saw our 250): the same receipt, stored once.
    again = await send(gw, message(envelope), sender="duty@psni.example")
    assert again.startswith(f"2.0.0 Accepted as {reference};")
    second = await reply(sink, 2)
    assert attachment(second, "receipt.json") == result
    assert "already stored" in text_of(second)
    assert await stored(gw) == 1
    async with gw.services() as s:
        events = await s.audit.events(reference)
        assert (await s.audit.verify()).ok
    assert [e.action for e in events] == ["notification.received"]
    assert json.loads(events[0].details)["channel"] == "email"


async def test_unregistered_sender_is_refused_in_the_dialogue(
    gw: RunningGateway, sink: MailSink
) -> None:
    agency = await psni(gw)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await send(
            gw, message(agency.seal(), sender="attacker@evil.example"), "attacker@evil.example"
        )
    assert refused.value.code == 550
    assert "not registered" in refused.value.message
    assert "nothing was stored" in refused.value.message

    # A registered MAIL FROM with a header From of another agency (or of nobody): refused too.
    spoofed = message(agency.seal(), sender="cmr@ea.example")
    with pytest.raises(aiosmtplib.SMTPDataError) as data_refused:
        await send(gw, spoofed)
    assert data_refused.value.code == 550
    assert "From header" in data_refused.value.message

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as rcpt:
        await send(gw, message(agency.seal()), recipient="someone-else@cmr.sbni.example")
    assert rcpt.value.recipients[0].code == 550

    assert await stored(gw) == 0
    # No backscatter: nothing queued for, and nothing mailed to, anybody.
    assert await outbox_recipients(gw) == []
    await asyncio.sleep(1)
    assert sink.messages == []


async def test_message_without_attachment_gets_a_problem_reply(
    gw: RunningGateway, sink: MailSink
) -> None:
    msg = message()
    response = await send(gw, msg)
    assert response == (
        "2.0.0 Not accepted (attachment_missing); the reason is mailed to the sender"
    )
    mail = await reply(sink)
    assert mail["To"] == PSNI_SENDER
    assert "attachment_missing" in mail["Subject"]
    assert "Nothing was stored" in text_of(mail)
    problem = attachment(mail, "problem.json")
    assert problem["code"] == "attachment_missing"
    assert len(problem["request_id"]) == 16
    assert await stored(gw) == 0


async def test_message_with_two_envelopes_gets_a_problem_reply(
    gw: RunningGateway, sink: MailSink
) -> None:
    agency = await psni(gw)
    response = await send(gw, message(agency.seal(), agency.seal()))
    assert "attachment_multiple" in response
    mail = await reply(sink)
    assert attachment(mail, "problem.json")["code"] == "attachment_multiple"
    assert "more than one" in text_of(mail)
    assert await stored(gw) == 0


async def test_tampered_and_invalid_envelopes_get_the_problem_code(
    gw: RunningGateway, sink: MailSink
) -> None:
    agency = await psni(gw)
    good = agency.seal()
    middle = len(good) // 2
    tampered = (
        good[:middle] + (b"A" if good[middle : middle + 1] != b"A" else b"B") + good[middle + 1 :]
    )
    assert "envelope_rejected" in await send(gw, message(tampered))
    mail = await reply(sink)
    problem = attachment(mail, "problem.json")
    assert problem["code"] == "envelope_rejected"
    assert problem["status"] == 401
    assert "cause" not in problem and "cause" not in text_of(mail)

    body = example()
    given_name = body["children"][0]["given_name"]
    body["children"][0]["date_of_birth"] = f"not a date {given_name}"
    assert "schema_invalid" in await send(gw, message(agency.seal(body=body)))
    mail = await reply(sink, 2)
    problem = attachment(mail, "problem.json")
    assert problem["code"] == "schema_invalid"
    assert {"pointer": "/children/0/date_of_birth"} in problem["errors"]
    assert "/children/0/date_of_birth" in text_of(mail)
    # Where to look, not what was there: the reply quotes no value of the notification.
    assert given_name not in mail.as_string()

    assert await stored(gw) == 0
    async with gw.services() as s:
        rejected = [e for e in await s.audit.events() if e.action == "notification.rejected"]
    assert [json.loads(e.details)["channel"] for e in rejected] == ["email", "email"]


async def test_plaintext_and_oversize_are_refused(
    sqlite_gw: RunningGateway, sqlite_sink: MailSink
) -> None:
    gw = sqlite_gw
    agency = await psni(gw)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as plain:
        await send(gw, message(agency.seal()), start_tls=False)
    assert plain.value.code == 530
    assert "STARTTLS" in plain.value.message

    big = message(agency.seal(), b"x" * (MAX_BYTES + 1))
    with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
        await send(gw, big)
    assert too_big.value.code == 552
    assert await stored(gw) == 0
    assert await outbox_recipients(gw) == []


def test_sender_addresses_are_checked_when_the_registry_loads() -> None:
    from gateway.agencies.registry import AgencyRegistry
    from gateway.errors import SettingsError
    from gateway.paths import DEFAULT_CONFIG_DIR

    registry = AgencyRegistry.load(DEFAULT_CONFIG_DIR, {"PSNI": {"senders": [PSNI_SENDER]}})
    psni_entry = registry.get("PSNI")
    assert psni_entry is not None and psni_entry.senders == {PSNI_SENDER.lower()}
    for bad in (
        {"PSNI": {"senders": "cmr@psni.example"}},
        {"PSNI": {"senders": ["not-an-address"]}},
        {"PSNI": {"senders": ["shared@example.org"]}, "EA": {"senders": ["Shared@example.org"]}},
    ):
        with pytest.raises(SettingsError, match="senders"):
            AgencyRegistry.load(DEFAULT_CONFIG_DIR, bad)


async def test_a_port_in_use_stops_the_start(
    sqlite_installation: Settings, clock: FrozenClock
) -> None:
    import socket

    from gateway.errors import UsageError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = sqlite_installation.with_overrides(
            email_channel="on", smtp_listen_port=taken.getsockname()[1]
        )
        with pytest.raises(UsageError, match="email channel cannot listen"):
            async with running_gateway(settings, clock):
                pass
