"""The database schema (SQLAlchemy 2 declarative). Change it only together with a
migration under ``migrations/versions``; a test checks that the two agree.

All timestamps are Unix seconds as floats, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    Integer,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-numbers an "INTEGER PRIMARY KEY" column (the rowid alias).
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """Users by dense index (0, 1, 2, ... in order of first insertion). A deleted
    user's row stays, anonymous (``external_id`` NULL, ``deleted_at`` set), holding
    its index."""

    __tablename__ = "users"

    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True, index=True)
    deleted_at: Mapped[float | None] = mapped_column(Float, index=True)


class Item(Base):
    """Items by dense index (0, 1, 2, ... in order of first insertion)."""

    __tablename__ = "items"

    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    external_id: Mapped[str] = mapped_column(String(128), unique=True, index=True)


class Interaction(Base):
    """The interaction log; ``id`` is the ingestion order and periods are id ranges."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    # users.idx and items.idx, given in the same transaction (no foreign keys: see
    # migration 0002)
    user_idx: Mapped[int] = mapped_column(Integer, index=True)
    item_idx: Mapped[int] = mapped_column(Integer)
    ts: Mapped[float] = mapped_column(Float)
    event_id: Mapped[str | None] = mapped_column(String(128), unique=True, index=True)
    received_at: Mapped[float] = mapped_column(Float)
    # what kind of event it was (the client's word: view, like, purchase...) and
    # how much it counts in training, before SMLREC_TYPE_WEIGHTS scales it by type
    type: Mapped[str] = mapped_column(String(32), server_default="view")
    weight: Mapped[float] = mapped_column(Float, server_default=text("1"))


class Period(Base):
    """Periods 0, 1, 2, ...; exactly one is open. A closed period covers the
    interaction ids ``first_id..last_id`` (inclusive). ``n_users``/``n_items``:
    users and items known once it closed; ``cut_key``: the stream entry that
    closed it (distributed mode); ``n_dropped``: rows refused by a cap while
    it was open."""

    __tablename__ = "periods"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16))
    first_id: Mapped[int | None] = mapped_column(BigInteger)
    last_id: Mapped[int | None] = mapped_column(BigInteger)
    n_interactions: Mapped[int] = mapped_column(Integer)
    start: Mapped[float | None] = mapped_column(Float)
    end: Mapped[float | None] = mapped_column(Float)
    opened_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float)
    cut_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    n_users: Mapped[int | None] = mapped_column(Integer)
    n_items: Mapped[int | None] = mapped_column(Integer)
    n_dropped: Mapped[int] = mapped_column(Integer, server_default="0")


class Job(Base):
    """Retrain and bootstrap jobs."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    period_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    model_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    not_before: Mapped[float | None] = mapped_column(Float)  # the next try waits until then


class ModelVersion(Base):
    """Trained model versions 1, 2, 3, ... and where their artifacts lie."""

    __tablename__ = "model_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    period_id: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)
    path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    train_seconds: Mapped[float] = mapped_column(Float)
    n_users: Mapped[int] = mapped_column(Integer)
    n_items: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    pinned: Mapped[bool] = mapped_column(Boolean, server_default=false())
    removed_at: Mapped[float | None] = mapped_column(Float)  # artifact deleted by retention


class State(Base):
    """Small named values: the active version pointer, the worker's checkpoints."""

    __tablename__ = "state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class StrategyScore(Base):
    """Each strategy's model scored on a closed period it had not trained on (the
    served strategy and every challenger, the same metric on the same data);
    ``version``: the model version scored, where it was written; ``train_seconds``:
    the boundary that produced it."""

    __tablename__ = "strategy_scores"

    period_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    strategy: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int | None] = mapped_column(Integer)
    recall: Mapped[float] = mapped_column(Float)
    ndcg: Mapped[float] = mapped_column(Float)
    n_interactions: Mapped[int] = mapped_column(Integer)
    train_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class DeletedUser(Base):
    """A deleted user by the sha256 of their external id (not the id itself), when,
    and the newest Redis stream entry then (distributed mode): rows of theirs in
    entries up to it are dropped when the worker drains them."""

    __tablename__ = "deleted_users"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    deleted_at: Mapped[float] = mapped_column(Float)
    stream_mark: Mapped[str | None] = mapped_column(String(64))


class ItemMetadata(Base):
    """What an integrator says about an item (``PUT /v1/items/{item_id}``), keyed by
    its external id: it may come before any interaction with the item. ``revision``
    grows with every write, so replicas read only what changed since they last
    looked."""

    __tablename__ = "item_metadata"

    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    categories: Mapped[list[str]] = mapped_column(JSON)
    hidden: Mapped[bool] = mapped_column(Boolean, server_default=false())
    revision: Mapped[int] = mapped_column(BigInteger, index=True)
    updated_at: Mapped[float] = mapped_column(Float)
