"""The channels this installation runs (drop folder, email), built from the settings, and the
outbox-backed way the email channel answers its senders."""

from __future__ import annotations

from adapters.channels.base import Channel
from adapters.channels.dropfolder import DropFolder
from adapters.channels.email import EmailChannel, server_tls
from gateway.errors import SettingsError
from gateway.outbox.model import OutgoingMail
from gateway.outbox.repository import enqueue
from gateway.services import Services


class OutboxReplies:
    """Replies go through the mail outbox: written in a transaction, delivered with retries."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def send(self, mail: OutgoingMail) -> None:
        s = self.services
        async with s.db.transaction() as conn:
            await enqueue(conn, s.cipher, mail, s.settings.mail_from, s.clock.now())
        s.sender.wake()


def build_channels(services: Services) -> list[Channel]:
    settings = services.settings
    channels: list[Channel] = []
    if settings.drop_dir is not None:
        if settings.drop_poll_seconds < 1:
            raise SettingsError("setting 'drop_poll_seconds' must be at least 1")
        channels.append(
            DropFolder(
                settings.drop_dir,
                services.agencies.codes(),
                settings.drop_poll_seconds,
                settings.max_body_bytes,
            )
        )
    if settings.email_channel == "on":
        if "@" not in settings.email_address:
            raise SettingsError("setting 'email_address' must be an email address")
        if not 0 <= settings.smtp_listen_port <= 65535:
            raise SettingsError("setting 'smtp_listen_port' must be a port number (0-65535)")
        if settings.email_max_bytes < 1024:
            raise SettingsError("setting 'email_max_bytes' must be at least 1024")
        senders = {addr: a.code for a in services.agencies for addr in a.senders}
        if settings.mail_from.lower() in senders or settings.email_address.lower() in senders:
            # Our own replies would come back in as messages: a mail loop.
            raise SettingsError("the gateway's own addresses must not be agency senders")
        channels.append(
            EmailChannel(
                host=settings.smtp_listen_host,
                port=settings.smtp_listen_port,
                address=settings.email_address,
                senders=senders,
                tls=server_tls(settings.server_cert, settings.server_key),
                replies=OutboxReplies(services),
                max_message_bytes=settings.email_max_bytes,
                max_envelope_bytes=settings.max_body_bytes,
            )
        )
    return channels
