"""Operations endpoints, the OpenAPI document, and start-up behaviour."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import pytest
from service_testkit import (
    ADMIN,
    CLOSED_PORT_PG,
    ClientFactory,
    ModelWriter,
    TestClient,
    app_of,
    interactions,
    make_settings,
    metric_value,
    wait_for,
)

import service.app
from engine.quantized import INT8_MIN_SPEEDUP, int8_speedup
from smlrec import cli, preflight
from smlrec.settings import Settings
from store import Store

API_PATHS = {
    "/v1/interactions": ["post"],
    "/v1/users/{user_id}/recommendations": ["get"],
    "/v1/recommendations": ["post"],
    "/v1/admin/retrain": ["post"],
    "/v1/admin/jobs/{job_id}": ["get"],
    "/v1/admin/models": ["get"],
    "/v1/admin/models/{version}/activate": ["post"],
    "/v1/admin/periods": ["get"],
    "/v1/admin/strategies": ["get"],
    "/v1/admin/strategy": ["post"],
    "/healthz": ["get"],
    "/readyz": ["get"],
    "/metrics": ["get"],
}


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "redis": "not configured",
                            "model_version": None}


def test_database_on_a_closed_port(tmp_path: Path, make_client: ClientFactory) -> None:
    with make_client(make_settings(tmp_path, CLOSED_PORT_PG)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"detail": {"missing": ["database"], "database": "unavailable",
                                           "redis": "not configured"}}
        body = client.get("/v1/users/u1/recommendations").json()  # still answers
        assert body == {"user_id": "u1", "items": [], "model_version": None,
                        "fallback": "popularity"}
        assert client.get("/v1/admin/models", headers=ADMIN).status_code == 503


def test_metrics_contents(client: TestClient, store: Store, models: ModelWriter) -> None:
    client.post("/v1/interactions", json=interactions(("u1", "i1"), ("u2", "i2")))
    client.post("/v1/interactions", json=interactions(("u1", "i1"), ("u2", "i2"),
                                                      event_id="same"))
    client.get("/v1/users/u1/recommendations")  # no model yet
    version = models.write(seed=1, popular=["i1"])
    assert wait_for(lambda: app_of(client).state.runtime.holder.version == version)
    client.get("/v1/users/u1/recommendations")
    client.get("/v1/users/u9/recommendations")
    client.get("/v1/users/u2/recommendations?k=0")
    client.get("/no/such/path")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = "/v1/users/{user_id}/recommendations"

    def value(sample: str) -> float:
        return metric_value(text, sample)

    assert value(f'smlrec_http_requests_total{{method="GET",route="{route}",status="200"}}') == 3
    assert value(f'smlrec_http_requests_total{{method="GET",route="{route}",status="422"}}') == 1
    assert value('smlrec_http_requests_total{method="POST",route="/v1/interactions",'
                 'status="202"}') == 2
    assert value('smlrec_http_requests_total{method="GET",route="<unmatched>",'
                 'status="404"}') == 1
    assert value(f'smlrec_http_request_duration_seconds_count{{method="GET",route="{route}"}}') == 4
    assert value("smlrec_interactions_accepted_total") == 3
    assert value("smlrec_interactions_duplicate_total") == 1
    assert value('smlrec_fallbacks_served_total{reason="no_model"}') == 1
    assert value('smlrec_fallbacks_served_total{reason="unknown_user"}') == 1
    assert value("smlrec_active_model_version") == version
    assert value("smlrec_model_swaps_total") == 1
    assert value("smlrec_model_swap_failures_total") == 0
    assert value("smlrec_retrain_duration_seconds_count") == 1  # version 1: 1.5 s
    assert value("smlrec_retrain_duration_seconds_sum") == 1.5
    assert "u1" not in text and "u9" not in text  # route templates, not raw paths


def test_metrics_show_what_an_operator_watches(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    """Model age, the newest retrain, the newest evaluated version's quality and the
    open period's size, read from the store at each scrape (so every replica shows
    the worker's figures); zeros before there is anything to show."""

    def value(sample: str) -> float:
        return metric_value(client.get("/metrics").text, sample)

    assert value("smlrec_model_age_seconds") == 0
    assert value("smlrec_last_retrain_timestamp_seconds") == 0
    assert value("smlrec_last_evaluated_version") == 0
    assert value("smlrec_open_period_interactions") == 0
    first = models.write(seed=1, period_id=0)
    second = models.write(seed=2, period_id=1, activate=False)  # newest, not served
    assert wait_for(lambda: app_of(client).state.runtime.holder.version == first)
    store.set_metrics(first, {"evaluated_on_period": 1, "recall@20": 0.61,
                              "ndcg@20": 0.3, "n_interactions": 10})
    client.post("/v1/interactions", json=interactions(("u1", "i1"), ("u2", "i2"), ("u3", "i1")))
    versions = {v.version: v for v in store.list_versions()}
    created, before = versions[first].created_at, time.time()
    age = value("smlrec_model_age_seconds")  # the served version's, not the newest's
    assert before - created <= age <= time.time() - created
    assert value("smlrec_last_retrain_timestamp_seconds") == versions[second].created_at
    assert value("smlrec_last_evaluated_version") == first
    assert value('smlrec_last_evaluated_quality{metric="recall@20"}') == 0.61
    assert value('smlrec_last_evaluated_quality{metric="ndcg@20"}') == 0.3
    assert value("smlrec_open_period_interactions") == 3

    # a challenger's version scored later is not the served lineage's quality; the
    # strategies' newest scores have a gauge of their own
    challenger = models.write(seed=3, period_id=1, activate=False, strategy="fine_tune")
    store.set_metrics(challenger, {"evaluated_on_period": 2, "recall@20": 0.7,
                                   "ndcg@20": 0.4, "n_interactions": 10})
    store.record_score(period_id=2, strategy="fine_tune", version=challenger,
                       metrics={"recall@20": 0.7, "ndcg@20": 0.4, "n_interactions": 10},
                       train_seconds=1.0)
    assert value("smlrec_last_evaluated_version") == first
    assert value('smlrec_strategy_quality{metric="recall@20",strategy="fine_tune"}') == 0.7
    assert value('smlrec_strategy_quality{metric="ndcg@20",strategy="fine_tune"}') == 0.4


def test_openapi_describes_the_api_with_examples(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for path, methods in API_PATHS.items():
        assert path in document["paths"], path
        for method in methods:
            assert method in document["paths"][path], (path, method)
    schemas = document["components"]["schemas"]
    for name in ("InteractionBatch", "InteractionIn", "IngestResponse", "Recommendations",
                 "BatchRecommendationRequest", "BatchRecommendations", "RetrainAccepted",
                 "JobOut", "ModelList", "ModelOut", "PeriodList", "PeriodOut",
                 "StrategyOverview", "StrategyChoice"):
        assert schemas[name].get("examples"), name
    batch = schemas["InteractionBatch"]["properties"]["interactions"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 10_000)
    post = document["paths"]["/v1/interactions"]["post"]
    assert {"202", "413", "422", "503"} <= set(post["responses"])
    assert "409" in document["paths"]["/v1/admin/retrain"]["post"]["responses"]
    assert "404" in document["paths"]["/v1/admin/jobs/{job_id}"]["get"]["responses"]
    schemes = document["components"]["securitySchemes"]
    assert schemes["AdminToken"]["scheme"] == "bearer"
    assert schemes["ClientKey"]["name"] == "X-API-Key"
    k = next(p for p in document["paths"]["/v1/users/{user_id}/recommendations"]["get"]
             ["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"], k["schema"]["default"]) == (
        1, 1000, 20)


def test_a_generated_admin_token_is_kept_in_its_file_and_never_logged(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Embedded mode without SMLREC_ADMIN_TOKEN: the token is generated once into
    SMLREC_ADMIN_TOKEN_FILE (mode 0600), the log says where it is but never what it
    is, the next start reuses it, and ``smlrec load`` finds it there."""
    path = tmp_path / "data" / "admin-token"
    settings = make_settings(tmp_path, sqlite_url, admin_token=None, admin_token_file=path)
    caplog.set_level(logging.INFO)
    with make_client(settings) as client:
        token = app_of(client).state.runtime.admin_token
        assert len(token) >= 24 and path.read_text() == token + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/admin/models", headers=headers).status_code == 200
        assert client.get("/v1/admin/models", headers=ADMIN).status_code == 403
    with make_client(settings) as client:  # a restart keeps it
        assert app_of(client).state.runtime.admin_token == token
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if token in m]
    assert [m for m in messages if "generated an admin token" in m and str(path) in m]
    assert [m for m in messages if "the one stored in" in m and str(path) in m]
    assert cli._stored_token(settings) == token


def test_an_admin_token_file_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = Settings(admin_token_file=blocker / "admin-token")
    with pytest.raises(preflight.StartupError, match="SMLREC_ADMIN_TOKEN"):
        preflight.resolve_admin_token(settings)
    assert preflight.resolve_admin_token(
        settings.model_copy(update={"admin_token": "given"})) == "given"


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_lifespan_tears_down(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory, mode: str
) -> None:
    import multiprocessing
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    def torch_threads() -> int:  # what a new thread gets: the count is kept per thread
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(torch.get_num_threads).result()

    before = {t.name for t in threading.enumerate()}
    threads_before = torch_threads()
    settings = make_settings(tmp_path, sqlite_url, worker_mode=mode, scoring_threads=1)
    with make_client(settings, run_worker=True) as client:
        names = {t.name for t in threading.enumerate()}
        assert {"smlrec-version-sync", "smlrec-worker"} <= names
        assert client.get("/healthz").status_code == 200
        workers = [p for p in multiprocessing.active_children() if p.name == "smlrec-worker"]
        assert len(workers) == (1 if mode == "process" else 0)
        assert torch_threads() == 1
    assert wait_for(lambda: not ({t.name for t in threading.enumerate()} - before))
    assert not hasattr(app_of(client).state, "runtime")
    assert not [p for p in multiprocessing.active_children() if p.name == "smlrec-worker"]
    assert torch_threads() == threads_before


@pytest.mark.parametrize("batcher_threads", [None, 3])
def test_the_micro_batcher_has_its_own_torch_thread_count(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory, batcher_threads: int | None
) -> None:
    """Single-user requests meet on the batcher's thread, which may use every
    CPU but one (or ``SMLREC_BATCHER_THREADS``); threads that score batch requests,
    started after it, still get ``SMLREC_SCORING_THREADS``."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import torch

    settings = make_settings(tmp_path, sqlite_url, scoring_threads=1,
                             batcher_threads=batcher_threads)
    with make_client(settings) as client:
        batcher = app_of(client).state.runtime.batcher
        assert batcher.torch_threads == (batcher_threads
                                         or max(1, len(os.sched_getaffinity(0)) - 1))
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(torch.get_num_threads).result() == 1


def test_the_start_up_heap_is_frozen_while_the_service_runs(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory
) -> None:
    """What exists at start-up is out of the collector's sight while the service
    runs (full collections walk only what requests made), and back in it after."""
    import gc

    assert gc.get_freeze_count() == 0
    with make_client(make_settings(tmp_path, sqlite_url)) as client:
        assert gc.get_freeze_count() > 10_000
        assert client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == 0


def test_an_in_memory_database_keeps_its_worker_in_process(tmp_path: Path) -> None:
    from store import ArtifactStore, InProcessBus, Store
    from worker.embedded import embedded_worker
    from worker.runner import Worker

    settings = make_settings(tmp_path, "sqlite://", worker_mode="process")
    store = Store.from_url("sqlite://")
    bus = InProcessBus()
    try:
        assert isinstance(embedded_worker(settings, store, bus, ArtifactStore(tmp_path)), Worker)
    finally:
        bus.close()
        store.close()


def test_embedded_start_migrates_a_new_database(
    tmp_path: Path, make_client: ClientFactory
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/fresh/db.sqlite")
    with make_client(settings) as client:
        response = client.post("/v1/interactions", json=interactions(("u1", "i1")))
        assert response.status_code == 202




@pytest.mark.parametrize("on", [True, False])
def test_int8_scoring_setting_reaches_the_model_holder(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory, on: bool
) -> None:
    with make_client(make_settings(tmp_path, sqlite_url, int8_scoring=on)) as client:
        assert app_of(client).state.runtime.holder.quantize is on


@pytest.mark.parametrize(("speedup", "on"), [(8.0, True), (INT8_MIN_SPEEDUP, True), (0.05, False)])
def test_int8_scoring_auto_follows_what_this_cpu_measures(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, speedup: float, on: bool,
) -> None:
    """``auto`` (the default) uses int8 only where its products are at least
    ``INT8_MIN_SPEEDUP`` times faster: on a CPU without int8 dot products the
    int8 path is many times slower than float32."""
    monkeypatch.setattr(service.app, "int8_speedup", lambda: speedup)
    settings = make_settings(tmp_path, sqlite_url)
    assert settings.int8_scoring == "auto"
    with caplog.at_level(logging.INFO, logger="service.app"), make_client(settings) as client:
        assert app_of(client).state.runtime.holder.quantize is on
    assert f"int8 scoring {'on' if on else 'off'}" in caplog.text


def test_int8_speedup_is_measured_once_per_process() -> None:
    first = int8_speedup()
    assert 0 < first < float("inf")
    assert int8_speedup() == first  # cached: the same figure, not a second measurement
