"""Item metadata (``PUT /v1/items/{item_id}``): each item's categories and whether
it is hidden, by external id. Every write takes the next value of one counter
(``revision``) under a lock held to its commit, so revisions become visible in
increasing order and a replica that has read everything up to revision r only
ever needs the rows above r."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.sql.schema import Table

from store._base import LOCK_ITEMS, StoreBase
from store.dto import ItemInfo
from store.models import Item, ItemMetadata

MAX_ITEM_ID = 128
MAX_CATEGORY = 64  # characters of a category name
MAX_CATEGORIES = 100  # categories of one item


def check_item(item_id: str, categories: Sequence[str]) -> None:
    """ValueError unless the id and the categories fit the limits above (no
    empty or over-long name, no repeated one, not too many)."""
    if not 0 < len(item_id) <= MAX_ITEM_ID:
        raise ValueError(f"item_id must be 1 to {MAX_ITEM_ID} characters")
    if len(categories) > MAX_CATEGORIES:
        raise ValueError(f"an item has at most {MAX_CATEGORIES} categories")
    for name in categories:
        if not 0 < len(name) <= MAX_CATEGORY:
            raise ValueError(f"a category is 1 to {MAX_CATEGORY} characters, got {name!r}")
    if len(set(categories)) != len(categories):
        raise ValueError("categories must not repeat")


class ItemsMixin(StoreBase):
    def put_item(self, item_id: str, categories: Sequence[str], hidden: bool) -> ItemInfo:
        """Store the item's metadata, replacing what it had; an item no interaction
        has named yet is stored too. Raises ValueError (before touching the
        database) for metadata outside the limits."""
        check_item(item_id, categories)
        table: Table = ItemMetadata.__table__  # type: ignore[assignment]
        with self._tx(write=True) as session:
            self._lock(session, LOCK_ITEMS)
            revision = self._scalar_int(
                session, select(func.coalesce(func.max(ItemMetadata.revision), 0))) + 1
            values = {"categories": list(categories), "hidden": bool(hidden),
                      "revision": revision, "updated_at": time.time()}
            stmt = self._insert(table).values(external_id=item_id, **values)
            session.execute(stmt.on_conflict_do_update(index_elements=["external_id"],
                                                       set_=values))
        return ItemInfo(item_id, tuple(categories), bool(hidden), revision)

    def item(self, item_id: str) -> ItemInfo | None:
        """The item's metadata; an item known from interactions but never described
        has none (no categories, not hidden); None for an item never seen at all."""
        with self._tx() as session:
            row = session.get(ItemMetadata, item_id)
            if row is not None:
                return _info(row)
            known = session.scalar(select(Item.idx).where(Item.external_id == item_id))
            return None if known is None else ItemInfo(item_id)

    def item_revision(self) -> int:
        """The newest metadata write (0: none yet): a replica polls this."""
        with self._tx() as session:
            return self._scalar_int(
                session, select(func.coalesce(func.max(ItemMetadata.revision), 0)))

    def items_since(self, revision: int) -> list[ItemInfo]:
        """The metadata written after ``revision``, oldest write first."""
        with self._tx() as session:
            rows = session.scalars(select(ItemMetadata).where(
                ItemMetadata.revision > revision).order_by(ItemMetadata.revision)).all()
            return [_info(row) for row in rows]


def _info(row: ItemMetadata) -> ItemInfo:
    return ItemInfo(row.external_id, tuple(row.categories), bool(row.hidden),
                    int(row.revision))
