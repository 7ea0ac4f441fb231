"""Interaction logs: the data set readers, period splitting and the synthetic drift generator.

An `InteractionLog` holds one implicit positive interaction per row, stably sorted by
time, with users and items renumbered densely in order of first appearance. Periods
are consecutive row ranges of that log (`split_equal_count`, `split_time_windows`,
`split_daily`); `drop_repeats` keeps only the first row of each (user, item) pair. The
MovieLens-100K copy used by the evaluation protocol is fetched once into a cache
directory and verified by its sha256.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

logger = logging.getLogger(__name__)

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ML100K_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"


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


def _timestamp(path: Path, line: int, value: Any, iso: bool) -> float:
    """One timestamp: a number of Unix seconds, or (when `iso`) an ISO 8601 string, UTC if naive."""
    if isinstance(value, bool):
        raise DataFormatError(path, line, f"timestamp {value!r} is not a number")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        if not (iso and isinstance(value, str)):
            raise DataFormatError(path, line, f"timestamp {value!r} is not a number") from None
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DataFormatError(path, line, f"timestamp {value!r} is not a date") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    if not np.isfinite(seconds):
        raise DataFormatError(path, line, f"timestamp {value!r} is not finite")
    return seconds


def _timestamps(path: Path, lines: list[int], raw: list[Any], iso: bool) -> np.ndarray:
    """Parse a column of timestamps: vectorised when all are numbers, per value otherwise."""
    try:
        ts = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_timestamp(path, n, v, iso) for n, v in zip(lines, raw, strict=True)])
    bad = np.flatnonzero(~np.isfinite(ts))
    if len(bad):
        k = int(bad[0])
        raise DataFormatError(path, lines[k], f"timestamp {raw[k]!r} is not finite")
    return ts


class _Columns:
    """Accumulates (user, item, time) triples with the line each came from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[int] = []
        self.users: list[str] = []
        self.items: list[str] = []
        self.times: list[Any] = []

    def add(self, line: int, user: str, item: str, when: Any) -> None:
        if not user or not item:
            raise DataFormatError(self.path, line, "empty user or item id")
        self.lines.append(line)
        self.users.append(user)
        self.items.append(item)
        self.times.append(when)

    def build(self, iso: bool = False) -> InteractionLog:
        ts = _timestamps(self.path, self.lines, self.times, iso)
        log = from_records(self.users, self.items, ts)
        logger.info("read %s: %d interactions, %d users, %d items",
                    self.path, len(log), log.n_users, log.n_items)
        return log


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 text file (line ends kept) with their 1-based numbers; a line
    that is not UTF-8 is a DataFormatError naming it."""
    with open(path, "rb") as f:
        for line, raw in enumerate(f, 1):
            try:
                yield line, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(path, line, f"not UTF-8 text ({exc.reason})") from None


def _split_rows(path: Path, separator: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank lines split at `separator`, with their 1-based line numbers."""
    for line, text in _text_lines(path):
        text = text.rstrip("\r\n")
        if text.strip():
            yield line, text.split(separator)


def _tab_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    return _split_rows(path, "\t")


def _column(path: Path, header: Sequence[str], name: str) -> int:
    if name not in header:
        raise DataFormatError(path, 1, f"no column {name!r} in header {list(header)}")
    return list(header).index(name)


def read_recbole_inter(path: str | os.PathLike[str]) -> InteractionLog:
    """RecBole atomic file: `name:type` header; user_id, item_id and timestamp, any order."""
    path = Path(path)
    rows = _tab_rows(path)
    first = next(rows, None)
    if first is None:
        raise DataFormatError(path, None, "empty file (no header)")
    header = [field.split(":", 1)[0].strip() for field in first[1]]
    u, i, t = (_column(path, header, name) for name in ("user_id", "item_id", "timestamp"))
    columns = _Columns(path)
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataFormatError(path, line, f"{len(fields)} fields, header has {len(header)}")
        columns.add(line, fields[u].strip(), fields[i].strip(), fields[t])
    return columns.build()


def _read_grouplens(path: Path, separator: str) -> InteractionLog:
    """user, item, rating, timestamp per line, no header; the rating is ignored."""
    columns = _Columns(path)
    for line, fields in _split_rows(path, separator):
        if len(fields) != 4:
            raise DataFormatError(
                path, line, f"{len(fields)} fields separated by {separator!r}, expected 4"
            )
        columns.add(line, fields[0].strip(), fields[1].strip(), fields[3])
    return columns.build()


def read_grouplens_udata(path: str | os.PathLike[str]) -> InteractionLog:
    """GroupLens u.data (MovieLens-100K): user, item, rating, timestamp separated by tabs."""
    return _read_grouplens(Path(path), "\t")


def read_grouplens_dat(path: str | os.PathLike[str]) -> InteractionLog:
    """GroupLens ratings.dat (MovieLens-1M, -10M): user::item::rating::timestamp, no header."""
    return _read_grouplens(Path(path), "::")


def read_csv(
    path: str | os.PathLike[str],
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
) -> InteractionLog:
    """CSV with a header; timestamps in Unix seconds or ISO 8601 / RFC 3339 (naive means UTC)."""
    path = Path(path)
    columns = _Columns(path)
    reader = csv.reader(text for _, text in _text_lines(path))
    try:
        header = [name.strip() for name in next(reader, [])]
        u, i, t = (_column(path, header, name) for name in (user_col, item_col, time_col))
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise DataFormatError(path, reader.line_num,
                                      f"{len(fields)} fields, header has {len(header)}")
            columns.add(reader.line_num, fields[u].strip(), fields[i].strip(), fields[t])
    except csv.Error as exc:
        raise DataFormatError(path, reader.line_num, f"malformed CSV: {exc}") from None
    return columns.build(iso=True)


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, text in _text_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, line, f"invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, line, "not a JSON object")
        yield line, obj


def _field(path: Path, line: int, obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise DataFormatError(path, line, f"missing key {key!r}")
    return obj[key]


def _id(path: Path, line: int, obj: dict[str, Any], key: str) -> str:
    value = _field(path, line, obj, key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataFormatError(path, line, f"{key!r} is not a string: {value!r}")
    return str(value)


def read_yelp_reviews(path: str | os.PathLike[str]) -> InteractionLog:
    """Yelp review.json (JSON lines): user_id, business_id, date "YYYY-MM-DD HH:MM:SS" (as UTC)."""
    path = Path(path)
    columns = _Columns(path)
    for line, obj in _json_lines(path):
        columns.add(line, _id(path, line, obj, "user_id"), _id(path, line, obj, "business_id"),
                    _field(path, line, obj, "date"))
    return columns.build(iso=True)


def _event_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return [path]


def read_adressa_events(path: str | os.PathLike[str]) -> InteractionLog:
    """Adressa events (JSON lines; a file or a folder of them): article reads userId -> id at time.

    Events without an article "id" are page views of other pages and are skipped.
    """
    parts: list[_Columns] = []
    for file in _event_files(Path(path)):
        columns = _Columns(file)
        for line, obj in _json_lines(file):
            if obj.get("id") is None:
                continue
            when = _timestamp(file, line, _field(file, line, obj, "time"), iso=False)
            columns.add(line, _id(file, line, obj, "userId"), _id(file, line, obj, "id"), when)
        parts.append(columns)
    log = from_records([u for c in parts for u in c.users], [i for c in parts for i in c.items],
                       np.array([t for c in parts for t in c.times], dtype=np.float64))
    logger.info("read %s: %d article reads, %d users, %d items",
                path, len(log), log.n_users, log.n_items)
    return log


# ---------------------------------------------------------------- named data sets


def _default_cache_dir() -> Path:
    return Path(os.environ.get("SMLREC_CACHE_DIR") or Path.home() / ".cache" / "smlrec")


def _download_recbole_wheel(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"recbole=={RECBOLE_VERSION}", "-d", str(cache)]
    logger.info("downloading recbole==%s into %s", RECBOLE_VERSION, cache)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = cache / RECBOLE_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        raise RuntimeError(f"could not download recbole=={RECBOLE_VERSION} into {cache} "
                           f"(pip exit {result.returncode}): {result.stderr.strip()[-1000:]}")
    return wheel


def _movielens_member(cache: Path) -> bytes:
    """The ML-100K member of the recbole wheel (downloaded if absent), checked by sha256."""
    wheel = cache / RECBOLE_WHEEL
    if not wheel.is_file():
        wheel = _download_recbole_wheel(cache)
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(ML100K_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataFormatError(wheel, None, f"cannot read {ML100K_MEMBER}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != ML100K_SHA256:
        raise DataFormatError(wheel, None, f"sha256 of {ML100K_MEMBER} is {digest}, expected "
                              f"{ML100K_SHA256}; delete the wheel to fetch it again")
    return data


def load_movielens_100k(cache_dir: str | os.PathLike[str] | None = None) -> InteractionLog:
    """MovieLens-100K as the protocol defines it (recbole 1.2.1's ml-100k.inter), cached."""
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = cache / "ml-100k.inter"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == ML100K_SHA256:
        return read_recbole_inter(target)
    if target.is_file():
        logger.warning("%s does not match its sha256; extracting it again", target)
    data = _movielens_member(cache)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    return read_recbole_inter(target)


def _first_line(path: Path) -> str:
    """The first non-blank line of a file ("" when it has none or is not text)."""
    try:
        with open(path, "rb") as f:  # bytes: a bad byte further on must not matter here
            return next((raw for raw in f if raw.strip()), b"").decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _json_keys(path: Path) -> set[str]:
    """Keys of the first JSON object of a JSON-lines file (empty when it is not one)."""
    try:
        obj = json.loads(_first_line(path))
    except ValueError:
        return set()
    return set(obj) if isinstance(obj, dict) else set()


@dataclass(frozen=True)
class CsvColumns:
    """The header names of a CSV file's user, item and time columns."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"


def load_dataset(
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    columns: CsvColumns = CsvColumns(),
) -> InteractionLog:
    """A data set by name ("ml-100k", a synthetic profile such as "synthetic" or
    "synthetic-returning") or by path (format told by name or content).

    `columns` names the columns of a CSV file. A path that does not exist, or whose format
    cannot be told, is a DataFormatError.
    """
    if name == "ml-100k":
        return load_movielens_100k(cache_dir)
    if name in SYNTHETIC_PROFILES:
        return synthetic_drift(SYNTHETIC_PROFILES[name])
    path = Path(name)
    if not path.exists():
        raise DataFormatError(
            path,
            None,
            "no such file or folder (a data set is 'ml-100k', a synthetic profile or a path)",
        )
    if path.is_dir():
        files = _event_files(path)
        if files and {"userId", "time"} <= _json_keys(files[0]):
            return read_adressa_events(path)
    elif path.is_file():
        if path.suffix == ".dat" and "::" in _first_line(path):
            return read_grouplens_dat(path)
        if path.name == "u.data" or path.suffix in (".data", ".dat"):
            return read_grouplens_udata(path)
        if path.suffix == ".inter":
            return read_recbole_inter(path)
        if path.suffix == ".csv":
            return read_csv(path, columns.user, columns.item, columns.time)
        keys = _json_keys(path)
        if {"user_id", "business_id", "date"} <= keys:
            return read_yelp_reviews(path)
        if {"userId", "time"} <= keys:
            return read_adressa_events(path)
    raise DataFormatError(
        path,
        None,
        "unknown format: expected 'ml-100k', a synthetic profile, or the path of a RecBole .inter "
        "file, a GroupLens u.data/.data file or ratings.dat (user::item::rating::timestamp), a "
        ".csv file with user, item and timestamp columns, a Yelp review JSON-lines file, or "
        "Adressa event files",
    )


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


# ---------------------------------------------------------------- synthetic drift


@dataclass(frozen=True)
class SyntheticConfig:
    """A seeded log of topical users whose short-term interest drifts between periods.

    Every interaction follows the user's long-term interest with probability
    `long_term_weight`, else their short-term topic, which jumps to another topic with
    probability `drift` at each period. The long-term interest is one topic, or, with
    `topic_concentration` set, a mixture over topics drawn from a symmetric Dirichlet
    (small values: a few favourite topics). Items have a topic and a Zipf-like
    popularity; with `freshness` > 0 an item is more popular while it is new (weight
    1 + freshness * exp(-age / freshness_decay), age in periods). Users and items keep
    arriving; with `churn` > 0 an active user leaves for good with that probability at
    each later period.
    """

    n_periods: int = 6
    interactions_per_period: int = 2000
    n_users_initial: int = 200
    n_items_initial: int = 300
    new_users_per_period: int = 40
    new_items_per_period: int = 30
    n_topics: int = 8
    drift: float = 0.3  # chance per period that a user's short-term topic jumps
    long_term_weight: float = 0.6  # chance an interaction follows the long-term interest
    topic_concentration: float | None = None  # Dirichlet concentration of long-term mixtures
    popularity_skew: float = 1.0  # Zipf-like exponent of item popularity
    freshness: float = 0.0  # extra popularity of a brand-new item, as a multiple
    freshness_decay: float = 2.0  # periods for that extra popularity to fall by e
    churn: float = 0.0  # chance per period that an active user leaves for good
    seed: int = 0
    start_time: float = 1_600_000_000.0
    period_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        if min(self.n_periods, self.n_users_initial, self.n_items_initial, self.n_topics) < 1:
            raise ValueError("n_periods, n_users_initial, n_items_initial, n_topics must be >= 1")
        if min(self.interactions_per_period, self.new_users_per_period,
               self.new_items_per_period) < 0:
            raise ValueError("interaction and arrival counts must be >= 0")
        if not (0 <= self.drift <= 1 and 0 <= self.long_term_weight <= 1
                and 0 <= self.churn < 1):
            raise ValueError("drift, long_term_weight and churn are probabilities (churn < 1)")
        if self.topic_concentration is not None and not self.topic_concentration > 0:
            raise ValueError("topic_concentration must be positive")
        if self.freshness < 0 or not self.freshness_decay > 0:
            raise ValueError("freshness must be >= 0 and freshness_decay > 0")
        if self.period_seconds <= 0:
            raise ValueError("period_seconds must be positive")


SYNTHETIC_PROFILES: dict[str, SyntheticConfig] = {
    # the small default log of the tests and demos
    "synthetic": SyntheticConfig(),
    # Users who keep coming back (about 85% of a period's interactions after the first
    # period, as in a music listening log) with a stable mixture of favourite topics
    # and a drifting short-term one, and items whose popularity is highest while they
    # are new: long-term memory and recency both matter. 20 periods of 5,000
    # interactions and about 75 interactions per user, like MovieLens-100K.
    "synthetic-returning": SyntheticConfig(
        n_periods=20,
        interactions_per_period=5000,
        n_users_initial=400,
        n_items_initial=2000,
        new_users_per_period=50,
        new_items_per_period=60,
        n_topics=20,
        drift=0.3,
        long_term_weight=0.7,
        topic_concentration=0.3,
        freshness=2.0,
        freshness_decay=2.0,
        churn=0.1,
    ),
}


def _arrivals(initial: int, per_period: int, n_periods: int) -> np.ndarray:
    """Arrival period of each entity: `initial` at period 0, then `per_period` each period."""
    later = np.repeat(np.arange(1, n_periods, dtype=np.int64), per_period)
    return np.concatenate([np.zeros(initial, dtype=np.int64), later])


def _pick(rng: np.random.Generator, cumulative: np.ndarray, n: int) -> np.ndarray:
    """n indices drawn with probabilities proportional to the steps of `cumulative`."""
    picks = np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")
    return np.minimum(picks, len(cumulative) - 1)


class _TopicSampler:
    """Draws items of given topics by weight, among the items available in a period."""

    def __init__(self, available: np.ndarray, topic: np.ndarray, weight: np.ndarray,
                 n_topics: int) -> None:
        self.every = available
        self.every_cdf = np.cumsum(weight[available])
        self.pools = [available[topic[available] == t] for t in range(n_topics)]
        self.cdfs = [np.cumsum(weight[pool]) for pool in self.pools]

    def draw(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        """An item per entry of `topics`; topic -1 (or an empty topic) means any item."""
        items = np.empty(len(topics), dtype=np.int64)
        for t in np.unique(topics).tolist():
            rows = np.flatnonzero(topics == t)
            pool, cdf = (self.pools[t], self.cdfs[t]) if t >= 0 and len(self.pools[t]) else (
                self.every, self.every_cdf)
            items[rows] = pool[_pick(rng, cdf, len(rows))]
        return items


def synthetic_drift(config: SyntheticConfig = SyntheticConfig()) -> InteractionLog:
    """Interactions of users with a long-term interest and a drifting short-term one.

    Each period, active users are drawn by their activity (Gamma(2) per user), each
    draw picks a topic (long-term or short-term, see `SyntheticConfig`) and then an
    item of that topic by its current weight. A (user, item) pair occurs at most once
    in the log: draws repeating an earlier pair are dropped and the period is topped
    up by further draws, from the whole catalogue once the topics run dry (a period
    may come out short only when its users have seen nearly everything). Vectorised per
    period; the same config gives the same log.
    """
    c = config
    rng = np.random.default_rng(c.seed)
    user_arrival = _arrivals(c.n_users_initial, c.new_users_per_period, c.n_periods)
    item_arrival = _arrivals(c.n_items_initial, c.new_items_per_period, c.n_periods)
    n_users, n_items = len(user_arrival), len(item_arrival)
    item_topic = rng.integers(c.n_topics, size=n_items)
    popularity = (1.0 + rng.permutation(n_items)) ** -c.popularity_skew  # (I,)
    long_term = rng.integers(c.n_topics, size=n_users)
    short_term = rng.integers(c.n_topics, size=n_users)
    activity = rng.gamma(2.0, size=n_users)  # (U,) how often each user comes back
    mixture = None
    if c.topic_concentration is not None:
        mixture = np.cumsum(rng.dirichlet(np.full(c.n_topics, c.topic_concentration),
                                          size=n_users), axis=1)  # (U, topics)
    stay = np.full(n_users, np.inf)  # (U,) the first period a user is gone
    if c.churn > 0:
        stay = user_arrival + rng.geometric(c.churn, size=n_users)
    seen = np.zeros(0, dtype=np.int64)  # sorted keys user * n_items + item
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    times: list[np.ndarray] = []
    for p in range(c.n_periods):
        if p > 0 and c.n_topics > 1:
            jump = rng.random(n_users) < c.drift
            shift = rng.integers(1, c.n_topics, int(jump.sum()))  # never the same topic
            short_term[jump] = (short_term[jump] + shift) % c.n_topics
        active = np.flatnonzero((user_arrival <= p) & (stay > p))
        available = np.flatnonzero(item_arrival <= p)
        age = p - item_arrival
        weight = popularity * (1.0 + c.freshness * np.exp(-np.maximum(age, 0) / c.freshness_decay))
        sampler = _TopicSampler(available, item_topic, weight, c.n_topics)
        user_cdf = np.cumsum(activity[active])
        period_keys = np.zeros(0, dtype=np.int64)  # in draw order
        for attempt in range(16):
            wanted = c.interactions_per_period - len(period_keys)
            if wanted <= 0 or len(active) == 0:
                break
            n = wanted + wanted // 4 + 16
            who = active[_pick(rng, user_cdf, n)]
            topics = short_term[who].copy()
            follow_long = rng.random(n) < c.long_term_weight
            if mixture is None:
                topics[follow_long] = long_term[who[follow_long]]
            else:
                favourite = mixture[who[follow_long]]  # (L, topics)
                draws = rng.random(len(favourite))[:, None] * favourite[:, -1:]
                topics[follow_long] = np.minimum((favourite < draws).sum(1), c.n_topics - 1)
            if attempt >= 8:  # users who have seen most of their topics: any item will do
                topics[:] = -1
            keys = who * n_items + sampler.draw(rng, topics)
            pos = np.searchsorted(seen, keys).clip(max=max(len(seen) - 1, 0))
            fresh = keys[~(seen[pos] == keys)] if len(seen) else keys
            candidates = np.concatenate([period_keys, fresh])
            _, first = np.unique(candidates, return_index=True)
            period_keys = candidates[np.sort(first)][: c.interactions_per_period]
        seen = np.union1d(seen, period_keys)
        users.append(period_keys // n_items)
        items.append(period_keys % n_items)
        count = len(period_keys)
        step = c.period_seconds / max(count, 1)
        offsets = (np.arange(count) + rng.random(count)) * step  # increasing within [0, P)
        times.append(c.start_time + p * c.period_seconds + offsets)
    timestamps = np.concatenate(times) if times else np.empty(0)
    all_users = np.concatenate(users) if users else np.zeros(0, dtype=np.int64)
    all_items = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
    return from_records(np.char.add("u", all_users.astype(str)),
                        np.char.add("i", all_items.astype(str)), timestamps)
