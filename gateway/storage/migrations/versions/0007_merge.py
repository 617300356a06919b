"""merge: one head again, so that the next migration has a single parent

Revision ID: 0007_merge
Revises: 0002_reports, 0003_requests, 0004_meetings, 0005_ops, 0006_accounts
"""

from __future__ import annotations

revision = "0007_merge"
down_revision = ("0002_reports", "0003_requests", "0004_meetings", "0005_ops", "0006_accounts")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
