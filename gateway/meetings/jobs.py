"""The meetings' scheduled job (referenced by name from the job store)."""

from __future__ import annotations

from gateway.jobs.scheduler import JobContext


async def tick(ctx: JobContext) -> None:
    await ctx.services.meetings.tick()
