"""The email channel: the gateway's own SMTP listener (aiosmtpd's protocol on the gateway's
event loop, so the pipeline runs where it always runs). STARTTLS is required before MAIL, the
message size is capped, and a message must carry exactly one envelope as an `application/jose`
part. The answer (the receipt, or the problem) goes back to the sender by email.

Who sent it: the agency whose registered sender address MAIL FROM is, and the header From must
be a registered address of the same agency. Sender addresses are spoofable, so they only route
a message; what authenticates it is the signature inside the envelope, which the pipeline checks
against the keys registered for that agency (`iss` must be the agency). A forged sender address
therefore gets nothing stored, and the reply goes to the registered address, not the forger.

What is refused in the SMTP dialogue itself, with a clear text and no mail sent (a reply to an
unregistered address would be backscatter to whoever was forged): an unregistered MAIL FROM,
a recipient other than the gateway's address, a header From that is not the same agency's, an
auto-reply, a message over the size limit, and plain text without STARTTLS. What reaches the
pipeline, or fails on the attachment rule, is answered by email and accepted with 250 once the
answer is in the outbox. Storage down (or the outbox) is a 451: the sending server tries again
later, and the pipeline answers a repeat of the same bytes with the original receipt."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import re
import ssl
import weakref
from collections.abc import Mapping
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.channels.base import Submit, new_request_id
from gateway.errors import GatewayError, PayloadTooLarge, Unavailable, UsageError
from gateway.intake.service import SubmitResult
from gateway.outbox.model import MailAttachment, OutgoingMail

log = structlog.get_logger("gateway.channels.email")

JOSE = "application/jose"
IDENT = "CMR notification gateway"


class AttachmentMissing(GatewayError):
    code = "attachment_missing"
    status = 422
    title = "The message carries no application/jose attachment (the envelope)"


class AttachmentMultiple(GatewayError):
    code = "attachment_multiple"
    status = 422
    title = "The message carries more than one application/jose attachment: one envelope a message"


class Replies(Protocol):
    async def send(self, mail: OutgoingMail) -> None:
        """Durably queue `mail` for delivery; Unavailable when it could not be queued."""
        ...


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class EmailChannel:
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        address: str,
        senders: Mapping[str, str],
        tls: ssl.SSLContext,
        replies: Replies,
        max_message_bytes: int,
        max_envelope_bytes: int,
    ) -> None:
        self.host = host
        self.port = port
        self.address = address.lower()
        self.senders = {a.lower(): code for a, code in senders.items()}
        self.tls = tls
        self.replies = replies
        self.max_message_bytes = max_message_bytes
        self.max_envelope_bytes = max_envelope_bytes
        self.bound: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        # Weak: a finished connection must not be kept alive by this bookkeeping.
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._submit: Submit | None = None

    def describe(self) -> str:
        host, port = self.bound or (self.host, self.port)
        shown = f"[{host}]" if ":" in host else host
        return f"email channel (STARTTLS): smtp://{shown}:{port} for <{self.address}>"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        handler = _Handler(self)
        domain = self.address.rsplit("@", 1)[-1]

        def protocol() -> SMTP:
            smtp = SMTP(
                handler,
                loop=loop,
                hostname=domain,  # not socket.getfqdn(): no DNS look-up per connection
                ident=IDENT,
                tls_context=self.tls,
                require_starttls=True,
                data_size_limit=self.max_message_bytes,
                # Agencies' mail servers deliver, they do not log in: no AUTH offered.
                auth_exclude_mechanism=["LOGIN", "PLAIN"],
                timeout=120,
                command_call_limit=100,
            )
            self._sessions.add(smtp)
            return smtp

        try:
            # Bound now, served from `run`: a port in use stops the start-up.
            self._server = await loop.create_server(
                protocol, self.host, self.port, start_serving=False
            )
        except OSError as exc:
            raise UsageError(
                f"the email channel cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        sockname = self._server.sockets[0].getsockname()
        self.bound = (str(sockname[0]), int(sockname[1]))

    async def run(self, submit: Submit) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        self._submit = submit
        try:
            await self._server.serve_forever()
        finally:
            self._server.close()
            # Connections outlive a closed server: end them, so none submits after shutdown.
            for smtp in list(self._sessions):
                if smtp.transport is not None:
                    smtp.transport.close()
            self._sessions.clear()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    # -- the message ----------------------------------------------------------------------------

    def agency_of(self, address: str | None) -> str | None:
        return self.senders.get((address or "").strip().lower())

    async def receive(self, mail_from: str, content: bytes) -> str:
        """The SMTP answer to DATA."""
        agency = self.agency_of(mail_from)
        assert agency is not None  # refused at MAIL otherwise
        request_id = new_request_id()
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        from_header = _single_from(msg)
        if from_header is None or self.agency_of(from_header) != agency:
            log.warning("email_from_refused", agency=agency, request_id=request_id)
            return (
                "550 5.7.1 The From header must be one registered sender address of the "
                "agency of MAIL FROM; nothing was stored"
            )
        if str(msg.get("Auto-Submitted", "no")).strip().lower().startswith("auto-replied"):
            # An out-of-office answer to one of our replies: answering it would loop.
            return "550 5.7.1 Auto-replies are not taken; nothing was stored"
        message_id = _safe(str(msg.get("Message-ID", "")))

        outcome: SubmitResult | GatewayError
        try:
            outcome = await self._open(agency, msg, request_id)
        except Unavailable:
            log.warning("email_unavailable", agency=agency, request_id=request_id)
            return "451 4.3.0 The gateway is temporarily unavailable; try again later"
        mail = (
            receipt_mail(from_header, message_id, outcome)
            if isinstance(outcome, SubmitResult)
            else problem_mail(from_header, message_id, outcome, request_id)
        )
        try:
            await self.replies.send(mail)
        except Unavailable:
            # The notification may be stored already: a retry of the same bytes gets the same
            # receipt, so asking the sending server to try again loses nothing and stores once.
            log.warning("email_reply_unavailable", agency=agency, request_id=request_id)
            return "451 4.3.0 The gateway is temporarily unavailable; try again later"
        if isinstance(outcome, SubmitResult):
            log.info(
                "email_accepted",
                agency=agency,
                request_id=request_id,
                reference=outcome.reference,
                created=outcome.created,
            )
            return f"250 2.0.0 Accepted as {outcome.reference}; the receipt is mailed to the sender"
        log.info("email_not_accepted", agency=agency, request_id=request_id, code=outcome.code)
        return f"250 2.0.0 Not accepted ({outcome.code}); the reason is mailed to the sender"

    async def _open(
        self, agency: str, msg: EmailMessage, request_id: str
    ) -> SubmitResult | GatewayError:
        parts = [p for p in msg.walk() if not p.is_multipart() and p.get_content_type() == JOSE]
        if not parts:
            return AttachmentMissing()
        if len(parts) > 1:
            return AttachmentMultiple()
        raw = _content(parts[0])
        if len(raw) > self.max_envelope_bytes:
            return PayloadTooLarge()
        submit = self._submit
        if submit is None:
            raise Unavailable()
        try:
            return await submit(agency, raw.strip(), request_id, self.name)
        except Unavailable:
            raise
        except GatewayError as exc:
            return exc


class _Handler:
    """aiosmtpd's hooks: refuse in the dialogue what needs no reading of the message."""

    def __init__(self, channel: EmailChannel) -> None:
        self.channel = channel

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.channel.agency_of(address) is None:
            peer = session.peer[0] if isinstance(session.peer, tuple) else session.peer
            log.warning("email_sender_refused", peer=peer)
            return (
                "550 5.7.1 This sender address is not registered with the CMR gateway for any "
                "agency; the message is refused and nothing was stored"
            )
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.strip().lower() != self.channel.address:
            return f"550 5.1.1 No such mailbox here; send notifications to <{self.channel.address}>"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        try:
            return await self.channel.receive(envelope.mail_from or "", content)
        except Exception:
            # Better the sending server tries again than a message is lost to a bug.
            log.exception("email_failed")
            return "451 4.3.0 The message could not be processed; try again later"


# -- the replies: the reference and the receipt, or the problem; never the notification -------


def receipt_mail(recipient: str, message_id: str, result: SubmitResult) -> OutgoingMail:
    state = "stored it" if result.created else "had already stored it (a repeat)"
    text = (
        f"The CMR notification gateway received your message {message_id} and {state}.\n\n"
        f"Reference: {result.reference}\n\n"
        "The signed receipt (a JWS by the gateway's receipt key, published at\n"
        "/.well-known/jwks.json) is attached as receipt.json, and is:\n\n"
        f"{result.receipt}\n"
    )
    return OutgoingMail(
        kind="channel.email.receipt",
        recipient=recipient,
        subject=f"CMR notification received: {result.reference}",
        text=text,
        about=result.reference,
        attachments=(
            MailAttachment(
                "receipt.json", "application/json", json.dumps(result.body(), indent=2).encode()
            ),
        ),
    )


def problem_mail(
    recipient: str, message_id: str, error: GatewayError, request_id: str
) -> OutgoingMail:
    problem: dict[str, Any] = {
        "type": f"https://sbni.example/problems/{error.code}",
        "title": error.title,
        "status": error.status,
        "code": error.code,
        "request_id": request_id,
    }
    lines = [
        f"The CMR notification gateway did not accept your message {message_id}.",
        "Nothing was stored.",
        "",
        f"Code:       {error.code}",
        f"Reason:     {error.title}",
        f"Request id: {request_id} (quote it when you ask about this message)",
    ]
    errors = error.extra.get("errors")
    if isinstance(errors, list):
        # Only where in the notification, never the messages: they can quote its values.
        pointers = list(
            dict.fromkeys(str(e.get("pointer", "")) for e in errors if isinstance(e, dict))
        )
        problem["errors"] = [{"pointer": p} for p in pointers]
        lines += ["", "Fields to correct:", *(f"  {p or '/'}" for p in pointers)]
    return OutgoingMail(
        kind="channel.email.problem",
        recipient=recipient,
        subject=f"CMR notification not accepted: {error.code}",
        text="\n".join(lines) + "\n",
        about=request_id,
        attachments=(
            MailAttachment(
                "problem.json", "application/problem+json", json.dumps(problem, indent=2).encode()
            ),
        ),
    )


def _single_from(msg: EmailMessage) -> str | None:
    try:
        header = msg["From"]
        addresses: tuple[Any, ...] = tuple(getattr(header, "addresses", ()))
    except (ValueError, IndexError, TypeError):
        return None
    if len(addresses) != 1:
        return None
    addr = str(addresses[0].addr_spec)
    return addr if "@" in addr else None


def _content(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


_UNSAFE = re.compile(r"[^\x21-\x7e]")


def _safe(message_id: str) -> str:
    # Echoed in our reply: printable ASCII only, short, so a header cannot smuggle anything.
    cleaned = _UNSAFE.sub("", message_id)[:200]
    return cleaned or "(without Message-ID)"
