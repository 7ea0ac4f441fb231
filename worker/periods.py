"""The period rule (``SMLREC_PERIOD``): when the open period closes by itself.

``count:N`` closes a period of exactly N interactions whenever N are open;
``time:D`` closes one when the open interactions span D seconds of event time
(the period then holds those stamped before its start + D); ``manual`` leaves
closing to the admin endpoint. Each closed period gets a retrain job.
"""

from __future__ import annotations

import logging

from smlrec.settings import PeriodRule
from store import JobInfo, PeriodInfo, Store

log = logging.getLogger(__name__)


def close_due_periods(store: Store, rule: PeriodRule) -> list[PeriodInfo]:
    """Close every period the rule says is complete and queue its retrain."""
    closed: list[PeriodInfo] = []
    while True:
        done = _close_one(store, rule)
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


def _close_one(store: Store, rule: PeriodRule) -> tuple[PeriodInfo, JobInfo] | None:
    """The next period the rule closes, with its job (queued in the same
    transaction), or None when none is due."""
    if rule.kind == "count" and rule.count is not None:
        if store.count_open() < rule.count:
            return None
        return store.close_period_and_queue(max_rows=rule.count)
    if rule.kind == "time" and rule.seconds is not None:
        open_period = store.open_period()
        start, end = open_period.start, open_period.end
        if start is None or end is None or end - start < rule.seconds:
            return None
        return store.close_period_and_queue(until_ts=start + rule.seconds)
    return None
