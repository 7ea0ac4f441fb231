"""The blocking client against the real app over HTTP (embedded mode, SQLite): every
endpoint, the typed results, the exceptions each status maps to, and batching."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN, API_KEY, Counting, make_settings, paths, serve, wait_for

from smlrec.client import (
    Client,
    Conflict,
    Forbidden,
    Ingested,
    Interaction,
    InvalidRequest,
    NotFound,
    QueuedJob,
    ScoredItem,
    Unauthorized,
    WaitTimeout,
)
from smlrec.settings import Settings

N_USERS, N_ITEMS, PER_USER = 30, 40, 10


def seen_by(user: int) -> set[str]:
    return {f"i{(user * 7 + j) % N_ITEMS}" for j in range(PER_USER)}


def feedback() -> list[Interaction]:
    return [Interaction(f"u{u}", item, timestamp=881250949 + u, event_id=f"e-{u}-{item}")
            for u in range(N_USERS) for item in sorted(seen_by(u))]


def test_a_trained_model_is_read_back_through_every_serving_call(settings: Settings) -> None:
    with serve(settings, run_worker=True) as url, Client(url, admin_token=ADMIN_TOKEN) as client:
        assert client.add_interactions(feedback()) == Ingested(N_USERS * PER_USER, 0, 0)
        queued = client.retrain()
        assert isinstance(queued, QueuedJob) and queued.period_id == 0
        assert client.job(queued.job_id).job_id == queued.job_id
        job = client.wait_job(queued.job_id, timeout=600)
        assert (job.status, job.model_version, job.error) == ("succeeded", 1, None)
        [model] = client.models()
        assert (model.version, model.period_id, model.active, model.metrics) == (1, 0, True, None)
        wait_for(lambda: client.ready().model_version == 1)  # the app polls for new versions

        top = client.recommend("u1", k=5)
        assert (top.user_id, top.model_version, top.fallback, len(top.items)) == ("u1", 1, None, 5)
        assert all(isinstance(i, ScoredItem) for i in top.items)
        scores = [score for _, score in top.items]
        assert scores == sorted(scores, reverse=True)
        assert not {item for item, _ in top.items} & seen_by(1)
        with_seen = client.recommend("u1", k=N_ITEMS, exclude_seen=False)
        assert seen_by(1) <= {i.item_id for i in with_seen.items}
        assert client.recommend("stranger", k=3).fallback == "popularity"

        many = client.recommend_many(["u2", "stranger", "u1"], k=5)
        assert [r.user_id for r in many] == ["u2", "stranger", "u1"]
        assert many[2] == top and many[1].fallback == "popularity"

        similar = client.similar_items("i3", k=4)
        assert (similar.item_id, similar.model_version, len(similar.items)) == ("i3", 1, 4)
        assert "i3" not in {i.item_id for i in similar.items}
        with pytest.raises(NotFound):
            client.similar_items("no-such-item")

        assert client.activate(1).active
        assert client.pin(1).pinned and not client.unpin(1).pinned
        overview = client.strategies()
        assert (overview.serving, overview.challengers, overview.promotion) == (
            "sml", (), "manual")
        assert client.choose_strategy("sml").serving == "sml"
        with pytest.raises(Conflict, match="neither serving nor a challenger"):
            client.choose_strategy("spmf")
        assert [(p.period_id, p.status) for p in client.periods()] == [
            (0, "trained"), (1, "open")]


def test_jobs_periods_export_and_user_deletion(url: str) -> None:
    """No worker here: a queued retrain stays queued."""
    with Client(url, admin_token=ADMIN_TOKEN) as client:
        with pytest.raises(Conflict, match="empty"):
            client.retrain()
        rows = [{"user_id": "u1", "item_id": "i1", "timestamp": 100, "event_id": "a"},
                {"user_id": "u1", "item_id": "i2", "timestamp": 200, "type": "like",
                 "weight": 2.5},
                Interaction("u2", "i1", timestamp="1970-01-01T00:05:00Z", event_id="b")]
        assert client.add_interactions(rows) == Ingested(3, 0, 0)
        assert [(p.period_id, p.status, p.n_interactions) for p in client.periods()] == [
            (0, "open", 3)]

        exported = list(client.export_interactions())
        assert [(r.user_id, r.item_id, r.timestamp, r.type, r.weight, r.event_id)
                for r in exported] == [("u1", "i1", 100.0, "view", 1.0, "a"),
                                       ("u1", "i2", 200.0, "like", 2.5, None),
                                       ("u2", "i1", 300.0, "view", 1.0, "b")]
        assert [r.item_id for r in client.export_interactions(since=150)] == ["i2", "i1"]

        queued = client.retrain()
        assert client.job(queued.job_id).status == "queued"
        with pytest.raises(WaitTimeout):
            client.wait_job(queued.job_id, timeout=0.2, poll_s=0.05)
        with pytest.raises(Conflict, match="queued"):
            client.retrain()
        with pytest.raises(Conflict):
            client.retry_period(queued.period_id)
        with pytest.raises(NotFound):
            client.retry_period(99)

        deleted = client.delete_user("u1")
        assert (deleted.user_id, deleted.deleted_interactions) == ("u1", 2)
        assert [r.user_id for r in client.export_interactions()] == ["u2"]
        with pytest.raises(NotFound) as missing:
            client.delete_user("u1")
        assert missing.value.status == 404 and "u1" in str(missing.value.detail)


def test_each_refusal_is_its_own_exception_and_is_sent_once(url: str) -> None:
    transport = Counting()
    with Client(url, admin_token=ADMIN_TOKEN, transport=transport) as client:
        with pytest.raises(NotFound) as unknown_job:
            client.job("no-such-job")
        assert unknown_job.value.status == 404 and "no-such-job" in unknown_job.value.detail
        with pytest.raises(NotFound):
            client.activate(7)
        with pytest.raises(InvalidRequest) as bad_row:
            client.add_interactions([{"user_id": "u1", "item_id": "i1", "colour": "red"}])
        assert bad_row.value.status == 422
        assert bad_row.value.detail[0]["loc"] == ["body", "interactions", 0, "colour"]
        with pytest.raises(InvalidRequest) as bad_k:
            client.recommend("u1", k=0)
        assert bad_k.value.detail[0]["loc"] == ["query", "k"]
        assert len(transport.sent) == 4  # a 4xx is never retried
    with Client(url) as anonymous, pytest.raises(Unauthorized) as no_token:
        anonymous.models()
    assert no_token.value.status == 401
    with Client(url, admin_token="wrong") as intruder, pytest.raises(Forbidden) as bad_token:
        intruder.periods()
    assert bad_token.value.status == 403
    with Client(url) as client, pytest.raises(ValueError, match="batch_size"):
        client.add_interactions([Interaction("u", "i")], batch_size=10_001)


def test_the_client_key_goes_with_client_calls_only(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, api_key=API_KEY)
    rows = [Interaction("u1", "i1")]
    with serve(settings) as url:
        with Client(url) as keyless:
            with pytest.raises(Unauthorized):
                keyless.add_interactions(rows)
            with pytest.raises(Unauthorized):
                keyless.recommend("u1")
            assert keyless.health() and keyless.ready().ready  # operations take no key
        with Client(url, api_key="wrong") as wrong, pytest.raises(Forbidden):
            wrong.recommend_many(["u1"])
        with Client(url, api_key=API_KEY) as client:
            assert client.add_interactions(rows).accepted == 1
            assert client.recommend("u1").fallback == "popularity"
            with pytest.raises(Unauthorized):  # admin calls take the admin token
                client.periods()


def test_interactions_and_user_ids_are_split_into_requests_the_api_takes(url: str) -> None:
    transport = Counting()
    n = 25_001
    rows = ({"user_id": f"u{r % 500}", "item_id": f"i{r % 97}", "event_id": f"e{r}"}
            for r in range(n))  # an iterator: read one request at a time
    with Client(url, admin_token=ADMIN_TOKEN, transport=transport) as client:
        assert client.add_interactions(rows) == Ingested(n, 0, 0)
        assert paths(transport.sent) == [("POST", "/v1/interactions")] * 3
        assert [p.n_interactions for p in client.periods()] == [n]
        again = client.add_interactions(
            Interaction(f"u{r % 500}", f"i{r % 97}", event_id=f"e{r}") for r in range(12_000))
        assert again == Ingested(0, 12_000, 0)
        assert client.add_interactions([]) == Ingested(0, 0, None)

        transport.sent.clear()
        users = [f"u{n}" for n in range(2_345)]
        results = client.recommend_many(users, k=3)
        assert [r.user_id for r in results] == users
        assert paths(transport.sent) == [("POST", "/v1/recommendations")] * 3
        assert client.recommend_many([]) == []


def test_category_is_sent_only_when_asked_for(url: str) -> None:
    transport = Counting()
    with Client(url, transport=transport) as client:
        client.recommend("u1", k=3)
        client.recommend("u1", k=3, category="jazz")
        client.recommend_many(["u1"], category="jazz")
        client.recommend_many(["u1"])
    queries = [dict(request.url.params) for request in transport.sent]
    assert queries == [{"k": "3", "exclude_seen": "true"},
                       {"k": "3", "exclude_seen": "true", "category": "jazz"},
                       {"category": "jazz"}, {}]


def test_operations(url: str) -> None:
    with Client(url) as client:
        assert client.health() is True
        ready = client.ready()
        assert (ready.ready, ready.database, ready.redis, ready.model_version) == (
            True, "ok", "not configured", None)
        assert "smlrec_" in client.prometheus_metrics()


def test_item_metadata_is_stored_and_read_back(url: str) -> None:
    with Client(url, admin_token=ADMIN_TOKEN) as client:
        stored = client.set_item("catalogue-1", ["jazz", "live"], hidden=True)
        assert (stored.item_id, stored.categories, stored.hidden) == (
            "catalogue-1", ("jazz", "live"), True)
        assert client.item("catalogue-1") == stored
        assert client.set_item("catalogue-1").categories == ()  # replaced, not merged
        with pytest.raises(NotFound):
            client.item("never-seen")
        with pytest.raises(InvalidRequest):
            client.set_item("catalogue-1", ["jazz", "jazz"])
