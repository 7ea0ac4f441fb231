"""Typed, weighted feedback: each interaction records what kind of event it was
(``type``, e.g. view, like, purchase) and how much it counts in training
(``weight``). Rows stored before get the defaults: a view of weight 1.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("type", sa.String(32), nullable=False,
                                   server_default="view"))
        batch.add_column(sa.Column("weight", sa.Float(), nullable=False,
                                   server_default=sa.text("1")))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("weight")
        batch.drop_column("type")
