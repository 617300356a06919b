"""Concurrent lookups by key merged into one query per round.

Every statement through the async SQLite driver costs several hand-offs to its thread (cursor,
execute, fetch, close, and the transaction around them), and under load those hand-offs, not
SQLite, are most of a lookup's cost (docs/performance.md). Here the keys asked while one query
runs wait for the next query, which asks for all of them at once: one round trip answers many
callers. A caller never joins a query already under way, so it always sees the database as it
was at some moment after it asked, as a query of its own would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_MAX_KEYS = 200


class Coalesce(Generic[K, V]):
    """`fetch(keys)` returns the found values by key; a key it leaves out is None."""

    def __init__(
        self,
        fetch: Callable[[Collection[K]], Awaitable[Mapping[K, V]]],
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self._fetch = fetch
        self._max_keys = max_keys
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self.rounds = 0

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._pending.setdefault(key, []).append(future)
        if self._runner is None:
            self._runner = loop.create_task(self._run(), name="coalesced-lookup")
        return await future

    async def _run(self) -> None:
        try:
            while self._pending:
                keys = list(self._pending)[: self._max_keys]
                waiting = {key: self._pending.pop(key) for key in keys}
                try:
                    found = await self._fetch(keys)
                except asyncio.CancelledError:
                    for futures in waiting.values():
                        for fut in futures:
                            fut.cancel()
                    raise
                except Exception as exc:
                    for futures in waiting.values():
                        for fut in futures:
                            if not fut.done():
                                fut.set_exception(exc)
                    continue
                self.rounds += 1
                for key, futures in waiting.items():
                    value = found.get(key)
                    for fut in futures:
                        if not fut.done():
                            fut.set_result(value)
        finally:
            self._runner = None
            leftovers, self._pending = self._pending, {}
            for futures in leftovers.values():
                for fut in futures:
                    if not fut.done():
                        fut.cancel()
