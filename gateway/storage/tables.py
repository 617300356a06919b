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

# People's accounts on the web listener (docs/web.md). A password only as its argon2id hash, the
# TOTP secret encrypted with the data key, set-up links and session ids only as SHA-256 hashes.
accounts = Table(
    "accounts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", String(200), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    # "pending" until set up from the link, then "active"; "disabled" ends every session.
    Column("status", String(16), nullable=False),
    Column("password_hash", String(200), nullable=True),
    Column("totp_key_id", String(32), nullable=True),
    Column("totp_secret", LargeBinary, nullable=True),
    # A secret shown during set-up, kept until the first code from it confirms the enrolment.
    Column("totp_pending", LargeBinary, nullable=True),
    # The last time step accepted, so that a code seen over a shoulder cannot be used again.
    Column("totp_last_step", BigInteger, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

account_setup_links = Table(
    "account_setup_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index("ix_account_setup_links_account_id", "account_id"),
)

account_sessions = Table(
    "account_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # "totp": the password was right and the second factor is awaited; "full": signed in.
    Column("stage", String(8), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Index("ix_account_sessions_account_id", "account_id"),
)

# Failed sign-ins by the address typed, whether or not an account has it, so that the lockout
# answer does not tell which addresses have accounts.
account_login_failures = Table(
    "account_login_failures",
    metadata,
    Column("email", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", UTCDateTime(), nullable=True),
    Column("last_failure_at", UTCDateTime(), nullable=False),
)

# -- panel meetings (gateway/meetings, docs/meetings.md) -----------------------------------------

# A meeting of the Case Management Review Panel. Those from the calendar file have source
# "config" and follow it; one moved on the command line becomes "manual" and is left alone.
meetings = Table(
    "meetings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("public_id", String(24), nullable=False, unique=True),
    # scheduled | extra | reconvened
    Column("kind", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    # planned | compiled | issued | held | inquorate
    Column("status", String(16), nullable=False),
    Column("starts_at", UTCDateTime(), nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("place", String(300), nullable=True),
    Column("online_link", String(500), nullable=True),
    Column("cut_off_on", Date, nullable=False),
    Column("notice_by_on", Date, nullable=False),
    Column("notice_sent_at", UTCDateTime(), nullable=True),
    # The iCalendar UID stays for the meeting's life; SEQUENCE counts its moves.
    Column("ics_uid", String(200), nullable=False),
    Column("ics_sequence", Integer, nullable=False),
    # For a reconvened meeting: the inquorate one it continues.
    Column("reconvenes_id", BigId, ForeignKey("meetings.id"), nullable=True),
    Column("requisitioned_on", Date, nullable=True),
    # JSON list of the member ids who requisitioned it.
    Column("requisitioned_by", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_meetings_starts_at", "starts_at"),
)

# Versions of a meeting's agenda: draft -> issued. The content is the panel pack's case detail
# (Reg 17 facts, summaries of the agencies' answers): encrypted like a notification's payload.
agendas = Table(
    "agendas",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("meeting_id", BigId, ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    # draft | issued
    Column("status", String(16), nullable=False),
    Column("compiled_at", UTCDateTime(), nullable=False),
    Column("compiled_by", String(200), nullable=False),
    Column("issued_at", UTCDateTime(), nullable=True),
    Column("issued_by", String(200), nullable=True),
    Column("key_id", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    UniqueConstraint("meeting_id", "version", name="uq_agendas_meeting_id_version"),
)

# A case put for decision on a meeting (sections "new" and "deferred"), and the panel's outcome
# on it. A case has at most one undecided placement on a meeting not yet held.
agenda_items = Table(
    "agenda_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("meeting_id", BigId, ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False),
    Column(
        "notification_id",
        BigId,
        ForeignKey("notifications.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("section", String(16), nullable=False),
    # Times the case had been deferred before this placement.
    Column("deferral_count", Integer, nullable=False),
    Column("carried_from_id", BigId, ForeignKey("meetings.id"), nullable=True),
    Column("placed_at", UTCDateTime(), nullable=False),
    Column("placed_by", String(200), nullable=False),
    # recommend | do_not_recommend | defer | request_information | withdrawn; null until decided
    Column("outcome", String(24), nullable=True),
    # JSON {"for": [member ids], "against": [...], "abstain": [...]} and the members with an
    # interest declared in this item (who did not vote).
    Column("votes", Text, nullable=True),
    Column("interests", Text, nullable=True),
    Column("casting_vote", String(8), nullable=True),
    Column("decided_at", UTCDateTime(), nullable=True),
    # The rationale (for a deferral, its reason): encrypted, it may name people.
    Column("key_id", String(32), nullable=True),
    Column("rationale", LargeBinary, nullable=True),
    UniqueConstraint("meeting_id", "notification_id", name="uq_agenda_items_meeting_id_case"),
    Index("ix_agenda_items_notification_id", "notification_id"),
)

# What happened at a meeting: who was present, whether it was quorate, and the record file as
# given (encrypted: the natures of interests and the rationales are in it).
meeting_records = Table(
    "meeting_records",
    metadata,
    Column(
        "meeting_id",
        BigId,
        ForeignKey("meetings.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("recorded_by", String(200), nullable=False),
    # quorate | inquorate
    Column("result", String(16), nullable=False),
    Column("members", Integer, nullable=False),
    Column("quorum", Integer, nullable=False),
    Column("chair", String(32), nullable=False),
    # JSON list of the member ids present.
    Column("present", Text, nullable=False),
    Column("reconvened_id", BigId, ForeignKey("meetings.id"), nullable=True),
    Column("record_sha256", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),
)

# Reasons people give for a change to a case (a withdrawal), kept encrypted: free text may name
# people, and audit details are in clear.
case_notes = Table(
    "case_notes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "notification_id",
        BigId,
        ForeignKey("notifications.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", String(32), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Index("ix_case_notes_notification_id", "notification_id"),
)

# Cases whose personal data the retention job purged (gateway/retention): the row stays for
# the statistics, its payload becomes an empty encrypted document, and this says when and why.
retention_purges = Table(
    "retention_purges",
    metadata,
    Column(
        "notification_id",
        BigId,
        ForeignKey("notifications.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("purged_at", UTCDateTime(), nullable=False),
    # "closed" or "not_progressed"
    Column("reason", String(32), nullable=False),
    Column("status", String(32), nullable=False),
)
