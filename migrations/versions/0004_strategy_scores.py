"""Challenger strategies scored side by side: one row per evaluated period and
strategy, the model that strategy had trained before the period scored on it
with the online metric (the served one's and every challenger's alike).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "strategy_scores",
        sa.Column("period_id", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("recall", sa.Float(), nullable=False),
        sa.Column("ndcg", sa.Float(), nullable=False),
        sa.Column("n_interactions", sa.Integer(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("period_id", "strategy", name="pk_strategy_scores"),
    )


def downgrade() -> None:
    op.drop_table("strategy_scores")
