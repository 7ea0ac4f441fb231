"""Item metadata in the store, on SQLite and PostgreSQL: a write replaces what the
item had, an item no interaction named yet can be described, every write takes
the next revision, and a refused write stores nothing."""

from __future__ import annotations

import pytest

from store import ItemInfo, NewInteraction, Store


def test_an_item_is_stored_replaced_and_read_back(store: Store) -> None:
    assert store.item_revision() == 0
    assert store.put_item("i1", ["jazz", "live"], False) == ItemInfo("i1", ("jazz", "live"),
                                                                     False, 1)
    assert store.item("i1") == ItemInfo("i1", ("jazz", "live"), False, 1)
    assert store.put_item("i1", [], True) == ItemInfo("i1", (), True, 2)
    assert store.item("i1") == ItemInfo("i1", (), True, 2)
    assert store.item_revision() == 2


def test_items_never_described_read_as_plain_or_unknown(store: Store) -> None:
    store.ingest([NewInteraction("u1", "seen", 1.0)])
    assert store.item("seen") == ItemInfo("seen")
    assert store.item("never") is None
    store.put_item("catalogue-only", ["jazz"], False)  # before any interaction names it
    assert store.item("catalogue-only") == ItemInfo("catalogue-only", ("jazz",), False, 1)
    assert store.item_ids() == ["seen"]  # no dense index given out for it


def test_changes_are_read_by_revision(store: Store) -> None:
    for n, item in enumerate(["a", "b", "c", "a"]):
        store.put_item(item, [f"c{n}"], n == 3)
    assert [(i.item_id, i.revision) for i in store.items_since(0)] == [
        ("b", 2), ("c", 3), ("a", 4)]
    assert store.items_since(3) == [ItemInfo("a", ("c3",), True, 4)]
    assert store.items_since(4) == []


@pytest.mark.parametrize("categories", [
    [""], ["x" * 65], ["jazz", "jazz"], [f"c{n}" for n in range(101)]])
def test_metadata_outside_the_limits_is_refused_and_stores_nothing(
    store: Store, categories: list[str]
) -> None:
    store.put_item("i1", ["rock"], False)
    with pytest.raises(ValueError):
        store.put_item("i1", categories, True)
    assert store.item("i1") == ItemInfo("i1", ("rock",), False, 1)
    assert store.item_revision() == 1


def test_the_limits_themselves_are_accepted(store: Store) -> None:
    names = ["x" * 64] + [f"c{n}" for n in range(99)]
    assert store.put_item("i" * 128, names, False).categories == tuple(names)
