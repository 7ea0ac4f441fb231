"""Caps on the new users and items of the open period: a batch over a cap is
refused whole, or, with ``drop_over_cap``, loses the rows of the new users and
items beyond it; the count starts again at each close."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from store import CapExceeded, Caps, NewInteraction, Store


def _rows(*pairs: tuple[str, str], event: str | None = None) -> list[NewInteraction]:
    return [NewInteraction(u, i, float(n), None if event is None else f"{event}{n}")
            for n, (u, i) in enumerate(pairs)]


def _forget_counts_at_close(store: Store) -> None:
    """Periods closed before the store kept the users and items known at each
    close have none recorded."""
    with store._engine.begin() as conn:
        conn.execute(text("UPDATE periods SET n_users = NULL, n_items = NULL "
                          "WHERE status <> 'open'"))


def test_a_batch_over_a_cap_is_refused_whole(store: Store) -> None:
    with pytest.raises(CapExceeded) as refused:
        store.ingest(_rows(("a", "x"), ("b", "x"), ("c", "x"), ("a", "y")), Caps(users=2))
    assert str(refused.value) == (
        "the open period may bring at most 2 new users: it has 0, this batch would add 3")
    assert (refused.value.what, refused.value.cap) == ("users", 2)
    assert store.count_open() == 0 and store.user_ids() == [] and store.item_ids() == []

    # exactly the cap fits; a user repeated in the batch counts once
    done = store.ingest(_rows(("a", "x"), ("b", "x"), ("a", "y")), Caps(users=2))
    assert (done.accepted, done.duplicates, done.dropped) == (3, 0, 0)
    with pytest.raises(CapExceeded, match="at most 2 new users: it has 2, this batch would add 1"):
        store.ingest(_rows(("a", "z"), ("c", "x")), Caps(users=2))
    # known users and new items: no user cap is passed, the item cap is
    assert store.ingest(_rows(("a", "z"), ("b", "z")), Caps(users=2)).accepted == 2
    with pytest.raises(CapExceeded) as items:
        store.ingest(_rows(("a", "v"), ("b", "w")), Caps(users=2, items=4))
    assert str(items.value) == (
        "the open period may bring at most 4 new items: it has 3, this batch would add 2")
    assert (items.value.what, items.value.cap) == ("items", 4)
    assert store.count_open() == 5 and store.item_ids() == ["x", "y", "z"]
    # no cap given: anything goes
    assert store.ingest(_rows(("c", "v"), ("d", "w")), Caps()).accepted == 2
    assert store.user_ids() == ["a", "b", "c", "d"]


def test_the_count_starts_again_at_each_close(store: Store) -> None:
    store.ingest(_rows(("a", "x"), ("b", "y")), Caps(users=2, items=2))
    store.close_period()
    # period 1 brings two new users of its own, whatever the first brought
    assert store.ingest(_rows(("c", "x"), ("d", "y")), Caps(users=2, items=2)).accepted == 2
    with pytest.raises(CapExceeded, match="at most 2 new users: it has 2"):
        store.ingest(_rows(("e", "x")), Caps(users=2))
    # a period of returning users only: the next count starts from all users known
    store.close_period()
    store.ingest(_rows(("a", "x")))
    store.close_period()
    assert store.ingest(_rows(("e", "z")), Caps(users=1, items=1)).accepted == 1
    with pytest.raises(CapExceeded, match="at most 1 new items: it has 1, this batch would add 1"):
        store.ingest(_rows(("a", "w")), Caps(items=1))


def test_a_cap_lowered_below_what_the_period_has_admits_no_one_new(store: Store) -> None:
    store.ingest(_rows(("a", "x"), ("b", "y"), ("c", "z")))
    with pytest.raises(CapExceeded, match="at most 2 new users: it has 3, this batch would add 1"):
        store.ingest(_rows(("d", "x")), Caps(users=2))
    kept = store.ingest(_rows(("d", "x"), ("a", "y")), Caps(users=2), drop_over_cap=True)
    assert (kept.accepted, kept.dropped) == (1, 1)
    assert store.user_ids() == ["a", "b", "c"]


def test_dropping_keeps_the_first_new_users_and_items_that_fit(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store.ingest(_rows(("a", "x")))
    store.close_period()
    batch = _rows(("b", "x"), ("c", "x"), ("b", "y"), ("a", "z"), ("a", "y"), ("d", "x"),
                  ("a", "x"), event="e")
    with caplog.at_level(logging.WARNING, logger="store.repository"):
        result = store.ingest(batch, Caps(users=1, items=1), drop_over_cap=True)
    # users: b is the first new one (c, d are dropped); items: y (z is dropped)
    assert (result.accepted, result.duplicates, result.dropped, result.period_id) == (4, 0, 3, 1)
    assert store.user_ids() == ["a", "b"] and store.item_ids() == ["x", "y"]
    arrays = store.period_arrays(1)
    assert list(zip(arrays.users.tolist(), arrays.items.tolist(), strict=True)) == [
        (1, 0), (1, 1), (0, 1), (0, 0)]
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 3 interactions over the caps on new users/items of period 1"]
    assert store.open_period().n_dropped == 3
    # the counter adds up over batches and stays with the period once it closes
    again = store.ingest(_rows(("e", "x"), ("a", "x")), Caps(users=1), drop_over_cap=True)
    assert (again.accepted, again.dropped) == (1, 1)
    closed = store.close_period()
    assert closed is not None and closed.n_dropped == 4
    assert store.open_period().n_dropped == 0


def test_a_batch_dropped_whole_stores_nothing(store: Store) -> None:
    store.ingest(_rows(("a", "x"), ("b", "x")))
    store.ingest(_rows(("a", "x"), event="e"))
    result = store.ingest(_rows(("c", "x"), ("d", "x"), event="e"), Caps(users=2),
                          drop_over_cap=True)
    # e0 is stored already (a duplicate); the other row's new user is over the cap
    assert (result.accepted, result.duplicates, result.period_id, result.dropped) == (0, 1, 0, 1)
    assert store.user_ids() == ["a", "b"] and store.count_open() == 3
    assert store.open_period().n_dropped == 1


def test_a_period_closed_without_its_counts_counts_from_its_rows(store: Store) -> None:
    """Periods closed before the counts were kept: the users and items known at
    their close come from the interactions up to their last id (not those after)."""
    store.ingest(_rows(("a", "x"), ("b", "y"), ("c", "y")))
    store.close_period()
    store.ingest(_rows(("d", "z")))  # open: counts against the cap
    _forget_counts_at_close(store)
    with pytest.raises(CapExceeded, match="at most 2 new users: it has 1, this batch would add 2"):
        store.ingest(_rows(("e", "x"), ("f", "x")), Caps(users=2))
    with pytest.raises(CapExceeded, match="at most 1 new items: it has 1, this batch would add 1"):
        store.ingest(_rows(("a", "w")), Caps(items=1))
    assert store.ingest(_rows(("e", "x"), ("a", "w")), Caps(users=2, items=2)).accepted == 2
    # and the next close, which finds none recorded either, records them again
    store.close_period()
    assert store.ingest(_rows(("f", "v")), Caps(users=1, items=1)).accepted == 1


def test_a_store_without_closed_periods_counts_every_user(store: Store) -> None:
    store.ingest(_rows(("a", "x")))
    with pytest.raises(CapExceeded, match="at most 1 new users: it has 1, this batch would add 1"):
        store.ingest(_rows(("b", "x")), Caps(users=1))
