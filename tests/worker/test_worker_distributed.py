"""Distributed mode with real processes: PostgreSQL, Redis, two API replicas
(``smlrec serve --no-worker``) and two ``smlrec worker`` processes, one leading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from worker_testkit import (
    PostgresDatabases,
    Processes,
    ProcessRedis,
    bodies_of,
    distributed_env,
    free_port,
    wait_for,
    wait_healthy,
)

from sml.data import InteractionLog
from store import ArtifactStore, Store

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

PERIOD = 300
TTL = 5.0  # a lease a loaded machine still refreshes in time
ADMIN = {"Authorization": "Bearer admin-secret"}


def post_period(apis: list[str], log: InteractionLog, period: int) -> None:
    """One period's interactions, alternately through each replica."""
    bodies = bodies_of(log, period * PERIOD, (period + 1) * PERIOD)
    for n, start in enumerate(range(0, PERIOD, 100)):
        response = httpx.post(
            f"{apis[n % len(apis)]}/v1/interactions",
            json={"interactions": bodies[start : start + 100]},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 100


def retrain(api: str, other: str) -> dict[str, Any]:
    """Ask one replica for a retrain and follow the job on the other."""
    response = httpx.post(f"{api}/v1/admin/retrain", headers=ADMIN, timeout=30)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = httpx.get(
            f"{other}/v1/admin/jobs/{job_id}", headers=ADMIN, timeout=30
        ).json()
        return job if job["status"] in ("succeeded", "failed") else None

    job: dict[str, Any] = wait_for(finished, timeout=600)
    assert job["status"] == "succeeded", job["error"]
    return job


def serves_within(apis: list[str], user: str, version: int) -> None:
    """Every replica comes to answer with ``version`` (how soon is bench/'s
    measure: python -m bench.serving)."""

    def pending() -> set[str]:
        return {
            api for api in apis
            if httpx.get(f"{api}/v1/users/{user}/recommendations", params={"k": 5},
                         timeout=30).json()["model_version"] != version
        }

    left: set[str] = set(apis)

    def all_on_version() -> bool:
        nonlocal left
        left = pending()
        return not left

    wait_for(all_on_version, every=0.02)
    assert not left, f"{sorted(left)} still not on version {version}"


def test_replicas_follow_versions_and_the_standby_takes_over(
    pg_databases: PostgresDatabases,
    process_redis: ProcessRedis,
    processes: Processes,
    tmp_path: Path,
    small_log: InteractionLog,
) -> None:
    url = pg_databases.create()
    env = distributed_env(url, process_redis, tmp_path / "models", SMLREC_LOCK_TTL_SECONDS=str(TTL))
    ports = [free_port(), free_port()]
    apis = [f"http://127.0.0.1:{port}" for port in ports]
    servers = [
        processes.start(
            f"api{n + 1}", ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)], env
        )
        for n, port in enumerate(ports)
    ]
    processes.start("worker1", ["worker"], env)
    for api, server in zip(apis, servers, strict=True):
        wait_healthy(api, server)
    wait_for(lambda: "is the leader" in processes.log("worker1"), timeout=600)
    processes.start("worker2", ["worker"], env)

    store = Store.from_url(url)
    try:
        user = small_log.user_ids[int(small_log.users[0])]
        for period in range(2):
            post_period(apis, small_log, period)
            wait_for(lambda: store.count_open() == PERIOD, timeout=600)
            job = retrain(apis[period % 2], apis[(period + 1) % 2])
            assert job["model_version"] == period + 1
            serves_within(apis, user, period + 1)
        wait_for(lambda: "worker started" in processes.log("worker2"), timeout=600)
        assert "is the leader" not in processes.log("worker2")

        # Rollback through one replica reaches both.
        response = httpx.post(f"{apis[1]}/v1/admin/models/1/activate", headers=ADMIN, timeout=30)
        assert response.status_code == 200, response.text
        serves_within(apis, user, 1)

        # The leader dies: the standby takes over once the lease lapses.
        processes.kill("worker1")
        wait_for(lambda: "is the leader" in processes.log("worker2"), every=0.02)
        post_period(apis, small_log, 2)
        wait_for(lambda: store.count_open() == PERIOD, timeout=600)
        job = retrain(apis[0], apis[1])
        assert job["model_version"] == 3
        serves_within(apis, user, 3)

        versions = store.list_versions()
        assert [(v.version, v.period_id) for v in versions] == [(3, 2), (2, 1), (1, 0)]
        artifacts = ArtifactStore(tmp_path / "models")
        for info in versions:
            artifacts.load(info.path, info.sha256, info.size_bytes)
        metrics = {v.version: v.metrics for v in versions}
        assert metrics[1] is not None and metrics[1]["evaluated_on_period"] == 1
        assert metrics[3] is None
    finally:
        store.close()
