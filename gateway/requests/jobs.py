"""The request cycle's scheduled jobs (referenced by name from the job store)."""

from __future__ import annotations

from gateway.jobs.scheduler import JobContext


async def chase(ctx: JobContext) -> None:
    await ctx.services.requests.chase()


async def overdue_summary(ctx: JobContext) -> None:
    await ctx.services.requests.overdue_summary()
