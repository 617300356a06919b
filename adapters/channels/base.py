"""The channel Protocol: a source of envelopes and a way to answer the sender. A channel knows
who sent a message by its own means (the folder it is in, the registered sender address) and
hands the bytes to the one intake pipeline; it knows nothing of storage."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from typing import Protocol

from gateway.intake.service import SubmitResult


class Submit(Protocol):
    """`IntakeService.submit`: raises gateway.errors.GatewayError when the envelope is refused,
    gateway.errors.Unavailable when nothing could be decided (try the same bytes again)."""

    def __call__(
        self, agency: str, raw: bytes, request_id: str, channel: str
    ) -> Awaitable[SubmitResult]: ...


class Channel(Protocol):
    name: str

    async def start(self) -> None:
        """Open what the channel listens on. A failure here stops the gateway from starting,
        instead of leaving a channel that silently never runs."""
        ...

    async def run(self, submit: Submit) -> None:
        """Take messages and submit them until cancelled."""
        ...

    def describe(self) -> str:
        """One line for the operator: where the channel takes messages (after `start`)."""
        ...


def new_request_id() -> str:
    # The same form as the API's, so one log search finds a message whatever its channel.
    return secrets.token_hex(8)
