"""Typed, weighted interactions through HTTP, in embedded mode (SQLite) and in
distributed mode (PostgreSQL behind the Redis stream): what is accepted is stored
and exported exactly, what is refused (422) stores nothing, and the admin export
streams the log as NDJSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from service_testkit import ADMIN, ClientFactory, TestClient, app_of, make_settings

from service.routes import export
from smlrec.settings import Settings
from store import Store, StoreUnavailable, make_bus
from worker.ingest import StreamDrainer

EXPORT = "/v1/admin/interactions/export"


@pytest.fixture(params=["embedded", pytest.param(
    "distributed", marks=[pytest.mark.postgres, pytest.mark.redis])])
def mode_settings(request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str) -> Settings:
    """Embedded mode on SQLite, or distributed mode on PostgreSQL and Redis."""
    if request.param == "embedded":
        return make_settings(tmp_path, sqlite_url)
    distributed: Settings = request.getfixturevalue("distributed_settings")
    return distributed


@pytest.fixture
def mclient(mode_settings: Settings, make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client(mode_settings) as opened:
        yield opened


def _drain(settings: Settings) -> None:
    """Distributed mode: move the stream into the database, as the worker does."""
    if not settings.redis_url:
        return
    bus, store = make_bus(settings), Store.from_url(settings.database_url)
    try:
        drainer = StreamDrainer(store, bus, "test")
        while drainer.drain():
            pass
    finally:
        bus.close()
        store.close()


def _export(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get(EXPORT, headers=ADMIN, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text == "" or response.text.endswith("\n")
    return [orjson.loads(line) for line in response.text.splitlines()]


ACCEPTED = [
    {"user_id": "u1", "item_id": "i1", "timestamp": 100, "event_id": "e1", "type": "like",
     "weight": 2.5},
    {"user_id": "u2", "item_id": "i1", "timestamp": 200.5, "event_id": "e2"},
    {"user_id": "u1", "item_id": "i2", "timestamp": "1970-01-01T00:05:00Z", "event_id": "e3",
     "type": "p" * 32, "weight": 100},
    {"user_id": "u3", "item_id": "i3", "timestamp": 50, "event_id": "e4", "type": "♥ añadir",
     "weight": 1e-9},
]


def test_accepted_types_and_weights_are_stored_and_exported_exactly(
    mclient: TestClient, mode_settings: Settings
) -> None:
    response = mclient.post("/v1/interactions", json={"interactions": ACCEPTED})
    assert response.status_code == 202
    assert response.json()["accepted"] == 4
    _drain(mode_settings)
    assert _export(mclient) == [  # in the order they were stored, not by timestamp
        {"user_id": "u1", "item_id": "i1", "timestamp": 100.0, "type": "like", "weight": 2.5,
         "event_id": "e1"},
        {"user_id": "u2", "item_id": "i1", "timestamp": 200.5, "type": "view", "weight": 1.0,
         "event_id": "e2"},
        {"user_id": "u1", "item_id": "i2", "timestamp": 300.0, "type": "p" * 32,
         "weight": 100.0, "event_id": "e3"},
        {"user_id": "u3", "item_id": "i3", "timestamp": 50.0, "type": "♥ añadir",
         "weight": 1e-9, "event_id": "e4"},
    ]
    assert [r["event_id"] for r in _export(mclient, since=100)] == ["e1", "e2", "e3"]
    assert [r["event_id"] for r in _export(mclient, since=200.5)] == ["e2", "e3"]
    assert _export(mclient, since=301) == []


ROW = {"user_id": "u9", "item_id": "i9"}
REFUSED = {
    "unknown field in a row": {"interactions": [{**ROW, "rating": 5}]},
    "misspelt field in a row": {"interactions": [{**ROW, "wieght": 2}]},
    "unknown field in the body": {"interactions": [ROW], "source": "app"},
    "weight 0": {"interactions": [{**ROW, "weight": 0}]},
    "negative weight": {"interactions": [{**ROW, "weight": -1}]},
    "weight over 100": {"interactions": [{**ROW, "weight": 100.0001}]},
    "weight as text": {"interactions": [{**ROW, "weight": "2"}]},
    "weight true": {"interactions": [{**ROW, "weight": True}]},
    "weight null": {"interactions": [{**ROW, "weight": None}]},
    "empty type": {"interactions": [{**ROW, "type": ""}]},
    "type of 33": {"interactions": [{**ROW, "type": "t" * 33}]},
    "type a number": {"interactions": [{**ROW, "type": 5}]},
    "type null": {"interactions": [{**ROW, "type": None}]},
    "type with NUL": {"interactions": [{**ROW, "type": "a\x00b"}]},
    "one bad row of two": {"interactions": [ROW, {**ROW, "item_id": "i8", "weight": 101}]},
}


def test_a_refused_row_stores_nothing(mclient: TestClient, mode_settings: Settings) -> None:
    for name, body in REFUSED.items():
        response = mclient.post("/v1/interactions", content=orjson.dumps(body),
                                headers={"content-type": "application/json"})
        assert response.status_code == 422, name
        assert response.json()["detail"], name
    _drain(mode_settings)
    assert _export(mclient) == []
    store = Store.from_url(mode_settings.database_url)
    try:
        assert (store.count_open(), store.user_ids(), store.item_ids()) == (0, [], [])
    finally:
        store.close()


def test_a_refusal_names_the_field(mclient: TestClient) -> None:
    body = {"interactions": [ROW, {**ROW, "score": 1}], "extra": True}
    detail = mclient.post("/v1/interactions", json=body).json()["detail"]
    assert {(e["type"], tuple(e["loc"])) for e in detail} == {
        ("extra_forbidden", ("body", "interactions", 1, "score")),
        ("extra_forbidden", ("body", "extra")),
    }
    weight = mclient.post("/v1/interactions", json={"interactions": [{**ROW, "weight": 0}]})
    assert [tuple(e["loc"]) for e in weight.json()["detail"]] == [
        ("body", "interactions", 0, "weight")]


@pytest.mark.parametrize("headers, status", [
    ({}, 401), ({"Authorization": "t"}, 401), ({"Authorization": "Bearer"}, 401),
    ({"Authorization": "Bearer wrong"}, 403), ({"X-API-Key": "t"}, 401),
])
def test_the_export_takes_the_admin_token(
    client: TestClient, headers: dict[str, str], status: int
) -> None:
    response = client.get(EXPORT, headers=headers)
    assert response.status_code == status
    assert "detail" in response.json()


@pytest.mark.parametrize("since", ["abc", "-1", "nan", "inf", "1e400", ""])
def test_a_bad_since_is_422(client: TestClient, since: str) -> None:
    response = client.get(EXPORT, headers=ADMIN, params={"since": since})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "since"]


def test_an_empty_log_exports_an_empty_body(mclient: TestClient) -> None:
    assert _export(mclient) == []


def test_the_export_reads_the_log_page_by_page(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "PAGE_ROWS", 3)
    rows = [{"user_id": f"u{n % 4}", "item_id": f"i{n}", "timestamp": n, "weight": n + 1}
            for n in range(10)]
    client.post("/v1/interactions", json={"interactions": rows})
    pages: list[int] = []
    read = store.interactions_page

    def counted(*args: Any) -> Any:
        page = read(*args)
        pages.append(len(page))
        return page

    monkeypatch.setattr(app_of(client).state.runtime.store, "interactions_page", counted)
    exported = _export(client)
    assert [(r["item_id"], r["weight"]) for r in exported] == [
        (f"i{n}", n + 1.0) for n in range(10)]
    assert pages == [3, 3, 3, 1]  # never the whole log at once
    pages.clear()
    assert [r["timestamp"] for r in _export(client, since=4)] == [4.0 + n for n in range(6)]
    assert pages == [3, 3, 0]


def test_a_database_down_before_the_export_starts_is_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any) -> Any:
        raise StoreUnavailable("database unavailable: test")

    monkeypatch.setattr(app_of(client).state.runtime.store, "last_interaction_id", down)
    response = client.get(EXPORT, headers=ADMIN)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0


def test_the_openapi_document_describes_the_fields_and_the_export(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    row = document["components"]["schemas"]["InteractionIn"]
    assert row["additionalProperties"] is False
    assert document["components"]["schemas"]["InteractionBatch"]["additionalProperties"] is False
    assert row["properties"]["type"]["default"] == "view"
    assert (row["properties"]["type"]["minLength"], row["properties"]["type"]["maxLength"]) == (
        1, 32)
    weight = row["properties"]["weight"]
    assert (weight["default"], weight["exclusiveMinimum"], weight["maximum"]) == (1.0, 0, 100)
    operation = document["paths"][EXPORT]["get"]
    assert {"200", "401", "403", "422", "503"} <= set(operation["responses"])
    assert "application/x-ndjson" in operation["responses"]["200"]["content"]
    since = next(p for p in operation["parameters"] if p["name"] == "since")
    assert since["required"] is False
