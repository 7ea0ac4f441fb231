"""GET /v1/admin/strategies and POST /v1/admin/strategy, embedded (SQLite) and
distributed (PostgreSQL + Redis): the lineup and each strategy's score per period,
newest first; choosing a strategy serves its newest version on every replica and
keeps the choice; 409 for a strategy outside the lineup or without a model, 422
for a malformed body, 401/403 without the admin token; a refused request changes
neither the served version nor the choice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service_testkit import (
    ADMIN,
    ClientFactory,
    ModelWriter,
    TestClient,
    app_of,
    wait_for,
)

from smlrec.settings import Settings
from store import NewInteraction, Store
from store.lineup import serving_strategy

LINEUP = {"challengers": "fine_tune,full_retrain"}


class Service:
    """A running app over its own database, a second store handle on that database,
    and a model writer."""

    def __init__(self, settings: Settings, client: TestClient) -> None:
        self.settings = settings
        self.client = client
        self.store = Store.from_url(settings.database_url)
        self.models = ModelWriter(self.store, settings.model_dir)

    def served(self) -> int | None:
        version: int | None = app_of(self.client).state.runtime.holder.version
        return version


@pytest.fixture
def service(either_mode: Settings, make_client: ClientFactory) -> Iterator[Service]:
    settings = either_mode.model_copy(update=LINEUP)
    with make_client(settings) as client:
        running = Service(settings, client)
        yield running
        running.store.close()


def _score(store: Store, period_id: int, strategy: str, recall: float, version: int) -> None:
    store.record_score(period_id=period_id, strategy=strategy, version=version,
                       metrics={"recall@20": recall, "ndcg@20": recall / 2,
                                "n_interactions": 40}, train_seconds=1.25)


def test_strategies_lists_the_lineup_and_scores_newest_first(service: Service) -> None:
    client, store = service.client, service.store
    body = client.get("/v1/admin/strategies", headers=ADMIN).json()
    assert body == {"serving": "sml", "challengers": ["fine_tune", "full_retrain"],
                    "promotion": "manual", "periods": []}
    _score(store, 3, "sml", 0.5, 1)
    _score(store, 3, "fine_tune", 0.4, 2)
    _score(store, 4, "sml", 0.6, 3)
    _score(store, 4, "fine_tune", 0.7, 4)
    assert not store.record_score(period_id=4, strategy="sml", version=9, train_seconds=0.0,
                                  metrics={"recall@20": 0.0, "ndcg@20": 0.0,
                                           "n_interactions": 1})  # the first score stands
    body = client.get("/v1/admin/strategies", headers=ADMIN).json()
    assert [p["period_id"] for p in body["periods"]] == [4, 3]
    assert body["periods"][0]["scores"] == {
        "fine_tune": {"recall@20": 0.7, "ndcg@20": 0.35, "train_seconds": 1.25, "version": 4,
                      "n_interactions": 40},
        "sml": {"recall@20": 0.6, "ndcg@20": 0.3, "train_seconds": 1.25, "version": 3,
                "n_interactions": 40},
    }
    newest = client.get("/v1/admin/strategies?periods=1", headers=ADMIN).json()["periods"]
    assert [p["period_id"] for p in newest] == [4]
    for bad in ("0", "x", "10001"):
        assert client.get(f"/v1/admin/strategies?periods={bad}",
                          headers=ADMIN).status_code == 422


def test_choosing_a_strategy_serves_its_newest_model(service: Service) -> None:
    client, store, models = service.client, service.store, service.models
    store.ingest([NewInteraction("u1", "i1", 1.0), NewInteraction("u2", "i2", 2.0)])
    served = models.write(seed=1, strategy="sml")
    models.write(seed=2, strategy="fine_tune", activate=False)
    newest = models.write(seed=3, strategy="fine_tune", activate=False)
    assert wait_for(lambda: service.served() == served)

    response = client.post("/v1/admin/strategy", json={"strategy": "fine_tune"}, headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert (body["serving"], body["challengers"]) == ("fine_tune", ["sml", "full_retrain"])
    assert store.active_version() == newest and service.served() == newest
    assert serving_strategy(store, service.settings) == "fine_tune"
    answer = client.get("/v1/users/u1/recommendations").json()
    assert answer["model_version"] == newest
    listed = client.get("/v1/admin/strategies", headers=ADMIN).json()
    assert listed["serving"] == "fine_tune"

    back = client.post("/v1/admin/strategy", json={"strategy": "sml"}, headers=ADMIN)
    assert back.status_code == 200 and back.json()["serving"] == "sml"
    assert store.active_version() == served and service.served() == served


@pytest.mark.parametrize(("strategy", "fragment"), [
    ("spmf", "neither serving nor a challenger"),  # a strategy, but not configured
    ("popularity", "neither serving nor a challenger"),
    ("full_retrain", "no model yet"),  # configured, never trained
])
def test_a_strategy_that_cannot_serve_is_409_and_changes_nothing(
    service: Service, strategy: str, fragment: str
) -> None:
    client, store = service.client, service.store
    store.ingest([NewInteraction("u1", "i1", 1.0)])
    served = service.models.write(seed=1)
    assert wait_for(lambda: service.served() == served)
    response = client.post("/v1/admin/strategy", json={"strategy": strategy}, headers=ADMIN)
    assert response.status_code == 409
    assert fragment in response.json()["detail"]
    assert store.active_version() == served and service.served() == served
    assert store.get_state("serving_strategy") is None


@pytest.mark.parametrize("body", [
    {}, {"strategy": ""}, {"strategy": "x" * 33}, {"strategy": 3},
    {"strategy": "fine_tune", "now": True}, ["fine_tune"],
])
def test_a_malformed_choice_is_422(service: Service, body: object) -> None:
    response = service.client.post("/v1/admin/strategy", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert service.store.get_state("serving_strategy") is None


def test_a_choice_that_is_not_json_is_400(service: Service) -> None:
    response = service.client.post("/v1/admin/strategy", content=b'{\xff\xfe}',
                                   headers={**ADMIN, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert service.store.get_state("serving_strategy") is None


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/admin/strategies"),
                                              ("POST", "/v1/admin/strategy")])
@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"X-API-Key": "t"}, 401)])
def test_strategy_endpoints_take_the_admin_token(
    client: TestClient, store: Store, method: str, path: str, headers: dict[str, str],
    status: int,
) -> None:
    response = client.request(method, path, headers=headers, json={"strategy": "sml"})
    assert response.status_code == status
    assert store.get_state("serving_strategy") is None


def test_a_choice_reaches_another_replica(
    distributed_settings: Settings, make_client: ClientFactory
) -> None:
    settings = distributed_settings.model_copy(update=LINEUP)
    store = Store.from_url(settings.database_url)
    store.ingest([NewInteraction("u1", "i1", 1.0), NewInteraction("u2", "i2", 2.0)])
    models = ModelWriter(store, settings.model_dir)
    served = models.write(seed=1)
    chosen = models.write(seed=2, strategy="fine_tune", activate=False)
    quiet = settings.model_copy(update={"swap_poll_seconds": 3600.0})  # told, not polling
    with make_client(settings) as first, make_client(quiet) as second:
        assert app_of(second).state.runtime.holder.version == served
        assert first.post("/v1/admin/strategy", json={"strategy": "fine_tune"},
                          headers=ADMIN).status_code == 200
        assert wait_for(lambda: app_of(second).state.runtime.holder.version == chosen,
                        timeout=600)
        assert second.get("/v1/users/u1/recommendations").json()["model_version"] == chosen
    store.close()
