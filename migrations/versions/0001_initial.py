"""Initial schema: users, items, interactions, periods, jobs, model versions, state.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    for table in ("users", "items"):
        op.create_table(
            table,
            sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("external_id", sa.String(length=128), nullable=False),
            sa.PrimaryKeyConstraint("idx", name=op.f(f"pk_{table}")),
        )
        op.create_index(op.f(f"ix_{table}_external_id"), table, ["external_id"], unique=True)

    op.create_table(
        "interactions",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("user_idx", sa.Integer(), nullable=False),
        sa.Column("item_idx", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_idx"], ["users.idx"], name=op.f("fk_interactions_user_idx_users")
        ),
        sa.ForeignKeyConstraint(
            ["item_idx"], ["items.idx"], name=op.f("fk_interactions_item_idx_items")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interactions")),
    )
    op.create_index(op.f("ix_interactions_user_idx"), "interactions", ["user_idx"], unique=False)
    op.create_index(op.f("ix_interactions_event_id"), "interactions", ["event_id"], unique=True)

    op.create_table(
        "periods",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=True),
        sa.Column("last_id", sa.BigInteger(), nullable=True),
        sa.Column("n_interactions", sa.Integer(), nullable=False),
        sa.Column("start", sa.Float(), nullable=True),
        sa.Column("end", sa.Float(), nullable=True),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_periods")),
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("period_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_status"), "jobs", ["status"], unique=False)

    op.create_table(
        "model_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("period_id", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=False),
        sa.Column("n_users", sa.Integer(), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )

    op.create_table(
        "state",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_state")),
    )


def downgrade() -> None:
    op.drop_table("state")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_jobs_status"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("periods")
    op.drop_index(op.f("ix_interactions_event_id"), table_name="interactions")
    op.drop_index(op.f("ix_interactions_user_idx"), table_name="interactions")
    op.drop_table("interactions")
    for table in ("items", "users"):
        op.drop_index(op.f(f"ix_{table}_external_id"), table_name=table)
        op.drop_table(table)
