"""Distributed mode (PostgreSQL + Redis): ingestion onto the Redis stream with
early duplicate reports, outages answered 503 with nothing half applied, and
version announcements reaching another replica."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from service_testkit import (
    ADMIN,
    CLOSED_PORT_PG,
    CLOSED_PORT_REDIS,
    SERVICE_REDIS_URL,
    ClientFactory,
    ModelWriter,
    TestClient,
    interactions,
    make_settings,
    row_counts,
    served_version,
    wait_for,
)

from smlrec.settings import Settings
from store import NewInteraction, Store
from store.stream_format import decode_rows

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

@pytest.fixture
def stream(redis_prefix: str) -> str:
    """The key of this test's interaction stream."""
    return f"{redis_prefix}:interactions"


def _stream(client: redis.Redis, key: str) -> list[NewInteraction]:
    entries: list[tuple[str, dict[str, str]]] = client.xrange(key)  # type: ignore[assignment]
    return [row for _, fields in entries for row in decode_rows(fields["rows"])]


@pytest.fixture
def dclient(distributed_settings: Settings, make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client(distributed_settings) as opened:
        yield opened


@pytest.fixture
def dstore(distributed_settings: Settings) -> Iterator[Store]:
    opened = Store.from_url(distributed_settings.database_url)
    yield opened
    opened.close()


def test_accepted_means_on_the_stream(
    dclient: TestClient, dstore: Store, redis_client: redis.Redis, stream: str
) -> None:
    body = {"interactions": [
        {"user_id": "u1", "item_id": "i1", "timestamp": 881250949, "event_id": "e1"},
        {"user_id": "u2", "item_id": "i2", "timestamp": "1997-12-04T15:55:49Z"},
    ]}
    response = dclient.post("/v1/interactions", json=body)
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "duplicates": 0, "period_id": 0}
    assert _stream(redis_client, stream) == [
        NewInteraction("u1", "i1", 881250949.0, "e1"),
        NewInteraction("u2", "i2", 881250949.0, None),
    ]
    assert redis_client.xlen(stream) == 1  # one entry per request
    assert row_counts(dstore) == (0, 0, 0)  # the worker moves them into the database


def test_duplicates_in_and_across_requests(
    dclient: TestClient, redis_client: redis.Redis, stream: str
) -> None:
    first = dclient.post("/v1/interactions", json={"interactions": [
        {"user_id": "u1", "item_id": "i1", "event_id": "e1"},
        {"user_id": "u1", "item_id": "i1", "event_id": "e1"},
        {"user_id": "u1", "item_id": "i2", "event_id": "e2"},
        {"user_id": "u1", "item_id": "i3"},
    ]})
    assert first.json() == {"accepted": 3, "duplicates": 1, "period_id": 0}
    second = dclient.post("/v1/interactions", json={"interactions": [
        {"user_id": "u1", "item_id": "i2", "event_id": "e2"},
        {"user_id": "u1", "item_id": "i4", "event_id": "e4"},
    ]})
    assert second.json() == {"accepted": 1, "duplicates": 1, "period_id": 0}
    only_repeats = dclient.post("/v1/interactions", json=interactions(("u1", "i1"),
                                                                     event_id="e1"))
    assert only_repeats.json() == {"accepted": 0, "duplicates": 1, "period_id": 0}
    assert [r.event_id for r in _stream(redis_client, stream)] == ["e1", "e2", None, "e4"]


def test_failed_append_leaves_no_marks(
    dclient: TestClient, dstore: Store, redis_client: redis.Redis, stream: str, redis_prefix: str
) -> None:
    redis_client.set(stream, "not a stream")  # every XADD now fails (WRONGTYPE)
    body = interactions(("u1", "i1"), ("u2", "i2"), event_id=None)
    body["interactions"][0]["event_id"] = "e1"
    response = dclient.post("/v1/interactions", json=body)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert redis_client.get(stream) == "not a stream"
    assert not redis_client.exists(f"{redis_prefix}:event:e1")

    redis_client.delete(stream)
    retry = dclient.post("/v1/interactions", json=body)  # the client's retry is not a repeat
    assert retry.json() == {"accepted": 2, "duplicates": 0, "period_id": 0}
    assert len(_stream(redis_client, stream)) == 2
    assert row_counts(dstore) == (0, 0, 0)


def test_redis_down_is_503_and_stores_nothing(
    tmp_path: Path, pg_url: str, make_client: ClientFactory
) -> None:
    settings = make_settings(tmp_path, pg_url, redis_url=CLOSED_PORT_REDIS)
    with make_client(settings) as client:  # starts without Redis
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"] == {"missing": ["redis"], "database": "ok",
                                          "redis": "unavailable"}
        for event_id in ("e1", None):
            response = client.post("/v1/interactions",
                                   json=interactions(("u1", "i1"), event_id=event_id))
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) > 0
            assert "bus" in response.json()["detail"]
        assert client.get("/v1/users/u1/recommendations").status_code == 200
    store = Store.from_url(pg_url)
    try:
        assert row_counts(store) == (0, 0, 0)
    finally:
        store.close()


def test_readyz_with_postgres_and_redis(dclient: TestClient) -> None:
    assert dclient.get("/readyz").json() == {
        "status": "ready", "database": "ok", "redis": "ok", "model_version": None}


def test_activation_reaches_another_replica_through_redis(
    distributed_settings: Settings, dstore: Store, make_client: ClientFactory,
    redis_client: redis.Redis,
) -> None:
    dstore.ingest([NewInteraction("u1", "i1", 1.0), NewInteraction("u2", "i2", 2.0)])
    models = ModelWriter(dstore, distributed_settings.model_dir)
    old = models.write(seed=1, activate=False)
    new = models.write(seed=2)
    # the second replica polls rarely: only the announcement can move it quickly
    quiet = distributed_settings.model_copy(update={"swap_poll_seconds": 3600.0})
    with make_client(distributed_settings) as first, make_client(quiet) as second:
        assert served_version(first) == new and served_version(second) == new
        response = first.post(f"/v1/admin/models/{old}/activate", headers=ADMIN)
        assert response.status_code == 200
        assert served_version(first) == old
        assert wait_for(lambda: served_version(second) == old, timeout=600)
        assert second.get("/v1/users/u1/recommendations").json()["model_version"] == old


def test_database_down_still_accepts_onto_the_stream(
    tmp_path: Path, make_client: ClientFactory, redis_client: redis.Redis, stream: str,
    redis_prefix: str,
) -> None:
    settings = make_settings(tmp_path, CLOSED_PORT_PG, redis_url=SERVICE_REDIS_URL,
                             redis_prefix=redis_prefix)
    with make_client(settings) as client:
        response = client.post("/v1/interactions", json=interactions(("u1", "i1")))
        assert response.status_code == 202
        assert response.json() == {"accepted": 1, "duplicates": 0, "period_id": None}
        assert client.get("/readyz").json()["detail"]["missing"] == ["database"]
    assert [(r.user_id, r.item_id) for r in _stream(redis_client, stream)] == [("u1", "i1")]
