"""``smlrec import``: historical interactions into closed periods.

Live traffic never closes a period by its timestamps (the time rule follows the
clock). History is different: its event time is all there is. The file's rows
are sorted by timestamp and cut as ``--periods`` says:

- ``time:DURATION``: windows of event time, aligned on the first row
  (``[t0, t0 + D)``, ``[t0 + D, t0 + 2D)``, ...; empty windows make no period);
- ``count:N``: N rows each (the last one may be shorter);
- ``one``: the whole file as one period.

Each period is stored and closed in one transaction with its retrain queued (the
worker trains them in period order). The open period must be empty: history
goes before live traffic. Rows stamped later than now + the allowed clock skew
are refused, the whole file with them.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from smlrec.settings import PeriodRule, Settings, parse_period

log = logging.getLogger(__name__)


class BackfillError(Exception):
    """The file or the rule cannot be imported (nothing of it was stored beyond the
    periods already reported)."""


def cut_rule(spec: str) -> PeriodRule | None:
    """``time:D`` or ``count:N`` as a :class:`PeriodRule`; None for ``one``."""
    if spec.strip().lower() == "one":
        return None
    try:
        rule = parse_period(spec)
    except ValueError as error:
        raise BackfillError(f"--periods: {error}, or 'one'") from None
    if rule.kind == "manual":
        raise BackfillError("--periods: 'manual' cuts nothing; use 'one'")
    return rule


def read_rows(path: Path) -> list[tuple[str, str, float, str | None]]:
    """(user_id, item_id, timestamp, event_id) of a CSV file with a header or of an
    NDJSON file."""
    rows: list[tuple[str, str, float, str | None]] = []
    with open(path, newline="", encoding="utf-8") as handle:
        first = handle.readline()
        handle.seek(0)
        records: Iterator[dict[str, object]] = (
            (json.loads(line) for line in handle if line.strip())
            if first.lstrip().startswith("{") else csv.DictReader(handle))
        for n, record in enumerate(records, start=1):
            try:
                event = record.get("event_id")
                rows.append((str(record["user_id"]), str(record["item_id"]),
                             float(record["timestamp"]),  # type: ignore[arg-type]
                             str(event) if event not in (None, "") else None))
            except (KeyError, TypeError, ValueError) as error:
                raise BackfillError(f"{path}: record {n}: needs user_id, item_id and a numeric "
                                    f"timestamp ({error})") from None
    return rows


def split(rows: list[tuple[str, str, float, str | None]],
          rule: PeriodRule | None) -> list[list[tuple[str, str, float, str | None]]]:
    """``rows`` (sorted by timestamp) cut into periods by ``rule``."""
    if not rows:
        return []
    if rule is None:
        return [rows]
    if rule.kind == "count" and rule.count is not None:
        return [rows[i : i + rule.count] for i in range(0, len(rows), rule.count)]
    assert rule.seconds is not None
    periods: list[list[tuple[str, str, float, str | None]]] = []
    start = rows[0][2]
    current: list[tuple[str, str, float, str | None]] = []
    for row in rows:
        while row[2] >= start + rule.seconds:
            if current:
                periods.append(current)
                current = []
            start += rule.seconds * max(1, int((row[2] - start) // rule.seconds))
        current.append(row)
    if current:
        periods.append(current)
    return periods


def backfill(settings: Settings, path: str, spec: str) -> list[int]:
    """Import the file at ``path`` cut by ``spec``; returns the periods closed."""
    from store import NewInteraction, Store

    rule = cut_rule(spec)
    rows = sorted(read_rows(Path(path)), key=lambda r: r[2])
    limit = time.time() + settings.max_clock_skew_seconds
    ahead = [r for r in rows if r[2] > limit]
    if ahead:
        raise BackfillError(f"{len(ahead):,} rows are stamped in the future (the first: "
                            f"{ahead[0][2]}); nothing was imported")
    store = Store.from_url(settings.database_url)
    closed: list[int] = []
    try:
        for chunk in split(rows, rule):
            batch = [NewInteraction(u, i, t, e) for u, i, t, e in chunk]
            try:
                done = store.import_period(batch)
            except ValueError as error:
                raise BackfillError(str(error)) from None
            if done is None:
                log.info("%d rows already stored: no period", len(batch))
                continue
            period, job, result = done
            closed.append(period.period_id)
            log.info("period %d: %d interactions (%d duplicates), event time %s..%s; job %s",
                     period.period_id, result.accepted, result.duplicates, period.start,
                     period.end, job.job_id)
    finally:
        store.close()
    return closed
