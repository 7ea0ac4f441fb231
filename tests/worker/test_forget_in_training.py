"""Deleting a user's data, as the store and the worker carry it out: the rows go
and the periods count them no more; rows of theirs still in the Redis stream when
the deletion happened are dropped by the drain (later ones are a new user's); no
strategy (served or challenger) keeps anything of theirs after its next boundary,
and no artifact written after the deletion holds their id, row or seen items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from worker_testkit import REDIS_URL, make_settings, rows_of

from sml.data import InteractionLog
from store import ArtifactStore, InProcessBus, ModelArtifact, NewInteraction, RedisBus, Store
from worker.boundary import PeriodTrainer
from worker.checkpoint import checkpoint_of
from worker.ingest import StreamDrainer

PERIOD = 300
SHIFT = 1 << 32


def test_the_store_deletes_a_users_rows_and_anonymises_them(sqlite_store: Store) -> None:
    store = sqlite_store
    store.ingest([NewInteraction("u1", "i1", 1.0, "a"), NewInteraction("u2", "i1", 2.0, "b"),
                  NewInteraction("u1", "i2", 3.0, "c")])
    closed = store.close_period()
    assert closed is not None
    store.ingest([NewInteraction("u1", "i3", 4.0, "d"), NewInteraction("u2", "i3", 5.0, "e")])
    assert store.delete_user("u1") == (0, 3)
    assert store.delete_user("u1") is None and store.delete_user("nobody") is None
    assert store.user_index("u1") is None and store.user_ids() == ["", "u2"]
    assert store.period_arrays(0).users.tolist() == [1]
    assert store.get_period(0).n_interactions == 1  # type: ignore[union-attr]
    assert store.count_open() == 1 and store.seen_items(0).size == 0
    assert store.deleted_user_indices().tolist() == [0]
    # the id may come back: it is a new user, with a new index
    store.ingest([NewInteraction("u1", "i9", 6.0, "f")])
    assert store.user_index("u1") == 2 and store.user_ids() == ["", "u2", "u1"]


@pytest.mark.redis
def test_the_drain_drops_a_deleted_users_rows_that_waited_in_the_stream(
    sqlite_store: Store, redis_prefix: str, redis_client: redis.Redis
) -> None:
    api, worker_bus = RedisBus(REDIS_URL, prefix=redis_prefix), RedisBus(REDIS_URL,
                                                                        prefix=redis_prefix)
    try:
        drainer = StreamDrainer(sqlite_store, worker_bus, "w1")
        api.append_unseen([NewInteraction("u1", "i1", 1.0, "a")])
        while drainer.drain():
            pass
        api.append_unseen([NewInteraction("u1", "i2", 2.0, "b"),  # waiting when deleted
                           NewInteraction("u2", "i2", 3.0, "c")])
        assert sqlite_store.delete_user("u1", api.stream_mark()) == (0, 1)
        api.append_unseen([NewInteraction("u1", "i3", 4.0, "d")])  # sent after: a new user
        while drainer.drain():
            pass
        rows = sqlite_store.interactions_page(0, sqlite_store.last_interaction_id(), 10)
        assert [(r.user_id, r.item_id) for r in rows] == [("u2", "i2"), ("u1", "i3")]
        assert sqlite_store.user_index("u1") == 2
    finally:
        api.close()
        worker_bus.close()


def _pairs_of(keys: torch.Tensor, idx: int) -> int:
    return int(((keys.numpy() // SHIFT) == idx).sum())


def test_no_strategy_or_artifact_keeps_a_deleted_user_after_the_next_boundary(
    sqlite_url: str, tmp_path: Path, sqlite_store: Store, small_log: InteractionLog
) -> None:
    store = sqlite_store
    settings = make_settings(sqlite_url, tmp_path / "models",
                             challengers="fine_tune,full_retrain,spmf")
    trainer = PeriodTrainer(settings, store, InProcessBus(), ArtifactStore(settings.model_dir))
    trainer.restore()
    for p in range(2):
        store.ingest(rows_of(small_log, p * PERIOD, (p + 1) * PERIOD))
        closed = store.close_period()
        assert closed is not None
        trainer.run(closed.period_id)
    counts = np.bincount(store.history_arrays(2).users)
    victim = int(counts.argmax())  # the heaviest user of periods 0 and 1
    victim_id = store.user_ids()[victim]
    deleted = store.delete_user(victim_id)
    assert deleted is not None and deleted == (victim, int(counts[victim]))

    store.ingest([r for r in rows_of(small_log, 2 * PERIOD, 3 * PERIOD)  # they have left
                  if r.user_id != victim_id])
    closed = store.close_period()
    assert closed is not None
    trainer.run(closed.period_id)
    artifacts = ArtifactStore(settings.model_dir)
    written = [v for v in store.list_versions() if v.period_id == closed.period_id]
    assert {v.strategy for v in written} == {"sml", "fine_tune", "full_retrain", "spmf"}
    for info in written:
        model = ModelArtifact.from_payload(artifacts.load(info.path, info.sha256,
                                                          info.size_bytes))
        assert victim_id not in model.user_ids and model.user_ids[victim] == ""
        assert torch.count_nonzero(model.user[victim]) == 0
        assert model.seen_indptr[victim + 1] == model.seen_indptr[victim]  # no seen items
    for name in settings.lineup:
        pointer = checkpoint_of(store, name)
        assert pointer is not None and pointer.period_id == closed.period_id
        state = artifacts.load(pointer.path, pointer.sha256, pointer.size_bytes)["state"]
        assert _pairs_of(state["seen"], victim) == 0
        held = [state.get("current")] + [state.get(k, {}).get(w) for k in ("served", "learner")
                                          for w in ("current", "hat", "anchor")
                                          if isinstance(state.get(k), dict)]
        for weights in filter(None, held):
            assert torch.count_nonzero(weights["user"][victim]) == 0, name
        for users in ("history_users", "reservoir_users"):
            if users in state:
                assert int((state[users] == victim).sum()) == 0, (name, users)
        if state.get("last") is not None:
            assert int((state["last"]["users"] == victim).sum()) == 0
