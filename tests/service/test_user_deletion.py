"""DELETE /v1/admin/users/{user_id}, embedded (SQLite) and distributed (PostgreSQL
+ Redis): 202 with the count removed; the user's rows are gone from the store and
the user is answered as unknown at once, also by a version loaded later (a
rollback to one written before the deletion) and by another replica (told over
Redis, or finding it in the database); 404 for a user never seen or deleted
already; 422 for a malformed id; 401/403 without the admin token. A refused
request deletes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_testkit import (
    ADMIN,
    ClientFactory,
    ModelWriter,
    TestClient,
    app_of,
    make_settings,
    wait_for,
)

from smlrec.settings import Settings
from store import NewInteraction, Store

ROWS = [NewInteraction("u1", "i1", 1.0, "a"), NewInteraction("u1", "i2", 2.0, "b"),
        NewInteraction("u2", "i1", 3.0, "c"), NewInteraction("u1", "i3", 4.0, "d")]


class Service:
    def __init__(self, settings: Settings, client: TestClient, store: Store) -> None:
        self.settings, self.client, self.store = settings, client, store
        self.models = ModelWriter(store, settings.model_dir)

    def served(self) -> int | None:
        version: int | None = app_of(self.client).state.runtime.holder.version
        return version

    def fallback(self, user_id: str, client: TestClient | None = None) -> str | None:
        body = (client or self.client).get(f"/v1/users/{user_id}/recommendations").json()
        answer: str | None = body["fallback"]
        return answer


@pytest.fixture
def service(either_mode: Settings, make_client: ClientFactory) -> Iterator[Service]:
    settings = either_mode
    store = Store.from_url(settings.database_url)
    store.ingest(ROWS)
    with make_client(settings) as client:
        yield Service(settings, client, store)
    store.close()


def test_a_deleted_user_is_gone_from_the_store_and_unknown_at_once(service: Service) -> None:
    store, client = service.store, service.client
    old = service.models.write(seed=1)
    assert wait_for(lambda: service.served() == old)
    assert service.fallback("u1") is None  # known to the served model

    response = client.delete("/v1/admin/users/u1", headers=ADMIN)
    assert response.status_code == 202
    assert response.json() == {"user_id": "u1", "deleted_interactions": 3}
    assert service.fallback("u1") == "popularity"  # at once, same model version
    batch = client.post("/v1/recommendations", json={"user_ids": ["u1", "u2"]}).json()
    assert [r["fallback"] for r in batch["results"]] == ["popularity", None]
    assert store.user_index("u1") is None and store.user_ids() == ["", "u2"]
    assert store.period_arrays(0).users.tolist() == [1]

    # a version written before the deletion, loaded again, does not bring them back
    newer = service.models.write(seed=2)
    assert wait_for(lambda: service.served() == newer)
    assert client.post(f"/v1/admin/models/{old}/activate", headers=ADMIN).status_code == 200
    assert service.served() == old and service.fallback("u1") == "popularity"
    assert service.fallback("u2") is None

    assert client.delete("/v1/admin/users/u1", headers=ADMIN).status_code == 404
    assert client.delete("/v1/admin/users/nobody", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("user_id", ["x" * 129, "a%00b"])
def test_a_malformed_user_id_is_422_and_deletes_nothing(service: Service, user_id: str) -> None:
    response = service.client.delete(f"/v1/admin/users/{user_id}", headers=ADMIN)
    assert response.status_code == 422
    assert service.store.user_ids() == ["u1", "u2"]


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"X-API-Key": "t"}, 401)])
def test_deleting_takes_the_admin_token(
    service: Service, headers: dict[str, str], status: int
) -> None:
    assert service.client.delete("/v1/admin/users/u1", headers=headers).status_code == status
    assert service.store.user_ids() == ["u1", "u2"]
    assert len(service.store.period_arrays(0).users) == 4


def test_another_replica_serves_the_user_as_unknown_at_once(
    distributed_settings: Settings, make_client: ClientFactory
) -> None:
    store = Store.from_url(distributed_settings.database_url)
    store.ingest(ROWS)
    version = ModelWriter(store, distributed_settings.model_dir).write(seed=1)
    quiet = distributed_settings.model_copy(update={"swap_poll_seconds": 3600.0})
    with make_client(distributed_settings) as first, make_client(quiet) as second:
        other = Service(quiet, second, store)
        assert other.served() == version and other.fallback("u1") is None
        assert first.delete("/v1/admin/users/u1", headers=ADMIN).status_code == 202
        assert wait_for(lambda: other.fallback("u1") == "popularity", timeout=600)  # told
    store.close()


def test_a_replica_that_missed_the_message_finds_the_deletion_in_the_database(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory
) -> None:
    settings = make_settings(tmp_path, sqlite_url, swap_poll_seconds=0.2)
    store = Store.from_url(settings.database_url)
    store.ingest(ROWS)
    ModelWriter(store, settings.model_dir).write(seed=1)
    with make_client(settings) as client:
        service = Service(settings, client, store)
        assert service.fallback("u1") is None
        assert store.delete_user("u1") == (0, 3)  # as another replica would, unannounced
        assert wait_for(lambda: service.fallback("u1") == "popularity", timeout=600)
    store.close()
