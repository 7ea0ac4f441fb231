"""Interaction logs: what a data set is once read, and its periods.

An `InteractionLog` holds one implicit positive interaction per row, stably sorted by
time, with users and items renumbered densely in order of first appearance. Periods
are consecutive row ranges of that log (`split_equal_count`, `split_time_windows`,
`split_daily`); `drop_repeats` keeps only the first row of each (user, item) pair.
The readers of data set files are in `sml.readers`, the synthetic generator in
`sml.synthetic`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np


class DataFormatError(ValueError):
    """A data file that cannot be read: names the file, the 1-based line and the fault."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, reason: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, eq=False)
class InteractionLog:
    """Interactions sorted by time; dense indices follow first appearance (0, 1, 2, ...)."""

    users: np.ndarray  # (N,) int64
    items: np.ndarray  # (N,) int64
    timestamps: np.ndarray  # (N,) float64 Unix seconds, non-decreasing
    user_ids: tuple[str, ...]  # external id of each dense user index
    item_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        if len(self.users) != n or len(self.items) != n:
            raise ValueError("users, items and timestamps must have the same length")
        if n > 1 and bool(np.any(np.diff(self.timestamps) < 0)):
            raise ValueError("timestamps must be non-decreasing")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.timestamps)


@dataclass(frozen=True, eq=False)
class Period:
    """Rows [start, stop) of a log; n_users/n_items count what is known once it is included."""

    index: int
    start: int
    stop: int
    users: np.ndarray  # (n,) int64 view of the log
    items: np.ndarray  # (n,) int64 view of the log
    timestamps: np.ndarray  # (n,) float64 view of the log
    n_users: int
    n_items: int

    def __len__(self) -> int:
        return self.stop - self.start


def _dense_codes(
    ids: Sequence[str] | np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes of `ids` taken in `order`, numbered by first appearance in that order.

    Strings are factorised through a 64-bit polynomial hash of their code points (integer
    sorting is several times faster than string sorting); a collision, checked exactly,
    falls back to sorting the strings themselves.
    """
    values = np.asarray(ids, dtype=str)[order]  # (N,) fixed-width unicode
    points = values.view(np.uint32).reshape(len(values), values.dtype.itemsize // 4)  # (N, L)
    key = np.zeros(len(values), dtype=np.uint64)
    for column in points.T:
        key *= np.uint64(1_000_003)  # wraps modulo 2**64
        key += column
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)  # (U,), (N,)
    if not np.array_equal(values[first][inverse], values):
        _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    rank = np.argsort(first)  # codes in order of first appearance
    remap = np.empty(len(first), dtype=np.int64)
    remap[rank] = np.arange(len(first), dtype=np.int64)
    return remap[inverse], tuple(values[first[rank]].tolist())


def from_records(
    user_ids: Sequence[str] | np.ndarray,
    item_ids: Sequence[str] | np.ndarray,
    timestamps: Sequence[float] | np.ndarray,
) -> InteractionLog:
    """Stable sort by timestamp (ties keep input order), then number users and items densely."""
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if not (len(user_ids) == len(item_ids) == len(ts)):
        raise ValueError("user_ids, item_ids and timestamps must have the same length")
    order = np.argsort(ts, kind="stable")
    users, user_index = _dense_codes(user_ids, order)
    items, item_index = _dense_codes(item_ids, order)
    return InteractionLog(users, items, ts[order], user_index, item_index)


# ---------------------------------------------------------------- readers


def drop_repeats(log: InteractionLog) -> InteractionLog:
    """The log without repeated (user, item) pairs: each pair's first row in time order stays.

    For repeat-consumption logs (music plays, news re-reads), where the protocol's "every
    row is a new positive" would otherwise count re-plays. A user's or item's first row is
    always kept, so the dense numbering stays valid.
    """
    keys = log.users * np.int64(max(log.n_items, 1)) + log.items  # (N,) one key per pair
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)
    return InteractionLog(
        log.users[keep], log.items[keep], log.timestamps[keep], log.user_ids, log.item_ids
    )


# ---------------------------------------------------------------- periods


def _periods(log: InteractionLog, cuts: Sequence[int] | np.ndarray) -> list[Period]:
    """Periods between consecutive cut rows (0 and len(log) implied); empty ones dropped."""
    if len(log) == 0:
        return []
    inner = np.asarray(cuts, dtype=np.int64).clip(0, len(log))
    bounds = np.unique(np.concatenate(([0], inner, [len(log)])))
    users_known = np.maximum.accumulate(log.users) + 1  # (N,)
    items_known = np.maximum.accumulate(log.items) + 1  # (N,)
    periods: list[Period] = []
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        periods.append(Period(
            index=len(periods), start=start, stop=stop,
            users=log.users[start:stop], items=log.items[start:stop],
            timestamps=log.timestamps[start:stop],
            n_users=int(users_known[stop - 1]), n_items=int(items_known[stop - 1]),
        ))
    return periods


def split_equal_count(
    log: InteractionLog, *, period_size: int | None = None, n_periods: int | None = None
) -> list[Period]:
    """Consecutive periods of `period_size` rows (the last may be shorter), or `n_periods`
    periods of len(log) // n_periods rows with the remainder added to the last one."""
    if (period_size is None) == (n_periods is None):
        raise ValueError("give exactly one of period_size and n_periods")
    if period_size is not None:
        if period_size <= 0:
            raise ValueError(f"period_size must be positive, got {period_size}")
        return _periods(log, range(period_size, len(log), period_size))
    assert n_periods is not None
    if n_periods <= 0 or n_periods > len(log):
        raise ValueError(f"n_periods must be in 1..{len(log)} (the log's rows), got {n_periods}")
    size = len(log) // n_periods
    return _periods(log, [k * size for k in range(1, n_periods)])


def split_time_windows(
    log: InteractionLog, *, width_seconds: float, origin: float | None = None
) -> list[Period]:
    """Windows [origin + k*w, origin + (k+1)*w); origin defaults to the first timestamp."""
    if not width_seconds > 0 or not np.isfinite(width_seconds):
        raise ValueError(f"width_seconds must be positive, got {width_seconds}")
    if len(log) == 0:
        return []
    start = float(log.timestamps[0]) if origin is None else float(origin)
    window = np.floor((log.timestamps - start) / width_seconds)  # (N,) non-decreasing
    return _periods(log, np.flatnonzero(np.diff(window)) + 1)


def split_daily(
    log: InteractionLog, *, hours: Sequence[int] = (0, 10, 17), tz: str = "Europe/Oslo"
) -> list[Period]:
    """Periods cut at the given local hours of every day (Adressa: 0-10h, 10-17h, 17-24h)."""
    if not hours or any(not 0 <= h <= 23 for h in hours) or list(hours) != sorted(set(hours)):
        raise ValueError(f"hours must be strictly increasing within 0..23, got {list(hours)}")
    if len(log) == 0:
        return []
    zone = ZoneInfo(tz)
    first = datetime.fromtimestamp(float(log.timestamps[0]), zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(float(log.timestamps[-1]), zone).date()
    days = [first + timedelta(days=k) for k in range((last - first).days + 1)]
    bounds = [datetime.combine(d, time(h), tzinfo=zone).timestamp() for d in days for h in hours]
    return _periods(log, np.searchsorted(log.timestamps, bounds, side="left"))
