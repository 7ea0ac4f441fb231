"""Recommendations for a list of users: the model for the users it knows, the
popularity fallback for the others (and for everyone before the first model).

Seen items come from the model's artifact (everything up to the end of its
period) and from the interactions logged since, which :class:`RecentInteractions`
holds in memory; only before it covers the model's period (no model yet, right
after a rollback, or past its size bound) are they read from the store per
request, and when the database does not answer, the artifact's alone.

Known users are answered from the served version's precomputed top lists
(engine.ranked) when those can tell; otherwise single-user requests
(:meth:`Recommender.recommend_one`) are scored through the
:class:`ScoringBatcher`, so concurrent ones share one matrix product, and batch
requests in one product of their own.

Item metadata (engine.catalog) narrows every answer: hidden items are left out
of the lists' answers, of scoring (as if every user had seen them) and of the
popularity fallback; a category request takes the lists' items of that category
where they tell, else scores the category's sub-matrix alone (engine.filtered).
Requests that need no filter pay one dictionary look-up for it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor

import anyio.to_thread
import numpy as np

from engine.answer import Recommendation
from engine.batcher import ScoringBatcher
from engine.catalog import Catalog, ItemView
from engine.filtered import Within, category_top_k, scored_inline
from engine.foldin import fold_in_top_k, moves
from engine.holder import ServingModel
from engine.metrics import ServiceMetrics
from engine.popularity import StorePopularity
from engine.ranked import Allowed, Listed
from engine.ranker import Ranker
from engine.recent import RecentInteractions
from engine.scorer import TopK, rank_popular, top_k
from store import Store, StoreUnavailable
from store.model_artifact import POPULAR_SIZE

log = logging.getLogger(__name__)

FALLBACK = "popularity"
FOLD_IN = "fold_in"
DB_BACKOFF_S = 5.0  # after a database error, seen items come from the model alone this long


class Recommender:
    def __init__(
        self,
        store: Store,
        popularity: StorePopularity,
        metrics: ServiceMetrics,
        recent: RecentInteractions | None = None,
        batcher: ScoringBatcher | None = None,
        scoring_pool: Executor | None = None,
        ranker: Ranker | None = None,
        catalog: Catalog | None = None,
        fold_in_l2: float | None = None,
        fold_in_known: bool = False,
    ) -> None:
        """``scoring_pool``: where :meth:`recommend` runs its product (None: on the
        calling thread). Each scoring thread keeps a score buffer of up to 64 MiB,
        so a small pool bounds what many concurrent batch requests hold; the
        request threads themselves (up to 40 in the framework's pool) keep none.
        ``ranker``: the precomputed top lists (None: every request is scored).
        ``catalog``: the item metadata (None: nothing hidden, no category known).
        ``fold_in_l2``: a user the model does not know but with interactions logged
        since is answered by fold-in with this L2 weight (None: popularity).
        ``fold_in_known``: so is a user the model knows, from their model vector moved
        by those interactions (with fold-in on; else from the model's vector)."""
        self._store = store
        self._popularity = popularity
        self._metrics = metrics
        self._recent = recent
        self._batcher = batcher
        self._scoring_pool = scoring_pool
        self._ranker = ranker
        self._catalog = catalog
        self._fold_in_l2 = fold_in_l2
        self._fold_in_known = fold_in_known and fold_in_l2 is not None
        self._skip_db_until = 0.0  # monotonic time; requests must not each wait on a dead DB

    def _in_memory(self, model: ServingModel | None) -> bool:
        """Whether seen items for ``model`` are all in memory (no database needed)."""
        return (
            model is not None
            and self._recent is not None
            and self._recent.covers(model.period_id)
        )

    def _view(self, model: ServingModel | None, category: str | None) -> ItemView | None:
        """``model``'s item metadata where an answer must be filtered (None: not)."""
        if model is None or self._catalog is None or (category is None and self._catalog.empty):
            return None
        view = self._catalog.view(model)
        return view if category is not None or view.filters else None

    async def recommend_one(
        self, model: ServingModel | None, user_id: str, k: int, exclude_seen: bool = True,
        category: str | None = None,
    ) -> Recommendation:
        """:meth:`recommend` for one user, for the event loop: a known user's
        product goes through the batcher, shared with concurrent requests (a
        category's too), but a small category's runs on the loop itself (its list
        is tried first either way); a request that needs the database runs
        :meth:`recommend` on the thread pool."""
        view = self._view(model, category)
        if (
            model is None
            or self._batcher is None
            or (exclude_seen and not self._in_memory(model))
            or (view is not None and not exclude_seen)
            or (category is not None and (view is None or user_id not in model.user_index))
            or (user_id not in model.user_index
                and (not len(model.popular) or self._fold_in_l2 is not None))
        ):  # the database, a fold-in's fit and scan, a category's fallback: off the event loop
            return await self._off_loop(model, user_id, k, exclude_seen, category)
        extra = self._seen(model, [user_id], exclude_seen).get(user_id)  # from memory
        idx = model.user_index.get(user_id)
        if idx is None:
            return self._unknown(model, user_id, k, extra, view, None)
        if self._moves(model, user_id, extra):  # a fit and a scan: off the event loop
            return await self._off_loop(model, user_id, k, exclude_seen, category)
        [listed] = self._precomputed(model, [idx], k, exclude_seen, [extra], view, category)
        if listed is None and category is not None:
            assert view is not None
            within = Within(view.category(category), view.matrix(category))
            listed = _listed(
                category_top_k(model, [idx], k, *within, extra_seen=[extra])[0]
                if scored_inline(len(within.items), model.user_emb.shape[1])
                else await self._batcher.top_k(model, idx, k, True, extra, within))
        elif listed is None:
            if view is not None:  # hidden items are left out as if seen
                extra = view.hidden if extra is None else np.concatenate([extra, view.hidden])
            listed = _listed(await self._batcher.top_k(model, idx, k, exclude_seen, extra))
        return _result(user_id, listed, model.item_ids, model.version, None, model.item_prefix)

    async def _off_loop(self, model: ServingModel | None, user_id: str, k: int,
                        exclude_seen: bool, category: str | None) -> Recommendation:
        """:meth:`recommend` for one user on the thread pool."""
        [result] = await anyio.to_thread.run_sync(
            functools.partial(self.recommend, model, [user_id], k, exclude_seen, category))
        return result

    def _precomputed(self, model: ServingModel, users: Sequence[int], k: int,
                     exclude_seen: bool, extra: Sequence[np.ndarray | None],
                     view: ItemView | None = None, category: str | None = None
                     ) -> list[Listed | None]:
        """Each user's answer from the precomputed lists, or None (score it); with
        ``view``, of the items it lets through (``category``'s, or the visible ones)."""
        if self._ranker is None or not exclude_seen:
            return [None] * len(users)
        allowed: Allowed | None = None
        members = None  # how many items pass, where a category says
        if view is not None and category is not None:
            allowed, members = view.in_category(category), len(view.category(category))
        elif view is not None:
            allowed = view.allows_visible
        listed = self._ranker.lookup(model, users, k, extra, allowed, members)
        answered = sum(one is not None for one in listed)
        if answered:
            self._metrics.precomputed_answers.inc(answered)
        return listed

    def _seen(self, model: ServingModel | None, user_ids: Sequence[str],
              exclude_seen: bool) -> dict[str, np.ndarray]:
        """The items to leave out for each user beyond those the model's artifact
        lists (by item index; a user absent has none): the interactions logged
        since, from memory once the recent set covers the model's period, else
        from the store. Every path asks here."""
        if not exclude_seen:
            return {}
        if not self._in_memory(model):
            return self._seen_in_store(model, user_ids)
        assert model is not None and self._recent is not None
        seen: dict[str, np.ndarray] = {}
        for uid in dict.fromkeys(user_ids):
            items = self._recent.items_of(uid, model.item_index)
            if items is not None:
                seen[uid] = items
        return seen

    def _fallback(self, model: ServingModel, user_id: str, k: int,
                  extra: np.ndarray | None) -> Recommendation:
        """A user ``model`` does not know: fold-in from their interactions since the
        model (where enabled and there are some the model knows the items of), else
        the popular items; less ``extra`` either way."""
        if self._fold_in_l2 is not None:
            history = extra if extra is not None else self._seen(model, [user_id], True).get(
                user_id)
            top = None if history is None else fold_in_top_k(
                model, user_id, history, k, l2=self._fold_in_l2, exclude=extra,
                known=model.user_index.get(user_id))
            if top is not None:
                self._metrics.fallbacks.labels(reason="fold_in").inc()
                return _result(user_id, _listed(top), model.item_ids, model.version, FOLD_IN,
                               model.item_prefix)
        self._metrics.fallbacks.labels(reason="unknown_user").inc()
        popular, item_ids = self._popular(model)
        return _result(user_id, _listed(rank_popular(popular, k, extra)), item_ids,
                       model.version, FALLBACK,
                       model.item_prefix if item_ids is model.item_ids else None)

    def recommend(
        self,
        model: ServingModel | None,
        user_ids: Sequence[str],
        k: int,
        exclude_seen: bool = True,
        category: str | None = None,
    ) -> list[Recommendation]:
        """One result per user, in order, all from ``model`` (the caller takes
        it from the holder once, so a swap never splits a request); with a
        ``category``, only its items."""
        seen = self._seen(model, user_ids, exclude_seen)
        if model is None:
            return self._from_store_popularity(user_ids, k, seen, category)
        view = self._view(model, category)
        positions = [pos for pos, uid in enumerate(user_ids)
                     if uid in model.user_index and not self._moves(model, uid, seen.get(uid))]
        answers = self._known(
            model, [model.user_index[user_ids[pos]] for pos in positions], k, exclude_seen,
            [seen.get(user_ids[pos]) for pos in positions], view, category)
        by_position = dict(zip(positions, answers, strict=True))
        return [
            _result(uid, listed, model.item_ids, model.version, None, model.item_prefix)
            if (listed := by_position.get(pos)) is not None
            else self._unknown(model, uid, k, seen.get(uid), view, category)
            for pos, uid in enumerate(user_ids)
        ]

    def _known(self, model: ServingModel, users: Sequence[int], k: int, exclude_seen: bool,
               extras: Sequence[np.ndarray | None], view: ItemView | None,
               category: str | None) -> list[Listed]:
        """Known users' answers: from the precomputed lists where they tell, the
        others scored in one product (on the scoring pool), filtered by ``view``."""
        listed = self._precomputed(model, users, k, exclude_seen, extras, view, category)
        to_score = [n for n, one in enumerate(listed) if one is None]
        if to_score:
            score = functools.partial(self._score, model, [users[n] for n in to_score], k,
                                      exclude_seen, [extras[n] for n in to_score], view,
                                      category)
            tops = (score() if self._scoring_pool is None
                    else self._scoring_pool.submit(score).result())
            for n, top in zip(to_score, tops, strict=True):
                listed[n] = _listed(top)
        return [one if one is not None else Listed([], []) for one in listed]

    @staticmethod
    def _score(model: ServingModel, users: Sequence[int], k: int, exclude_seen: bool,
               extras: Sequence[np.ndarray | None], view: ItemView | None,
               category: str | None) -> list[TopK]:
        """The whole catalogue less the hidden items, or one category's sub-matrix."""
        if category is None:
            return top_k(model, users, k, exclude_seen=exclude_seen, extra_seen=extras,
                         hidden=view.hidden if view is not None else None)
        if view is None:  # no metadata at all: no item is in any category
            return [TopK(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in users]
        return category_top_k(model, users, k, view.category(category),
                              view.matrix(category), exclude_seen=exclude_seen,
                              extra_seen=extras)

    def _moves(self, model: ServingModel, user_id: str, extra: np.ndarray | None) -> bool:
        """Whether a user ``model`` knows is answered by moving their vector (``extra``,
        their seen items beyond the model's, holds items the model knows)."""
        return self._fold_in_known and moves(model, model.user_index[user_id], extra)

    def _unknown(self, model: ServingModel, user_id: str, k: int, extra: np.ndarray | None,
                 view: ItemView | None, category: str | None) -> Recommendation:
        """A user ``model`` does not know (or one whose vector it moves): the fallback,
        less what the metadata leaves out (taken from the whole popular list, then cut
        to ``k``)."""
        if view is None and category is None:
            return self._fallback(model, user_id, k, extra)
        return self._narrowed(self._fallback(model, user_id, POPULAR_SIZE, extra), k, category)

    def _narrowed(self, result: Recommendation, k: int, category: str | None
                  ) -> Recommendation:
        """``result`` without hidden items, and only ``category``'s if one is asked,
        by external id (the fallback's items need not be in the model's indices)."""
        catalog = self._catalog
        keep = [n for n, item in enumerate(result.items)
                if (catalog.allows(result.names[item], category) if catalog is not None
                    else category is None)][:k]
        return dataclasses.replace(result, items=[result.items[n] for n in keep],
                                   scores=[result.scores[n] for n in keep])

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
        self, user_ids: Sequence[str], k: int, seen: dict[str, np.ndarray],
        category: str | None = None,
    ) -> list[Recommendation]:
        self._metrics.fallbacks.labels(reason="no_model").inc(len(user_ids))
        try:
            popular = self._popularity.get()
        except StoreUnavailable as error:
            log.warning("no model and no popularity (database unavailable): %s", error)
            return [Recommendation(uid, [], [], [], None, FALLBACK) for uid in user_ids]
        narrow = category is not None or (self._catalog is not None and self._catalog.hides_any)
        results = [
            _result(uid, _listed(rank_popular(popular.items, POPULAR_SIZE if narrow else k,
                                              seen.get(uid))),
                    popular.item_ids, None, FALLBACK)
            for uid in user_ids
        ]
        return [self._narrowed(r, k, category) for r in results] if narrow else results

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


def _listed(top: TopK) -> Listed:
    return Listed(top.items.tolist(), top.scores.tolist())


def _result(
    user_id: str,
    listed: Listed,
    item_ids: list[str],
    version: int | None,
    fallback: str | None,
    item_prefix: list[bytes] | None = None,
) -> Recommendation:
    return Recommendation(user_id, listed.items, listed.scores, item_ids, version, fallback,
                          item_prefix)
