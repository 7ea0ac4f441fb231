"""Service configuration, read from the environment (prefix ``SMLREC_``).

Build it through :func:`get_settings` (cached) in the application's start-up and
pass it on; tests construct ``Settings(...)`` directly with overrides.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PeriodKind = Literal["count", "time", "manual"]
Strategy = Literal["sml", "fine_tune", "full_retrain", "spmf"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
AccessLog = Literal["all", "writes_and_errors", "errors", "off"]

_DURATION_UNITS: dict[str, float] = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


@dataclass(frozen=True)
class PeriodRule:
    """When the open period closes: after ``count`` interactions, after ``seconds``
    of event time, or only on an explicit request (``manual``)."""

    kind: PeriodKind
    count: int | None = None
    seconds: float | None = None


def parse_period(spec: str) -> PeriodRule:
    """Parse ``count:N`` (N >= 1), ``time:DURATION`` (e.g. ``90s``, ``15m``, ``8h``,
    ``2d``) or ``manual``. Raises ValueError with the accepted forms on anything else."""
    text = spec.strip().lower()
    if text == "manual":
        return PeriodRule(kind="manual")
    kind, sep, arg = text.partition(":")
    if sep and kind == "count" and arg.strip().isdigit() and int(arg) >= 1:
        return PeriodRule(kind="count", count=int(arg))
    if sep and kind == "time":
        match = _DURATION_RE.match(arg)
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            if seconds > 0:
                return PeriodRule(kind="time", seconds=seconds)
    raise ValueError(
        f"invalid period {spec!r}: expected 'count:N' with N >= 1, "
        "'time:DURATION' with a positive duration in s/m/h/d (e.g. 'time:8h'), or 'manual'"
    )


def parse_promotion(spec: str) -> int | None:
    """``manual`` (None) or ``auto:N`` with N >= 1 (N). Raises ValueError otherwise."""
    text = spec.strip().lower()
    if text == "manual":
        return None
    kind, sep, arg = text.partition(":")
    if kind == "auto" and sep and arg.strip().isdigit() and int(arg) >= 1:
        return int(arg)
    raise ValueError(f"invalid promotion {spec!r}: expected 'manual' or 'auto:N' with N >= 1 "
                     "(serve the strategy that scored best in each of the last N periods)")


MAX_TYPE_LENGTH = 32  # characters of an interaction type, as the API accepts them


def parse_type_weights(spec: str) -> dict[str, float]:
    """Parse ``type:weight,type:weight`` (e.g. ``view:1,like:3,purchase:10``; empty:
    none) into each type's factor, a finite number above 0. Raises ValueError
    naming the faulty entry."""
    weights: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = entry.rpartition(":")
        name = name.strip()
        try:
            factor = float(value) if sep else math.nan
        except ValueError:
            factor = math.nan
        if not (0 < len(name) <= MAX_TYPE_LENGTH and math.isfinite(factor) and factor > 0):
            raise ValueError(
                f"invalid type weight {entry!r}: expected TYPE:WEIGHT with a type of 1 to "
                f"{MAX_TYPE_LENGTH} characters and a finite weight above 0, comma-separated "
                "(e.g. 'view:1,like:3,purchase:10')")
        if name in weights:
            raise ValueError(f"type {name!r} is given two weights")
        weights[name] = factor
    return weights


SUPPORTED_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres",
                     "postgresql+psycopg")


def redacted(url: str) -> str:
    """``url`` without its password."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def setting_errors(error: ValidationError) -> str:
    """A settings validation error in one line, naming the variables
    (``SMLREC_PERIOD: invalid period 'x': ...; SMLREC_PORT: ...``)."""
    parts = []
    for item in error.errors(include_url=False):
        name = "SMLREC_" + "_".join(str(p) for p in item["loc"]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


def normalize_database_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain PostgreSQL URLs (``postgresql://``,
    ``postgres://``); any other URL is returned unchanged."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


class Settings(BaseSettings):
    """Everything the service, the worker and the store are configured by."""

    model_config = SettingsConfigDict(env_prefix="SMLREC_", extra="ignore")

    database_url: str = "sqlite:///./smlrec-data/smlrec.db"
    redis_url: str | None = None
    # every Redis key and channel starts with it: deployments sharing one Redis
    # (or one database of it) keep apart by their prefixes
    redis_prefix: str = Field(default="smlrec", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    model_dir: Path = Path("./smlrec-data/models")
    admin_token: str | None = None
    # where an embedded service keeps the admin token it generates when admin_token is
    # not set (created once, mode 0600, reused at every start; `smlrec load` reads it)
    admin_token_file: Path = Path("./smlrec-data/admin-token")
    api_key: str | None = None
    period: str = "count:5000"
    strategy: Strategy = "sml"
    # strategies also trained, kept and scored at every boundary beside the served
    # one (comma-separated, e.g. "fine_tune,full_retrain"; empty: none)
    challengers: str = ""
    # "manual": the served strategy changes only on request; "auto:N": the strategy
    # that scored best (recall@20) in each of the last N evaluated periods is served
    promotion: str = "manual"
    # the file `smlrec tune` writes for this log (its methods' hyper-parameters; None:
    # the defaults, chosen on MovieLens-100K)
    hyper_file: Path | None = None
    embed_dim: int = Field(default=64, ge=1, le=1024)
    # where the worker trains (sml.device): "auto" takes a CUDA GPU where there is one;
    # models and checkpoints are CPU tensors whichever it is
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"
    log_format: Literal["plain", "json"] = "plain"
    # which requests get an access-log line at INFO (the others at DEBUG)
    access_log: AccessLog = "writes_and_errors"
    swap_poll_seconds: float = Field(default=1.0, gt=0)
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    train_threads: int = Field(default=1, ge=1)
    scoring_threads: int = Field(default=1, ge=1)
    batcher_threads: int | None = Field(default=None, ge=1)  # None: this process's CPUs less one
    worker_mode: Literal["process", "thread"] = "process"
    worker_nice: int = Field(default=10, ge=0, le=19)
    int8_scoring: bool | Literal["auto"] = "auto"  # auto: where int8 is faster here
    precompute_depth: int = Field(default=50, ge=0, le=1000)  # 0: score every request
    # most users of a version with a precomputed list (the rest are scored per request)
    precompute_users: int = Field(default=500_000, ge=1)
    # how long a replica keeps the previous version serving while it ranks the
    # new one's active users (0: serve at once, rank afterwards)
    precompute_wait_seconds: float = Field(default=120.0, ge=0)
    # a user the served model does not know, with interactions logged since, is answered
    # from a vector fitted to them (the items fixed) with this L2 weight
    fold_in: bool = True
    fold_in_l2: float = Field(default=0.1, gt=0, le=1e6)
    # a user it knows, with interactions logged since, from their vector moved by them
    fold_in_known: bool = False
    lock_ttl_seconds: float = Field(default=10.0, gt=0)
    seed: int = 0
    # an interaction stamped later than now + this is refused (422): event time
    # is the client's word, and a clock far ahead is an error, not the future
    max_clock_skew_seconds: float = Field(default=300.0, ge=0)
    # each interaction type's factor on the weight its rows carry in training
    # (``view:1,like:3,purchase:10``; a type not named: 1)
    type_weights: str | None = None
    # how long an event id is remembered at the API (distributed mode) so that a
    # repeat is reported as a duplicate; a later repeat is still stored once
    dedup_window_seconds: float = Field(default=300.0, gt=0, le=7 * 86400)
    # a failed retrain is tried this many times in all, waiting
    # retrain_backoff_seconds, then twice as long each time (at most an hour)
    retrain_attempts: int = Field(default=4, ge=1, le=100)
    retrain_backoff_seconds: float = Field(default=30.0, gt=0)
    # model versions kept on disk besides the active and the pinned ones
    keep_versions: int = Field(default=5, ge=1)
    # new users / items one period may bring (0: no cap)
    max_new_users_per_period: int = Field(default=100_000, ge=0)
    max_new_items_per_period: int = Field(default=100_000, ge=0)
    # distributed mode: refuse to start (instead of warning) when Redis would
    # lose acknowledged interactions on a restart (no append-only file)
    require_redis_persistence: bool = False

    @field_validator("period")
    @classmethod
    def _check_period(cls, value: str) -> str:
        parse_period(value)
        return value.strip().lower()

    @field_validator("challengers")
    @classmethod
    def _check_challengers(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategy {unknown[0]!r}: expected a comma-separated "
                             f"list of {', '.join(STRATEGIES)}")
        return ",".join(dict.fromkeys(names))

    @field_validator("promotion")
    @classmethod
    def _check_promotion(cls, value: str) -> str:
        parse_promotion(value)
        return value.strip().lower()

    @field_validator("type_weights")
    @classmethod
    def _check_type_weights(cls, value: str | None) -> str | None:
        if value is not None:
            parse_type_weights(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in SUPPORTED_SCHEMES:
            raise ValueError(
                f"unsupported database URL {redacted(value)!r}: expected SQLite or PostgreSQL, "
                "e.g. 'sqlite:///./smlrec-data/smlrec.db' or 'postgresql://user@host:5432/db'"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("redis://", "rediss://",
                                                               "unix://")):
            raise ValueError(f"unsupported Redis URL {redacted(value)!r}: expected "
                             "'redis://host:6379/0', 'rediss://...' or 'unix://...'")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
            raise ValueError(
                f"invalid log level {value!r}: expected CRITICAL, ERROR, WARNING, INFO or DEBUG"
            )
        return level

    @field_validator("redis_url", "admin_token", "api_key", "hyper_file", "type_weights",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_hyper_file(self) -> Settings:
        if self.hyper_file is not None:  # read and built once now: a bad file fails start-up
            # imported here: settings without a file do not pull in torch
            from sml.hyperparameters import read_hyper_file

            try:
                read_hyper_file(self.hyper_file, self.embed_dim)
            except ValueError as error:
                raise ValueError(f"SMLREC_HYPER_FILE: {error}") from None
        if self.device == "cuda":  # a worker that cannot train must not start
            from sml.device import resolve

            try:
                resolve(self.device)
            except ValueError as error:
                raise ValueError(f"SMLREC_DEVICE: {error}") from None
        return self

    @property
    def lineup(self) -> tuple[str, ...]:
        """Every strategy the worker trains: ``strategy`` first, then the challengers."""
        names = [self.strategy, *self.challengers.split(",")] if self.challengers else [
            self.strategy]
        return tuple(dict.fromkeys(names))

    @property
    def promotion_periods(self) -> int | None:
        """N of ``auto:N``; None for manual promotion."""
        return parse_promotion(self.promotion)

    @property
    def caps(self) -> tuple[int | None, int | None]:
        """The caps on new users and new items per period (None: no cap)."""
        return (self.max_new_users_per_period or None, self.max_new_items_per_period or None)

    @property
    def period_rule(self) -> PeriodRule:
        """The parsed ``period`` setting."""
        return parse_period(self.period)

    @property
    def type_weight_map(self) -> dict[str, float]:
        """The parsed ``type_weights`` setting: each named type's factor."""
        return parse_type_weights(self.type_weights or "")

    @property
    def sqlalchemy_url(self) -> str:
        """``database_url`` with the driver SQLAlchemy should use (psycopg 3 for PostgreSQL)."""
        return normalize_database_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
