"""Closing at a cut from the interaction stream (once per cut), the admin's
retrain of the open period, restarting the open period's clock, and importing
history as one closed period."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text, update

from store import NewInteraction, QueueBusy, Store
from store.models import Job


def _ingest(store: Store, n: int, user: str = "u", first_ts: float = 0.0) -> None:
    store.ingest([NewInteraction(f"{user}{k}", f"i{k % 2}", first_ts + k, None)
                  for k in range(n)])


def _set_opened_at(store: Store, value: float) -> None:
    with store._engine.begin() as conn:
        conn.execute(text("UPDATE periods SET opened_at = :v"), {"v": value})


def _queued(store: Store) -> list[tuple[str, int]]:
    """(job id, period) of every queued job, oldest first."""
    with store._engine.connect() as conn:
        rows = conn.execute(text("SELECT id, period_id FROM jobs WHERE status = 'queued' "
                                 "ORDER BY created_at"))
        return [(job_id, int(period)) for job_id, period in rows]


def _opened_at(store: Store) -> dict[int, float | None]:
    return {p.period_id: p.opened_at for p in store.list_periods()}


def test_a_cut_closes_the_open_period_once(store: Store) -> None:
    _ingest(store, 3)
    done = store.close_at_cut("1-0")
    assert done is not None
    period, job = done
    assert (period.period_id, period.status, period.n_interactions) == (0, "closed", 3)
    assert (period.start, period.end) == (0.0, 2.0)
    assert (job.period_id, job.kind, job.status) == (0, "retrain", "queued")
    assert store.get_job(job.job_id) == job
    # delivered again (after more rows went in): nothing happens
    _ingest(store, 2, user="v")
    assert store.close_at_cut("1-0") is None
    assert store.count_open() == 2 and [p.status for p in store.list_periods()] == [
        "closed", "open"]
    assert [period for _, period in _queued(store)] == [0]
    # another cut closes the next period
    later = store.close_at_cut("2-0")
    assert later is not None and (later[0].period_id, later[0].n_interactions) == (1, 2)
    assert later[1].period_id == 1 and later[1].job_id != job.job_id


def test_a_cut_of_an_empty_period_closes_nothing(store: Store) -> None:
    assert store.close_at_cut("1-0") is None
    assert [(p.period_id, p.status) for p in store.list_periods()] == [(0, "open")]
    assert _queued(store) == []
    # the key was not used up: the same cut closes once there are rows
    _ingest(store, 1)
    done = store.close_at_cut("1-0")
    assert done is not None and done[0].n_interactions == 1


def test_a_time_rule_cut_closes_only_its_own_period(store: Store) -> None:
    _ingest(store, 2)
    assert store.close_at_cut("1-0", period_id=5) is None  # not the open period
    assert store.count_open() == 2 and store.list_periods()[0].status == "open"
    done = store.close_at_cut("2-0", period_id=0)
    assert done is not None and done[0].period_id == 0
    assert store.close_at_cut("3-0", period_id=0) is None  # closed already
    assert store.open_period().period_id == 1


def test_a_time_rule_cut_of_an_empty_window_restarts_its_clock(store: Store) -> None:
    _ingest(store, 1)
    store.close_period()
    _set_opened_at(store, 1.0)
    before = time.time()
    assert store.close_at_cut("1-0", period_id=1) is None
    opened = _opened_at(store)
    assert opened[0] == 1.0  # the closed period keeps its own
    assert opened[1] is not None and opened[1] >= before
    # an empty cut that names no period leaves the clock alone
    _set_opened_at(store, 1.0)
    assert store.close_at_cut("2-0") is None
    assert _opened_at(store)[1] == 1.0


def test_an_admin_retrain_is_trained_by_the_cut_or_failed_when_it_finds_nothing(
    store: Store,
) -> None:
    _ingest(store, 2)
    asked = store.queue_for_open_period()
    done = store.close_at_cut("1-0", job_id=asked.job_id)
    assert done is not None and done[1] == asked  # the admin's job, not a second one
    assert _queued(store) == [(asked.job_id, 0)]

    # period 1 stays empty: its cut fails the job queued for it
    store.finish_job(asked.job_id, "succeeded", model_version=1)
    empty = store.queue_for_open_period()
    assert empty.period_id == 1
    assert store.close_at_cut("2-0", job_id=empty.job_id) is None
    failed = store.get_job(empty.job_id)
    assert failed is not None and (failed.status, failed.error) == (
        "failed", "nothing to train: the period was empty at the cut")
    assert failed.finished_at is not None and failed.finished_at >= empty.created_at
    assert store.list_periods()[-1].status == "open"


def test_an_empty_cut_fails_only_a_queued_job_of_the_open_period(store: Store) -> None:
    running = store.queue_for_open_period()
    assert store.claim_job(running.job_id)
    other = store.create_job(7)  # queued, another period
    bystander = store.create_job(0, "bootstrap")  # queued, the open period, not named
    assert store.close_at_cut("1-0", job_id=other.job_id) is None
    assert store.close_at_cut("2-0", job_id=running.job_id) is None
    assert store.get_job(other.job_id) == other
    assert store.get_job(bystander.job_id) == bystander
    still = store.get_job(running.job_id)
    assert still is not None and (still.status, still.error) == ("running", None)


def test_the_open_periods_retrain_is_queued_once(store: Store) -> None:
    job = store.queue_for_open_period()  # period 0 is made for it
    assert (job.period_id, job.kind, job.status, job.attempts) == (0, "retrain", "queued", 0)
    assert store.list_periods()[0].status == "open"
    with pytest.raises(QueueBusy) as busy:
        store.queue_for_open_period()
    assert busy.value.job == job
    assert store.claim_job(job.job_id)
    with pytest.raises(QueueBusy) as running:
        store.queue_for_open_period()
    assert running.value.job.job_id == job.job_id and running.value.job.status == "running"
    store.create_job(0, "bootstrap")  # a bootstrap is no retrain: it does not block one
    store.finish_job(job.job_id, "failed", error="boom")
    _ingest(store, 1)
    store.close_period()
    again = store.queue_for_open_period()
    assert again.period_id == 1 and again.job_id != job.job_id


def test_the_oldest_busy_retrain_is_named(store: Store) -> None:
    newer, older = store.create_job(3), store.create_job(2)
    with store._engine.begin() as conn:  # the second one made is the older
        conn.execute(update(Job).where(Job.id == older.job_id)
                     .values(created_at=newer.created_at - 10.0))
    with pytest.raises(QueueBusy) as busy:
        store.queue_for_open_period()
    assert busy.value.job.job_id == older.job_id


def test_touching_the_open_period_restarts_only_its_clock(store: Store) -> None:
    _ingest(store, 1)
    store.close_period()
    _set_opened_at(store, 1.0)
    before = time.time()
    store.touch_open_period()
    opened = _opened_at(store)
    assert opened[0] == 1.0 and opened[1] is not None and opened[1] >= before
    assert store.count_open() == 0


def test_history_is_imported_as_one_closed_period_with_its_retrain(store: Store) -> None:
    rows = [NewInteraction(f"u{k % 3}", f"i{k % 4}", 100.0 + k, f"e{k}") for k in range(6)]
    done = store.import_period(rows)
    assert done is not None
    period, job, result = done
    assert (period.period_id, period.status, period.n_interactions) == (0, "closed", 6)
    assert (period.start, period.end) == (100.0, 105.0)
    assert (job.period_id, job.kind, job.status) == (0, "retrain", "queued")
    assert (result.accepted, result.duplicates, result.period_id) == (6, 0, 0)
    assert store.count_open() == 0 and store.open_period().period_id == 1
    # every row again: nothing new, nothing closed, no job
    assert store.import_period(rows) is None
    assert [p.period_id for p in store.list_periods()] == [0, 1]
    assert _queued(store) == [(job.job_id, 0)]
    # more history: the next period
    more = store.import_period([*rows, NewInteraction("u9", "i9", 200.0, "e9")])
    assert more is not None
    assert (more[0].period_id, more[0].n_interactions) == (1, 1)
    assert (more[2].accepted, more[2].duplicates) == (1, 6)
    assert more[1].period_id == 1


def test_history_is_refused_once_live_rows_are_open(store: Store) -> None:
    _ingest(store, 2)
    with pytest.raises(ValueError) as refused:
        store.import_period([NewInteraction("h", "x", 1.0, "h1")])
    assert str(refused.value) == ("the open period already holds 2 interactions: import "
                                  "history before live traffic, or retrain first")
    assert store.user_ids() == ["u0", "u1"] and store.count_open() == 2
    store.close_period()
    assert store.import_period([NewInteraction("h", "x", 1.0, "h1")]) is not None
