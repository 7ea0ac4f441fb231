"""Deleting a user's data: their interactions go, their user row stays as an
anonymous placeholder of its dense index (external id NULL, ``deleted_at`` set),
so model tables keep their shape and the id can come back as a new user.

- ``users.external_id`` becomes nullable (NULLs never clash in the unique index);
- ``users.deleted_at``: when the user's data was deleted (indexed: replicas poll it);
- ``deleted_users``: the sha256 of each deleted external id, when, and the last
  Redis stream entry at that moment (distributed mode): the worker drops that
  user's rows from entries up to it that it had not stored yet.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.alter_column("external_id", existing_type=sa.String(128), nullable=True)
        batch.add_column(sa.Column("deleted_at", sa.Float(), nullable=True))
        batch.create_index("ix_users_deleted_at", ["deleted_at"])
    op.create_table(
        "deleted_users",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=False),
        sa.Column("stream_mark", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id_hash", name="pk_deleted_users"),
    )


def downgrade() -> None:
    op.drop_table("deleted_users")
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_deleted_at")
        batch.drop_column("deleted_at")
        batch.alter_column("external_id", existing_type=sa.String(128), nullable=False)
