"""Periods: closing by count and by event time, the empty case, training arrays."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from store import NewInteraction, Store


def _ingest(store: Store, spec: list[tuple[str, str, float]]) -> None:
    store.ingest([NewInteraction(u, i, ts, None) for u, i, ts in spec])


def test_open_period_is_created_once(store: Store) -> None:
    assert store.list_periods() == []
    first = store.open_period()
    assert (first.period_id, first.status, first.n_interactions) == (0, "open", 0)
    assert store.open_period().period_id == 0
    assert [p.period_id for p in store.list_periods()] == [0]


def test_empty_period_does_not_close(store: Store) -> None:
    assert store.close_period() is None
    _ingest(store, [("u", "i", 100.0)])
    assert store.close_period(until_ts=50.0) is None  # nothing before t=50
    assert store.count_open() == 1
    assert store.close_period() is not None
    assert store.close_period() is None
    assert [p.status for p in store.list_periods()] == ["closed", "open"]


def test_close_by_count(store: Store) -> None:
    _ingest(store, [(f"u{k}", f"i{k % 3}", float(k)) for k in range(10)])
    assert store.count_open() == 10
    assert store.first_open_ts() == 0.0
    closed = store.close_period(max_rows=4)
    assert closed is not None
    assert (closed.period_id, closed.status, closed.n_interactions) == (0, "closed", 4)
    assert (closed.start, closed.end) == (0.0, 3.0)
    assert closed.last_id is not None and closed.first_id is not None
    assert closed.last_id - closed.first_id + 1 == 4
    assert store.count_open() == 6
    assert store.first_open_ts() == 4.0
    second = store.close_period(max_rows=100)
    assert second is not None and second.n_interactions == 6
    assert second.first_id == closed.last_id + 1
    assert store.count_open() == 0
    assert store.first_open_ts() is None
    periods = store.list_periods()
    assert [(p.period_id, p.status) for p in periods] == [(0, "closed"), (1, "closed"), (2, "open")]
    with pytest.raises(ValueError):
        store.close_period(max_rows=0)


def test_close_until_event_time(store: Store) -> None:
    _ingest(store, [("a", "x", 10.0), ("b", "y", 20.0), ("c", "z", 30.0), ("d", "x", 40.0)])
    closed = store.close_period(until_ts=30.0)
    assert closed is not None
    assert (closed.n_interactions, closed.start, closed.end) == (2, 10.0, 20.0)
    open_now = store.list_periods()[-1]
    assert (open_now.status, open_now.n_interactions, open_now.start, open_now.end) == (
        "open",
        2,
        30.0,
        40.0,
    )
    # with both limits, the tighter one wins
    _ingest(store, [("e", "x", 50.0), ("f", "x", 60.0)])
    closed = store.close_period(max_rows=3, until_ts=100.0)
    assert closed is not None and (closed.start, closed.end) == (30.0, 50.0)


def test_period_ids_are_id_ranges_even_with_late_timestamps(store: Store) -> None:
    # a row stamped after the cut but received before an earlier-stamped one stays in
    _ingest(store, [("a", "x", 10.0), ("b", "y", 99.0), ("c", "z", 20.0), ("d", "x", 80.0)])
    closed = store.close_period(until_ts=50.0)
    assert closed is not None
    assert (closed.n_interactions, closed.start, closed.end) == (3, 10.0, 99.0)
    assert store.count_open() == 1


def test_mark_trained(store: Store) -> None:
    _ingest(store, [("a", "x", 1.0)])
    store.close_period()
    store.mark_trained(0)
    info = store.get_period(0)
    assert info is not None and info.status == "trained"
    with pytest.raises(ValueError):
        store.mark_trained(1)  # still open
    with pytest.raises(KeyError):
        store.mark_trained(7)
    assert store.get_period(7) is None
    # trained periods still bound the open one
    _ingest(store, [("b", "y", 2.0)])
    assert store.count_open() == 1


def test_period_and_history_arrays(store: Store) -> None:
    # period 0: users a, b; items x, y
    _ingest(store, [("a", "x", 1.0), ("b", "y", 2.0), ("a", "y", 3.0)])
    store.close_period()
    # period 1: a new user c and a new item z, plus a returning user
    _ingest(store, [("c", "z", 4.0), ("a", "z", 5.0)])
    store.close_period()
    # period 2 (open): another new user and item
    _ingest(store, [("d", "w", 6.0)])

    p0 = store.period_arrays(0)
    assert p0.users.tolist() == [0, 1, 0]
    assert p0.items.tolist() == [0, 1, 1]
    assert p0.timestamps.tolist() == [1.0, 2.0, 3.0]
    assert p0.users.dtype.name == "int64" and p0.timestamps.dtype.name == "float64"
    assert (p0.n_users, p0.n_items) == (2, 2)

    p1 = store.period_arrays(1)
    assert p1.users.tolist() == [2, 0] and p1.items.tolist() == [2, 2]
    assert (p1.n_users, p1.n_items) == (3, 3)

    p2 = store.period_arrays(2)  # the open period: what it holds so far
    assert p2.users.tolist() == [3] and (p2.n_users, p2.n_items) == (4, 4)

    history = store.history_arrays(2)
    assert history.users.tolist() == [0, 1, 0, 2, 0]
    assert (history.n_users, history.n_items) == (3, 3)
    assert len(store.history_arrays(1)) == 3
    empty = store.history_arrays(0)
    assert len(empty) == 0 and (empty.n_users, empty.n_items) == (0, 0)
    with pytest.raises(KeyError):
        store.period_arrays(9)


def test_ingest_reports_the_open_period(store: Store) -> None:
    assert store.ingest([NewInteraction("a", "x", 1.0, None)]).period_id == 0
    store.close_period()
    assert store.ingest([NewInteraction("a", "x", 2.0, None)]).period_id == 1


def test_closing_with_its_job(store: Store) -> None:
    assert store.close_period_and_queue() is None  # empty: nothing closed, nothing queued
    assert store.running_or_queued_job() is None
    _ingest(store, [(f"u{k}", "i", float(k)) for k in range(5)])
    done = store.close_period_and_queue(max_rows=3)
    assert done is not None
    period, job = done
    assert (period.period_id, period.status, period.n_interactions) == (0, "closed", 3)
    assert (job.period_id, job.kind, job.status) == (0, "retrain", "queued")
    assert store.get_job(job.job_id) == job
    with pytest.raises(ValueError, match="unknown job kind"):
        store.close_period_and_queue(kind="magic")  # type: ignore[arg-type]
    assert store.count_open() == 2  # the bad call closed nothing


def test_a_job_that_cannot_be_stored_leaves_the_period_open(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing and queuing are one transaction: when the database refuses the
    job (here a primary key already taken), the period is not closed either, so
    no closed period is ever left without a job to train it."""
    _ingest(store, [(f"u{k}", "i", float(k)) for k in range(4)])
    taken = store.create_job(99)
    monkeypatch.setattr("store._records.uuid.uuid4",
                        lambda: type("Same", (), {"hex": taken.job_id})())
    with pytest.raises(IntegrityError):
        store.close_period_and_queue()
    assert store.count_open() == 4
    assert [p.status for p in store.list_periods()] == ["open"]
    assert store.running_or_queued_job() == taken
