"""worker.periods at its edges: the time rule's window ends exactly ``seconds``
after the period opened (not a moment later, not a moment sooner), the count
rule closes at exactly N rows, one period per time window, cuts only where due."""

from __future__ import annotations

import pytest

from smlrec.settings import PeriodRule, parse_period
from store import NewInteraction, PeriodInfo, Store
from worker.periods import close_due_periods, time_cut_due, window_over

HOUR = 3600.0


def _period(opened_at: float | None) -> PeriodInfo:
    return PeriodInfo(period_id=0, status="open", n_interactions=3, start=None, end=None,
                      first_id=None, last_id=None, opened_at=opened_at)


def test_the_window_ends_exactly_when_its_seconds_have_passed() -> None:
    rule = parse_period("time:1h")
    period = _period(opened_at=1_000_000.0)
    end = 1_000_000.0 + HOUR
    assert window_over(period, rule, now=end)  # at the instant: over
    assert window_over(period, rule, now=end + 0.001)
    assert not window_over(period, rule, now=end - 0.001)  # a moment before: not yet
    assert not window_over(period, rule, now=1_000_000.0)


def test_only_the_time_rule_has_windows() -> None:
    period = _period(opened_at=0.0)
    for spec in ("count:5", "manual"):
        assert not window_over(period, parse_period(spec), now=1e12)
    assert not window_over(_period(opened_at=None), parse_period("time:1s"), now=1e12)
    # the kind decides, not which fields happen to be set
    for kind in ("count", "manual"):
        rule = PeriodRule(kind=kind, count=5, seconds=1.0)  # type: ignore[arg-type]
        assert not window_over(period, rule, now=1e12)


def _rows(n: int, tag: str) -> list[NewInteraction]:
    return [NewInteraction(f"u{k % 5}", f"i{k % 7}", 1.7e9 + k, f"{tag}{k}") for k in range(n)]


def _age(store: Store, seconds: float) -> None:
    from sqlalchemy import update

    from store.models import Period

    with store._tx() as session:
        session.execute(update(Period).where(Period.status == "open")
                        .values(opened_at=Period.opened_at - seconds))


def test_count_rule_closes_at_exactly_n(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    rule = parse_period("count:10")
    sqlite_store.ingest(_rows(9, "a"))
    assert close_due_periods(sqlite_store, rule) == []  # one short
    sqlite_store.ingest(_rows(1, "b"))
    with caplog.at_level("INFO", logger="worker.periods"):
        closed = close_due_periods(sqlite_store, rule)  # exactly N: closes
    assert [(p.period_id, p.n_interactions) for p in closed] == [(0, 10)]
    job = sqlite_store.next_job()
    assert job is not None
    assert [r.getMessage() for r in caplog.records if r.name == "worker.periods"] == [
        f"period 0 closed by rule count (10 interactions): job {job.job_id}"]
    sqlite_store.ingest(_rows(25, "c"))
    closed = close_due_periods(sqlite_store, rule)  # as many whole periods as are due
    assert [(p.period_id, p.n_interactions) for p in closed] == [(1, 10), (2, 10)]
    assert sqlite_store.count_open() == 5
    assert job.period_id == 0  # each closed period queues a retrain


def test_time_rule_closes_one_period_per_window(sqlite_store: Store) -> None:
    rule = parse_period("time:1h")
    sqlite_store.ingest(_rows(12, "a"))
    assert close_due_periods(sqlite_store, rule) == []
    assert time_cut_due(sqlite_store, rule) is None
    _age(sqlite_store, HOUR + 1)
    due = time_cut_due(sqlite_store, rule)
    assert due is not None and due.period_id == 0
    assert close_due_periods(sqlite_store, rule, by_time=False) == []  # left to stream cuts
    closed = close_due_periods(sqlite_store, rule)
    assert [(p.period_id, p.n_interactions) for p in closed] == [(0, 12)]
    assert close_due_periods(sqlite_store, rule) == []  # the next window has just begun
    assert time_cut_due(sqlite_store, parse_period("count:1")) is None


def test_an_empty_window_starts_again(sqlite_store: Store) -> None:
    rule = parse_period("time:1h")
    sqlite_store.open_period()  # the open period's row exists from the first look on
    _age(sqlite_store, 2 * HOUR)
    opened = sqlite_store.open_period().opened_at
    assert close_due_periods(sqlite_store, rule) == []  # nothing in it: nothing closes
    again = sqlite_store.open_period()
    assert again.opened_at is not None and opened is not None and again.opened_at > opened
    assert not window_over(again, rule)


@pytest.mark.parametrize("spec", ["manual", "count:3"])
def test_other_rules_never_close_by_time(sqlite_store: Store, spec: str) -> None:
    sqlite_store.ingest(_rows(2, "a"))
    _age(sqlite_store, 100 * HOUR)
    assert close_due_periods(sqlite_store, parse_period(spec)) == []
    assert time_cut_due(sqlite_store, parse_period(spec)) is None


def test_only_the_count_rule_closes_by_count(sqlite_store: Store) -> None:
    sqlite_store.ingest(_rows(4, "a"))
    for kind in ("manual", "time"):  # a count set beside another kind is not a count rule
        rule = PeriodRule(kind=kind, count=1, seconds=HOUR)  # type: ignore[arg-type]
        assert close_due_periods(sqlite_store, rule) == []
    assert [p.status for p in sqlite_store.list_periods()] == ["open"]
