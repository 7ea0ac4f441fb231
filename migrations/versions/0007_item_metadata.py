"""Item metadata: the categories an item belongs to and whether it is hidden
(never recommended), keyed by the item's external id, so a catalogue can be loaded
before any interaction names its items (no dense index is given out for them: an
item enters the model's tables only through an interaction).

- ``item_metadata.categories``: a JSON list of names, read whole by every replica;
- ``item_metadata.revision``: a counter raised by every write (indexed): replicas
  poll its maximum and read only the rows written since.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "item_metadata",
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("hidden", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("external_id", name="pk_item_metadata"),
    )
    op.create_index("ix_item_metadata_revision", "item_metadata", ["revision"])


def downgrade() -> None:
    op.drop_index("ix_item_metadata_revision", table_name="item_metadata")
    op.drop_table("item_metadata")
