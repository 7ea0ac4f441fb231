"""What every store query builds on: short transactions, dialect-specific
inserts, cross-process locks, and the mapping of connection failures to
:class:`StoreUnavailable`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Executable, Table, any_, bindparam, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker
from sqlalchemy.types import TypeEngine

from store.db import WRITE_OPTION
from store.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# pg_advisory_xact_lock(namespace, key): the namespace spells "smlr".
_LOCK_NAMESPACE = 0x736D6C72
LOCK_LOG = 1  # the interaction log, the id allocation of users/items and the periods
LOCK_VERSIONS = 2  # model version numbering
LOCK_ITEMS = 3  # the item metadata revision counter

# Stay well below SQLite's and PostgreSQL's bound-parameter limits.
IN_CHUNK = 5000


def chunks(values: Sequence[T], size: int = IN_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class StoreBase:
    """A sessionmaker plus the transaction discipline every query follows."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        bind = sessions.kw.get("bind")
        if bind is None:
            raise ValueError("the sessionmaker must be bound to an engine")
        self._engine = bind
        self._dialect: str = bind.dialect.name

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Session]:
        """One short transaction: committed on success, rolled back on any error.

        ``write=True`` begins it as a writer (SQLite: BEGIN IMMEDIATE), for
        transactions that read and then write what they read."""
        try:
            session = self._sessions()
            try:
                if write:
                    session.connection(execution_options={WRITE_OPTION: True})
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
            log.warning("database unavailable: %s", error.__class__.__name__)
            raise StoreUnavailable(f"database unavailable: {error}") from error
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise StoreUnavailable(f"database connection lost: {error}") from error
            raise

    @staticmethod
    def _scalar_int(session: Session, statement: Executable) -> int:
        """The integer result of an aggregate that is never NULL (COALESCE'd)."""
        value = session.scalar(statement)
        if value is None:
            raise RuntimeError("expected a value from the database, got NULL")
        return int(value)

    def _lock(self, session: Session, key: int) -> None:
        """Serialise writers across processes until the transaction ends
        (PostgreSQL advisory lock; SQLite's write lock already does this)."""
        if self._dialect == "postgresql":
            session.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                {"ns": _LOCK_NAMESPACE, "key": key},
            )

    def _in(
        self,
        column: ColumnElement[Any] | QueryableAttribute[Any],
        values: Sequence[Any],
        item_type: TypeEngine[Any],
    ) -> ColumnElement[bool]:
        """``column IN values``; on PostgreSQL one array parameter (``= ANY(...)``),
        which keeps large batches cheap to send and to parse."""
        if self._dialect == "postgresql":
            array = bindparam(None, list(values), type_=postgresql.ARRAY(item_type), unique=True)
            return column == any_(array)
        return column.in_(values)

    def _chunks(self, values: Sequence[T]) -> Iterable[Sequence[T]]:
        """Batches small enough for one statement (SQLite bounds its parameters)."""
        if self._dialect == "postgresql":
            return [values] if values else []
        return chunks(values)

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT construct (it has ``on_conflict_do_nothing``)."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        if self._dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"unsupported database dialect {self._dialect!r}")
