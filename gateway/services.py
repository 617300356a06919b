"""The composition root: every long-lived part, built from the settings once, shared by the
HTTP app and the command line. Nothing here is module-level state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from adapters.formats import FormatRegistry, default_formats
from gateway.accounts.repository import AccountsRepository
from gateway.accounts.service import AccountsService, Policy, password_hasher
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
from gateway.meetings.cases import CasesService
from gateway.meetings.service import MeetingsService, build_meetings
from gateway.outbox.repository import OutboxRepository
from gateway.outbox.sender import OutboxSender
from gateway.outbox.transports import FileTransport, MailTransport, SmtpTransport
from gateway.requests.questions import QuestionSets
from gateway.requests.repository import RequestsRepository
from gateway.requests.service import RequestsService
from gateway.secretariat.repository import SecretariatRepository
from gateway.secretariat.service import SecretariatService
from gateway.settings import Settings
from gateway.storage.database import Database
from gateway.workdays import WorkingDays

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
    workdays: WorkingDays
    outbox: OutboxRepository
    sender: OutboxSender
    requests: RequestsService
    accounts: AccountsService
    secretariat: SecretariatService
    meetings: MeetingsService
    cases: CasesService


def mail_transport(settings: Settings) -> MailTransport:
    if settings.mail_transport == "file":
        return FileTransport(settings.data_dir / "outbox")
    password = (
        settings.smtp_password_file.read_text().strip() if settings.smtp_password_file else ""
    )
    return SmtpTransport(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_security,
        settings.smtp_username,
        password,
        settings.smtp_ca_file,
        settings.smtp_timeout_seconds,
    )


@asynccontextmanager
async def open_services(
    settings: Settings,
    clock: Clock | None = None,
    metrics: IntakeMetrics | None = None,
    transport: MailTransport | None = None,
) -> AsyncIterator[Services]:
    clock = clock or SystemClock()
    agencies = AgencyRegistry.load(settings.config_dir, settings.extra.get("agencies"))
    workdays = WorkingDays.load(settings.config_dir)
    questions = QuestionSets.load(settings.config_dir)
    transport = transport or mail_transport(settings)
    keyring = Keyring(settings.keys_dir, clock, timedelta(days=settings.key_overlap_days))
    validator = NotificationValidator.from_file(settings.schemas_dir / SCHEMA_FILE)
    formats = default_formats()
    db = Database(settings.effective_database_url, settings.database_pool_size)
    try:
        agency_keys = AgencyKeyRepository(db)
        audit = AuditRepository(db)
        notifications = IntakeRepository(db, settings.intake_group_commit == "on")
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
        outbox = OutboxRepository(db, cipher)
        sender = OutboxSender(
            outbox,
            transport,
            clock,
            settings.mail_from,
            settings.outbox_max_attempts,
            settings.outbox_poll_seconds,
        )
        requests = RequestsService(
            clock=clock,
            repo=RequestsRepository(db, cipher, settings.mail_from),
            cipher=cipher,
            agencies=agencies,
            questions=questions,
            workdays=workdays,
            base_url=settings.web_base_url,
            deadline_days=settings.request_deadline_days,
            reminder_days=settings.request_reminder_days,
            secretariat_email=settings.secretariat_email,
            allowed_types=settings.respond_attachment_types,
            max_attachment_bytes=settings.respond_max_bytes,
            intake_rule=settings.auto_request_agencies,
            wake_outbox=sender.wake,
        )
        if settings.auto_request_agencies:
            intake.on_accepted.append(requests.after_intake)
        meetings, cases = build_meetings(
            settings, clock, db, cipher, requests, agencies, workdays, sender.wake
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
            workdays,
            outbox,
            sender,
            requests,
            accounts=AccountsService(
                clock=clock,
                repo=AccountsRepository(db),
                cipher=cipher,
                policy=Policy(
                    idle=timedelta(minutes=settings.web_session_idle_minutes),
                    max_age=timedelta(hours=settings.web_session_max_hours),
                    setup_link=timedelta(hours=settings.web_setup_link_hours),
                    max_failures=settings.web_login_max_failures,
                    lockout=timedelta(minutes=settings.web_lockout_minutes),
                ),
                base_url=settings.web_base_url,
                hasher=password_hasher(settings.web_password_memory_kib),
            ),
            secretariat=SecretariatService(
                clock=clock,
                repo=SecretariatRepository(db, cipher, settings.mail_from),
                cipher=cipher,
                agencies=agencies,
                audit=audit,
                requests=requests,
                cases=cases,
                meetings=meetings,
            ),
            meetings=meetings,
            cases=cases,
        )
    finally:
        await db.dispose()
