"""Item metadata in the engine: hidden items never in an answer (from the precomputed
lists, scored, single or batch, the popularity fallback, similar items) and back
once shown again; a category's answer is the unfiltered ranking restricted to its
items, in the same order, from the lists or from its sub-matrix."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import numpy as np
import pytest
from engine_testkit import random_payload

import engine.filtered
from engine.batcher import ScoringBatcher
from engine.catalog import Catalog
from engine.filtered import category_top_k
from engine.holder import ServingModel
from engine.metrics import ServiceMetrics
from engine.ranked import Allowed, Listed, Rankings
from engine.recommender import Recommender
from engine.scorer import top_k
from engine.similar import similar_items
from store import ItemInfo

N_USERS, N_ITEMS, DEPTH = 12, 400, 30


class MetadataStore:
    """The store's item-metadata reads (and nothing seen since the model)."""

    def __init__(self) -> None:
        self.rows: list[ItemInfo] = []

    def put(self, item_id: str, categories: Sequence[str] = (), hidden: bool = False) -> None:
        self.rows.append(ItemInfo(item_id, tuple(categories), hidden, len(self.rows) + 1))

    def item_revision(self) -> int:
        return len(self.rows)

    def items_since(self, revision: int) -> list[ItemInfo]:
        return self.rows[revision:]

    def user_indices(self, user_ids: Sequence[str]) -> dict[str, int]:
        return {}

    def seen_items(self, idx: int) -> np.ndarray:
        return np.empty(0, dtype=np.int64)


class ListsOf:
    """A ranker whose lists are complete for one model."""

    def __init__(self, model: ServingModel) -> None:
        self.rankings = Rankings(model, DEPTH)
        self.rankings.fill(np.arange(model.n_users), top_k(model, range(model.n_users), DEPTH))

    def lookup(self, model: ServingModel, users: Sequence[int], k: int,
               extra: Sequence[np.ndarray | None], allowed: Allowed | None = None,
               members: int | None = None) -> list[Listed | None]:
        """Always read (the engine's ranker skips the lists where they would rarely
        answer: ``tests/engine/test_ranked.py``), so the lists' answers are checked."""
        return self.rankings.lookup(users, k, extra, allowed)


@pytest.fixture
def model() -> ServingModel:
    seen = [[n, n + 1] for n in range(N_USERS)]
    return ServingModel.from_payload(random_payload(
        N_USERS, N_ITEMS, 8, seen, seed=5, popular=list(range(0, 60, 2))))


def _parts(model: ServingModel, lists: bool) -> tuple[Recommender, Catalog, MetadataStore]:
    store = MetadataStore()
    catalog = Catalog(store)  # type: ignore[arg-type]
    rec = Recommender(store, None, ServiceMetrics(),  # type: ignore[arg-type]
                      ranker=ListsOf(model) if lists else None,  # type: ignore[arg-type]
                      catalog=catalog)
    return rec, catalog, store


def _ranking(model: ServingModel, user: int) -> list[int]:
    """The user's whole unfiltered ranking of unseen items."""
    return top_k(model, [user], model.n_items)[0].items.tolist()


def _every_answer(rec: Recommender, model: ServingModel, k: int,
                  category: str | None = None) -> list[list[str]]:
    users = [f"u{n}" for n in range(N_USERS)] + ["stranger"]
    batch = rec.recommend(model, users, k, category=category)
    single = [asyncio.run(rec.recommend_one(model, u, k, category=category)) for u in users]
    wide = rec.recommend(model, users, k, exclude_seen=False, category=category)
    return [r.item_ids for r in batch + single + wide]


@pytest.mark.parametrize("lists", [True, False])
@pytest.mark.parametrize("k", [5, DEPTH + 10])
def test_hidden_items_are_never_answered_and_come_back_when_shown(
    model: ServingModel, lists: bool, k: int
) -> None:
    rec, catalog, store = _parts(model, lists)
    # every user's two best items, and half of the popular list
    hidden = {f"i{i}" for u in range(N_USERS) for i in _ranking(model, u)[:2]}
    hidden |= {f"i{i}" for i in range(0, 60, 4)}
    for item in sorted(hidden):
        store.put(item, hidden=True)
    catalog.refresh(model)
    answers = _every_answer(rec, model, k)
    assert all(answers)
    assert not hidden & {item for a in answers for item in a}
    expected = [f"i{i}" for i in _ranking(model, 0) if f"i{i}" not in hidden][:k]
    assert answers[0] == expected  # the rest of the ranking, in order

    for item in sorted(hidden):
        store.put(item, hidden=False)
    catalog.refresh(model)
    assert _every_answer(rec, model, k)[0] == [f"i{i}" for i in _ranking(model, 0)[:k]]


@pytest.mark.parametrize("lists", [True, False])
@pytest.mark.parametrize("k", [3, 20])
def test_a_category_answers_its_items_in_the_unfiltered_order(
    model: ServingModel, lists: bool, k: int
) -> None:
    rec, catalog, store = _parts(model, lists)
    jazz = set(range(0, N_ITEMS, 3)) | {1}  # a third of the catalogue, and a hidden one
    for i in sorted(jazz):
        store.put(f"i{i}", ["jazz", "all"] if i % 2 else ["jazz"], hidden=i == 1)
    store.put("i2", ["rock"])
    catalog.refresh(model)
    for user in range(N_USERS):
        expected = [f"i{i}" for i in _ranking(model, user) if i in jazz and i != 1][:k]
        [batch] = rec.recommend(model, [f"u{user}"], k, category="jazz")
        single = asyncio.run(rec.recommend_one(model, f"u{user}", k, category="jazz"))
        assert batch.item_ids == single.item_ids == expected
        assert batch.scores == pytest.approx(sorted(batch.scores, reverse=True))
    [stranger] = rec.recommend(model, ["stranger"], k, category="jazz")
    popular = [f"i{i}" for i in range(0, 60, 2) if i in jazz]
    assert stranger.fallback == "popularity" and stranger.item_ids == popular[:k]
    assert rec.recommend(model, ["u0", "stranger"], k, category="rock")[1].item_ids == ["i2"]


class NothingSince:
    """A recent set that covers every model and holds nothing logged since."""

    def covers(self, period_id: int) -> bool:
        return True

    def items_of(self, user_id: str, item_index: dict[str, int]) -> np.ndarray | None:
        return None


@pytest.mark.parametrize("inline_cells", [0, engine.filtered.INLINE_CELLS])
def test_a_single_category_request_is_scored_on_the_loop_when_small_else_batched(
    model: ServingModel, inline_cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the scoring batcher and the recent set in memory (as in the service),
    a category small enough is scored on the event loop itself, and a larger one
    through the batcher, never with a hop to the thread pool: the same answers as
    a batch request either way, from the lists where they tell and from the
    sub-matrix where not."""
    store = MetadataStore()
    catalog = Catalog(store)  # type: ignore[arg-type]
    batcher = ScoringBatcher(max_batch=8, max_wait_s=0.0)
    rec = Recommender(store, None, ServiceMetrics(),  # type: ignore[arg-type]
                      recent=NothingSince(), batcher=batcher,  # type: ignore[arg-type]
                      ranker=ListsOf(model), catalog=catalog)  # type: ignore[arg-type]
    for i in range(0, N_ITEMS, 40):  # ten items: rarely in a user's top 30 of 400
        store.put(f"i{i}", ["rare"])
    store.put("i3", ["odd"], hidden=True)
    catalog.refresh(model)
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(*args: Any, **kwargs: Any) -> Any:
        hops.append("thread")
        return await run_sync(*args, **kwargs)

    monkeypatch.setattr(engine.filtered, "INLINE_CELLS", inline_cells)
    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    batcher.start()
    try:
        for user in range(N_USERS):
            expected = [f"i{i}" for i in _ranking(model, user) if i % 40 == 0][:5]
            single = asyncio.run(rec.recommend_one(model, f"u{user}", 5, category="rare"))
            [batch] = rec.recommend(model, [f"u{user}"], 5, category="rare")
            assert single.item_ids == batch.item_ids == expected
            assert single.scores == pytest.approx(batch.scores, rel=1e-5)
            assert asyncio.run(rec.recommend_one(model, f"u{user}", 5, category="odd")
                               ).item_ids == []
    finally:
        batcher.stop()
    # an empty category costs nothing; a list holding 5 rare items answers
    from_lists = sum(sum(i % 40 == 0 for i in _ranking(model, u)[:DEPTH]) >= 5
                     for u in range(N_USERS))
    assert from_lists < N_USERS  # some users are scored
    assert hops == [] and batcher.scored == (0 if inline_cells else N_USERS - from_lists)


@pytest.mark.parametrize("lists", [True, False])
def test_an_unknown_category_has_no_items(model: ServingModel, lists: bool) -> None:
    rec, catalog, store = _parts(model, lists)
    assert all(a == [] for a in _every_answer(rec, model, 10, category="jazz"))
    store.put("i3", ["jazz"])
    catalog.refresh(model)
    assert all(a == [] for a in _every_answer(rec, model, 10, category="blues"))
    assert rec.recommend(model, ["u5"], 10, category="jazz")[0].item_ids == ["i3"]


def test_the_category_product_scores_as_the_whole_catalogue() -> None:
    model = ServingModel.from_payload(random_payload(40, 3000, 16, [[0, 3]] * 40, seed=2))
    items = np.arange(0, 3000, 7, dtype=np.int64)
    rows = (model.item_emb[items].contiguous(), model.item_bias[items].contiguous())
    extra = [np.array([7, 14]) if u % 2 else None for u in range(40)]
    got = category_top_k(model, range(40), 25, items, rows, extra_seen=extra, max_cells=5000)
    full = top_k(model, range(40), 3000, extra_seen=extra)
    for top, whole in zip(got, full, strict=True):
        keep = np.isin(whole.items, items)
        assert top.items.tolist() == whole.items[keep][:25].tolist()
        np.testing.assert_allclose(top.scores, whole.scores[keep][:25], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [5, 40])
def test_one_users_category_answer_is_the_batchs_row(k: int) -> None:
    """A single request takes its own path (a matrix-vector product): the same items
    and scores as the same user's row of a batch, seen and logged items left out, and
    fewer than ``k`` where the category runs out of unseen items."""
    model = ServingModel.from_payload(random_payload(
        12, 500, 16, [list(range(0, 500, 25))] * 11 + [list(range(0, 500, 20))], seed=4))
    items = np.arange(0, 500, 10, dtype=np.int64)  # 50: users 0-10 have seen 10, user 11 25
    rows = (model.item_emb[items].contiguous(), model.item_bias[items].contiguous())
    extra = [np.array([10, 30]) if u % 3 else None for u in range(12)]
    batch = category_top_k(model, range(12), k, items, rows, extra_seen=extra)
    for user in range(12):
        [one] = category_top_k(model, [user], k, items, rows, extra_seen=[extra[user]])
        assert one.items.tolist() == batch[user].items.tolist()
        np.testing.assert_allclose(one.scores, batch[user].scores, rtol=1e-5, atol=1e-6)
    assert len(batch[0].items) == min(k, 40) and len(batch[11].items) == min(k, 23)
    [unseen] = category_top_k(model, [0], k, items, rows, exclude_seen=False)
    assert len(unseen.items) == min(k, 50)


def test_similar_items_leave_the_hidden_ones_out(model: ServingModel) -> None:
    full = similar_items(model, 7, 10).items.tolist()
    hidden = np.array(sorted(full[:4]), dtype=np.int64)
    assert similar_items(model, 7, 6, hidden).items.tolist() == full[4:10]
    few = ServingModel.from_payload(random_payload(1, 4, 2, [[]]))
    assert similar_items(few, 0, 10, np.array([1, 2])).items.tolist() == [3]


def test_a_views_model_is_freed_with_its_last_request() -> None:
    store = MetadataStore()
    store.put("i1", ["jazz"])
    store.put("i2", hidden=True)
    catalog = Catalog(store)  # type: ignore[arg-type]
    model = ServingModel.from_payload(random_payload(2, 10, 4, [[], []]))
    catalog.refresh(model)
    view = catalog.view(model)
    assert view.category("jazz").tolist() == [1] and view.matrix("jazz")[0].shape == (1, 4)
    freed = weakref.ref(model)
    del model
    gc.collect()
    assert freed() is None
