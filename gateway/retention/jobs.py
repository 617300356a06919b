"""The daily retention job, and the service built from the gateway's services."""

from __future__ import annotations

from gateway.jobs.scheduler import JobContext
from gateway.retention.repository import RetentionRepository
from gateway.retention.service import RetentionService
from gateway.services import Services


def retention(services: Services) -> RetentionService:
    s = services.settings
    return RetentionService(
        RetentionRepository(services.db),
        services.cipher,
        services.clock,
        s.retention_closed_days,
        s.retention_not_progressed_days,
    )


async def purge(ctx: JobContext) -> None:
    await retention(ctx.services).purge()
