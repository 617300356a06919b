"""meetings: the panel's meetings, agenda versions, placements and outcomes, records, case notes

Revision ID: 0004_meetings
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_meetings"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "meetings",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(length=24), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("starts_at", _at(), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("place", sa.String(length=300), nullable=True),
        sa.Column("online_link", sa.String(length=500), nullable=True),
        sa.Column("cut_off_on", sa.Date(), nullable=False),
        sa.Column("notice_by_on", sa.Date(), nullable=False),
        sa.Column("notice_sent_at", _at(), nullable=True),
        sa.Column("ics_uid", sa.String(length=200), nullable=False),
        sa.Column("ics_sequence", sa.Integer(), nullable=False),
        sa.Column("reconvenes_id", ID, nullable=True),
        sa.Column("requisitioned_on", sa.Date(), nullable=True),
        sa.Column("requisitioned_by", sa.Text(), nullable=True),
        sa.Column("created_at", _at(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", _at(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reconvenes_id"], ["meetings.id"], name=op.f("fk_meetings_reconvenes_id_meetings")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meetings")),
        sa.UniqueConstraint("public_id", name=op.f("uq_meetings_public_id")),
    )
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.create_index("ix_meetings_starts_at", ["starts_at"], unique=False)

    op.create_table(
        "agendas",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("meeting_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("compiled_at", _at(), nullable=False),
        sa.Column("compiled_by", sa.String(length=200), nullable=False),
        sa.Column("issued_at", _at(), nullable=True),
        sa.Column("issued_by", sa.String(length=200), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_agendas_meeting_id_meetings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agendas")),
        sa.UniqueConstraint("meeting_id", "version", name="uq_agendas_meeting_id_version"),
    )

    op.create_table(
        "agenda_items",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("meeting_id", ID, nullable=False),
        sa.Column("notification_id", ID, nullable=False),
        sa.Column("section", sa.String(length=16), nullable=False),
        sa.Column("deferral_count", sa.Integer(), nullable=False),
        sa.Column("carried_from_id", ID, nullable=True),
        sa.Column("placed_at", _at(), nullable=False),
        sa.Column("placed_by", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=True),
        sa.Column("votes", sa.Text(), nullable=True),
        sa.Column("interests", sa.Text(), nullable=True),
        sa.Column("casting_vote", sa.String(length=8), nullable=True),
        sa.Column("decided_at", _at(), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("rationale", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["carried_from_id"],
            ["meetings.id"],
            name=op.f("fk_agenda_items_carried_from_id_meetings"),
        ),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_agenda_items_meeting_id_meetings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_agenda_items_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agenda_items")),
        sa.UniqueConstraint(
            "meeting_id", "notification_id", name="uq_agenda_items_meeting_id_case"
        ),
    )
    with op.batch_alter_table("agenda_items", schema=None) as batch_op:
        batch_op.create_index("ix_agenda_items_notification_id", ["notification_id"], unique=False)

    op.create_table(
        "meeting_records",
        sa.Column("meeting_id", ID, autoincrement=False, nullable=False),
        sa.Column("recorded_at", _at(), nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("chair", sa.String(length=32), nullable=False),
        sa.Column("present", sa.Text(), nullable=False),
        sa.Column("reconvened_id", ID, nullable=True),
        sa.Column("record_sha256", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_meeting_records_meeting_id_meetings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reconvened_id"],
            ["meetings.id"],
            name=op.f("fk_meeting_records_reconvened_id_meetings"),
        ),
        sa.PrimaryKeyConstraint("meeting_id", name=op.f("pk_meeting_records")),
    )

    op.create_table(
        "case_notes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("notification_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", _at(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_case_notes_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_notes")),
    )
    with op.batch_alter_table("case_notes", schema=None) as batch_op:
        batch_op.create_index("ix_case_notes_notification_id", ["notification_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("case_notes", schema=None) as batch_op:
        batch_op.drop_index("ix_case_notes_notification_id")
    op.drop_table("case_notes")
    op.drop_table("meeting_records")
    with op.batch_alter_table("agenda_items", schema=None) as batch_op:
        batch_op.drop_index("ix_agenda_items_notification_id")
    op.drop_table("agenda_items")
    op.drop_table("agendas")
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.drop_index("ix_meetings_starts_at")
    op.drop_table("meetings")
