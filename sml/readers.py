"""Data set files read into an `InteractionLog`: RecBole .inter, GroupLens u.data and
ratings.dat, CSV with a header, Yelp reviews, Adressa events, and the MovieLens-100K copy
the evaluation protocol uses (fetched once into a cache directory and verified by its
sha256); `load_dataset` tells them apart by name or content.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sml.data import DataFormatError, InteractionLog, from_records
from sml.synthetic import SYNTHETIC_PROFILES, synthetic_drift

logger = logging.getLogger(__name__)

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ML100K_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"


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
