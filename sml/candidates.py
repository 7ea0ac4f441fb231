"""The protocol's sampled candidates: per interaction, its item and negatives drawn once,
with a fixed seed, from the items its user never interacts with anywhere in the log."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sml.data import InteractionLog

logger = logging.getLogger(__name__)

# Largest number of array elements one vectorised step materialises (keys when
# sampling candidates, gathered score rows when ranking against the full catalog).
ELEMENT_BUDGET = 1 << 22


class TooFewNegatives(ValueError):
    """A user has fewer never-interacted items than the candidates ask for."""

    def __init__(self, user: str, available: int, n_negatives: int) -> None:
        self.user = user
        self.available = available
        self.n_negatives = n_negatives
        super().__init__(
            f"user {user!r} has {available} non-interacted items, "
            f"fewer than n_negatives={n_negatives}"
        )


@dataclass(frozen=True)
class Candidates:
    """Per-row evaluation candidates, built once per data set and shared by every method.

    `items[r - first_row, 0]` is the item of row r of the log; `items[r - first_row, 1:]`
    are the row's sampled negatives, distinct items the row's user never interacts with
    anywhere in the log. Only rows from `first_row` on have candidates (a large log
    scores its last periods only: 999 negatives for every row of 3M would be 12 GB).
    """

    items: np.ndarray  # (N - first_row, 1 + n_negatives) int32
    seed: int
    first_row: int = 0

    @property
    def n_negatives(self) -> int:
        return int(self.items.shape[1]) - 1

    def __len__(self) -> int:
        """The log's row count: rows before `first_row` have no candidates."""
        return self.first_row + int(self.items.shape[0])

    def for_rows(self, start: int, stop: int) -> np.ndarray:
        """Candidates of log rows [start, stop): (stop - start, 1 + n_negatives)."""
        if not self.first_row <= start <= stop <= len(self):
            raise ValueError(
                f"rows [{start}, {stop}) out of range: candidates cover rows "
                f"[{self.first_row}, {len(self)})"
            )
        return self.items[start - self.first_row : stop - self.first_row]

    def covers(self, start: int) -> bool:
        """Whether rows from ``start`` on have candidates."""
        return start >= self.first_row

    @classmethod
    def sample(
        cls, log: InteractionLog, n_negatives: int = 99, seed: int = 2020, first_row: int = 0
    ) -> Candidates:
        """Draw `n_negatives` negatives per row from `first_row` on, uniformly without
        replacement, each from the items its user has no row with in the whole log.

        Deterministic in (log, n_negatives, seed, first_row): users are visited in
        ascending dense index, and each user's rows are drawn together, in log order,
        from the user's complement (see `_draw_distinct`).
        """
        if n_negatives < 0:
            raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
        users = np.asarray(log.users, dtype=np.int64)
        items = np.asarray(log.items, dtype=np.int64)
        n_rows, n_items = len(users), log.n_items
        if not 0 <= first_row <= n_rows:
            raise ValueError(f"first_row {first_row} out of range for {n_rows} rows")
        out = np.empty((n_rows - first_row, 1 + n_negatives), dtype=np.int32)
        out[:, 0] = items[first_row:]
        rng = np.random.default_rng(seed)
        if n_rows == first_row or n_negatives == 0:
            return cls(items=out, seed=seed, first_row=first_row)

        order = np.argsort(users, kind="stable")  # rows grouped by user, log order within
        bounds = np.flatnonzero(np.diff(users[order])) + 1
        outside = np.ones(n_items, dtype=bool)  # the current user's complement
        for rows in np.split(order, bounds):
            drawn = rows[rows >= first_row] - first_row  # rows of `out`, log order
            if len(drawn) == 0:
                continue
            outside[items[rows]] = False
            complement = np.flatnonzero(outside)  # ascending, as a set difference gives
            outside[items[rows]] = True
            size = len(complement)
            if size < n_negatives:
                raise TooFewNegatives(log.user_ids[int(users[rows[0]])], size, n_negatives)
            step = max(1, ELEMENT_BUDGET // _draw_width(size, n_negatives))
            for lo in range(0, len(drawn), step):
                chunk = drawn[lo : lo + step]
                out[chunk, 1:] = complement[_draw_distinct(rng, size, n_negatives, len(chunk))]
        logger.debug("sampled %d negatives for %d rows (seed %d)", n_negatives, len(out), seed)
        return cls(items=out, seed=seed, first_row=first_row)


def _draw_width(size: int, k: int) -> int:
    """Random numbers one row consumes when drawing k of `size` items (see `_draw_distinct`)."""
    if 2 * k >= size:
        return size
    # Expected duplicates among m draws are about m^2 / (2 size); twice that plus slack
    # leaves a row short of k distinct values only rarely.
    return k + (2 * k * k) // size + 16


def _draw_distinct(rng: np.random.Generator, size: int, k: int, n_rows: int) -> np.ndarray:
    """(n_rows, k) int64: per row, k distinct values of range(size), a uniform random subset.

    When k is a large part of `size`, each row takes the k smallest of `size` random
    keys. Otherwise each row draws `_draw_width` integers with replacement and keeps
    the first k distinct ones in draw order, which is sampling without replacement;
    the rare row that comes up short is drawn again with the keys. Either way the
    subset is uniform and the result a deterministic function of the generator state.
    """
    width = _draw_width(size, k)
    if width == size:
        return _draw_by_keys(rng, size, k, n_rows)
    draws = rng.integers(0, size, size=(n_rows, width), dtype=np.int64)  # (R, m)
    # Sort (value, position) pairs; a value equal to its predecessor is a repeat of an
    # earlier draw of the same row.
    order = np.sort(draws * width + np.arange(width), axis=1)  # (R, m)
    value, position = np.divmod(order, width)
    repeat = np.zeros_like(draws, dtype=bool)
    np.put_along_axis(repeat, position[:, 1:], value[:, 1:] == value[:, :-1], axis=1)
    fresh = ~repeat
    keep = fresh & (np.cumsum(fresh, axis=1) <= k)  # first k distinct, in draw order
    short = np.flatnonzero(keep.sum(axis=1) < k)
    keep[short] = False
    keep[short, :k] = True  # placeholders, overwritten below
    out = draws[keep].reshape(n_rows, k)
    if len(short):
        out[short] = _draw_by_keys(rng, size, k, len(short))
    return out


def _draw_by_keys(rng: np.random.Generator, size: int, k: int, n_rows: int) -> np.ndarray:
    """(n_rows, k) int64: per row, the indices of the k smallest of `size` uniform keys."""
    keys = rng.random((n_rows, size))  # (R, size)
    if k < size:
        pick = np.argpartition(keys, k - 1, axis=1)[:, :k]  # (R, k)
    else:
        pick = np.broadcast_to(np.arange(size), keys.shape)
    picked = np.take_along_axis(keys, pick, axis=1)
    return np.take_along_axis(pick, np.argsort(picked, axis=1), axis=1).astype(np.int64)
