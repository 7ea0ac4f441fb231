"""POST /v1/interactions in embedded mode: validation, limits, idempotency,
durability, client key. Every refused request leaves the database untouched."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from service_testkit import (
    CLOSED_PORT_PG,
    ClientFactory,
    TestClient,
    interactions,
    make_settings,
    row_counts,
)

from smlrec.settings import Settings
from store import Store

LONG = "x" * 129


def _one(**fields: Any) -> dict[str, Any]:
    body = {"user_id": "u1", "item_id": "i1"}
    body.update(fields)
    return {"interactions": [{k: v for k, v in body.items() if v is not ...}]}


MALFORMED: dict[str, Any] = {
    "no interactions": {"interactions": []},
    "missing list": {},
    "not a list": {"interactions": {"user_id": "u1", "item_id": "i1"}},
    "missing user_id": _one(user_id=...),
    "missing item_id": _one(item_id=...),
    "empty user_id": _one(user_id=""),
    "empty item_id": _one(item_id=""),
    "user_id too long": _one(user_id=LONG),
    "item_id too long": _one(item_id=LONG),
    "event_id too long": _one(event_id=LONG),
    "empty event_id": _one(event_id=""),
    "numeric user_id": _one(user_id=42),
    "null item_id": _one(item_id=None),
    "negative timestamp": _one(timestamp=-1),
    "boolean timestamp": _one(timestamp=True),
    "timestamp without zone": _one(timestamp="1997-12-05T01:15:49"),
    "timestamp not a date": _one(timestamp="yesterday"),
    "timestamp impossible date": _one(timestamp="1997-02-30T01:15:49Z"),
    "timestamp before 1970": _one(timestamp="1960-01-01T00:00:00Z"),
    "timestamp as object": _one(timestamp={"s": 1}),
    "one bad among good": {"interactions": [{"user_id": "u1", "item_id": "i1"},
                                            {"user_id": "u2", "item_id": ""}]},
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_batches_are_422_and_store_nothing(
    client: TestClient, store: Store, body: dict[str, Any]
) -> None:
    response = client.post("/v1/interactions", json=body)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert row_counts(store) == (0, 0, 0)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_timestamps_are_422(client: TestClient, store: Store, literal: str) -> None:
    body = '{"interactions": [{"user_id": "u1", "item_id": "i1", "timestamp": LIT}]}'
    body = body.replace("LIT", literal)
    response = client.post(
        "/v1/interactions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert row_counts(store) == (0, 0, 0)


@pytest.mark.parametrize("body", [b"{not json", b"", b"[]", b'"text"'])
def test_unparsable_bodies_are_422(client: TestClient, store: Store, body: bytes) -> None:
    response = client.post(
        "/v1/interactions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert row_counts(store) == (0, 0, 0)


def test_more_than_10000_is_413_even_when_items_are_malformed(
    client: TestClient, store: Store
) -> None:
    pairs = [(f"u{n % 50}", f"i{n % 300}") for n in range(10_001)]
    assert client.post("/v1/interactions", json=interactions(*pairs)).status_code == 413
    malformed = {"interactions": [{"user_id": ""}] * 10_001}
    response = client.post("/v1/interactions", json=malformed)
    assert response.status_code == 413
    assert "10000" in response.json()["detail"]
    assert row_counts(store) == (0, 0, 0)


def test_exactly_10000_is_accepted(client: TestClient, store: Store) -> None:
    pairs = [(f"u{n % 50}", f"i{n % 300}") for n in range(10_000)]
    response = client.post("/v1/interactions", json=interactions(*pairs))
    assert response.status_code == 202
    assert response.json() == {"accepted": 10_000, "duplicates": 0, "period_id": 0}
    assert row_counts(store) == (10_000, 50, 300)


def test_timestamps_numbers_strings_and_default(client: TestClient, store: Store) -> None:
    before = datetime.now(UTC).timestamp()
    body = {"interactions": [
        {"user_id": "u1", "item_id": "i1", "timestamp": 881250949},
        {"user_id": "u1", "item_id": "i2", "timestamp": 881250949.5},
        {"user_id": "u1", "item_id": "i3", "timestamp": "1997-12-04T15:55:49Z"},
        {"user_id": "u1", "item_id": "i4", "timestamp": "1997-12-04T16:55:49.25+01:00"},
        {"user_id": "u1", "item_id": "i5", "timestamp": 0},
        {"user_id": "u1", "item_id": "i6"},
        {"user_id": "u1", "item_id": "i7", "timestamp": None},
    ]}
    response = client.post("/v1/interactions", json=body)
    assert response.status_code == 202, response.text
    stamps = store.period_arrays(0).timestamps.tolist()
    assert stamps[:5] == [881250949.0, 881250949.5, 881250949.0, 881250949.25, 0.0]
    assert all(before - 1 <= t <= datetime.now(UTC).timestamp() + 1 for t in stamps[5:])
    assert all(math.isfinite(t) for t in stamps)


def test_repeated_event_ids_count_once(client: TestClient, store: Store) -> None:
    first = client.post("/v1/interactions", json={"interactions": [
        {"user_id": "u1", "item_id": "i1", "event_id": "e1"},
        {"user_id": "u1", "item_id": "i2", "event_id": "e2"},
        {"user_id": "u1", "item_id": "i1", "event_id": "e1"},  # repeated in the request
        {"user_id": "u2", "item_id": "i1"},  # no event id: always stored
    ]})
    assert first.status_code == 202
    assert first.json() == {"accepted": 3, "duplicates": 1, "period_id": 0}
    second = client.post("/v1/interactions", json={"interactions": [
        {"user_id": "u1", "item_id": "i2", "event_id": "e2"},  # repeated across requests
        {"user_id": "u3", "item_id": "i3", "event_id": "e3"},
        {"user_id": "u2", "item_id": "i1"},
    ]})
    assert second.json() == {"accepted": 2, "duplicates": 1, "period_id": 0}
    assert row_counts(store) == (5, 3, 3)


def test_period_id_follows_the_open_period(client: TestClient, store: Store) -> None:
    client.post("/v1/interactions", json=interactions(("u1", "i1")))
    assert store.close_period() is not None
    response = client.post("/v1/interactions", json=interactions(("u1", "i2")))
    assert response.json()["period_id"] == 1


@pytest.fixture
def keyed_client(
    tmp_path: Any, sqlite_url: str, make_client: ClientFactory
) -> Iterator[TestClient]:
    with make_client(make_settings(tmp_path, sqlite_url, api_key="k3y")) as opened:
        yield opened


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-API-Key": ""}, 401), ({"X-API-Key": "wrong"}, 403),
     ({"X-API-Key": "k3y"}, 202)],
)
def test_client_key_when_configured(
    keyed_client: TestClient, store: Store, headers: dict[str, str], status: int
) -> None:
    response = keyed_client.post(
        "/v1/interactions", json=interactions(("u1", "i1")), headers=headers
    )
    assert response.status_code == status
    assert row_counts(store)[0] == (1 if status == 202 else 0)


def test_admin_token_is_not_a_client_key(keyed_client: TestClient) -> None:
    response = keyed_client.post(
        "/v1/interactions", json=interactions(("u1", "i1")), headers={"X-API-Key": "t"}
    )
    assert response.status_code == 403


def test_database_down_is_503_with_retry_after(
    tmp_path: Any, make_client: ClientFactory
) -> None:
    settings: Settings = make_settings(tmp_path, CLOSED_PORT_PG)
    with make_client(settings) as client:
        response = client.post("/v1/interactions", json=interactions(("u1", "i1")))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "database" in response.json()["detail"]


def test_body_over_the_size_limit_is_413(client: TestClient, store: Store) -> None:
    padding = "x" * (17 * 1024 * 1024)
    body = '{"interactions": [{"user_id": "u1", "item_id": "i1"}], "pad": "PAD"}'
    response = client.post(
        "/v1/interactions", content=body.replace("PAD", padding),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert row_counts(store) == (0, 0, 0)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_bodies_not_sent_as_json_are_422(
    client: TestClient, store: Store, content_type: str
) -> None:
    body = b'{"interactions": [{"user_id": "u1", "item_id": "i1"}]}'
    response = client.post("/v1/interactions", content=body,
                           headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"] == "Content-Type must be application/json"
    assert row_counts(store) == (0, 0, 0)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "application/vnd.smlrec+json"])
def test_json_media_types_are_accepted(client: TestClient, store: Store,
                                       content_type: str) -> None:
    body = b'{"interactions": [{"user_id": "u1", "item_id": "i1", "timestamp": 5}]}'
    response = client.post("/v1/interactions", content=body,
                           headers={"Content-Type": content_type})
    assert response.status_code == 202, response.text
    assert row_counts(store)[2] == 1


def test_validation_errors_point_into_the_body(client: TestClient) -> None:
    response = client.post("/v1/interactions", json={"interactions": [
        {"user_id": "u1", "item_id": "i1"}, {"user_id": "u2", "item_id": ""}]})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "interactions", 1, "item_id"]


def test_the_body_schema_is_in_the_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/interactions"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/InteractionBatch"}
    assert "422" in operation["responses"]
    schemas = document["components"]["schemas"]
    assert schemas["InteractionBatch"]["properties"]["interactions"]["items"] == {
        "$ref": "#/components/schemas/InteractionIn"}
    assert {"user_id", "item_id"} <= set(schemas["InteractionIn"]["required"])
