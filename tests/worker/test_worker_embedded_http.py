"""Embedded mode end to end over HTTP: the service with its worker process, a
manual period rule and the admin retrain endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from worker_testkit import bodies_of, make_settings, wait_for

from sml.data import InteractionLog
from sml.model import MFWeights, score_all
from sml.registry import transfer_state
from smlrec.app import create_app
from smlrec.settings import Settings
from store import ArtifactStore, Store, unpack_ids
from worker.checkpoint import checkpoint_name, current_checkpoint, new_strategy

PERIOD = 300
ADMIN = {"Authorization": "Bearer admin-secret"}


def theta_now(settings: Settings, store: Store, period: int) -> dict[str, torch.Tensor]:
    """The learner's Theta in the checkpoint the store points at, taken after ``period``."""
    pointer = current_checkpoint(store)
    assert pointer is not None and pointer.path == checkpoint_name(period)
    payload = torch.load(settings.model_dir / pointer.path, weights_only=True)
    strategy = new_strategy(settings, payload["strategy"])
    strategy.load_state_dict(payload["state"])
    theta = transfer_state(strategy, learner=True)
    assert theta is not None
    return theta


def expected_top(store: Store, artifacts: ArtifactStore, version: int, user: str) -> list[str]:
    """The top 5 of ``user`` computed straight from the version's artifact."""
    info = store.get_version(version)
    assert info is not None
    payload = artifacts.load(info.path, info.sha256)
    idx = unpack_ids(payload["user_ids"], info.n_users).index(user)
    scores = score_all(MFWeights(payload["user"], payload["item"]), torch.tensor([idx]))[0]
    scores[torch.as_tensor(store.seen_items(idx))] = -torch.inf
    item_ids = unpack_ids(payload["item_ids"], info.n_items)
    return [item_ids[int(i)] for i in torch.topk(scores, 5).indices]


def test_embedded_retrains_swaps_and_scores(
    sqlite_url: str, tmp_path: Path, small_log: InteractionLog
) -> None:
    settings = make_settings(sqlite_url, tmp_path / "models", period="manual")
    store = Store.from_url(sqlite_url)
    artifacts = ArtifactStore(settings.model_dir)
    user = small_log.user_ids[int(small_log.users[0])]
    thetas: list[dict[str, torch.Tensor]] = []
    try:
        with TestClient(create_app(settings, run_worker=True)) as client:
            for p in range(3):
                body = {"interactions": bodies_of(small_log, p * PERIOD, (p + 1) * PERIOD)}
                response = client.post("/v1/interactions", json=body)
                assert response.status_code == 202, response.text
                assert response.json()["accepted"] == PERIOD

                response = client.post("/v1/admin/retrain", headers=ADMIN)
                assert response.status_code == 202, response.text
                assert response.json()["period_id"] == p
                job_id = response.json()["job_id"]

                def finished(job_id: str = job_id) -> dict[str, Any] | None:
                    job: dict[str, Any] = client.get(
                        f"/v1/admin/jobs/{job_id}", headers=ADMIN
                    ).json()
                    return job if job["status"] in ("succeeded", "failed") else None

                job = wait_for(finished, timeout=600)
                assert job["status"] == "succeeded", job["error"]
                assert job["model_version"] == p + 1
                thetas.append(theta_now(settings, store, p))  # retention keeps only the last

                def served(version: int = p + 1) -> dict[str, Any] | None:
                    result: dict[str, Any] = client.get(
                        f"/v1/users/{user}/recommendations", params={"k": 5}
                    ).json()
                    return result if result["model_version"] == version else None

                result = wait_for(served, timeout=600)
                assert result["fallback"] is None
                assert [i["item_id"] for i in result["items"]] == expected_top(
                    store, artifacts, p + 1, user
                )

                models = client.get("/v1/admin/models", headers=ADMIN).json()["models"]
                assert [m["version"] for m in models] == list(range(p + 1, 0, -1))
                assert models[0]["active"] and models[0]["metrics"] is None
                if p > 0:  # the outgoing version, scored on the period that just closed
                    metrics = models[1]["metrics"]
                    assert metrics["evaluated_on_period"] == p
                    assert metrics["n_interactions"] == PERIOD
                    assert 0.0 <= metrics["recall@20"] <= 1.0
                    assert 0.0 <= metrics["ndcg@20"] <= metrics["recall@20"]

            periods = client.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
            assert [p["status"] for p in periods] == ["trained"] * 3 + ["open"]
    finally:
        store.close()

    def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return any(not torch.equal(a[k], b[k]) for k in a)

    # step 2 first runs at the third boundary (it needs a merged W_{t-1} to learn from)
    assert not changed(thetas[0], thetas[1]) and changed(thetas[1], thetas[2])


def test_embedded_count_rule_retrains_without_admin(
    sqlite_url: str, tmp_path: Path, small_log: InteractionLog
) -> None:
    settings = make_settings(sqlite_url, tmp_path / "models", period="count:150")
    with TestClient(create_app(settings, run_worker=True)) as client:
        body = {"interactions": bodies_of(small_log, 0, 320)}
        assert client.post("/v1/interactions", json=body).status_code == 202

        def versions() -> list[int]:
            models = client.get("/v1/admin/models", headers=ADMIN).json()["models"]
            return [m["version"] for m in models]

        def statuses() -> list[str]:
            periods = client.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
            return [p["status"] for p in periods]

        wait_for(lambda: versions() == [2, 1] and statuses()[:2] == ["trained"] * 2, timeout=600)
        periods = client.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
        assert [(p["status"], p["n_interactions"]) for p in periods] == [
            ("trained", 150),
            ("trained", 150),
            ("open", 20),
        ]
