"""Recommendations for a list of users: the model for the users it knows, the
popularity fallback for the others (and for everyone before the first model).

Seen items come from the model's artifact (everything up to the end of its
period) and from the store (interactions logged since); when the database does
not answer, the artifact's alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.holder import ServingModel
from service.metrics import ServiceMetrics
from service.popularity import StorePopularity
from service.scorer import TopK, rank_popular, top_k
from store import Store, StoreUnavailable

log = logging.getLogger(__name__)

FALLBACK = "popularity"
DB_BACKOFF_S = 5.0  # after a database error, seen items come from the model alone this long


@dataclass(frozen=True)
class Recommendation:
    user_id: str
    item_ids: list[str]
    scores: list[float]
    model_version: int | None
    fallback: str | None

    def to_json(self) -> dict[str, Any]:
        """The API body (see ``schemas.Recommendations``)."""
        return {
            "user_id": self.user_id,
            "items": [{"item_id": i, "score": s} for i, s in zip(self.item_ids, self.scores,
                                                                  strict=True)],
            "model_version": self.model_version,
            "fallback": self.fallback,
        }


class Recommender:
    def __init__(
        self, store: Store, popularity: StorePopularity, metrics: ServiceMetrics
    ) -> None:
        self._store = store
        self._popularity = popularity
        self._metrics = metrics
        self._skip_db_until = 0.0  # monotonic time; requests must not each wait on a dead DB

    def recommend(
        self,
        model: ServingModel | None,
        user_ids: Sequence[str],
        k: int,
        exclude_seen: bool = True,
    ) -> list[Recommendation]:
        """One result per user, in order, all from ``model`` (the caller takes
        it from the holder once, so a swap never splits a request)."""
        seen = self._seen_in_store(model, user_ids) if exclude_seen else {}
        if model is None:
            return self._from_store_popularity(user_ids, k, seen)
        known = [pos for pos, uid in enumerate(user_ids) if uid in model.user_index]
        tops = top_k(
            model,
            [model.user_index[user_ids[pos]] for pos in known],
            k,
            exclude_seen=exclude_seen,
            extra_seen=[seen.get(user_ids[pos]) for pos in known],
        )
        by_position = dict(zip(known, tops, strict=True))
        results: list[Recommendation] = []
        for pos, uid in enumerate(user_ids):
            top = by_position.get(pos)
            if top is not None:
                results.append(_result(uid, top, model.item_ids, model.version, None))
                continue
            self._metrics.fallbacks.labels(reason="unknown_user").inc()
            popular, item_ids = self._popular(model)
            fallback = rank_popular(popular, k, seen.get(uid))
            results.append(_result(uid, fallback, item_ids, model.version, FALLBACK))
        return results

    def _popular(self, model: ServingModel) -> tuple[np.ndarray, list[str]]:
        """The model's popular items, or the store's while it has none."""
        if len(model.popular):
            return model.popular, model.item_ids
        try:
            popular = self._popularity.get()
        except StoreUnavailable:
            return model.popular, model.item_ids
        return popular.items, popular.item_ids

    def _from_store_popularity(
        self, user_ids: Sequence[str], k: int, seen: dict[str, np.ndarray]
    ) -> list[Recommendation]:
        self._metrics.fallbacks.labels(reason="no_model").inc(len(user_ids))
        try:
            popular = self._popularity.get()
        except StoreUnavailable as error:
            log.warning("no model and no popularity (database unavailable): %s", error)
            return [Recommendation(uid, [], [], None, FALLBACK) for uid in user_ids]
        return [
            _result(uid, rank_popular(popular.items, k, seen.get(uid)), popular.item_ids, None,
                    FALLBACK)
            for uid in user_ids
        ]

    def _seen_in_store(
        self, model: ServingModel | None, user_ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Items each user interacted with according to the database (by external
        id; users the database does not know are absent). Best effort: stops at
        the first database error, returns what it has and leaves the database
        alone for a few seconds."""
        found: dict[str, np.ndarray] = {}
        if time.monotonic() < self._skip_db_until:
            return found
        try:
            index = {uid: model.user_index[uid] for uid in user_ids
                     if model is not None and uid in model.user_index}
            unknown = [uid for uid in dict.fromkeys(user_ids) if uid not in index]
            if unknown:
                index.update(self._store.user_indices(unknown))
            for uid, idx in index.items():
                found[uid] = self._store.seen_items(idx)
        except StoreUnavailable as error:
            self._skip_db_until = time.monotonic() + DB_BACKOFF_S
            log.warning("seen items from the model only for %.0f s (database unavailable): %s",
                        DB_BACKOFF_S, error)
        return found


def _result(
    user_id: str, top: TopK, item_ids: list[str], version: int | None, fallback: str | None
) -> Recommendation:
    return Recommendation(
        user_id=user_id,
        item_ids=[item_ids[i] for i in top.items.tolist()],
        scores=top.scores.tolist(),
        model_version=version,
        fallback=fallback,
    )
