"""The fast path of ``GET /v1/users/{user_id}/recommendations`` (service.fastpath),
checked against the documented route on one running service: the same request
is sent once in a form the fast path answers and once in a form it hands to the
route (``exclude_seen=yes``/``no``, which the route reads as true/false), and
the answers must be byte for byte the same. A spy on the fast path records
which requests it answered; every request it must not answer (bad ``k``, bad
ids, a missing or wrong client key) gets the route's own 4xx."""

from __future__ import annotations

from collections.abc import Iterator
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

from service.fastpath import RecommendationsFastPath
from store import Store

HISTORY = [("u0", "i0"), ("u0", "i1"), ("u1", "i3"), ("u2", "i5"), ("u3", "i6"), ("u4", "i9")]


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each request that reached the fast path: True if it answered it."""
    calls: list[bool] = []
    original = RecommendationsFastPath._answer

    async def spy(self: RecommendationsFastPath, scope: Any, send: Any) -> bool:
        result = await original(self, scope, send)
        calls.append(result)
        return result

    monkeypatch.setattr(RecommendationsFastPath, "_answer", spy)
    return calls


def _serve_model(client: TestClient, store: Store, tmp_path: Path) -> None:
    assert client.post("/v1/interactions", json=interactions(*HISTORY)).status_code == 202
    generator = torch.Generator().manual_seed(3)
    models = ModelWriter(store, tmp_path / "models")
    version = models.write(user=torch.randn(5, 5, generator=generator),
                           item=torch.randn(6, 5, generator=generator),
                           seen={"u0": ["i0"]}, popular=["i3", "i0", "i5"])
    assert client.post(f"/v1/admin/models/{version}/activate", headers=ADMIN).status_code == 200
    # Scores from the precomputed lists and from the batcher agree only to float
    # rounding (products of different batch sizes); wait until every user is
    # listed, so both forms of a request read the same lists.
    assert wait_for(lambda: metric_value(client.get("/metrics").text, "smlrec_ranked_users") == 5,
                    timeout=30)


@pytest.fixture
def served(client: TestClient, store: Store, tmp_path: Path) -> Iterator[TestClient]:
    _serve_model(client, store, tmp_path)
    yield client


@pytest.mark.parametrize("user", ["u0", "u3", "stranger"])
@pytest.mark.parametrize("k", [None, 1, 5, 1000])
@pytest.mark.parametrize("flag", [None, "true", "false", "1", "0"])
def test_fast_answers_equal_the_route(
    served: TestClient, answered: list[bool], user: str, k: int | None, flag: str | None
) -> None:
    query = {"k": k} if k is not None else {}
    fast = served.get(f"/v1/users/{user}/recommendations",
                      params={**query, **({"exclude_seen": flag} if flag else {})})
    word = {None: "yes", "true": "yes", "1": "yes", "false": "no", "0": "no"}[flag]
    route = served.get(f"/v1/users/{user}/recommendations",
                       params={**query, "exclude_seen": word})
    assert answered == [True, False]
    assert fast.status_code == route.status_code == 200
    assert fast.content == route.content
    assert fast.headers["content-type"] == route.headers["content-type"]
    assert fast.headers["content-length"] == route.headers["content-length"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/users/u0/recommendations?k=0", 422),
        ("/v1/users/u0/recommendations?k=1001", 422),
        ("/v1/users/u0/recommendations?k=abc", 422),
        ("/v1/users/u0/recommendations?k=", 422),
        ("/v1/users/u0/recommendations?k=-3", 422),
        ("/v1/users/u0/recommendations?k=99999", 422),
        ("/v1/users/u0/recommendations?exclude_seen=maybe", 422),
        (f"/v1/users/{'x' * 129}/recommendations", 422),
        ("/v1/users/a%00b/recommendations", 422),
        ("/v1/users/a%2Fb/recommendations", 404),
        ("/v1/users/u0/recommendations/", 307),  # the framework's redirect to the route
        ("/v1/users/u0/recommendations?k=5&k=0", 422),  # the last value counts, as in the route
    ],
)
def test_everything_else_reaches_the_route(
    served: TestClient, answered: list[bool], path: str, status: int
) -> None:
    response = served.get(path, follow_redirects=False)
    assert response.status_code == status, response.text
    assert True not in answered


def test_the_client_key_is_checked_before_answering(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory, answered: list[bool]
) -> None:
    settings = make_settings(tmp_path, sqlite_url, api_key="client-secret")
    store = Store.from_url(sqlite_url)
    try:
        with make_client(settings) as client:
            headers = {"X-API-Key": "client-secret"}
            assert client.post("/v1/interactions", json=interactions(*HISTORY),
                               headers=headers).status_code == 202
            models = ModelWriter(store, tmp_path / "models")
            version = models.write(user=torch.randn(5, 5), item=torch.randn(6, 5))
            assert client.post(f"/v1/admin/models/{version}/activate",
                               headers=ADMIN).status_code == 200
            answered.clear()
            assert client.get("/v1/users/u1/recommendations").status_code == 401
            assert client.get("/v1/users/u1/recommendations",
                              headers={"X-API-Key": "wrong"}).status_code == 403
            assert answered == [False, False]
            ok = client.get("/v1/users/u1/recommendations", headers=headers)
            assert ok.status_code == 200 and ok.json()["model_version"] == version
            assert answered[-1] is True
    finally:
        store.close()


def test_fast_answers_are_counted_under_the_route(served: TestClient, answered: list[bool]) -> None:
    for _ in range(3):
        assert served.get("/v1/users/u1/recommendations?k=2").status_code == 200
    assert answered == [True, True, True]
    text = served.get("/metrics").text
    name = ('smlrec_http_requests_total{method="GET",'
            'route="/v1/users/{user_id}/recommendations",status="200"}')
    assert metric_value(text, name) == 3
