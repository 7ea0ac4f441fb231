"""GET /v1/items/{item_id}/similar: the served model's items by cosine to the item
(bias left out, the item itself excluded), checked against a brute-force ranking;
the next version's vectors after a swap; 404 for an item the model does not know or
before any model; 422 for a bad k or id; the client key like every client route."""

from __future__ import annotations

from pathlib import Path

import torch
from service_testkit import (
    ClientFactory,
    ModelWriter,
    TestClient,
    app_of,
    interactions,
    make_settings,
    wait_for,
)

from store import Store

PAIRS = [(f"u{n % 4}", f"i{n}") for n in range(12)]


def _brute_force(store: Store, item: torch.Tensor, item_id: str) -> list[tuple[str, float]]:
    names = store.item_ids()
    vectors = item[:, :-1]
    query = vectors[names.index(item_id)]
    cosines = vectors @ query / (vectors.norm(dim=1) * query.norm())
    ranked = sorted(((names[i], float(c)) for i, c in enumerate(cosines)
                     if names[i] != item_id), key=lambda pair: -pair[1])
    return ranked


def _served(client: TestClient, version: int) -> bool:
    return wait_for(lambda: app_of(client).state.runtime.holder.version == version)


def test_similar_items_are_the_models_nearest_by_cosine(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    assert client.get("/v1/items/i1/similar").status_code == 404  # no model yet
    assert client.post("/v1/interactions", json=interactions(*PAIRS)).status_code == 202
    item = torch.randn(12, 5, generator=torch.Generator().manual_seed(3))
    item[:, -1] = torch.arange(12.0) * 10  # biases that would dominate a dot product
    version = models.write(item=item)
    assert _served(client, version)
    expected = _brute_force(store, item, "i4")
    body = client.get("/v1/items/i4/similar?k=3").json()
    assert body["item_id"] == "i4" and body["model_version"] == version
    assert [e["item_id"] for e in body["items"]] == [name for name, _ in expected[:3]]
    for entry, (_, cosine) in zip(body["items"], expected, strict=False):
        assert abs(entry["score"] - cosine) < 1e-5
    everything = client.get("/v1/items/i4/similar").json()["items"]  # k = 20 by default
    assert [e["item_id"] for e in everything] == [name for name, _ in expected]  # 11 others

    other = torch.randn(12, 5, generator=torch.Generator().manual_seed(4))
    newer = models.write(item=other)
    assert _served(client, newer)
    body = client.get("/v1/items/i4/similar?k=3").json()
    assert body["model_version"] == newer
    assert [e["item_id"] for e in body["items"]] == [
        name for name, _ in _brute_force(store, other, "i4")[:3]]


def test_unknown_items_and_bad_requests_are_refused(
    client: TestClient, models: ModelWriter
) -> None:
    client.post("/v1/interactions", json=interactions(*PAIRS))
    assert _served(client, models.write())
    client.post("/v1/interactions", json=interactions(("u0", "late")))  # after the model
    for path in ("/v1/items/nothing/similar", "/v1/items/late/similar"):
        response = client.get(path)
        assert response.status_code == 404 and "not in model version" in response.json()[
            "detail"], path
    for query in ("k=0", "k=1001", "k=x"):
        assert client.get(f"/v1/items/i1/similar?{query}").status_code == 422, query
    assert client.get("/v1/items/" + "x" * 129 + "/similar").status_code == 422
    assert len(client.get("/v1/items/i1/similar?k=1000").json()["items"]) == 11


def test_similar_items_need_the_client_key_when_one_is_set(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory
) -> None:
    settings = make_settings(tmp_path, sqlite_url, api_key="client-key")
    with make_client(settings) as client:
        assert client.get("/v1/items/i1/similar").status_code == 401
        assert client.get("/v1/items/i1/similar",
                          headers={"X-API-Key": "wrong"}).status_code == 403
        assert client.get("/v1/items/i1/similar",
                          headers={"X-API-Key": "client-key"}).status_code == 404  # no model
