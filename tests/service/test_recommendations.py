"""GET /v1/users/{user_id}/recommendations and POST /v1/recommendations:
the model's ranking for known users, the popularity fallback otherwise. Most
tests run twice: known users scored per request, and answered from the
precomputed top lists (engine.ranked) wherever those can tell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from service_testkit import (
    ADMIN,
    ClientFactory,
    ModelWriter,
    TestClient,
    interactions,
    make_settings,
    metric_value,
    wait_for,
)

from smlrec.settings import Settings
from store import Store

HISTORY = [
    ("u0", "i0"), ("u0", "i1"), ("u0", "i2"),
    ("u1", "i3"), ("u1", "i3"), ("u1", "i4"),
    ("u2", "i5"), ("u3", "i6"), ("u3", "i7"), ("u4", "i8"), ("u4", "i9"), ("u4", "i3"),
]


def _expected(store: Store, user: torch.Tensor, item: torch.Tensor, uid: str,
              exclude: set[str], k: int) -> list[str]:
    """Brute force: every item's U[u]·V + b, seen ones left out, best first."""
    u = store.user_ids().index(uid)
    scores = item[:, :-1] @ user[u, :-1] + item[:, -1]
    ranked = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    names = store.item_ids()
    return [names[i] for i in ranked if names[i] not in exclude][:k]


def _check_shape(body: dict[str, Any], k: int) -> list[str]:
    items = [entry["item_id"] for entry in body["items"]]
    scores = [entry["score"] for entry in body["items"]]
    assert len(items) <= k
    assert len(set(items)) == len(items)
    assert scores == sorted(scores, reverse=True)
    return items


@pytest.fixture(params=[0, 50], ids=["scored", "precomputed"])
def settings(tmp_path: Path, sqlite_url: str, request: pytest.FixtureRequest) -> Settings:
    """``SMLREC_PRECOMPUTE_DEPTH`` 0 (every request scored) or 50."""
    return make_settings(tmp_path, sqlite_url, precompute_depth=request.param)


def _counted(client: TestClient, name: str) -> float:
    return metric_value(client.get("/metrics").text, name)


@pytest.fixture
def trained(client: TestClient, store: Store, models: ModelWriter,
            settings: Settings) -> tuple[torch.Tensor, ...]:
    """HISTORY logged, then version 1 (random weights, dim 4) served; its seen
    CSR knows u0 saw i0 only (the database knows i0, i1, i2). With precomputed
    lists, returns once all 5 users are ranked."""
    assert client.post("/v1/interactions", json=interactions(*HISTORY)).status_code == 202
    generator = torch.Generator().manual_seed(7)
    user, item = torch.randn(5, 5, generator=generator), torch.randn(10, 5, generator=generator)
    version = models.write(user=user, item=item, seen={"u0": ["i0"]},
                           popular=["i3", "i0", "i5", "i9"])
    assert client.post(f"/v1/admin/models/{version}/activate", headers=ADMIN).status_code == 200
    if settings.precompute_depth:
        assert wait_for(lambda: _counted(client, "smlrec_ranked_users") == 5)
    return user, item


def test_known_user_ranked_by_model_without_seen_items(
    client: TestClient, store: Store, trained: tuple[torch.Tensor, ...]
) -> None:
    user, item = trained
    body = client.get("/v1/users/u0/recommendations", params={"k": 5}).json()
    assert body["user_id"] == "u0"
    assert body["model_version"] == 1
    assert body["fallback"] is None
    items = _check_shape(body, 5)
    assert items == _expected(store, user, item, "u0", {"i0", "i1", "i2"}, 5)

    # logged after the model was trained: excluded through the database
    client.post("/v1/interactions", json=interactions(("u0", items[0])))
    again = _check_shape(client.get("/v1/users/u0/recommendations?k=5").json(), 5)
    assert items[0] not in again
    assert again == _expected(store, user, item, "u0", {"i0", "i1", "i2", items[0]}, 5)


def test_exclude_seen_false_ranks_every_item(
    client: TestClient, store: Store, trained: tuple[torch.Tensor, ...]
) -> None:
    user, item = trained
    body = client.get("/v1/users/u0/recommendations?k=1000&exclude_seen=false").json()
    assert _check_shape(body, 1000) == _expected(store, user, item, "u0", set(), 1000)
    assert len(body["items"]) == 10


def test_k_bounds_the_list(
    client: TestClient, store: Store, trained: tuple[torch.Tensor, ...]
) -> None:
    user, item = trained
    ranking = _expected(store, user, item, "u1", {"i3", "i4"}, 10)
    one = client.get("/v1/users/u1/recommendations?k=1").json()
    assert _check_shape(one, 1) == ranking[:1]
    default = client.get("/v1/users/u1/recommendations").json()
    assert _check_shape(default, 20) == ranking  # 10 items, 2 seen, default k 20


def _wide(client: TestClient, models: ModelWriter, settings: Settings) -> tuple[torch.Tensor, ...]:
    """30 items (more than the default k), users w0..w4 each seen 2 of them;
    version 1 served (with precomputed lists: once all 5 users are ranked)."""
    pairs = [(f"w{u}", f"j{(u * 2 + s) % 30}") for u in range(5) for s in range(2)]
    pairs += [(f"x{n}", f"j{n}") for n in range(30)]  # every item known to the store
    assert client.post("/v1/interactions", json=interactions(*pairs)).status_code == 202
    generator = torch.Generator().manual_seed(11)
    user, item = torch.randn(5, 5, generator=generator), torch.randn(30, 5, generator=generator)
    seen = {f"w{u}": [f"j{(u * 2 + s) % 30}" for s in range(2)] for u in range(5)}
    version = models.write(user=user, item=item, seen=seen)
    assert client.post(f"/v1/admin/models/{version}/activate", headers=ADMIN).status_code == 200
    if settings.precompute_depth:
        assert wait_for(lambda: _counted(client, "smlrec_ranked_users") == 5)
    return user, item


def test_default_k_is_20_on_both_endpoints(
    client: TestClient, store: Store, models: ModelWriter, settings: Settings
) -> None:
    user, item = _wide(client, models, settings)
    seen = {"w1": {"j2", "j3"}, "w3": {"j6", "j7"}}
    for uid, exclude in seen.items():
        body = client.get(f"/v1/users/{uid}/recommendations").json()
        assert _check_shape(body, 20) == _expected(store, user, item, uid, exclude, 20)
        assert len(body["items"]) == 20
    batch = client.post("/v1/recommendations", json={"user_ids": list(seen)}).json()["results"]
    for (uid, exclude), result in zip(seen.items(), batch, strict=True):
        assert result["user_id"] == uid and len(result["items"]) == 20
        assert _check_shape(result, 20) == _expected(store, user, item, uid, exclude, 20)


def test_batch_exclude_seen_false_ranks_seen_items_too(
    client: TestClient, store: Store, models: ModelWriter, settings: Settings
) -> None:
    user, item = _wide(client, models, settings)
    ids = ["w1", "w3", "stranger"]
    results = client.post("/v1/recommendations", json={
        "user_ids": ids, "k": 30, "exclude_seen": False}).json()["results"]
    assert [r["user_id"] for r in results] == ids
    for uid, result in zip(ids[:2], results, strict=False):
        assert _check_shape(result, 30) == _expected(store, user, item, uid, set(), 30)
        single = client.get(f"/v1/users/{uid}/recommendations",
                            params={"k": 30, "exclude_seen": "false"}).json()
        assert [e["item_id"] for e in result["items"]] == [e["item_id"] for e in single["items"]]
        assert [e["score"] for e in result["items"]] == pytest.approx(
            [e["score"] for e in single["items"]], rel=1e-5)
    excluded = client.post("/v1/recommendations", json={
        "user_ids": ["w1"], "k": 30}).json()["results"][0]  # exclude_seen defaults to true
    assert _check_shape(excluded, 30) == _expected(store, user, item, "w1", {"j2", "j3"}, 30)
    assert results[2]["fallback"] == "popularity"


def test_unknown_user_gets_the_models_popular_items(
    client: TestClient, trained: tuple[torch.Tensor, ...]
) -> None:
    body = client.get("/v1/users/stranger/recommendations?k=3").json()
    assert body["user_id"] == "stranger"
    assert body["fallback"] == "popularity"
    assert body["model_version"] == 1
    assert _check_shape(body, 3) == ["i3", "i0", "i5"]

    # a user new since the model, with an interaction logged: fold-in, less what the
    # database saw (tests/service/test_fold_in_service.py checks its ranking)
    client.post("/v1/interactions", json=interactions(("newcomer", "i3")))
    body = client.get("/v1/users/newcomer/recommendations?k=3").json()
    assert body["fallback"] == "fold_in" and "i3" not in _check_shape(body, 3)


def test_no_model_popularity_of_the_open_period(client: TestClient) -> None:
    body = client.get("/v1/users/u0/recommendations").json()
    assert body == {"user_id": "u0", "items": [], "model_version": None,
                    "fallback": "popularity"}
    client.post("/v1/interactions", json=interactions(
        ("a", "i3"), ("b", "i3"), ("c", "i3"), ("a", "i1"), ("b", "i1"), ("a", "i0")))
    body = client.get("/v1/users/nobody/recommendations").json()
    assert body["fallback"] == "popularity" and body["model_version"] is None
    assert _check_shape(body, 20) == ["i3", "i1", "i0"]
    body = client.get("/v1/users/c/recommendations?k=1").json()  # c saw i3
    assert [e["item_id"] for e in body["items"]] == ["i1"]


def test_batch_keeps_request_order(
    client: TestClient, store: Store, trained: tuple[torch.Tensor, ...]
) -> None:
    user, item = trained
    ids = ["u4", "stranger", "u0", "u4", "u2"]
    response = client.post("/v1/recommendations", json={"user_ids": ids, "k": 3})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["user_id"] for r in results] == ids
    assert [r["fallback"] for r in results] == [None, "popularity", None, None, None]
    assert {r["model_version"] for r in results} == {1}
    for result in results:
        single = client.get(f"/v1/users/{result['user_id']}/recommendations?k=3").json()
        assert _check_shape(result, 3) == _check_shape(single, 3)
        assert [e["score"] for e in result["items"]] == pytest.approx(
            [e["score"] for e in single["items"]], rel=1e-5)
    assert _check_shape(results[2], 3) == _expected(store, user, item, "u0",
                                                    {"i0", "i1", "i2"}, 3)


def test_batch_defaults_and_maximum(client: TestClient, trained: tuple[torch.Tensor, ...]) -> None:
    ids = [f"u{n % 7}" for n in range(1000)]  # u5 and u6 unknown
    response = client.post("/v1/recommendations", json={"user_ids": ids})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["user_id"] for r in results] == ids
    singles = {uid: client.get(f"/v1/users/{uid}/recommendations").json() for uid in set(ids)}
    for result in results:  # the defaults (k 20, exclude_seen true) of the single endpoint
        single = singles[result["user_id"]]
        assert [e["item_id"] for e in result["items"]] == [e["item_id"] for e in single["items"]]
        assert (result["fallback"], result["model_version"]) == (
            single["fallback"], single["model_version"])
    assert [len(results[n]["items"]) for n in range(7)] == [7, 8, 9, 8, 7, 4, 4]


@pytest.mark.parametrize("settings", [3], indirect=True)
def test_precomputed_lists_answer_exactly_when_they_can(
    client: TestClient, store: Store, trained: tuple[torch.Tensor, ...]
) -> None:
    """Lists of depth 3: a request is answered from its user's list when, once
    the items logged since the model are dropped, k of them are left (counted by
    smlrec_precomputed_answers); otherwise, and for k beyond the depth, it is
    scored. Either way the answer is the brute-force ranking."""
    user, item = trained
    seen = {"u0": {"i0", "i1", "i2"}, "u1": {"i3", "i4"}, "u2": {"i5"}, "u3": {"i6", "i7"},
            "u4": {"i8", "i9", "i3"}}
    outcomes = set()
    for k in (1, 2, 3, 5):
        for uid, exclude in seen.items():
            listed = _expected(store, user, item, uid, {"i0"} if uid == "u0" else set(), 3)
            from_list = k <= 3 and len(set(listed) - exclude) >= k
            before = _counted(client, "smlrec_precomputed_answers_total")
            body = client.get(f"/v1/users/{uid}/recommendations?k={k}").json()
            assert _check_shape(body, k) == _expected(store, user, item, uid, exclude, k)
            assert _counted(client, "smlrec_precomputed_answers_total") - before == from_list
            outcomes.add(from_list)
    assert outcomes == {True, False}  # both ways were taken

    before = _counted(client, "smlrec_precomputed_answers_total")
    ids = list(seen)
    results = client.post("/v1/recommendations", json={"user_ids": ids, "k": 1}).json()
    for uid, result in zip(ids, results["results"], strict=True):
        assert _check_shape(result, 1) == _expected(store, user, item, uid, seen[uid], 1)
    listed = [_expected(store, user, item, uid, {"i0"} if uid == "u0" else set(), 3)
              for uid in ids]
    assert _counted(client, "smlrec_precomputed_answers_total") - before == sum(
        bool(set(top) - seen[uid]) for uid, top in zip(ids, listed, strict=True))


@pytest.mark.parametrize("settings", [0], indirect=True)
def test_batch_requests_are_scored_on_a_bounded_pool(
    client: TestClient, trained: tuple[torch.Tensor, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many batch requests are in flight, their products run on at most
    one thread per CPU (each scoring thread keeps a score buffer of its own)."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import engine.recommender

    threads: set[str] = set()
    score = engine.recommender.top_k

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return score(*args, **kwargs)

    monkeypatch.setattr(engine.recommender, "top_k", recording)
    body = {"user_ids": [f"u{n % 7}" for n in range(50)], "k": 3}
    with ThreadPoolExecutor(12) as senders:
        codes = list(senders.map(lambda _: client.post("/v1/recommendations", json=body)
                                 .status_code, range(36)))
    assert codes == [200] * 36
    assert threads and all(name.startswith("smlrec-scoring") for name in threads)
    assert len(threads) <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("k", ["0", "1001", "-1", "two", "1.5"])
def test_k_out_of_range_is_422(client: TestClient, k: str) -> None:
    assert client.get(f"/v1/users/u0/recommendations?k={k}").status_code == 422
    response = client.post("/v1/recommendations", json={"user_ids": ["u0"], "k": k})
    assert response.status_code == 422


def test_k_limits_are_inclusive(
    client: TestClient, store: Store, trained: tuple[torch.Tensor, ...]
) -> None:
    user, item = trained
    for k in (1, 1000):
        response = client.get(f"/v1/users/u2/recommendations?k={k}")
        assert response.status_code == 200
        assert _check_shape(response.json(), k) == _expected(store, user, item, "u2", {"i5"}, k)
        batch = client.post("/v1/recommendations", json={"user_ids": ["u2"], "k": k})
        assert batch.status_code == 200
        assert [e["item_id"] for e in batch.json()["results"][0]["items"]] == [
            e["item_id"] for e in response.json()["items"]]


@pytest.mark.parametrize(
    "body",
    [{"user_ids": []}, {"user_ids": ["u"] * 1001}, {}, {"user_ids": "u0"},
     {"user_ids": [""]}, {"user_ids": ["x" * 129]}, {"user_ids": [7]},
     {"user_ids": ["u0"], "exclude_seen": "maybe"}],
    ids=["empty", "1001 ids", "missing", "not a list", "empty id", "long id", "number",
         "bad flag"],
)
def test_batch_bounds_are_422(client: TestClient, body: dict[str, Any]) -> None:
    assert client.post("/v1/recommendations", json=body).status_code == 422


def test_overlong_user_id_in_path_is_422(client: TestClient) -> None:
    assert client.get(f"/v1/users/{'x' * 129}/recommendations").status_code == 422


def test_client_key_guards_both_endpoints(
    tmp_path: Any, sqlite_url: str, make_client: ClientFactory
) -> None:
    with make_client(make_settings(tmp_path, sqlite_url, api_key="k3y")) as client:
        for headers, status in (({}, 401), ({"X-API-Key": "nope"}, 403),
                                ({"X-API-Key": "k3y"}, 200)):
            assert client.get("/v1/users/u/recommendations",
                              headers=headers).status_code == status
            assert client.post("/v1/recommendations", json={"user_ids": ["u"]},
                               headers=headers).status_code == status
