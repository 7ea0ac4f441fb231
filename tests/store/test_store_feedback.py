"""Typed, weighted interactions: stored as given, read back for training with the
type factors applied, exported page by page, and carried by the stream format."""

from __future__ import annotations

import orjson
import pytest

from store import NewInteraction, Store, StoredInteraction
from store.stream_format import decode_rows, encode_rows

ROWS = [
    NewInteraction("u1", "i1", 10.0, "e1", "like", 2.5),
    NewInteraction("u2", "i2", 20.0, None),
    NewInteraction("u1", "i2", 30.0, "e3", "purchase", 100.0),
    NewInteraction("u3", "i1", 5.0, "e4", "view", 0.25),
]


def _all(store: Store, since: float | None = None, page: int = 1000) -> list[StoredInteraction]:
    through = store.last_interaction_id()
    out: list[StoredInteraction] = []
    after = 0
    while rows := store.interactions_page(after, through, page, since):
        out += rows
        after = rows[-1].id
    return out


def test_type_and_weight_are_stored_as_given(store: Store) -> None:
    assert store.ingest(ROWS).accepted == 4
    got = _all(store)
    assert [(r.user_id, r.item_id, r.ts, r.type, r.weight, r.event_id) for r in got] == [
        ("u1", "i1", 10.0, "like", 2.5, "e1"),
        ("u2", "i2", 20.0, "view", 1.0, None),  # the defaults
        ("u1", "i2", 30.0, "purchase", 100.0, "e3"),
        ("u3", "i1", 5.0, "view", 0.25, "e4"),
    ]
    assert [r.id for r in got] == sorted(r.id for r in got)


@pytest.mark.parametrize("row", [
    NewInteraction("u", "i", 1.0, None, "", 1.0),
    NewInteraction("u", "i", 1.0, None, "t" * 33, 1.0),
    NewInteraction("u", "i", 1.0, None, "view", 0.0),
    NewInteraction("u", "i", 1.0, None, "view", -1.0),
    NewInteraction("u", "i", 1.0, None, "view", 100.5),
    NewInteraction("u", "i", 1.0, None, "view", float("nan")),
    NewInteraction("u", "i", 1.0, None, "view", float("inf")),
], ids=["empty-type", "long-type", "zero", "negative", "over-100", "nan", "inf"])
def test_a_bad_type_or_weight_stores_nothing(store: Store, row: NewInteraction) -> None:
    with pytest.raises(ValueError):
        store.ingest([NewInteraction("u0", "i0", 1.0, "ok"), row])
    assert store.count_open() == 0 and store.user_ids() == []


def test_period_arrays_weigh_by_type_only_when_asked(store: Store) -> None:
    store.ingest(ROWS)
    plain = store.period_arrays(0)
    assert plain.weights is None  # serving's readers never pay for the column
    stored = store.period_arrays(0, type_weights={})
    assert stored.weights is not None
    assert stored.weights.tolist() == [2.5, 1.0, 100.0, 0.25]
    scaled = store.period_arrays(0, type_weights={"like": 3.0, "view": 2.0, "other": 9.0})
    assert scaled.weights is not None
    assert scaled.weights.tolist() == [7.5, 2.0, 100.0, 0.5]  # purchase: not named, 1
    assert scaled.users.tolist() == plain.users.tolist()
    store.close_period()
    assert store.period_arrays(0, type_weights={"like": 3.0}).weights is not None


def test_weights_of_one_read_as_none(store: Store) -> None:
    """Every effective weight 1 (the common case) is the unweighted loss: None."""
    store.ingest([NewInteraction("u", "i", 1.0, None), NewInteraction("u", "j", 2.0, None,
                                                                      "like", 0.5)])
    assert store.period_arrays(0, type_weights={}).weights is not None
    assert store.period_arrays(0, type_weights={"like": 2.0}).weights is None


def test_pages_follow_ids_and_filter_by_time(store: Store) -> None:
    rows = [NewInteraction(f"u{n % 4}", f"i{n % 5}", float(1000 - n), f"e{n}", "view",
                           1.0 + n) for n in range(23)]
    store.ingest(rows)
    store.close_period()
    store.ingest([NewInteraction("late", "i0", 5000.0, "after")])
    every = _all(store, page=5)
    assert [r.event_id for r in every] == [f"e{n}" for n in range(23)] + ["after"]
    assert [r.weight for r in every[:23]] == [1.0 + n for n in range(23)]
    recent = _all(store, since=990.0, page=4)  # timestamps 1000..990, then the late one
    assert [r.event_id for r in recent] == [f"e{n}" for n in range(11)] + ["after"]
    assert _all(store, since=6000.0) == []
    through = store.last_interaction_id()
    assert store.interactions_page(0, through - 1, 100)[-1].event_id == "e22"  # a snapshot
    assert store.interactions_page(through, through, 100) == []


def test_an_empty_log_exports_nothing(store: Store) -> None:
    assert store.last_interaction_id() == 0
    assert store.interactions_page(0, 0, 10) == []


def test_stream_rows_carry_type_and_weight() -> None:
    rows = [NewInteraction("u", "i", 1.0, "e", "like", 3.0),
            NewInteraction("u", "j", 2.0, None),
            NewInteraction("u", "k", 3.0, None, "view", 0.5)]
    payload = encode_rows(rows)
    assert decode_rows(payload) == rows
    # a plain view keeps the four fields entries had before types and weights
    assert orjson.loads(payload)[1] == ["u", "j", 2.0, None]


def test_stream_entries_written_before_types_read_as_views() -> None:
    old = orjson.dumps([["u1", "i1", 881250949, "e1"], ["u2", "i2", 2.5, None]])
    assert decode_rows(old) == [NewInteraction("u1", "i1", 881250949.0, "e1", "view", 1.0),
                                NewInteraction("u2", "i2", 2.5, None, "view", 1.0)]
