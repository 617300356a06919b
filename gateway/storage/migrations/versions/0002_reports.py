"""reports: Board outcomes of live notifications, imported history

Revision ID: 0002_reports
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_reports"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_outcomes",
        sa.Column(
            "notification_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("board_considered_on", sa.Date(), nullable=True),
        sa.Column("board_decision", sa.String(length=32), nullable=True),
        sa.Column("commissioned_on", sa.Date(), nullable=True),
        sa.Column("cmr_started_on", sa.Date(), nullable=True),
        sa.Column("cmr_completed_on", sa.Date(), nullable=True),
        sa.Column("recommendations", sa.Integer(), nullable=True),
        sa.Column("themes", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_case_outcomes_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_case_outcomes")),
    )
    op.create_table(
        "history_notifications",
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("agency", sa.String(length=16), nullable=False),
        sa.Column("received_on", sa.Date(), nullable=False),
        sa.Column("incident_date", sa.Date(), nullable=True),
        sa.Column("board_considered_on", sa.Date(), nullable=True),
        sa.Column("board_decision", sa.String(length=32), nullable=True),
        sa.Column("commissioned_on", sa.Date(), nullable=True),
        sa.Column("cmr_completed_on", sa.Date(), nullable=True),
        sa.Column("recommendations", sa.Integer(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reference", name=op.f("pk_history_notifications")),
    )
    op.create_table(
        "history_children",
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("gender", sa.String(length=16), nullable=False),
        sa.Column("age_band", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["reference"],
            ["history_notifications.reference"],
            name=op.f("fk_history_children_reference_history_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("reference", "position", name=op.f("pk_history_children")),
    )


def downgrade() -> None:
    op.drop_table("history_children")
    op.drop_table("history_notifications")
    op.drop_table("case_outcomes")
