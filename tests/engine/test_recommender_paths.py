"""engine.recommender.Recommender on its own, with a store that records what
it is asked and can fail: where seen items come from (memory or database), the
back-off after a database error, the no-model fallback, the counters."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import orjson
import pytest
from engine_testkit import random_payload

import engine.recommender as recommender_module
from engine.holder import ServingModel
from engine.metrics import ServiceMetrics
from engine.popularity import Popular
from engine.recommender import DB_BACKOFF_S, Recommendation, Recommender
from engine.scorer import TopK, top_k
from store import StoreUnavailable


class FakeStore:
    """What Recommender asks the database: dense indices of users the model does
    not know, and a user's seen items. ``fail`` makes every call raise."""

    def __init__(self, indices: dict[str, int], seen: dict[int, list[int]]) -> None:
        self.indices, self.seen = indices, seen
        self.calls: list[tuple[str, Any]] = []
        self.fail = False

    def _called(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if self.fail:
            raise StoreUnavailable("database unavailable: connection refused")

    def user_indices(self, user_ids: list[str]) -> dict[str, int]:
        self._called("user_indices", list(user_ids))
        return {u: self.indices[u] for u in user_ids if u in self.indices}

    def seen_items(self, idx: int) -> np.ndarray:
        self._called("seen_items", idx)
        return np.array(self.seen.get(idx, []), dtype=np.int64)


class FakePopularity:
    def __init__(self, popular: Popular) -> None:
        self.popular, self.fail = popular, False

    def get(self) -> Popular:
        if self.fail:
            raise StoreUnavailable("database unavailable: connection refused")
        return self.popular


class FakeRecent:
    """The in-memory recent set: covers the periods from ``covered_from`` on
    (None: nothing yet) and holds ``items`` (user id -> item ids) since then."""

    def __init__(self, covered_from: int | None, items: dict[str, list[str]]) -> None:
        self.covered_from, self.items = covered_from, items

    def covers(self, period_id: int) -> bool:
        return self.covered_from is not None and self.covered_from <= period_id

    def items_of(self, user_id: str, item_index: dict[str, int]) -> np.ndarray | None:
        names = self.items.get(user_id)
        return np.array([item_index[n] for n in names], dtype=np.int64) if names else None


class FakeBatcher:
    """Scores each request at once with the scorer, recording what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bool, list[int] | None]] = []

    async def top_k(self, model: ServingModel, user: int, k: int, exclude_seen: bool = True,
                    extra_seen: np.ndarray | None = None) -> TopK:
        self.calls.append((user, k, exclude_seen,
                           None if extra_seen is None else extra_seen.tolist()))
        [found] = top_k(model, [user], k, exclude_seen=exclude_seen, extra_seen=[extra_seen])
        return found


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(recommender_module.time, "monotonic", fake.monotonic)
    return fake


def _model() -> ServingModel:
    """Users u0..u3, items i0..i9; u0 saw i0 (in the model)."""
    seen = [[0], [], [], []]
    return ServingModel.from_payload(random_payload(4, 10, 4, seen, seed=3,
                                                    popular=[5, 6, 7, 8]))


def _parts(indices: dict[str, int] | None = None, seen: dict[int, list[int]] | None = None
           ) -> tuple[Recommender, FakeStore, FakePopularity, ServiceMetrics]:
    store = FakeStore(indices or {}, seen or {})
    popularity = FakePopularity(Popular(np.array([2, 1, 0], dtype=np.int64),
                                        ["a", "b", "c"]))
    metrics = ServiceMetrics()
    rec = Recommender(store, popularity, metrics)  # type: ignore[arg-type]
    return rec, store, popularity, metrics


def _with_memory(recent: FakeRecent, indices: dict[str, int] | None = None,
                 seen: dict[int, list[int]] | None = None
                 ) -> tuple[Recommender, FakeStore, FakeBatcher, ServiceMetrics]:
    store = FakeStore(indices or {}, seen or {})
    popularity = FakePopularity(Popular(np.array([2, 1, 0], dtype=np.int64),
                                        ["a", "b", "c"]))
    metrics, batcher = ServiceMetrics(), FakeBatcher()
    rec = Recommender(store, popularity, metrics, recent=recent,  # type: ignore[arg-type]
                      batcher=batcher)  # type: ignore[arg-type]
    return rec, store, batcher, metrics


def _one(rec: Recommender, model: ServingModel | None, user_id: str, k: int,
         exclude_seen: bool = True) -> Recommendation:
    return asyncio.run(rec.recommend_one(model, user_id, k, exclude_seen))


def _body(result: Recommendation) -> dict[str, Any]:
    """The rendered body, checked against the plain JSON rendering."""
    body: dict[str, Any] = orjson.loads(result.render())
    assert body == result.to_json()
    return body


def _fallbacks(metrics: ServiceMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("smlrec_fallbacks_served_total",
                                              {"reason": reason})
    return value or 0.0


def test_seen_items_come_from_the_database_by_default(clock: Clock) -> None:
    """``recommend`` without ``exclude_seen`` excludes: known users by their
    model index, users the model does not know looked up by id, nothing else."""
    model = _model()
    rec, store, _, _ = _parts(indices={"new": 2}, seen={1: [3, 4], 2: [5]})
    [known, new] = rec.recommend(model, ["u1", "new"], 10)
    assert not {3, 4} & set(known.items) and len(known.items) == 8
    assert store.calls[0] == ("user_indices", ["new"])  # the model's users are not asked for
    assert sorted(c[1] for c in store.calls[1:]) == [1, 2]
    assert new.fallback == "popularity" and new.items == [6, 7, 8]  # 5 was seen
    plain = rec.recommend(model, ["u1"], 10, exclude_seen=False)[0]
    assert {3, 4} <= set(plain.items) and len(plain.items) == 10


def test_a_database_error_backs_off_and_is_logged(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model()
    rec, store, _, _ = _parts(indices={}, seen={1: [3]})
    store.fail = True
    with caplog.at_level(logging.WARNING, logger="engine.recommender"):
        [result] = rec.recommend(model, ["u1"], 3)
    assert result.fallback is None and len(result.items) == 3  # served from the model alone
    assert [r.getMessage() for r in caplog.records] == [
        "seen items from the model only for 5 s (database unavailable): "
        "database unavailable: connection refused"]
    calls = len(store.calls)
    clock.now += DB_BACKOFF_S - 0.5  # still backing off: the database is left alone
    rec.recommend(model, ["u1"], 3)
    assert len(store.calls) == calls
    store.fail = False
    clock.now += 0.5  # exactly the end of the back-off: asked again
    [again] = rec.recommend(model, ["u1"], 3)
    assert len(store.calls) > calls and 3 not in again.items


def test_without_a_model_popularity_of_the_store(clock: Clock,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    rec, _, popularity, metrics = _parts(indices={"x": 0}, seen={0: [1]})
    results = rec.recommend(None, ["x", "y"], 2)
    assert [(r.user_id, r.item_ids, r.model_version, r.fallback) for r in results] == [
        ("x", ["c", "a"], None, "popularity"), ("y", ["c", "b"], None, "popularity")]
    assert _fallbacks(metrics, "no_model") == 2
    popularity.fail = True
    with caplog.at_level(logging.WARNING, logger="engine.recommender"):
        results = rec.recommend(None, ["x"], 2)
    assert [(r.items, r.fallback) for r in results] == [([], "popularity")]
    assert [r.getMessage() for r in caplog.records] == [
        "no model and no popularity (database unavailable): "
        "database unavailable: connection refused"]
    assert _fallbacks(metrics, "no_model") == 3


def test_unknown_users_are_counted_and_get_the_models_popular_items(clock: Clock) -> None:
    model = _model()
    rec, _, _, metrics = _parts()
    results = rec.recommend(model, ["u2", "stranger", "other"], 2)
    assert [r.fallback for r in results] == [None, "popularity", "popularity"]
    assert results[1].items == [5, 6] and results[1].model_version == model.version
    assert _fallbacks(metrics, "unknown_user") == 2
    assert _fallbacks(metrics, "no_model") == 0


def test_the_database_is_asked_whatever_the_monotonic_clock_reads(clock: Clock) -> None:
    """The monotonic clock's zero is arbitrary: a fresh recommender asks the
    database even when the clock reads below the back-off's length."""
    clock.now = 0.0
    rec, store, _, _ = _parts(seen={1: [3]})
    [result] = rec.recommend(_model(), ["u1"], 10)
    assert store.calls == [("seen_items", 1)] and 3 not in result.items


def test_single_requests_from_memory_go_through_the_batcher(clock: Clock) -> None:
    """With the recent set covering the model's period: known users scored by
    the batcher with the model's seen items and the recent ones left out,
    unknown users given the model's popular items; no database call."""
    model = _model()
    recent = FakeRecent(1, {"u1": ["i3"], "stranger": ["i5"]})
    rec, store, batcher, metrics = _with_memory(recent)
    first = asyncio.run(rec.recommend_one(model, "u0", 10))  # excludes seen by default
    assert (first.user_id, first.fallback, first.model_version) == ("u0", None, model.version)
    assert sorted(first.items) == list(range(1, 10))  # i0, seen in the model, left out
    assert first.items == top_k(model, [0], 10)[0].items.tolist()
    recent_one = _one(rec, model, "u1", 10)
    assert sorted(recent_one.items) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    everything = _one(rec, model, "u1", 10, exclude_seen=False)
    assert sorted(everything.items) == list(range(10))
    assert batcher.calls == [(0, 10, True, None), (1, 10, True, [3]), (1, 10, False, None)]
    assert _body(recent_one)["items"][0]["item_id"] == f"i{recent_one.items[0]}"

    stranger = _one(rec, model, "stranger", 3)
    assert (stranger.user_id, stranger.item_ids, stranger.fallback, stranger.model_version) == (
        "stranger", ["i6", "i7", "i8"], "popularity", model.version)
    assert stranger.scores == [3.0, 2.0, 1.0]  # N - rank in the model's list of 4
    unfiltered = _one(rec, model, "stranger", 3, exclude_seen=False)
    assert unfiltered.item_ids == ["i5", "i6", "i7"]
    assert [e["item_id"] for e in _body(unfiltered)["items"]] == ["i5", "i6", "i7"]
    assert len(batcher.calls) == 3 and store.calls == []
    assert _fallbacks(metrics, "unknown_user") == 2


def test_single_requests_before_the_recent_set_covers_the_model_ask_the_database(
    clock: Clock,
) -> None:
    """Until the recent set covers the model's period (right after a swap or a
    rollback), a user's seen items since the model come from the database, so a
    single request is answered off the batcher."""
    model = _model()
    for recent in (FakeRecent(None, {}), FakeRecent(2, {"u1": ["i9"]})):
        rec, store, batcher, _ = _with_memory(recent, seen={1: [3, 4]})
        result = _one(rec, model, "u1", 10)
        assert sorted(result.items) == [0, 1, 2, 5, 6, 7, 8, 9]  # 3, 4 from the database
        assert store.calls == [("seen_items", 1)] and batcher.calls == []


def test_single_requests_without_a_model_get_the_stores_popular_items(clock: Clock) -> None:
    rec, store, batcher, metrics = _with_memory(FakeRecent(None, {}), indices={"x": 0},
                                                seen={0: [1]})
    everything = _one(rec, None, "x", 2, exclude_seen=False)
    assert (everything.user_id, everything.item_ids, everything.model_version,
            everything.fallback) == ("x", ["c", "b"], None, "popularity")
    unseen = _one(rec, None, "x", 2)
    assert unseen.item_ids == ["c", "a"]
    assert store.calls == [("user_indices", ["x"]), ("seen_items", 0)]
    assert batcher.calls == [] and _fallbacks(metrics, "no_model") == 2


def test_a_model_without_popular_items_serves_the_stores_under_its_version(
    clock: Clock,
) -> None:
    """The fallback then names the store's items (its own id table), not the
    model's entries at the same indices."""
    model = ServingModel.from_payload(random_payload(4, 10, 4, [[0], [], [], []], seed=3,
                                                     popular=[]))
    rec, _, _, _ = _parts()
    known, stranger = rec.recommend(model, ["u1", "stranger"], 2)
    assert [e["item_id"] for e in _body(stranger)["items"]] == ["c", "b"]
    assert (stranger.fallback, stranger.model_version) == ("popularity", model.version)
    assert [e["item_id"] for e in _body(known)["items"]] == [f"i{i}" for i in known.items]


@pytest.mark.parametrize("version", [None, 4])
@pytest.mark.parametrize("fallback", [None, "popularity"])
@pytest.mark.parametrize("items", [[], [2, 0]])
def test_a_rendered_body_is_the_json_of_the_answer(
    version: int | None, fallback: str | None, items: list[int]
) -> None:
    names = ["i0", 'it "1"', "i\\2"]
    prefixes = [b'{"item_id":' + orjson.dumps(n) + b',"score":' for n in names]
    scores = [0.5, -1.25][: len(items)]
    for with_prefixes in (prefixes, None):
        answer = Recommendation('u"x', items, scores, names, version, fallback, with_prefixes)
        assert orjson.loads(answer.render()) == {
            "user_id": 'u"x', "model_version": version, "fallback": fallback,
            "items": [{"item_id": names[i], "score": s} for i, s in zip(items, scores,
                                                                          strict=True)]}
