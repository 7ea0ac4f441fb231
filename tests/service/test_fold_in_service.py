"""A user the served model does not know, with interactions logged since, is
answered by fold-in (``"fallback": "fold_in"``), single and batch, embedded and
distributed: the items are those of the vector fitted to their interactions
(``engine.foldin``), their own items left out unless asked; with no interaction
logged, or only on items the model does not know, the answer is popularity as
before; ``SMLREC_FOLD_IN=false`` turns it off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from service_testkit import (
    ADMIN,
    ClientFactory,
    ModelWriter,
    TestClient,
    app_of,
    make_settings,
    wait_for,
)

from engine.foldin import fold_in_top_k
from smlrec.settings import Settings
from store import NewInteraction, Store

ITEMS = [f"i{n}" for n in range(12)]


def _item_table() -> torch.Tensor:
    """Three groups of items along three axes (i0, i3, i6, i9 on the first...)."""
    item = torch.zeros(len(ITEMS), 5)
    for n in range(len(ITEMS)):
        item[n, n % 3] = 2.0
        item[n, 3] = 0.1 * n
    item[:, 4] = torch.linspace(0.0, 0.5, len(ITEMS))  # biases: i11 most popular
    return item


class Service:
    def __init__(self, settings: Settings, client: TestClient, store: Store) -> None:
        self.settings, self.client, self.store = settings, client, store

    def ask(self, user_id: str, **params: object) -> dict[str, object]:
        body: dict[str, object] = self.client.get(f"/v1/users/{user_id}/recommendations",
                                                  params=params).json()
        return body


@pytest.fixture
def service(either_mode: Settings, make_client: ClientFactory) -> Iterator[Service]:
    settings = either_mode
    store = Store.from_url(settings.database_url)
    store.ingest([NewInteraction("u1", item, float(n), f"e{n}") for n, item in enumerate(ITEMS)])
    version = ModelWriter(store, settings.model_dir).write(item=_item_table(), popular=ITEMS[::-1])
    # logged after the model was trained: u9 is new, with items of the second group
    store.ingest([NewInteraction("u9", "i1", 100.0, "n1"), NewInteraction("u9", "i4", 101.0, "n2"),
                  NewInteraction("u7", "new-item", 102.0, "n3")])
    with make_client(settings) as client:
        assert app_of(client).state.runtime.holder.version == version
        yield Service(settings, client, store)
    store.close()


def test_a_new_user_with_interactions_is_answered_by_fold_in(service: Service) -> None:
    answer = service.ask("u9", k=4)
    assert answer["fallback"] == "fold_in"
    items = [entry["item_id"] for entry in answer["items"]]  # type: ignore[attr-defined]
    assert set(items[:2]) == {"i7", "i10"}  # the rest of their group first
    assert "i1" not in items and "i4" not in items  # their own items left out
    model = app_of(service.client).state.runtime.holder.current
    history = np.array([model.item_index["i1"], model.item_index["i4"]])
    expected = fold_in_top_k(model, "u9", history, 4, l2=service.settings.fold_in_l2,
                             exclude=history)
    assert expected is not None
    assert items == [model.item_ids[i] for i in expected.items]
    with_seen = service.ask("u9", k=2, exclude_seen="false")
    assert with_seen["fallback"] == "fold_in"


def test_without_usable_interactions_a_new_user_gets_popularity(service: Service) -> None:
    for user_id in ("nobody", "u7"):  # nothing logged; only an item the model does not know
        answer = service.ask(user_id, k=3)
        assert answer["fallback"] == "popularity"
        listed = [e["item_id"] for e in answer["items"]]  # type: ignore[attr-defined]
        assert listed == ["i11", "i10", "i9"]


def test_the_batch_answers_new_users_the_same_way(service: Service) -> None:
    body = service.client.post("/v1/recommendations",
                               json={"user_ids": ["u1", "u9", "nobody"], "k": 4}).json()
    assert [r["fallback"] for r in body["results"]] == [None, "fold_in", "popularity"]
    assert body["results"][1]["items"] == service.ask("u9", k=4)["items"]


def test_fold_in_can_be_turned_off(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory
) -> None:
    settings = make_settings(tmp_path, sqlite_url, fold_in=False)
    store = Store.from_url(settings.database_url)
    store.ingest([NewInteraction("u1", item, float(n)) for n, item in enumerate(ITEMS)])
    ModelWriter(store, settings.model_dir).write(item=_item_table(), popular=ITEMS[::-1])
    store.ingest([NewInteraction("u9", "i1", 100.0)])
    with make_client(settings) as client:
        answer = client.get("/v1/users/u9/recommendations").json()
        assert answer["fallback"] == "popularity"
        metrics = client.get("/metrics", headers=ADMIN).text
        assert 'reason="fold_in"' not in metrics
    store.close()


def test_hidden_items_and_categories_narrow_the_fold_in_answer(service: Service) -> None:
    first = service.ask("u9", k=2)
    assert first["fallback"] == "fold_in"
    top = [e["item_id"] for e in first["items"]]  # type: ignore[attr-defined]
    put = service.client.put(f"/v1/items/{top[0]}", json={"hidden": True}, headers=ADMIN)
    assert put.status_code == 200

    def hidden_gone() -> bool:
        answer = service.ask("u9", k=2)
        listed = [e["item_id"] for e in answer["items"]]  # type: ignore[attr-defined]
        return answer["fallback"] == "fold_in" and top[0] not in listed

    assert wait_for(hidden_gone, timeout=600)
    for item in ("i0", "i3"):
        assert service.client.put(f"/v1/items/{item}", json={"categories": ["jazz"]},
                                  headers=ADMIN).status_code == 200

    def only_jazz() -> bool:
        answer = service.ask("u9", k=5, category="jazz")
        listed = [e["item_id"] for e in answer["items"]]  # type: ignore[attr-defined]
        return answer["fallback"] == "fold_in" and sorted(listed) == ["i0", "i3"]

    assert wait_for(only_jazz, timeout=600)


@pytest.mark.parametrize("moved", [False, True])
def test_a_known_users_interactions_since_move_their_vector_when_asked(
    either_mode: Settings, make_client: ClientFactory, moved: bool
) -> None:
    """``SMLREC_FOLD_IN_KNOWN=true``: a user the model knows, with interactions logged
    since, is answered from their vector in the model moved by them (``fold_in``), the
    items they had and have seen left out, single and batch alike; by default from the
    model's vector, as before."""
    settings = either_mode.model_copy(update={"fold_in_known": moved})
    store = Store.from_url(settings.database_url)
    store.ingest([NewInteraction("u1", item, float(n)) for n, item in enumerate(ITEMS)])
    store.ingest([NewInteraction("u2", "i0", 20.0)])
    user = torch.zeros(2, 5)
    user[1, 0] = 1.0  # u2 likes the first group (i0, i3, i6, i9)
    ModelWriter(store, settings.model_dir).write(
        user=user, item=_item_table(), seen={"u1": ITEMS, "u2": ["i0"]}, popular=ITEMS[::-1])
    since = ["i1", "i4", "i7"]  # then u2 takes to the second group
    store.ingest([NewInteraction("u2", item, 100.0 + n) for n, item in enumerate(since)])
    with make_client(settings) as client:
        answer = client.get("/v1/users/u2/recommendations", params={"k": 4}).json()
        items = [entry["item_id"] for entry in answer["items"]]
        assert not {"i0", *since} & set(items)
        model = app_of(client).state.runtime.holder.current
        if moved:
            # pulled to the second group: its one unseen item first
            assert answer["fallback"] == "fold_in" and items[0] == "i10"
            history = np.array([model.item_index[i] for i in since])
            expected = fold_in_top_k(model, "u2", history, 4, l2=settings.fold_in_l2,
                                     exclude=history, known=model.user_index["u2"])
            assert expected is not None
            assert items == [model.item_ids[i] for i in expected.items]
        else:
            assert answer["fallback"] is None and items == ["i9", "i6", "i3", "i11"]
        body = client.post("/v1/recommendations", json={"user_ids": ["u2", "u1"], "k": 4}).json()
        assert body["results"][0]["items"] == answer["items"]
        # u1 logged nothing since: answered from the model's vector either way
        assert body["results"][1]["fallback"] is None
        assert client.get("/v1/users/u1/recommendations").json()["fallback"] is None
    store.close()
