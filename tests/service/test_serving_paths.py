"""How the app routes a request through the engine: a known user's single request
goes to the scoring batcher with seen items from the in-memory recent set (not the
database) once it covers the served model's period; a batch request and a user the
model does not know do not use the batcher."""

from __future__ import annotations

from typing import Any

import pytest
from service_testkit import ModelWriter, app_of, interactions, make_settings, wait_for

from store import Store


def test_a_single_request_is_scored_through_the_batcher_from_memory(
    tmp_path: Any, sqlite_url: str, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's fast path: a known user's single request goes to the batcher,
    with seen items from the in-memory recent set once it covers the model's
    period, not from the database; a request with exclude_seen=false too; a
    batch request (and a user the model does not know) does not use the batcher."""
    settings = make_settings(tmp_path, sqlite_url, precompute_depth=0)
    with make_client(settings) as client:
        runtime = app_of(client).state.runtime
        pairs = [(f"u{n % 5}", f"i{n % 12}") for n in range(40)]
        assert client.post("/v1/interactions", json=interactions(*pairs)).status_code == 202
        store = Store.from_url(settings.database_url)
        try:
            version = ModelWriter(store, settings.model_dir).write(seed=5)
        finally:
            store.close()
        assert client.post(f"/v1/admin/models/{version}/activate",
                           headers={"Authorization": "Bearer t"}).status_code == 200
        model = runtime.holder.current
        assert wait_for(lambda: runtime.recent.covers(model.period_id))
        asked: list[int] = []
        seen_items = runtime.store.seen_items
        monkeypatch.setattr(runtime.store, "seen_items",
                            lambda idx: asked.append(idx) or seen_items(idx))
        batches = runtime.batcher.batches
        body = client.get("/v1/users/u1/recommendations?k=3").json()
        assert body["fallback"] is None and len(body["items"]) == 3
        assert runtime.batcher.batches == batches + 1 and asked == []
        client.get("/v1/users/u1/recommendations?k=3&exclude_seen=false")
        assert runtime.batcher.batches == batches + 2
        client.post("/v1/recommendations", json={"user_ids": ["u1", "u2"], "k": 3})
        nobody = client.get("/v1/users/nobody/recommendations?k=3").json()
        assert runtime.batcher.batches == batches + 2 and asked == []
        # the model lists no popular items: the store's, under the model's version
        assert (nobody["user_id"], nobody["fallback"]) == ("nobody", "popularity")
        assert nobody["model_version"] == version and len(nobody["items"]) == 3

        # a user the model does not know, logged since: exclude_seen is honoured
        client.post("/v1/interactions", json=interactions(("late", "i11")))
        everything = client.get("/v1/users/late/recommendations?k=12&exclude_seen=false").json()
        assert "i11" in [e["item_id"] for e in everything["items"]]
        unseen = client.get("/v1/users/late/recommendations?k=12").json()
        assert "i11" not in [e["item_id"] for e in unseen["items"]]
        assert len(unseen["items"]) == len(everything["items"]) - 1
