"""What running unattended needs: retry times for jobs, stream cut keys and
per-period accounting for periods, pins and retention marks for model versions.

- ``jobs.not_before``: a failed retrain waits until then before its next try.
- ``periods.cut_key``: the stream entry that closed the period (distributed
  mode), unique, so an entry delivered twice never cuts twice.
- ``periods.n_users`` / ``periods.n_items``: users and items known once the
  period closed (the caps on new users and items per period count from them).
- ``periods.n_dropped``: interactions dropped while the period was open because
  they would have passed a cap.
- ``model_versions.pinned``: kept whatever the retention says.
- ``model_versions.removed_at``: when retention deleted the artifact (the row
  stays, with its metrics).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("not_before", sa.Float(), nullable=True))
    with op.batch_alter_table("periods") as batch:
        batch.add_column(sa.Column("cut_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("n_users", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("n_items", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("n_dropped", sa.Integer(), nullable=False, server_default="0"))
        batch.create_unique_constraint("uq_periods_cut_key", ["cut_key"])
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(
            sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("removed_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("removed_at")
        batch.drop_column("pinned")
    with op.batch_alter_table("periods") as batch:
        batch.drop_constraint("uq_periods_cut_key", type_="unique")
        batch.drop_column("n_dropped")
        batch.drop_column("n_items")
        batch.drop_column("n_users")
        batch.drop_column("cut_key")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("not_before")
