"""Outgoing mail as data, and the retry policy. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid


@dataclass(frozen=True)
class MailAttachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class OutgoingMail:
    kind: str
    recipient: str
    subject: str
    text: str
    html: str | None = None
    # A non-personal label for listings: a reference, a request id, a meeting id.
    about: str | None = None
    attachments: tuple[MailAttachment, ...] = field(default_factory=tuple)


def build_message(mail: OutgoingMail, sender: str, at: datetime) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = mail.recipient
    msg["Subject"] = mail.subject
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(mail.text)
    if mail.html is not None:
        msg.add_alternative(mail.html, subtype="html")
    for att in mail.attachments:
        maintype, subtype = att.content_type.split(";")[0].split("/", 1)
        params = {}
        if maintype == "text" and subtype == "calendar":
            params["method"] = "REQUEST"
        msg.add_attachment(
            att.data, maintype=maintype, subtype=subtype, filename=att.filename, params=params
        )
    return msg.as_bytes()


def backoff(attempts: int) -> timedelta:
    """Wait before the next try, after `attempts` failed ones: 1, 2, 4 ... minutes, at most 6 h."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 360))
