"""Group commit: concurrent callers queue an item each; one writer task at a time takes
everything queued and writes it as one batch (one transaction, one commit, one fsync), then
answers every caller. Nothing is delayed to wait for company: while one batch commits, the next
fills up by itself, so a lone request is written at once and a busy gateway writes in bulk.

A caller's future is resolved only after its batch's write returned, i.e. after the COMMIT:
a receipt can never be handed out for a row that is not durable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gateway.errors import Unavailable

T = TypeVar("T")
R = TypeVar("R")

# Bounds the time the write lock is held and the size of one statement's parameter list.
DEFAULT_MAX_BATCH = 128


class GroupCommit(Generic[T, R]):
    """`write(items)` gets one batch and returns one outcome per item, in order: a result, or
    the exception that caller gets. If `write` itself raises, every caller of that batch gets
    the exception (nothing of the batch was committed)."""

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._writer is None:
            # The writer lives only while there is work, so no task outlives the services.
            self._writer = loop.create_task(self._drain(), name="intake-group-commit")
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                # A caller that gave up (cancelled) before its turn got no receipt: skip it.
                batch = [(item, fut) for item, fut in batch if not fut.done()]
                if batch:
                    await self._write_batch(batch)
        finally:
            self._writer = None
            leftovers, self._pending = self._pending, []
            for _, fut in leftovers:
                if not fut.done():
                    fut.set_exception(Unavailable())

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(Unavailable())
            raise
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.batches += 1
        self.items += len(batch)
        for (_, fut), outcome in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
