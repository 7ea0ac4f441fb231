"""PUT and GET /v1/items/{item_id} and the category filter, embedded (SQLite) and
distributed (PostgreSQL + Redis): 200 with the stored item, also for an item no
interaction named yet; 404 for GET of an item never seen nor described; 422 for
metadata outside the limits or unknown fields, 400 for a body that is not JSON,
401/403 without the admin token, and a refused PUT changes nothing. A hidden item
is in no answer (personal, fallback, batch, similar) and comes back when shown
again; a category's answer holds its items only, in the unfiltered order; an
unknown category is an empty list; another replica follows a PUT within seconds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
from store import ItemInfo, NewInteraction, Store

ITEMS = [f"i{n}" for n in range(1, 9)]
ROWS = ([NewInteraction("u3", item, float(n)) for n, item in enumerate(ITEMS)]
        + [NewInteraction("u1", "i1", 10.0), NewInteraction("u2", "i2", 11.0)])
POPULAR = ["i3", "i5", "i1", "i7"]


class Service:
    def __init__(self, settings: Settings, client: TestClient, store: Store) -> None:
        self.settings, self.client, self.store = settings, client, store
        self.version = ModelWriter(store, settings.model_dir).write(seed=4, popular=POPULAR)
        assert wait_for(lambda: app_of(client).state.runtime.holder.version == self.version)

    def put(self, item: str, body: Any, client: TestClient | None = None) -> Any:
        response = (client or self.client).put(f"/v1/items/{item}", json=body, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    def applied(self, client: TestClient | None = None) -> bool:
        """Whether the replica serves with the store's newest metadata."""
        catalog = app_of(client or self.client).state.runtime.catalog
        return bool(catalog.revision == self.store.item_revision())

    def items(self, user: str, client: TestClient | None = None, **query: Any) -> list[str]:
        response = (client or self.client).get(f"/v1/users/{user}/recommendations",
                                               params={"k": 20, **query})
        assert response.status_code == 200, response.text
        return [entry["item_id"] for entry in response.json()["items"]]

    def every_answer(self) -> set[str]:
        """Items in any answer: personal, fallback, batch and similar."""
        found = set(self.items("u1")) | set(self.items("stranger"))
        found |= set(self.items("u2", exclude_seen="false"))
        batch = self.client.post("/v1/recommendations",
                                 json={"user_ids": ["u1", "u2", "stranger"], "k": 20}).json()
        found |= {e["item_id"] for r in batch["results"] for e in r["items"]}
        for item in ITEMS:
            similar = self.client.get(f"/v1/items/{item}/similar", params={"k": 20})
            assert similar.status_code == 200  # a hidden item may still be asked about
            found |= {e["item_id"] for e in similar.json()["items"]}
        return found


@pytest.fixture
def service(either_mode: Settings, make_client: ClientFactory) -> Iterator[Service]:
    settings = either_mode
    store = Store.from_url(settings.database_url)
    store.ingest(ROWS)
    with make_client(settings) as client:
        yield Service(settings, client, store)
    store.close()


def test_put_stores_the_item_and_get_reads_it_back(service: Service) -> None:
    assert service.put("i1", {"categories": ["jazz", "live"], "hidden": False}) == {
        "item_id": "i1", "categories": ["jazz", "live"], "hidden": False}
    assert service.put("i1", {"hidden": True}) == {  # replaced whole
        "item_id": "i1", "categories": [], "hidden": True}
    # an item no interaction named yet: the catalogue may come first
    assert service.put("new", {"categories": ["jazz"]}) == {
        "item_id": "new", "categories": ["jazz"], "hidden": False}
    client = service.client
    assert client.get("/v1/items/new", headers=ADMIN).json()["categories"] == ["jazz"]
    assert client.get("/v1/items/i2", headers=ADMIN).json() == {
        "item_id": "i2", "categories": [], "hidden": False}
    assert client.get("/v1/items/nowhere", headers=ADMIN).status_code == 404
    assert service.store.item_ids() == ITEMS  # no dense index for the new one
    assert wait_for(service.applied, timeout=30)
    assert service.items("u2", category="jazz") == []  # not in the model yet


@pytest.mark.parametrize(("body", "status"), [
    ({"categories": [""]}, 422),
    ({"categories": ["x" * 65]}, 422),
    ({"categories": ["jazz", "jazz"]}, 422),
    ({"categories": [f"c{n}" for n in range(101)]}, 422),
    ({"categories": "jazz"}, 422),
    ({"categories": [7]}, 422),
    ({"hidden": "yes"}, 422),
    ({"categories": ["jazz"], "colour": "red"}, 422),
    (b'{"categories": [', 400),
])
def test_a_refused_put_changes_nothing(service: Service, body: Any, status: int) -> None:
    service.put("i1", {"categories": ["rock"]})
    before = service.store.item_revision()
    if isinstance(body, bytes):
        response = service.client.put("/v1/items/i1", content=body,
                                      headers={**ADMIN, "Content-Type": "application/json"})
    else:
        response = service.client.put("/v1/items/i1", json=body, headers=ADMIN)
    assert response.status_code == status, response.text
    assert service.store.item("i1") == ItemInfo("i1", ("rock",), False, before)
    assert service.store.item_revision() == before


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"Authorization": "Basic t"}, 401), ({"Authorization": "Bearer nope"}, 403)])
def test_put_and_get_need_the_admin_token(
    service: Service, headers: dict[str, str], status: int
) -> None:
    body = {"categories": ["jazz"], "hidden": True}
    assert service.client.put("/v1/items/i1", json=body, headers=headers).status_code == status
    assert service.client.get("/v1/items/i1", headers=headers).status_code == status
    assert service.store.item("i1") == ItemInfo("i1")
    assert service.store.item_revision() == 0


def test_a_hidden_item_is_in_no_answer_until_shown_again(service: Service) -> None:
    everything = service.every_answer()
    hidden = {service.items("u1")[0], "i3", "i5"}  # u1's best item, and popular ones
    assert hidden <= everything
    for item in sorted(hidden):
        service.put(item, {"hidden": True})
    assert wait_for(service.applied, timeout=30)
    assert service.every_answer() == everything - hidden
    for item in sorted(hidden):
        service.put(item, {"hidden": False})
    assert wait_for(service.applied, timeout=30)
    assert service.every_answer() == everything


def test_a_category_answers_its_items_in_the_unfiltered_order(service: Service) -> None:
    jazz = {"i2", "i4", "i5", "i7"}
    for item in sorted(jazz):
        service.put(item, {"categories": ["jazz"] if item != "i7" else ["rock", "jazz"]})
    service.put("i6", {"categories": ["rock"]})
    assert wait_for(service.applied, timeout=30)
    for user in ("u1", "u2", "u3"):
        for exclude_seen in ("true", "false"):
            unfiltered = service.items(user, exclude_seen=exclude_seen)
            expected = [item for item in unfiltered if item in jazz]
            assert service.items(user, category="jazz", exclude_seen=exclude_seen) == expected
    assert service.items("u1", category="jazz", k=2) == [
        i for i in service.items("u1") if i in jazz][:2]
    assert service.items("stranger", category="jazz") == ["i5", "i7"]  # of the popular ones
    assert service.items("u1", category="blues") == []
    batch = service.client.post("/v1/recommendations", json={
        "user_ids": ["u1", "stranger"], "k": 20, "category": "rock"}).json()["results"]
    assert [[e["item_id"] for e in r["items"]] for r in batch] == [
        [i for i in service.items("u1") if i in {"i6", "i7"}], ["i7"]]


@pytest.mark.parametrize("category", ["", "x" * 65])
def test_a_malformed_category_is_refused(service: Service, category: str) -> None:
    response = service.client.get("/v1/users/u1/recommendations",
                                  params={"category": category})
    assert response.status_code == 422
    batch = service.client.post("/v1/recommendations",
                                json={"user_ids": ["u1"], "category": category})
    assert batch.status_code == 422


def test_another_replica_follows_a_put_within_seconds(
    service: Service, make_client: ClientFactory
) -> None:
    if not service.settings.redis_url:
        pytest.skip("replicas share a store in distributed mode")
    with make_client(service.settings) as other:
        assert wait_for(lambda: app_of(other).state.runtime.holder.version == service.version)
        best = service.items("u1", client=other)[0]
        service.put(best, {"hidden": True})  # on the first replica
        # polled every SWAP_POLL_SECONDS (0.1 s here): a bound of seconds, not minutes
        assert wait_for(lambda: best not in service.items("u1", client=other), timeout=10)
        service.put(best, {"hidden": False, "categories": ["jazz"]})
        assert wait_for(lambda: service.items("u1", client=other, category="jazz") == [best],
                        timeout=10)
