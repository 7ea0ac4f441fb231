"""Deleting a user's data (``DELETE /v1/admin/users/{user_id}``): their
interactions are removed, the closed periods they were in count them no more, the
user row keeps its dense index but loses its external id (so the id can come back
as a new user, with a new index), and the sha256 of the id is kept with the time
and, in distributed mode, the newest stream entry then: rows of theirs still
waiting in the stream up to that entry are dropped when drained."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import Table

from store._base import LOCK_LOG, StoreBase
from store.dto import NewInteraction
from store.models import DeletedUser, Interaction, Period, User

log = logging.getLogger(__name__)


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def id_hash(external_id: str) -> str:
    return hashlib.sha256(external_id.encode("utf-8")).hexdigest()


class DeletionMixin(StoreBase):
    def delete_user(
        self, external_id: str, stream_mark: str | None = None
    ) -> tuple[int, int] | None:
        """Delete the user's interactions and anonymise their row; returns (their
        dense index, interactions deleted), or None for a user never seen (or
        deleted already). Serialised with ingestion, so no row of theirs can slip
        in between."""
        now = time.time()
        with self._tx(write=True) as session:
            self._lock(session, LOCK_LOG)
            idx = session.scalar(select(User.idx).where(User.external_id == external_id))
            if idx is None:
                return None
            ids = np.asarray(session.scalars(
                select(Interaction.id).where(Interaction.user_idx == idx)).all(), dtype=np.int64)
            session.execute(delete(Interaction).where(Interaction.user_idx == idx))
            closed = session.execute(select(Period.id, Period.first_id, Period.last_id).where(
                Period.status != "open", Period.first_id.is_not(None))).all()
            for period_id, first, last in closed:
                gone = int(np.count_nonzero((ids >= (first or 0)) & (ids <= (last or 0))))
                if gone:
                    session.execute(update(Period).where(Period.id == period_id).values(
                        n_interactions=Period.n_interactions - gone))
            session.execute(update(User).where(User.idx == idx).values(
                external_id=None, deleted_at=now))
            table: Table = DeletedUser.__table__  # type: ignore[assignment]
            stmt = self._insert(table).values(id_hash=id_hash(external_id), deleted_at=now,
                                              stream_mark=stream_mark)
            session.execute(stmt.on_conflict_do_update(
                index_elements=["id_hash"],
                set_={"deleted_at": stmt.excluded.deleted_at,
                      "stream_mark": stmt.excluded.stream_mark}))
            return int(idx), len(ids)

    def deleted_user_indices(self) -> np.ndarray:
        """Dense indices of every deleted user, sorted."""
        return np.asarray(sorted(idx for idx, _ in self.deleted_users()), dtype=np.int64)

    def deleted_users(self, since: float | None = None) -> list[tuple[int, float]]:
        """(dense index, deletion time) of the users deleted after ``since`` (all:
        None), oldest deletion first."""
        with self._tx() as session:
            query = select(User.idx, User.deleted_at).where(User.deleted_at.is_not(None))
            if since is not None:
                query = query.where(User.deleted_at > since)
            rows = session.execute(query.order_by(User.deleted_at)).all()
            return [(int(idx), float(at or 0.0)) for idx, at in rows]

    def deleted_id_hashes(self, since: float | None = None) -> set[str]:
        """The sha256 of the ids of users deleted after ``since`` (all: None)."""
        with self._tx() as session:
            query = select(DeletedUser.id_hash)
            if since is not None:
                query = query.where(DeletedUser.deleted_at > since)
            return set(session.scalars(query))

    def any_deletion(self) -> bool:
        """Whether any user was ever deleted (a cheap check before a drain looks)."""
        with self._tx() as session:
            return session.scalar(select(DeletedUser.id_hash).limit(1)) is not None

    def _not_deleted(self, session: Session, rows: Sequence[NewInteraction],
                     entries: Sequence[str]) -> list[NewInteraction]:
        """``rows`` (``entries[n]``: the stream entry of ``rows[n]``) less those of
        users deleted after their entry was appended. Runs under the log lock, as
        deletions do, so none can happen in between."""
        if session.scalar(select(DeletedUser.id_hash).limit(1)) is None:
            return list(rows)
        hashes = {id_hash(r.user_id): r.user_id for r in rows}
        marks = {hashes[h]: mark for h, mark in session.execute(
            select(DeletedUser.id_hash, DeletedUser.stream_mark).where(
                self._in(DeletedUser.id_hash, list(hashes), DeletedUser.id_hash.type)))}
        kept = [row for row, entry in zip(rows, entries, strict=True)
                if marks.get(row.user_id) is None
                or _entry_key(entry) > _entry_key(str(marks[row.user_id]))]
        if len(kept) < len(rows):
            log.info("dropped %d streamed interactions of deleted users", len(rows) - len(kept))
        return kept

    def deletion_marks(self, external_ids: Iterable[str]) -> dict[str, str | None]:
        """Of ``external_ids``, those deleted, with the stream entry their deletion
        saw last (None: deleted in embedded mode)."""
        hashes = {id_hash(e): e for e in set(external_ids)}
        if not hashes:
            return {}
        with self._tx() as session:
            rows = session.execute(select(DeletedUser.id_hash, DeletedUser.stream_mark).where(
                self._in(DeletedUser.id_hash, list(hashes), DeletedUser.id_hash.type))).all()
            return {hashes[h]: mark for h, mark in rows}
