"""Challenger strategies at the boundary (SQLite, in-process bus): trained on the
same periods after the served swap, scored like the served version on the same
sampled negatives, written as versions that are not served, joined late from the
served model, switched to by choice or by the promotion rule, and safe to repeat."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from worker_testkit import make_settings, rows_of

from sml.data import InteractionLog
from sml.model import MFWeights
from smlrec.settings import Settings
from store import ArtifactStore, InProcessBus, Store, StoreUnavailable, StrategyScoreInfo
from store.lineup import choose_serving, promotion_pick, serving_strategy
from worker.boundary import PeriodTrainer
from worker.challengers import Challengers
from worker.checkpoint import checkpoint_of, current_checkpoint
from worker.evaluate import SeenIndex, online_metrics
from worker.retention import prune

PERIOD = 300


def _trainer(settings: Settings, store: Store) -> tuple[PeriodTrainer, list[int]]:
    bus = InProcessBus()
    published: list[int] = []
    bus.subscribe_active(published.append)
    trainer = PeriodTrainer(settings, store, bus, ArtifactStore(settings.model_dir))
    trainer.restore()
    return trainer, published


def _close(store: Store, log: InteractionLog, p: int) -> int:
    store.ingest(rows_of(log, p * PERIOD, (p + 1) * PERIOD))
    period = store.close_period()
    assert period is not None
    return period.period_id


def _versions(store: Store, period_id: int) -> dict[str, int]:
    return {v.strategy: v.version for v in store.list_versions() if v.period_id == period_id}


def _scores(store: Store, period_id: int) -> dict[str, StrategyScoreInfo]:
    return {s.strategy: s for s in store.strategy_scores() if s.period_id == period_id}


def _weights(store: Store, settings: Settings, version: int) -> MFWeights:
    info = store.get_version(version)
    assert info is not None
    payload = ArtifactStore(settings.model_dir).load(info.path, info.sha256, info.size_bytes)
    return MFWeights(payload["user"], payload["item"])


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_url, tmp_path / "models", challengers="fine_tune,full_retrain")


def test_challengers_train_after_the_served_swap_and_are_scored_alike(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog
) -> None:
    store = sqlite_store
    trainer, published = _trainer(settings, store)
    for p in range(3):
        period_id = _close(store, small_log, p)
        result = trainer.run(period_id)
        versions = _versions(store, period_id)
        assert set(versions) == {"sml", "fine_tune", "full_retrain"}
        # the served strategy's version is written and announced first: the
        # challengers' are recorded after it and never served
        assert result.version == versions["sml"] < min(versions["fine_tune"],
                                                        versions["full_retrain"])
        assert store.active_version() == versions["sml"] and published[-1] == versions["sml"]
        for name in ("fine_tune", "full_retrain"):
            pointer = checkpoint_of(store, name)
            assert pointer is not None and pointer.strategy == name
            assert pointer.period_id == period_id
    current = current_checkpoint(store)
    assert current is not None and current.strategy == "sml"

    # periods 1 and 2: every strategy's previous model scored on the period
    for period_id in (1, 2):
        scores = _scores(store, period_id)
        assert set(scores) == {"sml", "fine_tune", "full_retrain"}
        previous = _versions(store, period_id - 1)
        for name, score in scores.items():
            assert score.version == previous[name]
            info = store.get_version(previous[name])
            assert info is not None and info.metrics is not None
            assert info.metrics["evaluated_on_period"] == period_id
            assert info.metrics["recall@20"] == pytest.approx(score.recall)
            assert info.metrics["ndcg@20"] == pytest.approx(score.ndcg)
            assert score.train_seconds == pytest.approx(info.train_seconds)
            assert score.n_interactions == info.metrics["n_interactions"]
    assert _scores(store, 0) == {}  # nothing served during the first period


def test_a_challengers_score_is_its_model_on_the_served_negatives(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog
) -> None:
    store = sqlite_store
    trainer, _ = _trainer(settings, store)
    for p in range(2):
        trainer.run(_close(store, small_log, p))
    score = _scores(store, 1)["fine_tune"]
    assert score.version is not None
    arrays = store.period_arrays(1)
    before = store.history_arrays(1)
    seen = SeenIndex.build(np.concatenate([before.users, arrays.users]),
                           np.concatenate([before.items, arrays.items]), arrays.n_users)
    again = online_metrics(_weights(store, settings, score.version), arrays.users,
                           arrays.items, arrays.n_items, seen, seed=settings.seed, period_id=1)
    assert again["recall@20"] == pytest.approx(score.recall)
    assert again["ndcg@20"] == pytest.approx(score.ndcg)


def test_a_challenger_configured_later_joins_from_the_served_model(
    sqlite_url: str, tmp_path: Path, sqlite_store: Store, small_log: InteractionLog
) -> None:
    store = sqlite_store
    alone = make_settings(sqlite_url, tmp_path / "models")
    trainer, _ = _trainer(alone, store)
    trainer.run(_close(store, small_log, 0))
    trainer.run(_close(store, small_log, 1))
    assert set(_versions(store, 1)) == {"sml"} and checkpoint_of(store, "spmf") is None

    joined = make_settings(sqlite_url, tmp_path / "models", challengers="spmf")
    trainer, _ = _trainer(joined, store)  # a restart with a new lineup
    trainer.run(_close(store, small_log, 2))
    assert set(_versions(store, 2)) == {"sml", "spmf"}
    assert set(_scores(store, 2)) == {"sml"}  # spmf's first model was the served one
    trainer.run(_close(store, small_log, 3))
    assert set(_scores(store, 3)) == {"sml", "spmf"}
    assert store.active_version() == _versions(store, 3)["sml"]


def test_a_chosen_strategy_is_served_and_trains_first(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog
) -> None:
    store = sqlite_store
    trainer, published = _trainer(settings, store)
    trainer.run(_close(store, small_log, 0))
    chosen = _versions(store, 0)["fine_tune"]
    store.set_active_version(chosen)  # what POST /v1/admin/strategy does
    choose_serving(store, "fine_tune")
    assert serving_strategy(store, settings) == "fine_tune"

    result = trainer.run(_close(store, small_log, 1))
    versions = _versions(store, 1)
    assert result.version == versions["fine_tune"] < versions["sml"]
    assert store.active_version() == versions["fine_tune"]
    assert published[-1] == versions["fine_tune"]
    current = current_checkpoint(store)
    assert current is not None and current.strategy == "fine_tune"
    assert _scores(store, 1)["fine_tune"].version == chosen  # it served during period 1
    assert _scores(store, 1)["sml"].version == _versions(store, 0)["sml"]

    # a lineup that no longer names the choice falls back to SMLREC_STRATEGY
    assert serving_strategy(store, settings.model_copy(update={"challengers": ""})) == "sml"


def test_a_choice_made_during_a_boundary_wins_over_its_served_strategy(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = sqlite_store
    trainer, published = _trainer(settings, store)
    trainer.run(_close(store, small_log, 0))
    first_sml = _versions(store, 0)["sml"]
    original = trainer.strategy.boundary

    def boundary_then_choice(period):  # type: ignore[no-untyped-def]
        weights = original(period)
        choose_serving(store, "full_retrain")  # an operator's choice lands meanwhile
        return weights

    monkeypatch.setattr(trainer.strategy, "boundary", boundary_then_choice)
    trainer.run(_close(store, small_log, 1))
    versions = _versions(store, 1)
    assert store.active_version() == versions["full_retrain"] != first_sml
    assert versions["sml"] not in published  # never served, not even for a moment


@pytest.mark.parametrize("periods", [1, 99])
def test_auto_promotion_serves_the_best_of_the_last_periods(
    sqlite_url: str, tmp_path: Path, sqlite_store: Store, small_log: InteractionLog,
    periods: int,
) -> None:
    store = sqlite_store
    settings = make_settings(sqlite_url, tmp_path / "models", challengers="fine_tune,spmf",
                             promotion=f"auto:{periods}")
    trainer, _ = _trainer(settings, store)
    for p in range(3):
        trainer.run(_close(store, small_log, p))
    scores = _scores(store, 2)
    best = max(scores.values(), key=lambda s: (s.recall, s.strategy == "sml")).strategy
    expected = best if periods == 1 else "sml"  # 99 periods were never scored
    assert serving_strategy(store, settings) == expected
    assert store.active_version() == _versions(store, 2)[expected]


def test_promotion_pick_needs_the_same_winner_in_every_period() -> None:
    def score(period_id: int, strategy: str, recall: float) -> StrategyScoreInfo:
        return StrategyScoreInfo(period_id, strategy, None, recall, 0.0, 10, 1.0, 0.0)

    rows = [score(3, "sml", 0.5), score(3, "spmf", 0.6), score(2, "sml", 0.4),
            score(2, "spmf", 0.45), score(1, "sml", 0.7), score(1, "spmf", 0.6)]
    assert promotion_pick(rows, 2, "sml") == "spmf"
    assert promotion_pick(rows, 3, "sml") is None  # sml won period 1
    assert promotion_pick(rows, 4, "sml") is None  # only three periods scored
    assert promotion_pick(rows, 2, "spmf") is None  # already serving
    tie = [score(5, "sml", 0.5), score(5, "spmf", 0.5)]
    assert promotion_pick(tie, 1, "sml") is None  # a tie keeps the serving one
    assert promotion_pick(tie, 1, "fine_tune") == "sml"


def test_a_boundary_interrupted_in_the_challengers_part_is_finished_by_a_rerun(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = sqlite_store
    trainer, _ = _trainer(settings, store)
    trainer.run(_close(store, small_log, 0))
    period_id = _close(store, small_log, 1)
    calls = {"n": 0}
    original = Challengers._one

    def crash_on_second(self, name, period):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreUnavailable("the database went away")
        return original(self, name, period)

    monkeypatch.setattr(Challengers, "_one", crash_on_second)
    with pytest.raises(StoreUnavailable):
        trainer.run(period_id)
    assert set(_versions(store, period_id)) == {"sml", "fine_tune"}
    assert store.active_version() == _versions(store, period_id)["sml"]  # the swap stood
    monkeypatch.setattr(Challengers, "_one", original)
    trainer.reset()
    trainer.run(period_id)
    trainer.run(period_id)  # and again: nothing more is written
    assert set(_versions(store, period_id)) == {"sml", "fine_tune", "full_retrain"}
    assert len([v for v in store.list_versions() if v.period_id == period_id]) == 3
    assert set(_scores(store, period_id)) == {"sml", "fine_tune", "full_retrain"}


def test_retention_keeps_each_strategys_newest_version_and_state(
    sqlite_url: str, tmp_path: Path, sqlite_store: Store, small_log: InteractionLog
) -> None:
    store = sqlite_store
    settings = make_settings(sqlite_url, tmp_path / "models", challengers="fine_tune",
                             keep_versions=1)
    trainer, _ = _trainer(settings, store)
    artifacts = ArtifactStore(settings.model_dir)
    for p in range(3):
        trainer.run(_close(store, small_log, p))
        prune(store, artifacts, settings.keep_versions, settings.lineup)
    on_disk = set(artifacts.list_files())
    for name in settings.lineup:
        newest = _versions(store, 2)[name]
        info = store.get_version(newest)
        assert info is not None and info.removed_at is None and info.path in on_disk
        pointer = checkpoint_of(store, name)
        assert pointer is not None and pointer.path in on_disk
    assert all(v.removed_at is not None for v in store.list_versions() if v.period_id == 0)


def test_a_failing_challenger_never_fails_the_served_boundary(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = sqlite_store
    trainer, _ = _trainer(settings, store)
    trainer.run(_close(store, small_log, 0))
    original = Challengers._one

    def fine_tune_breaks(self, name, period):  # type: ignore[no-untyped-def]
        if name == "fine_tune":
            raise RuntimeError("out of memory")
        return original(self, name, period)

    monkeypatch.setattr(Challengers, "_one", fine_tune_breaks)
    result = trainer.run(_close(store, small_log, 1))  # no exception: the job succeeds
    assert result.version == store.active_version() == _versions(store, 1)["sml"]
    assert set(_versions(store, 1)) == {"sml", "full_retrain"}
    monkeypatch.setattr(Challengers, "_one", original)
    trainer.run(_close(store, small_log, 2))  # it goes on from its period-0 state
    assert set(_versions(store, 2)) == {"sml", "fine_tune", "full_retrain"}
    assert _scores(store, 2)["fine_tune"].version == _versions(store, 0)["fine_tune"]


def test_challengers_train_at_the_lowest_priority_on_the_boundarys_thread_only(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not hasattr(os, "setpriority"):
        pytest.skip("no per-thread priorities here")
    store = sqlite_store
    trainer, _ = _trainer(settings, store)
    trainer.challengers.lowest_priority = True
    seen: dict[str, int] = {}
    original = Challengers._one

    def record(self, name, period):  # type: ignore[no-untyped-def]
        seen[name] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return original(self, name, period)

    monkeypatch.setattr(Challengers, "_one", record)
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    period_id = _close(store, small_log, 0)
    thread = threading.Thread(target=trainer.run, args=(period_id,))
    thread.start()
    thread.join(timeout=600)
    assert seen == {"fine_tune": 19, "full_retrain": 19}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
    assert store.active_version() == _versions(store, period_id)["sml"]
