"""Reading back: a period's or the history's interactions as arrays, the log in
pages for an export, and the users' and items' dense indices and external ids.
Mixed into :class:`store.Store`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, String, case, func, select
from sqlalchemy.orm import Session

from store._base import StoreBase
from store._periods import last_closed_id
from store.dto import PeriodArrays, StoredInteraction
from store.models import Interaction, Item, Period, User

_FETCH_ROWS = 5_000  # interactions per fetch when reading periods into arrays

TypeWeights = Mapping[str, float]  # an interaction type's factor (a type not named: 1)


def effective_weight(type_weights: TypeWeights) -> ColumnElement[float]:
    """Each interaction's weight times its type's factor, as SQL."""
    if not type_weights:
        return Interaction.weight.expression
    factor = case({k: float(v) for k, v in type_weights.items()}, value=Interaction.type,
                  else_=1.0)
    return Interaction.weight * factor


class ReadsMixin(StoreBase):
    def period_arrays(self, period_id: int,
                      type_weights: TypeWeights | None = None) -> PeriodArrays:
        """A period's interactions in id order (for the open period: those so far).
        With ``type_weights`` (training reads them), each interaction's weight times
        its type's factor too (``weights``: None when every one is 1). Raises
        KeyError for an unknown period."""
        with self._tx() as session:
            period = session.get(Period, period_id)
            if period is None:
                raise KeyError(period_id)
            if period.status == "open":
                last = last_closed_id(session)
                low = last + 1 if last is not None else None
                high = session.scalar(select(func.max(Interaction.id)))
            else:
                low, high = period.first_id, period.last_id
            return self._arrays(session, low, None if high is None else int(high),
                                type_weights)

    def history_arrays(self, before_period_id: int,
                       type_weights: TypeWeights | None = None) -> PeriodArrays:
        """Every interaction of the closed periods before ``before_period_id`` (with
        ``type_weights``: their training weights, as :meth:`period_arrays`)."""
        with self._tx() as session:
            high = session.scalar(
                select(func.max(Period.last_id)).where(
                    Period.id < before_period_id, Period.status != "open"
                )
            )
            return self._arrays(session, None, None if high is None else int(high),
                                type_weights)

    @staticmethod
    def _arrays(session: Session, low: int | None, high: int | None,
                type_weights: TypeWeights | None = None) -> PeriodArrays:
        if high is None:
            empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
            return PeriodArrays(empty_i, empty_i.copy(), empty_f, 0, 0)
        columns: list[Any] = [Interaction.user_idx, Interaction.item_idx, Interaction.ts]
        if type_weights is not None:
            columns.append(effective_weight(type_weights))
        query = select(*columns).where(Interaction.id <= high)
        if low is not None:
            query = query.where(Interaction.id >= low)
        # Straight from the driver's cursor, in slices: SQLAlchemy's row objects cost
        # ~15 us a row (1.4 s for a period of 100,000, most of it holding the GIL,
        # which an API process answering requests meanwhile feels), the cursor's
        # tuples ~1 us. Slices keep each GIL hold to a few milliseconds.
        result = session.connection().execute(query.order_by(Interaction.id))
        try:
            cursor = result.cursor
            parts = []
            while chunk := cursor.fetchmany(_FETCH_ROWS):
                parts.append(np.array(chunk, dtype=np.float64).reshape(-1, len(columns)))
        finally:
            result.close()
        table = np.concatenate(parts) if parts else np.empty((0, len(columns)))  # (n, 3 or 4)
        users = table[:, 0].astype(np.int64)  # exact: indices are far below 2^53
        items = table[:, 1].astype(np.int64)
        timestamps = table[:, 2].copy()
        weights = table[:, 3].copy() if type_weights is not None else None
        if weights is not None and bool(np.all(weights == 1.0)):
            weights = None  # the unweighted loss, exactly
        max_user, max_item = session.execute(
            select(func.max(Interaction.user_idx), func.max(Interaction.item_idx)).where(
                Interaction.id <= high
            )
        ).one()
        n_users = int(max_user) + 1 if max_user is not None else 0
        n_items = int(max_item) + 1 if max_item is not None else 0
        return PeriodArrays(users, items, timestamps, n_users, n_items, weights)

    # ---- export -------------------------------------------------------------

    def last_interaction_id(self) -> int:
        """The id of the newest stored interaction (0 before the first)."""
        with self._tx() as session:
            return self._scalar_int(session, select(func.coalesce(func.max(Interaction.id), 0)))

    def interactions_page(
        self, after_id: int, through_id: int, limit: int, since: float | None = None
    ) -> list[StoredInteraction]:
        """At most ``limit`` stored interactions with ids in ``(after_id, through_id]``,
        in id order, with their external ids; with ``since``, only those stamped at or
        after it. One page of an export read by key: the next starts after the last
        id of this one, so memory stays one page whatever the log's length."""
        query = (
            select(Interaction.id, User.external_id, Item.external_id, Interaction.ts,
                   Interaction.type, Interaction.weight, Interaction.event_id)
            .join(User, User.idx == Interaction.user_idx)
            .join(Item, Item.idx == Interaction.item_idx)
            .where(Interaction.id > after_id, Interaction.id <= through_id)
            .order_by(Interaction.id)
            .limit(limit)
        )
        if since is not None:
            query = query.where(Interaction.ts >= since)
        with self._tx() as session:
            result = session.connection().execute(query)
            try:  # the driver's tuples: row objects would cost several times more
                return [StoredInteraction(*row) for row in result.cursor.fetchall()]
            finally:
                result.close()

    # ---- users and items --------------------------------------------------

    def user_index(self, external_id: str) -> int | None:
        """The dense index of a user, or None if never seen."""
        with self._tx() as session:
            idx = session.scalar(select(User.idx).where(User.external_id == external_id))
            return int(idx) if idx is not None else None

    def user_indices(self, external_ids: Sequence[str]) -> dict[str, int]:
        """Dense indices of the known users among ``external_ids``."""
        with self._tx() as session:
            return self._lookup(session, User, list(dict.fromkeys(external_ids)))

    def item_index(self, external_id: str) -> int | None:
        """The dense index of an item, or None if never seen."""
        with self._tx() as session:
            idx = session.scalar(select(Item.idx).where(Item.external_id == external_id))
            return int(idx) if idx is not None else None

    def user_ids(self, start: int = 0) -> list[str]:
        """External user ids from dense index ``start`` on, position = index - start
        (indices are dense and append-only: a caller holding the first ``start``
        extends its list with this); "" for a deleted user."""
        with self._tx() as session:  # a deleted user's index keeps an empty id
            return [external or "" for external in session.scalars(
                select(User.external_id).where(User.idx >= start).order_by(User.idx))]

    def item_ids(self, start: int = 0) -> list[str]:
        """External item ids from dense index ``start`` on (as :meth:`user_ids`)."""
        with self._tx() as session:
            return list(session.scalars(
                select(Item.external_id).where(Item.idx >= start).order_by(Item.idx)))

    def seen_items(self, user_idx: int) -> np.ndarray:
        """Distinct item indices the user interacted with, in any period (sorted)."""
        with self._tx() as session:
            found = session.scalars(
                select(Interaction.item_idx)
                .where(Interaction.user_idx == user_idx)
                .distinct()
                .order_by(Interaction.item_idx)
            ).all()
            return np.asarray(found, dtype=np.int64)

    def _lookup(
        self, session: Session, model: type[User] | type[Item], external_ids: Sequence[str]
    ) -> dict[str, int]:
        found: dict[str, int] = {}
        if self._dialect == "sqlite":
            for pairs in self._sqlite_in(session, f"SELECT external_id, idx FROM "
                                         f"{model.__tablename__} WHERE external_id IN ({{}})",
                                         external_ids):
                found.update(pairs)
            return found
        for chunk in self._chunks(external_ids):
            rows = session.execute(
                select(model.external_id, model.idx).where(
                    self._in(model.external_id, chunk, String())
                )
            )
            found.update({external: int(idx) for external, idx in rows if external is not None})
        return found

    def _sqlite_in(self, session: Session, sql: str,
                   values: Sequence[str]) -> Iterator[Sequence[Any]]:
        """The rows of ``sql`` (its ``{}`` the placeholders of an IN list) for
        ``values``, one list per chunk, through the driver: building and compiling
        a statement of a thousand bound parameters cost more than running it (a
        1,000-row ingest took 30 ms with SQLAlchemy's statements, 15-19 without)."""
        for chunk in self._chunks(values):
            result = session.connection().exec_driver_sql(
                sql.format(", ".join("?" * len(chunk))), tuple(chunk))
            rows = result.cursor.fetchall()
            result.close()
            yield rows
