"""The period rule (``SMLREC_PERIOD``): when the open period closes by itself.

``count:N`` closes a period of exactly N interactions whenever N are open (in
log order, so the cut is exact wherever the rows wait). ``time:D`` follows the
clock, never the timestamps clients send: the open period closes once D seconds
have passed since it opened, with everything acknowledged by then, so at most
one period closes per window; a window that ends empty starts again.
``manual`` leaves closing to the admin endpoint. Each closed period gets a
retrain job.

In distributed mode the rows acknowledged before the end of a window may still
wait in the stream, so the time rule does not close the period in the database:
it appends a cut to the stream (:func:`time_cut_due`), which the ingestion
makes once every row before it is stored.
"""

from __future__ import annotations

import logging
import time

from smlrec.settings import PeriodRule
from store import JobInfo, PeriodInfo, Store

log = logging.getLogger(__name__)


def close_due_periods(store: Store, rule: PeriodRule, by_time: bool = True) -> list[PeriodInfo]:
    """Close every period the rule says is complete and queue its retrain
    (``by_time=False``: leave the time rule to stream cuts)."""
    closed: list[PeriodInfo] = []
    while True:
        done = _close_one(store, rule, by_time)
        if done is None:
            return closed
        info, job = done
        log.info(
            "period %d closed by rule %s (%d interactions): job %s",
            info.period_id,
            rule.kind,
            info.n_interactions,
            job.job_id,
        )
        closed.append(info)
        if rule.kind == "time":
            return closed  # one per window


def window_over(period: PeriodInfo, rule: PeriodRule, now: float | None = None) -> bool:
    """Whether the time rule's window of the open ``period`` has ended."""
    if rule.kind != "time" or rule.seconds is None or period.opened_at is None:
        return False
    return (time.time() if now is None else now) >= period.opened_at + rule.seconds


def time_cut_due(store: Store, rule: PeriodRule) -> PeriodInfo | None:
    """The open period when its time window has ended (distributed mode appends
    a cut for it), else None."""
    if rule.kind != "time":
        return None
    period = store.open_period()
    return period if window_over(period, rule) else None


def _close_one(
    store: Store, rule: PeriodRule, by_time: bool
) -> tuple[PeriodInfo, JobInfo] | None:
    """The next period the rule closes, with its job (queued in the same
    transaction), or None when none is due."""
    if rule.kind == "count" and rule.count is not None:
        if store.count_open() < rule.count:
            return None
        return store.close_period_and_queue(max_rows=rule.count)
    if rule.kind == "time" and by_time:
        period = store.open_period()
        if not window_over(period, rule):
            return None
        if period.n_interactions == 0:
            store.touch_open_period()
            return None
        return store.close_period_and_queue()
    return None
