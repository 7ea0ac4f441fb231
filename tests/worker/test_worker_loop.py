"""The worker loop in embedded mode (SQLite, in-process bus): boundaries,
evaluation, checkpoints, period rules, recovery from interruptions."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from worker_testkit import make_settings, rows_of, seen_csr_ok, wait_for

from sml.data import InteractionLog
from sml.model import MFWeights
from sml.registry import transfer_state
from sml.strategy import Strategy
from smlrec.settings import Settings
from store import ArtifactStore, InProcessBus, JobInfo, Store, StoreUnavailable, unpack_ids
from worker.bootstrap import run_bootstrap
from worker.checkpoint import checkpoint_name, current_checkpoint, new_strategy
from worker.evaluate import SeenIndex, online_metrics
from worker.runner import Worker

PERIOD = 300


class Running:
    """A worker on its own thread over one store, stopped at the end of the test."""

    def __init__(self, settings: Settings, store: Store, bus: InProcessBus | None = None) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus or InProcessBus()
        self.artifacts = ArtifactStore(settings.model_dir)
        self.published: list[int] = []
        self.bus.subscribe_active(self.published.append)
        self.worker = Worker(settings, store, self.bus, self.artifacts)
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop(timeout=30)

    def retrain(self) -> JobInfo:
        """What the admin endpoint does, then wait for the job."""
        period = self.store.close_period()
        assert period is not None
        job = self.store.create_job(period.period_id)
        return self.wait_job(job.job_id)

    def wait_job(self, job_id: str, timeout: float = 600.0) -> JobInfo:
        def done() -> JobInfo | None:
            job = self.store.get_job(job_id)
            return job if job is not None and job.status in ("succeeded", "failed") else None

        finished: JobInfo = wait_for(done, timeout)
        return finished


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_url, tmp_path / "models")


@pytest.fixture
def running(settings: Settings, sqlite_store: Store) -> Iterator[Running]:
    run = Running(settings, sqlite_store)
    yield run
    run.stop()


def theta_of(settings: Settings, path: Path) -> dict[str, torch.Tensor]:
    """The learner's Theta (the one step 2 trains) in a checkpoint."""
    payload = torch.load(path, weights_only=True)
    strategy: Strategy = new_strategy(settings, payload["strategy"])
    strategy.load_state_dict(payload["state"])
    theta = transfer_state(strategy, learner=True)
    assert theta is not None
    return theta


def settled(store: Store) -> bool:
    """No job queued or running: every boundary so far has finished."""
    return store.running_or_queued_job() is None


def theta_updates(path: Path) -> int:
    """Step-2 passes on Theta so far, as a checkpoint records them (0: never trained)."""
    return int(torch.load(path, weights_only=True)["state"]["theta_updates"])


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_three_boundaries(running: Running, small_log: InteractionLog, settings: Settings) -> None:
    store = running.store
    checkpoints: list[Path] = []  # the strategy state after each boundary (retention keeps
    for p in range(3):            # only the current one on disk)
        store.ingest(rows_of(small_log, p * PERIOD, (p + 1) * PERIOD))
        job = running.retrain()
        assert job.status == "succeeded", job.error
        assert job.model_version == p + 1
        assert store.active_version() == p + 1
        pointer = current_checkpoint(store)
        assert pointer is not None and pointer.path == checkpoint_name(p)
        checkpoints.append(settings.model_dir.parent / f"kept-{pointer.path}")
        shutil.copyfile(settings.model_dir / pointer.path, checkpoints[-1])

    versions = {v.version: v for v in store.list_versions()}
    assert sorted(versions) == [1, 2, 3]
    assert [versions[v].period_id for v in (1, 2, 3)] == [0, 1, 2]
    assert running.published == [1, 2, 3]
    assert [p.status for p in store.list_periods()] == ["trained"] * 3 + ["open"]

    # Each version was scored on the next period, as an independent computation gives.
    history = store.history_arrays(2)
    for v in (1, 2):
        metrics = versions[v].metrics
        assert metrics is not None
        assert metrics["evaluated_on_period"] == v
        assert metrics["n_interactions"] == PERIOD
        assert 0.0 <= metrics["recall@20"] <= 1.0 and 0.0 <= metrics["ndcg@20"] <= 1.0
    assert versions[3].metrics is None
    payload = running.artifacts.load(versions[1].path, versions[1].sha256)
    period1 = store.period_arrays(1)
    seen = SeenIndex.build(
        np.concatenate([history.users[:PERIOD], period1.users]),
        np.concatenate([history.items[:PERIOD], period1.items]),
        period1.n_users,
    )
    expected = online_metrics(
        MFWeights(payload["user"], payload["item"]),
        period1.users,
        period1.items,
        period1.n_items,
        seen,
        seed=settings.seed,
        period_id=1,
    )
    assert versions[1].metrics == pytest.approx(expected)

    # Every artifact verifies and follows the contract.
    user_ids, item_ids = store.user_ids(), store.item_ids()
    for info in versions.values():
        payload = running.artifacts.load(info.path, info.sha256, info.size_bytes)
        assert payload["format"] == "smlrec-model/2"
        assert info.path == f"model-v{info.version:06d}.pt"
        assert (payload["version"], payload["period_id"]) == (info.version, info.period_id)
        assert payload["user"].dtype == torch.float32
        assert payload["user"].shape == (info.n_users, 9)
        assert payload["item"].shape == (info.n_items, 9)
        assert unpack_ids(payload["user_ids"], info.n_users) == user_ids[: info.n_users]
        assert unpack_ids(payload["item_ids"], info.n_items) == item_ids[: info.n_items]
        assert seen_csr_ok(payload)
        popular = payload["popular"].numpy()
        counts = np.bincount(store.period_arrays(info.period_id).items, minlength=info.n_items)
        assert np.all(np.diff(counts[popular]) <= 0) and counts[popular[0]] == counts.max()
    last = running.artifacts.load(versions[3].path, versions[3].sha256)
    indptr, seen_items = last["seen_indptr"].numpy(), last["seen_items"].numpy()
    for user in (0, 5, 17):
        assert list(seen_items[indptr[user] : indptr[user + 1]]) == list(store.seen_items(user))

    # Theta: step 2 needs a model that was itself merged (W_{t-2} -> W_{t-1}), so the
    # cold start and the first merge leave it as it was; the third boundary trains it.
    thetas = [theta_of(settings, path) for path in checkpoints]
    assert [theta_updates(path) for path in checkpoints] == [0, 0, 1]
    assert same(thetas[0], thetas[1])
    assert not same(thetas[1], thetas[2])
    pointer = current_checkpoint(store)
    assert pointer is not None and pointer.period_id == 2


def test_resumes_from_checkpoint_after_restart(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog
) -> None:
    first = Running(settings, sqlite_store)
    try:
        for p in range(2):
            sqlite_store.ingest(rows_of(small_log, p * PERIOD, (p + 1) * PERIOD))
            assert first.retrain().status == "succeeded"
    finally:
        first.stop()
    second = Running(settings, sqlite_store)
    try:
        sqlite_store.ingest(rows_of(small_log, 2 * PERIOD, 3 * PERIOD))
        assert second.retrain().model_version == 3
    finally:
        second.stop()
    pointer = current_checkpoint(sqlite_store)
    assert pointer is not None and pointer.period_id == 2
    state = torch.load(settings.model_dir / pointer.path, weights_only=True)["state"]
    assert state["boundaries"] == 3  # periods 0 and 1 were not trained again


def test_count_rule(
    sqlite_url: str, tmp_path: Path, sqlite_store: Store, small_log: InteractionLog
) -> None:
    run = Running(make_settings(sqlite_url, tmp_path / "m", period="count:100"), sqlite_store)
    try:
        sqlite_store.ingest(rows_of(small_log, 0, 250))
        wait_for(lambda: sqlite_store.active_version() == 2 and settled(sqlite_store))
        periods = sqlite_store.list_periods()
        assert [(p.status, p.n_interactions) for p in periods] == [
            ("trained", 100),
            ("trained", 100),
            ("open", 50),
        ]
        sqlite_store.ingest(rows_of(small_log, 250, 300))
        wait_for(lambda: sqlite_store.active_version() == 3)
    finally:
        run.stop()


def counted(worker: Worker, method: str) -> list[Any]:
    """Record what ``worker.<method>`` returns each time its loop calls it (the
    loop looks the method up on the instance, so wrapping it there is enough)."""
    results: list[Any] = []
    original = getattr(worker, method)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        results.append(result)
        return result

    setattr(worker, method, wrapped)
    return results


def test_manual_rule_waits_for_the_admin(running: Running, small_log: InteractionLog) -> None:
    iterations = counted(running.worker, "_iteration")
    running.store.ingest(rows_of(small_log, 0, 2 * PERIOD))
    # rounds of the loop that began after the rows were in, not a stretch of time
    start = len(iterations)
    wait_for(lambda: len(iterations) >= start + 3)
    assert running.store.list_versions() == []
    assert [p.status for p in running.store.list_periods()] == ["open"]
    assert running.retrain().status == "succeeded"


def test_interrupted_after_checkpoint_is_finished_without_retraining(
    running: Running, small_log: InteractionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = running.store
    store.ingest(rows_of(small_log, 0, PERIOD))
    assert running.retrain().status == "succeeded"
    store.ingest(rows_of(small_log, PERIOD, 2 * PERIOD))
    record = store.record_version
    calls: list[int] = []

    def crash_once(*args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("process died here")
        return record(*args, **kwargs)

    monkeypatch.setattr(store, "record_version", crash_once)
    failed = running.retrain()
    assert failed.status == "failed" and "process died here" in (failed.error or "")
    pointer = current_checkpoint(store)
    assert pointer is not None and pointer.period_id == 1
    again = running.wait_job(store.create_job(1).job_id)
    assert again.status == "succeeded" and again.model_version == 2
    assert current_checkpoint(store) == pointer  # the saved state was reused, not retrained
    state = torch.load(running.settings.model_dir / pointer.path, weights_only=True)["state"]
    assert state["boundaries"] == 2


def test_transient_database_errors_are_retried(
    running: Running, small_log: InteractionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = running.store
    store.ingest(rows_of(small_log, 0, PERIOD))
    arrays = store.period_arrays
    failures = [2]

    def flaky(period_id: int, *rest: Any) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise StoreUnavailable("database unavailable: connection refused")
        return arrays(period_id, *rest)

    monkeypatch.setattr(store, "period_arrays", flaky)
    job = running.retrain()
    assert job.status == "succeeded" and job.model_version == 1
    assert failures == [0]


def test_stale_job_fails_and_the_period_is_trained_once(
    sqlite_url: str, tmp_path: Path, sqlite_store: Store, small_log: InteractionLog
) -> None:
    settings = make_settings(sqlite_url, tmp_path / "m", lock_ttl_seconds=2.0)
    sqlite_store.ingest(rows_of(small_log, 0, PERIOD))
    period = sqlite_store.close_period()
    assert period is not None
    dead = sqlite_store.create_job(period.period_id)
    assert sqlite_store.claim_job(dead.job_id)  # a worker took it and died
    run = Running(settings, sqlite_store)
    try:
        failed = run.wait_job(dead.job_id)
        assert failed.status == "failed" and failed.error == "interrupted"
        wait_for(lambda: sqlite_store.active_version() == 1 and settled(sqlite_store))
        versions = sqlite_store.list_versions()
        assert [(v.version, v.period_id) for v in versions] == [(1, 0)]
    finally:
        run.stop()


def test_one_leader_and_takeover(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog
) -> None:
    bus = InProcessBus()
    first = Running(settings, sqlite_store, bus)
    second = Running(settings, sqlite_store, bus)
    try:
        attempts = [counted(first.worker, "_take_lead"), counted(second.worker, "_take_lead")]
        wait_for(lambda: first.worker.is_leader or second.worker.is_leader)
        # the other one has tried (and failed) to take the lead three more times
        start = [len(a) for a in attempts]
        wait_for(lambda: any(len(a) >= n + 3 for a, n in zip(attempts, start, strict=True)))
        assert first.worker.is_leader != second.worker.is_leader
        leader, standby = (first, second) if first.worker.is_leader else (second, first)
        leader.stop()
        wait_for(lambda: standby.worker.is_leader, timeout=600)
        sqlite_store.ingest(rows_of(small_log, 0, PERIOD))
        assert standby.retrain().status == "succeeded"
    finally:
        first.stop()
        second.stop()


def test_bootstrap_warms_theta_and_the_worker_resumes_from_it(
    settings: Settings, sqlite_store: Store, small_log: InteractionLog
) -> None:
    for p in range(3):
        sqlite_store.ingest(rows_of(small_log, p * PERIOD, (p + 1) * PERIOD))
        assert sqlite_store.close_period() is not None
    bus = InProcessBus()
    artifacts = ArtifactStore(settings.model_dir)
    version = run_bootstrap(settings, sqlite_store, bus, artifacts)
    assert version == 1 and sqlite_store.active_version() == 1
    assert [p.status for p in sqlite_store.list_periods()] == ["trained"] * 3 + ["open"]
    pointer = current_checkpoint(sqlite_store)
    assert pointer is not None and pointer.period_id == 2 and pointer.strategy == "sml"
    assert theta_updates(settings.model_dir / pointer.path) > 0

    run = Running(settings, sqlite_store, bus)
    try:
        sqlite_store.ingest(rows_of(small_log, 3 * PERIOD, len(small_log)))
        job = run.retrain()
        assert job.status == "succeeded" and job.model_version == 2
        metrics = sqlite_store.get_version(1)
        assert metrics is not None and metrics.metrics is not None
        assert metrics.metrics["evaluated_on_period"] == 3
    finally:
        run.stop()
    state = torch.load(settings.model_dir / checkpoint_name(3), weights_only=True)["state"]
    assert state["boundaries"] == 4


def test_warm_stop_finishes_the_running_boundary(
    running: Running, small_log: InteractionLog
) -> None:
    store = running.store
    store.ingest(rows_of(small_log, 0, PERIOD))
    period = store.close_period()
    assert period is not None
    job = store.create_job(period.period_id)
    wait_for(
        lambda: (j := store.get_job(job.job_id)) is not None and j.status != "queued", every=0.005
    )
    stopper = threading.Thread(target=running.stop)
    stopper.start()
    stopper.join(30)
    finished = store.get_job(job.job_id)
    assert finished is not None and finished.status == "succeeded"


def test_a_retrain_runs_with_the_files_settings(
    sqlite_url: str, sqlite_store: Store, tmp_path: Path, small_log: InteractionLog,
) -> None:
    hyper_file = tmp_path / "hyper.json"  # what smlrec tune writes for a log
    hyper_file.write_text(json.dumps({"methods": {"sml": {
        "transfer": {"hidden": 16}, "step_one": "own", "meta": {"check": False}}}}))
    settings = make_settings(sqlite_url, tmp_path / "models", hyper_file=hyper_file)
    run = Running(settings, sqlite_store)
    try:
        sqlite_store.ingest(rows_of(small_log, 0, PERIOD))
        job = run.retrain()
        assert job.status == "succeeded", job.error
    finally:
        run.stop()
    pointer = current_checkpoint(sqlite_store)
    assert pointer is not None
    state = torch.load(settings.model_dir / pointer.path, weights_only=True)["state"]
    assert state["config"]["transfer"]["hidden"] == 16
    assert state["config"]["step_one"] == "own" and state["learner"] is None
