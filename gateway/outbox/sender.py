"""The sender task: claims due mail, hands it to the transport, records the outcome. Runs in
every gateway process; the claims keep them from sending one message twice at the same time.
Delivery is at least once: a process killed between the SMTP server's OK and the commit of
`delivered` leaves the message to be sent again when its lease runs out."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Protocol

import structlog

from gateway.audit.chain import AuditEvent
from gateway.audit.repository import append
from gateway.clock import Clock
from gateway.errors import Unavailable
from gateway.outbox.model import backoff
from gateway.outbox.repository import Claimed, OutboxRepository
from gateway.outbox.transports import DeliveryFailed, MailTransport

log = structlog.get_logger("gateway.outbox")
LEASE = timedelta(minutes=5)


class OutboxMetrics(Protocol):
    def mail_pending(self, count: int) -> None: ...
    def mail_failed(self) -> None: ...


class NullOutboxMetrics:
    def mail_pending(self, count: int) -> None:
        pass

    def mail_failed(self) -> None:
        pass


class OutboxSender:
    def __init__(
        self,
        repo: OutboxRepository,
        transport: MailTransport,
        clock: Clock,
        sender: str,
        max_attempts: int,
        poll_seconds: float,
    ) -> None:
        self.repo = repo
        self.transport = transport
        self.clock = clock
        self.sender = sender
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        # The HTTP app swaps in its Prometheus metrics; the command line keeps these.
        self.metrics: OutboxMetrics = NullOutboxMetrics()

    def wake(self) -> None:
        self._wake.set()

    async def deliver_due(self) -> int:
        """One pass over what is due; the number delivered."""
        delivered = 0
        while True:
            batch = await self.repo.claim_due(self.clock.now(), LEASE)
            if not batch:
                self.metrics.mail_pending(await self.repo.pending_count())
                return delivered
            for item in batch:
                delivered += await self._deliver(item)

    async def _deliver(self, item: Claimed) -> int:
        attempts = item.attempts + 1
        try:
            await self.transport.send(self.sender, item.recipient, item.message, f"{item.id}")
        except DeliveryFailed as exc:
            now = self.clock.now()
            final = exc.permanent or attempts >= self.max_attempts
            async with self.repo.db.transaction() as conn:
                if final:
                    await self.repo.failed(conn, item.id, attempts, str(exc))
                    await append(
                        conn,
                        AuditEvent(
                            "system:outbox",
                            "mail.failed",
                            f"outbox:{item.id}",
                            {"kind": item.kind, "attempts": attempts, "error": str(exc)},
                        ),
                        now,
                    )
                else:
                    await self.repo.retry_later(
                        conn, item.id, attempts, now + backoff(attempts), str(exc)
                    )
            if final:
                self.metrics.mail_failed()
            log.warning(
                "mail_not_delivered",
                outbox_id=item.id,
                attempts=attempts,
                error=str(exc),
                final=final,
            )
            return 0
        now = self.clock.now()
        async with self.repo.db.transaction() as conn:
            await self.repo.delivered(conn, item.id, now)
            await append(
                conn,
                AuditEvent(
                    "system:outbox", "mail.delivered", f"outbox:{item.id}", {"kind": item.kind}
                ),
                now,
            )
        log.info("mail_delivered", outbox_id=item.id, kind=item.kind)
        return 1

    async def run(self) -> None:
        """Until cancelled: deliver what is due, then wait to be woken or for the poll."""
        while True:
            try:
                await self.deliver_due()
            except Unavailable:
                log.warning("outbox_database_unavailable")
            except Exception:
                log.exception("outbox_pass_failed")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
            # arrives as the event is set, and the sender then outlived the shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
