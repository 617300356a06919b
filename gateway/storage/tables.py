"""The tables, in SQLAlchemy Core. Personal data lives only in the encrypted `payload`
columns; everything in clear here is what the statistics and the lifecycle need."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

reference_counters = Table(
    "reference_counters",
    metadata,
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("last_number", Integer, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("reference", String(32), nullable=False, unique=True),
    Column("agency", String(16), nullable=False),
    Column("jti", String(128), nullable=False),
    Column("envelope_sha256", String(64), nullable=False),
    Column("format", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("route", String(16), nullable=False),
    Column("incident_type", String(32), nullable=False),
    Column("incident_date", Date, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("receipt", Text, nullable=False),
    UniqueConstraint("agency", "jti", name="uq_notifications_agency_jti"),
    Index("ix_notifications_envelope_sha256", "envelope_sha256"),
    Index("ix_notifications_status", "status"),
)

notification_children = Table(
    "notification_children",
    metadata,
    Column(
        "notification_id",
        BigId,
        ForeignKey("notifications.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("gender", String(16), nullable=False),
    Column("age_band", String(16), nullable=False),
)

agency_keys = Table(
    "agency_keys",
    metadata,
    Column("agency", String(16), primary_key=True),
    Column("kid", String(128), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("jwk", Text, nullable=False),
    Column("added_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(64), nullable=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row: the chain's head. Locking it serialises appends on PostgreSQL; on SQLite the
# immediate transaction already does.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# The Board-level record of a live notification: what the Board decided and how the review went.
# The meetings feature writes it; the annual report reads it. One row per notification at most.
case_outcomes = Table(
    "case_outcomes",
    metadata,
    Column(
        "notification_id",
        BigId,
        ForeignKey("notifications.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("board_considered_on", Date, nullable=True),
    # "commissioned" or "not_commissioned"; null until the Board has decided.
    Column("board_decision", String(32), nullable=True),
    Column("commissioned_on", Date, nullable=True),
    Column("cmr_started_on", Date, nullable=True),
    Column("cmr_completed_on", Date, nullable=True),
    Column("recommendations", Integer, nullable=True),
    # A JSON list of strings.
    Column("themes", Text, nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Notifications from before the gateway, imported so that the totals since 2012 are true. Only
# what the statistics need is kept: a child's date of birth is read to derive the age band and
# is never stored.
history_notifications = Table(
    "history_notifications",
    metadata,
    Column("reference", String(64), primary_key=True),
    Column("agency", String(16), nullable=False),
    Column("received_on", Date, nullable=False),
    Column("incident_date", Date, nullable=True),
    Column("board_considered_on", Date, nullable=True),
    Column("board_decision", String(32), nullable=True),
    Column("commissioned_on", Date, nullable=True),
    Column("cmr_completed_on", Date, nullable=True),
    Column("recommendations", Integer, nullable=True),
    # The digest of the file the notification first came from, to trace it back.
    Column("source_sha256", String(64), nullable=False),
    Column("imported_at", UTCDateTime(), nullable=False),
)

history_children = Table(
    "history_children",
    metadata,
    Column(
        "reference",
        String(64),
        ForeignKey("history_notifications.reference", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("gender", String(16), nullable=False),
    Column("age_band", String(16), nullable=False),
)

# Information requests to other agencies. The link's token is kept only as its SHA-256; the
# column is emptied when the token is spent or revoked, so a dead link can never match again.
information_requests = Table(
    "information_requests",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("public_id", String(16), nullable=False, unique=True),
    Column(
        "notification_id",
        BigId,
        ForeignKey("notifications.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("agency", String(16), nullable=False),
    Column("question_set", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("token_hash", String(64), nullable=True, unique=True),
    Column("deadline_on", Date, nullable=False),
    Column("deadline_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("opened_at", UTCDateTime(), nullable=True),
    Column("closed_at", UTCDateTime(), nullable=True),
    # JSON list of the reminder offsets (working days before the deadline) already sent.
    Column("reminders_sent", Text, nullable=False),
    Column("replaces_id", BigId, ForeignKey("information_requests.id"), nullable=True),
    Index("ix_information_requests_status", "status"),
    Index("ix_information_requests_notification_id", "notification_id"),
)

request_answers = Table(
    "request_answers",
    metadata,
    Column(
        "request_id",
        BigId,
        ForeignKey("information_requests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("kind", String(16), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),
)

request_attachments = Table(
    "request_attachments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "request_id",
        BigId,
        ForeignKey("information_requests.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("content_type", String(128), nullable=False),
    Column("size", Integer, nullable=False),
    Column("key_id", String(32), nullable=False),
    # The file name and the content, each encrypted (names can identify people too).
    Column("name_payload", LargeBinary, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Index("ix_request_attachments_request_id", "request_id"),
)

# Mail to be sent, written in the transaction of the change that causes it. The message is
# encrypted (it may carry a live link) and wiped once delivered; the envelope stays for listing.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("about", String(64), nullable=True),
    Column("recipient", String(320), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("claimed_until", UTCDateTime(), nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("payload", LargeBinary, nullable=True),
    Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)

# Runs of jobs that must happen once per period (e.g. the daily overdue summary).
job_runs = Table(
    "job_runs",
    metadata,
    Column("job", String(64), primary_key=True),
    Column("run_key", String(64), primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
)
