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
