"""Hot swaps: a new active version is served within the poll interval, at once
when announced, and requests in flight never fail while versions change."""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service_testkit import (
    ADMIN,
    ModelWriter,
    TestClient,
    app_of,
    interactions,
    metric_value,
    served_version,
    wait_for,
)

from engine.holder import ModelHolder
from store import Store

USERS = [f"u{n}" for n in range(30)]
ITEMS = [f"i{n}" for n in range(200)]


def _log_some(client: TestClient) -> None:
    pairs = [(USERS[n % 30], ITEMS[(n * 7) % 200]) for n in range(600)]
    assert client.post("/v1/interactions", json=interactions(*pairs)).status_code == 202


def test_store_activation_is_picked_up_by_polling(
    client: TestClient, models: ModelWriter
) -> None:
    _log_some(client)
    first = models.write(seed=1)
    assert wait_for(lambda: served_version(client) == first, timeout=600)
    second = models.write(seed=2)
    assert wait_for(lambda: served_version(client) == second, timeout=600)


def test_announcement_wakes_the_swap(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    _log_some(client)
    version = models.write(seed=1)
    app_of(client).state.runtime.bus.publish_active(version)
    assert wait_for(lambda: served_version(client) == version, timeout=600)


def test_hot_swap_under_concurrent_requests(client: TestClient, models: ModelWriter) -> None:
    _log_some(client)
    versions = [models.write(seed=s, dim=16) for s in (1, 2, 3)]
    assert wait_for(lambda: served_version(client) == versions[-1])
    stop = threading.Event()
    failures: list[Any] = []
    seen_versions: set[int] = set()

    def hammer(worker: int) -> int:
        done = 0
        while not stop.is_set():
            user = USERS[(worker * 7 + done) % 30]
            if done % 3:
                response = client.get(f"/v1/users/{user}/recommendations?k=10")
                results = [response.json()] if response.status_code == 200 else []
            else:
                response = client.post("/v1/recommendations",
                                       json={"user_ids": [user, "stranger"], "k": 10})
                results = response.json()["results"] if response.status_code == 200 else []
            if response.status_code != 200:
                failures.append((response.status_code, response.text))
            for result in results:
                items = [e["item_id"] for e in result["items"]]
                if not items or len(set(items)) != len(items) or len(items) > 10:
                    failures.append(result)
                seen_versions.add(result["model_version"])
            if len({r["model_version"] for r in results}) > 1:
                failures.append(("one request, two versions", results))
            done += 1
        return done

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(hammer, n) for n in range(6)]
        for round_ in range(12):
            version = versions[round_ % 3]
            response = client.post(f"/v1/admin/models/{version}/activate", headers=ADMIN)
            assert response.status_code == 200
            assert served_version(client) == version
        stop.set()
        served = sum(f.result() for f in futures)
    assert not failures, failures[:3]
    assert served > 20
    assert seen_versions <= set(versions) and len(seen_versions) >= 2
    swaps = metric_value(client.get("/metrics").text, "smlrec_model_swaps_total")
    assert swaps >= 12


def test_a_swapped_out_version_is_freed_once_its_requests_are_answered(
    client: TestClient, models: ModelWriter
) -> None:
    """Nothing of the service keeps an old version once no request uses it: the
    micro-batcher, the batch endpoint's scoring pool, the ranking thread and the
    holder all let go (the batcher once kept the last batch's version while it
    waited, a model's worth of memory after every swap). Checked by reference
    counting alone: the collector is not run, and the service freezes the
    objects alive at each swap out of its reach anyway."""
    _log_some(client)
    first = models.write(seed=1, dim=16, activate=False)
    second = models.write(seed=2, dim=16, activate=False)
    holder = app_of(client).state.runtime.holder

    def score_some() -> None:  # exclude_seen=false: scored, not read from the lists
        for user in USERS[:5]:
            response = client.get(f"/v1/users/{user}/recommendations?k=5&exclude_seen=false")
            assert response.status_code == 200
        response = client.post("/v1/recommendations",
                               json={"user_ids": USERS, "k": 5, "exclude_seen": False})
        assert response.status_code == 200

    assert client.post(f"/v1/admin/models/{first}/activate", headers=ADMIN).status_code == 200
    score_some()
    old = weakref.ref(holder.current)
    assert old() is not None and old().version == first
    assert client.post(f"/v1/admin/models/{second}/activate", headers=ADMIN).status_code == 200
    assert wait_for(lambda: old() is None, timeout=600), "the old version is still referenced"
    score_some()
    assert holder.version == second


def _two_inactive_versions(client: TestClient, models: ModelWriter) -> tuple[Any, int, int]:
    """Some interactions logged, two versions written but not activated: the
    holder, the first version and the second."""
    _log_some(client)
    first = models.write(seed=1, activate=False)
    second = models.write(seed=2, activate=False)
    return app_of(client).state.runtime.holder, first, second


def test_swap_to_moves_forward_only_unless_explicit(
    client: TestClient, models: ModelWriter
) -> None:
    holder, old, new = _two_inactive_versions(client, models)
    assert holder.swap_to(new) is True
    taken = holder.current  # what a request in flight holds
    assert holder.swap_to(old) is False  # older, not activated: refused
    assert holder.version == new
    assert holder.swap_to(old, explicit=True) is True
    assert holder.version == old
    assert taken is not None and taken.version == new  # the old object is untouched


def test_preparers_run_before_the_swap_and_cannot_stop_it(
    client: TestClient, models: ModelWriter
) -> None:
    holder, first, second = _two_inactive_versions(client, models)
    assert holder.swap_to(first) is True
    seen: list[tuple[int, int | None]] = []  # (preparing, serving meanwhile)

    def prepare(model: Any) -> None:
        seen.append((model.version, holder.version))
        raise RuntimeError("a preparer that fails")

    holder.before_install(prepare)
    assert holder.swap_to(second) is True
    assert seen == [(second, first)] and holder.version == second
    assert holder.swap_to(second) is False and len(seen) == 1  # no swap: nothing prepared


def test_a_version_taken_up_from_the_store_is_staged_first_and_an_activation_wins(
    client: TestClient, models: ModelWriter, store: Store
) -> None:
    """A replica following the store stages the new version (its lists ranked)
    while the current one serves, then serves it; an activation during a stage
    serves at once, and the staged version is then not served. (A holder of its
    own over the app's store, so that only this test's calls sync it.)"""
    _, first, second = _two_inactive_versions(client, models)
    runtime = app_of(client).state.runtime
    holder = ModelHolder(runtime.store, runtime.artifacts, runtime.metrics)
    staged: list[tuple[int, int | None]] = []  # (staged, serving meanwhile)
    entered, release = threading.Event(), threading.Event()

    def stage(model: Any) -> None:
        staged.append((model.version, holder.version))
        entered.set()
        assert release.wait(60)

    holder.stage_with(stage)
    holder.activate(first, lambda: store.set_active_version(first))
    assert holder.version == first and not staged  # an activation is not staged
    store.set_active_version(second)
    with ThreadPoolExecutor(1) as pool:
        following = pool.submit(holder.sync)
        assert entered.wait(60) and holder.version == first  # staging: first serves
        release.set()
        assert following.result(60) is True
    assert holder.version == second and staged == [(second, first)]

    third = models.write(seed=3, activate=False)
    store.set_active_version(third)
    entered.clear()
    release.clear()
    with ThreadPoolExecutor(1) as pool:
        following = pool.submit(holder.sync)
        assert entered.wait(60)
        holder.activate(first, lambda: store.set_active_version(first))  # not held up
        assert holder.version == first
        release.set()
        assert following.result(60) is False
    assert holder.version == first and staged[-1] == (third, second)


def test_a_rollback_to_an_earlier_period_is_served_from_memory_at_once(
    client: TestClient, models: ModelWriter, store: Store
) -> None:
    _log_some(client)
    closed = store.close_period()
    assert closed is not None
    _log_some(client)  # into the next period
    old = models.write(seed=1, activate=False, period_id=closed.period_id)
    new = models.write(seed=2, activate=False, period_id=closed.period_id + 1)
    runtime = app_of(client).state.runtime
    assert client.post(f"/v1/admin/models/{new}/activate", headers=ADMIN).status_code == 200
    assert wait_for(lambda: not runtime.recent.covers(closed.period_id))  # only what is new
    assert client.post(f"/v1/admin/models/{old}/activate", headers=ADMIN).status_code == 200
    assert runtime.recent.covers(closed.period_id)  # before the activation answered
