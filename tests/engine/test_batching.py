"""The serving fast path: the exact blockwise top-k, the micro-batcher that
coalesces concurrent single-user scoring, and the in-memory recent interactions."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from engine_testkit import random_payload

from engine.batcher import BatcherStopped, ScoringBatcher
from engine.holder import SCORE_BLOCK, ServingModel
from engine.recent import Pacer, RecentInteractions
from engine.scorer import block_top_k, top_k
from store import NewInteraction, PeriodInfo, Store


def _model(n_users: int, n_items: int, dim: int = 8, seed: int = 0,
           version: int = 1) -> ServingModel:
    """Random weights; user u has seen item u % n_items."""
    seen = [[u % n_items] for u in range(n_users)]
    return ServingModel.from_payload(random_payload(
        n_users, n_items, dim, seen, seed=seed, version=version, period_id=0,
        popular=range(min(n_items, 10))))


@pytest.mark.parametrize("k", [1, 5, 20, 64])
def test_block_top_k_is_exact(k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    scores = torch.randn(17, SCORE_BLOCK * 300, generator=generator)
    scores[0, :] = -torch.inf  # a user who has seen everything
    scores[1, : SCORE_BLOCK * 299] = -torch.inf  # one block left
    scores[2] = torch.round(scores[2])  # many ties
    scores[3, 5 * SCORE_BLOCK : 6 * SCORE_BLOCK] = 100.0  # the top packed in one block
    values, columns = block_top_k(scores, k)
    expected = torch.topk(scores, k, dim=1)
    assert torch.equal(values, expected.values)
    assert torch.equal(scores.gather(1, columns), values)  # the columns hold those values
    for row in range(scores.shape[0]):
        finite = torch.isfinite(values[row])
        assert len(set(columns[row][finite].tolist())) == int(finite.sum())


def test_top_k_matches_brute_force_on_a_padded_catalog() -> None:
    model = _model(30, 1000)  # 1000 items: padded to 1024
    assert model.item_emb_padded.shape[0] % SCORE_BLOCK == 0
    assert model.item_emb.shape[0] == 1000 and model.item_emb.is_contiguous()
    users = list(range(30))
    results = top_k(model, users, 10, extra_seen=[np.array([3, 999])] * 30)
    for user, result in zip(users, results, strict=True):
        scores = model.item_emb @ model.user_emb[user] + model.item_bias
        scores[[user % 1000, 3, 999]] = -torch.inf
        assert result.items.tolist() == torch.topk(scores, 10).indices.tolist()
        assert np.allclose(result.scores, torch.topk(scores, 10).values.numpy(), rtol=1e-5)


def test_concurrent_requests_are_coalesced_and_answered_exactly() -> None:
    model = _model(200, 5000)
    other = _model(200, 5000, seed=1, version=2)
    # 16 senders, each waiting for its answer before sending again, and a batch
    # closed by its size only (the windows are far longer than any test): every
    # batch holds one request of each sender, however slowly the machine runs
    batcher = ScoringBatcher(max_batch=16, max_wait_s=600.0, gap_s=600.0)
    batcher.start()
    try:
        jobs = [(model if n % 3 else other, n % 200, 1 + n % 25, n % 5 != 0) for n in range(320)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(lambda j: batcher.submit(j[0], j[1], j[2], j[3]).result(60),
                                   job) for job in jobs]
            answers = [f.result() for f in futures]
    finally:
        batcher.stop()
    for (m, user, k, exclude), answer in zip(jobs, answers, strict=True):
        [alone] = top_k(m, [user], k, exclude_seen=exclude)
        assert answer.items.tolist() == alone.items.tolist()
    assert (batcher.scored, batcher.batches) == (320, 20)  # 16 per product


def test_async_callers_share_batches() -> None:
    model = _model(50, 2000)
    batcher = ScoringBatcher(max_batch=50, max_wait_s=600.0, gap_s=600.0)  # closed by size
    batcher.start()

    async def many() -> list[list[int]]:
        tops = await asyncio.gather(*(batcher.top_k(model, u, 5) for u in range(50)))
        return [t.items.tolist() for t in tops]

    try:
        answers = asyncio.run(many())
    finally:
        batcher.stop()
    assert answers == [t.items.tolist() for t in top_k(model, list(range(50)), 5)]
    assert batcher.batches == 1  # the 50 callers shared one product
    with pytest.raises(BatcherStopped):
        batcher.submit(model, 0, 5)


def test_a_failing_batch_fails_its_requests_only() -> None:
    model = _model(10, 100)
    batcher = ScoringBatcher(max_batch=8, max_wait_s=0.0)
    batcher.start()
    try:
        bad = batcher.submit(model, 10_000, 5)  # no such user
        with pytest.raises(IndexError):
            bad.result(60)
        assert batcher.submit(model, 3, 5).result(60).items.size == 5
    finally:
        batcher.stop()


@pytest.mark.parametrize("caller", ["thread", "event loop"])
def test_an_idle_batcher_keeps_no_version_alive(caller: str) -> None:
    """Once its last request is answered, a version is freed: the batcher, waiting
    for its next batch, holds nothing of the batch before. Checked by reference
    counting alone (the cyclic collector is off): a weak reference to the model
    dies with its last strong reference."""
    model = _model(20, 300)
    gone = weakref.ref(model)
    batcher = ScoringBatcher(max_batch=8, max_wait_s=0.0)
    batcher.start()
    collecting = gc.isenabled()
    gc.disable()
    try:
        if caller == "thread":
            assert batcher.submit(model, 3, 5).result(60).items.size == 5
        else:
            assert asyncio.run(batcher.top_k(model, 3, 5)).items.size == 5
        del model
        deadline = time.monotonic() + 600.0
        while gone() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gone() is None, "the idle batcher still holds the model it scored with"
    finally:
        if collecting:
            gc.enable()
        batcher.stop()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Store:
    return Store.from_url(sqlite_url)


def _row(user: str, item: str) -> NewInteraction:
    return NewInteraction(user_id=user, item_id=item, ts=1.0, event_id=None)


def test_recent_interactions_cover_the_database_and_this_process(sqlite_store: Store) -> None:
    sqlite_store.ingest([_row("a", "x"), _row("a", "y"), _row("b", "x")])
    recent = RecentInteractions(sqlite_store, periodic=False)
    assert not recent.covers(0)
    recent.rebuild(0)
    assert recent.covers(0) and recent.covers(3) and recent.entries == 3
    index = {"x": 0, "y": 1, "z": 2}
    assert sorted(recent.items_of("a", index).tolist()) == [0, 1]  # type: ignore[union-attr]
    recent.add([_row("b", "z"), _row("c", "unknown-to-the-model")])
    assert sorted(recent.items_of("b", index).tolist()) == [0, 2]  # type: ignore[union-attr]
    assert recent.items_of("c", index) is None and recent.items_of("nobody", index) is None
    sqlite_store.close()


def _hold_rebuilds(store: Store) -> tuple[threading.Event, threading.Event]:
    """Make every rebuild wait at its start (``started`` is set) until ``release``."""
    started, release = threading.Event(), threading.Event()
    original = store.list_periods

    def slow_list_periods() -> list[PeriodInfo]:
        started.set()
        release.wait(60)
        return original()

    store.list_periods = slow_list_periods  # type: ignore[method-assign]
    return started, release


def test_rows_added_during_a_rebuild_are_kept(sqlite_store: Store) -> None:
    sqlite_store.ingest([_row("a", "x")])
    recent = RecentInteractions(sqlite_store, periodic=False)
    started, release = _hold_rebuilds(sqlite_store)
    thread = threading.Thread(target=recent.rebuild, args=(0,))
    thread.start()
    assert started.wait(60)
    recent.add([_row("late", "y")])  # accepted while the rebuild reads
    release.set()
    thread.join(60)
    assert recent.items_of("late", {"y": 7}).tolist() == [7]  # type: ignore[union-attr]
    assert recent.items_of("a", {"x": 1}).tolist() == [1]  # type: ignore[union-attr]
    sqlite_store.close()


def test_past_its_bound_the_set_stops_covering(sqlite_store: Store) -> None:
    recent = RecentInteractions(sqlite_store, periodic=False, max_entries=3)
    recent.rebuild(0)
    recent.add([_row("a", str(n)) for n in range(5)])
    assert not recent.covers(0) and recent.entries == 0
    sqlite_store.close()


def test_a_paced_rebuild_reads_everything_and_spreads_its_work(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.recent as recent_module

    monkeypatch.setattr(recent_module, "CHUNK_ROWS", 2)  # a pause every two rows
    sqlite_store.ingest([_row(f"u{n % 3}", f"i{n}") for n in range(9)])
    sleeps: list[float] = []
    real_sleep = recent_module.time.sleep
    monkeypatch.setattr(recent_module.time, "sleep", lambda s: sleeps.append(s) or real_sleep(0))
    recent = RecentInteractions(sqlite_store, periodic=False)
    pacer = recent_module.Pacer(share=0.25)
    recent.rebuild(0, pacer)
    assert recent.entries == 9 and recent.covers(0)
    assert len(sleeps) == 5  # one pause before each chunk of two of the nine rows
    assert all(s >= 0 for s in sleeps)
    sqlite_store.close()


def test_pacer_sleeps_in_proportion_to_the_work() -> None:
    import time

    from engine.recent import Pacer

    pacer = Pacer(share=0.5)
    time.sleep(0.02)  # "work"
    started = time.perf_counter()
    pacer.pause()
    assert time.perf_counter() - started >= 0.019  # as long again: half the wall clock
    assert pacer.slept >= 0.019  # what the periodic refresh leaves out of its cost
    with pytest.raises(ValueError):
        Pacer(share=0.0)


def test_a_rebuild_is_paced_only_while_the_set_still_covers(sqlite_store: Store) -> None:
    sqlite_store.ingest([_row("a", "x")])
    closed = sqlite_store.close_period()
    assert closed is not None
    recent = RecentInteractions(sqlite_store, periodic=False)
    recent.rebuild(closed.period_id + 1)  # only the open period
    assert recent.pacer_for(closed.period_id) is None  # a rollback: requests read the database
    recent.prepare(closed.period_id)  # what a swap does before serving that version
    assert recent.covers(closed.period_id)
    assert recent.items_of("a", {"x": 4}).tolist() == [4]  # type: ignore[union-attr]
    assert isinstance(recent.pacer_for(closed.period_id + 1), Pacer)  # forward: covered
    sqlite_store.close()


def test_a_swap_asked_for_during_a_rebuild_is_not_lost(sqlite_store: Store) -> None:
    sqlite_store.ingest([_row("a", "x")])
    closed = sqlite_store.close_period()
    assert closed is not None
    recent = RecentInteractions(sqlite_store, periodic=False)
    recent.rebuild(closed.period_id)
    started, release = _hold_rebuilds(sqlite_store)
    recent.start()
    try:
        recent.request_rebuild(closed.period_id + 1)  # forward swap: a paced rebuild starts
        assert started.wait(60)
        recent.request_rebuild(closed.period_id)  # rolled back before it ended
        release.set()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (
                recent.covers(closed.period_id) and not recent._rebuild_lock.locked()):
            time.sleep(0.02)
        assert recent.covers(closed.period_id)
    finally:
        release.set()
        recent.stop()
        sqlite_store.close()
