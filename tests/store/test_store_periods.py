"""Periods: closing by count and by event time, the empty case, training arrays."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from store import NewInteraction, Store
from store.models import Job


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


def test_close_by_count(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    _ingest(store, [(f"u{k}", f"i{k % 3}", float(k)) for k in range(10)])
    assert store.count_open() == 10
    assert store.first_open_ts() == 0.0
    with caplog.at_level(logging.INFO, logger="store"):
        closed = store.close_period(max_rows=4)
    assert [r.getMessage() for r in caplog.records] == ["closed period 0: 4 interactions"]
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
    with pytest.raises(ValueError, match=r"^max_rows must be at least 1$"):
        store.close_period(max_rows=0)
    _ingest(store, [("a", "x", 20.0), ("b", "x", 21.0)])
    before = time.time()
    single = store.close_period(max_rows=1)
    assert single is not None and (single.n_interactions, single.start) == (1, 20.0)
    assert single.closed_at is not None and single.closed_at >= before
    assert single.opened_at is not None and single.opened_at <= single.closed_at


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
    with pytest.raises(ValueError, match=r"^period 1 is still open$"):
        store.mark_trained(1)
    with pytest.raises(KeyError) as unknown:
        store.mark_trained(7)
    assert unknown.value.args == (7,)
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


def test_closing_with_its_job_takes_the_periods_own_queued_retrain(store: Store) -> None:
    """The job a close hands back is the oldest queued retrain of that period;
    jobs of another period or kind, and finished or running ones, are not it."""
    _ingest(store, [("a", "x", 1.0)])
    store.create_job(0, "bootstrap")
    store.create_job(5)
    running, finished = store.create_job(0), store.create_job(0)
    store.claim_job(running.job_id)
    store.claim_job(finished.job_id)
    store.finish_job(finished.job_id, "succeeded", model_version=1)
    newer, older = store.create_job(0), store.create_job(0)
    with store._engine.begin() as conn:  # the second one made is the older
        for job, made in ((running, 1.0), (finished, 2.0), (older, 3.0), (newer, 4.0)):
            conn.execute(update(Job).where(Job.id == job.job_id).values(created_at=made))
    closed = store.close_period_and_queue()
    assert closed is not None and closed[1].job_id == older.job_id

    _ingest(store, [("b", "y", 2.0)])
    store.create_job(1, "bootstrap")
    made = store.close_period_and_queue()
    assert made is not None
    job = made[1]
    assert (job.period_id, job.kind, job.status) == (1, "retrain", "queued")
    assert job.job_id not in {older.job_id, newer.job_id}
    with store._engine.connect() as conn:
        kinds = conn.execute(select(Job.kind).where(Job.period_id == 1)
                             .order_by(Job.kind)).scalars().all()
    assert kinds == ["bootstrap", "retrain"]


def test_closing_with_its_job_by_event_time(store: Store) -> None:
    _ingest(store, [("a", "x", 10.0), ("b", "y", 20.0), ("c", "z", 30.0)])
    done = store.close_period_and_queue(until_ts=25.0)
    assert done is not None and (done[0].n_interactions, done[0].end) == (2, 20.0)
    assert store.count_open() == 1


def test_periods_list_in_id_order_and_the_open_one_reports_its_rows(store: Store) -> None:
    _ingest(store, [("a", "x", 5.0), ("b", "y", 6.0)])
    store.close_period()
    _ingest(store, [("c", "x", 7.0)])
    store.close_period()
    store.mark_trained(0)  # rewrites period 0's row after the others
    store.mark_trained(1)
    _ingest(store, [("d", "x", 9.0), ("a", "y", 8.0)])
    assert [(p.period_id, p.status) for p in store.list_periods()] == [
        (0, "trained"), (1, "trained"), (2, "open")]
    open_now = store.get_period(2)
    assert open_now is not None
    assert (open_now.status, open_now.n_interactions, open_now.start, open_now.end) == (
        "open", 2, 8.0, 9.0)


def test_arrays_of_an_empty_period_have_the_types_of_a_full_one(store: Store) -> None:
    store.open_period()
    for empty in (store.period_arrays(0), store.history_arrays(0)):  # nothing stored yet
        assert (len(empty.users), len(empty.items), len(empty.timestamps)) == (0, 0, 0)
        assert (empty.users.dtype.name, empty.items.dtype.name,
                empty.timestamps.dtype.name) == ("int64", "int64", "float64")
        assert (empty.n_users, empty.n_items) == (0, 0)
    _ingest(store, [("a", "x", 1.0), ("b", "y", 2.0)])
    store.close_period()
    full = store.period_arrays(0)
    assert (full.users.dtype.name, full.items.dtype.name) == ("int64", "int64")
    # the open period, empty, after a closed one: no rows, the counts so far
    empty = store.period_arrays(1)
    assert (len(empty.users), len(empty.items), len(empty.timestamps)) == (0, 0, 0)
    assert (empty.users.dtype.name, empty.items.dtype.name,
            empty.timestamps.dtype.name) == ("int64", "int64", "float64")
    assert (empty.n_users, empty.n_items) == (2, 2)
    with pytest.raises(KeyError) as unknown:
        store.period_arrays(9)
    assert unknown.value.args == (9,)


def test_closing_survives_a_concurrent_writer(
    store: Store, db_url: str, concurrent_writer: Callable[[str], Any]
) -> None:
    """Every way of closing a period, and marking one trained, reads (the rows
    after the last close; the period), then writes: begun as a plain reader,
    SQLite would fail it at once ("database is locked") whenever another
    connection committed in between; begun as a writer, it waits its turn."""
    with concurrent_writer(db_url):
        for n in range(60):  # a count, not a clock
            _ingest(store, [("a", "x", float(n))])
            done = store.close_period_and_queue()
            assert done is not None
            store.mark_trained(done[0].period_id)
            _ingest(store, [("a", "y", float(n))])
            assert store.close_period() is not None
            _ingest(store, [("b", "x", float(n))])
            assert store.close_at_cut(f"{n}-0") is not None
            assert store.import_period([NewInteraction("c", "y", float(n), f"h{n}")]) is not None
    periods = store.list_periods()
    assert len(periods) == 241 and sum(p.n_interactions for p in periods) == 240
    assert [p.status for p in periods[:4]] == ["trained", "closed", "closed", "closed"]
