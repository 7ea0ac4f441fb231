"""The asynchronous client against the real app over HTTP (embedded mode, SQLite):
the same calls as the blocking one, driven by ``asyncio.run``."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import ADMIN_TOKEN, AsyncCounting, paths, serve

from smlrec.client import (
    AsyncClient,
    Conflict,
    Forbidden,
    Ingested,
    Interaction,
    InvalidRequest,
    NotFound,
    Unauthorized,
    WaitTimeout,
)
from smlrec.settings import Settings


def feedback() -> list[Interaction]:
    return [Interaction(f"u{u}", f"i{(u * 3 + j) % 25}", timestamp=1000 + u, event_id=f"{u}-{j}")
            for u in range(20) for j in range(8)]


async def served(client: AsyncClient, version: int, timeout: float = 600.0) -> None:
    """Until the app serves ``version`` (it polls the store for the worker's models)."""
    deadline = time.monotonic() + timeout
    while (await client.ready()).model_version != version:
        assert time.monotonic() < deadline, f"version {version} not served in {timeout} s"
        await asyncio.sleep(0.02)


async def train_and_serve(client: AsyncClient) -> None:
    assert await client.add_interactions(feedback()) == Ingested(160, 0, 0)
    queued = await client.retrain()
    assert (await client.job(queued.job_id)).period_id == queued.period_id == 0
    job = await client.wait_job(queued.job_id, timeout=600)
    assert (job.status, job.model_version) == ("succeeded", 1)
    assert [(m.version, m.active) for m in await client.models()] == [(1, True)]
    await served(client, 1)
    top = await client.recommend("u1", k=4)
    assert (top.model_version, top.fallback, len(top.items)) == (1, None, 4)
    many = await client.recommend_many(["nobody", "u1"], k=4)
    assert [r.fallback for r in many] == ["popularity", None] and many[1] == top
    similar = await client.similar_items("i1", k=3)
    assert similar.model_version == 1 and len(similar.items) == 3
    assert (await client.activate(1)).active and (await client.pin(1)).pinned
    assert not (await client.unpin(1)).pinned
    assert (await client.strategies()).serving == "sml"
    assert (await client.choose_strategy("sml")).serving == "sml"
    assert [p.status for p in await client.periods()] == ["trained", "open"]
    with pytest.raises(Conflict, match="empty"):
        await client.retrain()
    with pytest.raises(Conflict):
        await client.retry_period(0)


async def export_and_delete(client: AsyncClient) -> None:
    exported = [row async for row in client.export_interactions(since=1019)]
    assert {(r.user_id, r.timestamp) for r in exported} == {("u19", 1019.0)}
    assert len(exported) == len({r.item_id for r in exported})
    deleted = await client.delete_user("u19")
    assert deleted.deleted_interactions == len(exported)
    assert [row async for row in client.export_interactions(since=1019)] == []
    with pytest.raises(NotFound):
        await client.delete_user("u19")
    assert (await client.recommend("u19")).fallback == "popularity"


def test_every_call_against_a_trained_model(settings: Settings) -> None:
    async def scenario(url: str) -> None:
        async with AsyncClient(url, admin_token=ADMIN_TOKEN) as client:
            await train_and_serve(client)
            await export_and_delete(client)
            assert await client.health() and (await client.ready()).model_version == 1
            assert "smlrec_" in await client.prometheus_metrics()

    with serve(settings, run_worker=True) as url:
        asyncio.run(scenario(url))


def test_refusals_batches_and_timeouts(url: str) -> None:
    transport = AsyncCounting()

    async def scenario() -> None:
        async with AsyncClient(url, admin_token=ADMIN_TOKEN, transport=transport) as client:
            with pytest.raises(NotFound):
                await client.job("nope")
            with pytest.raises(InvalidRequest) as bad:
                await client.add_interactions([{"user_id": "", "item_id": "i1"}])
            assert bad.value.status == 422 and bad.value.detail[0]["loc"][-1] == "user_id"
            assert len(transport.sent) == 2
            transport.sent.clear()
            rows = [Interaction(f"u{r % 300}", f"i{r % 50}", event_id=str(r))
                    for r in range(10_001)]
            assert await client.add_interactions(rows) == Ingested(10_001, 0, 0)
            assert paths(transport.sent) == [("POST", "/v1/interactions")] * 2
            queued = await client.retrain()  # no worker: it stays queued
            with pytest.raises(WaitTimeout):
                await client.wait_job(queued.job_id, timeout=0.1, poll_s=0.02)
        async with AsyncClient(url) as anonymous:
            with pytest.raises(Unauthorized):
                await anonymous.strategies()
        async with AsyncClient(url, admin_token="wrong") as intruder:
            with pytest.raises(Forbidden):
                await intruder.delete_user("u1")

    asyncio.run(scenario())
