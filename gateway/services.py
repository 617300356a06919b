"""The composition root: every long-lived part, built from the settings once, shared by the
HTTP app and the command line. Nothing here is module-level state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from adapters.formats import FormatRegistry, default_formats
from gateway.agencies.keys import AgencyKeyRepository
from gateway.agencies.registry import AgencyRegistry
from gateway.audit.repository import AuditRepository
from gateway.clock import Clock, SystemClock
from gateway.intake.envelope import EnvelopeOpener
from gateway.intake.repository import IntakeRepository
from gateway.intake.service import IntakeMetrics, IntakeService
from gateway.intake.validation import NotificationValidator
from gateway.keys.datacipher import DataCipher
from gateway.keys.keyring import Keyring
from gateway.settings import Settings
from gateway.storage.database import Database

SCHEMA_FILE = "cmr-notification-1.schema.json"


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    keyring: Keyring
    agencies: AgencyRegistry
    formats: FormatRegistry
    agency_keys: AgencyKeyRepository
    audit: AuditRepository
    notifications: IntakeRepository
    cipher: DataCipher
    intake: IntakeService


@asynccontextmanager
async def open_services(
    settings: Settings, clock: Clock | None = None, metrics: IntakeMetrics | None = None
) -> AsyncIterator[Services]:
    clock = clock or SystemClock()
    agencies = AgencyRegistry.load(settings.config_dir, settings.extra.get("agencies"))
    keyring = Keyring(settings.keys_dir, clock, timedelta(days=settings.key_overlap_days))
    validator = NotificationValidator.from_file(settings.schemas_dir / SCHEMA_FILE)
    formats = default_formats()
    db = Database(settings.effective_database_url, settings.database_pool_size)
    try:
        agency_keys = AgencyKeyRepository(db)
        audit = AuditRepository(db)
        notifications = IntakeRepository(db)
        cipher = DataCipher(lambda: keyring.current_data_kid, keyring.data_key)
        intake = IntakeService(
            clock=clock,
            keys=keyring,
            agency_keys=agency_keys,
            agencies=agencies,
            formats=formats,
            validator=validator,
            cipher=cipher,
            notifications=notifications,
            audit=audit,
            opener=EnvelopeOpener(
                settings.max_body_bytes, settings.signing_algorithms, settings.clock_skew_seconds
            ),
            metrics=metrics,
        )
        yield Services(
            settings,
            clock,
            db,
            keyring,
            agencies,
            formats,
            agency_keys,
            audit,
            notifications,
            cipher,
            intake,
        )
    finally:
        await db.dispose()
