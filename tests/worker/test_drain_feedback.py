"""The worker's drain stores each row's type and weight as the stream carries them,
and reads entries written before rows had either as views of weight 1 (real Redis)."""

from __future__ import annotations

import orjson
import pytest
import redis
from worker_testkit import REDIS_URL

from store import NewInteraction, RedisBus, Store
from worker.ingest import StreamDrainer

pytestmark = pytest.mark.redis


def test_the_drain_keeps_type_and_weight_and_reads_old_entries(
    sqlite_store: Store, redis_prefix: str, redis_client: redis.Redis
) -> None:
    api, worker_bus = RedisBus(REDIS_URL, prefix=redis_prefix), RedisBus(REDIS_URL,
                                                                        prefix=redis_prefix)
    try:
        old = orjson.dumps([["u1", "i1", 10.0, "e1"], ["u2", "i1", 11.0, None]])
        redis_client.xadd(api.stream, {"rows": old})  # as an API before types wrote it
        api.append_unseen([NewInteraction("u1", "i2", 12.0, "e3", "purchase", 7.5),
                           NewInteraction("u3", "i2", 13.0, None)])
        drainer = StreamDrainer(sqlite_store, worker_bus, "w1")
        while drainer.drain():
            pass
        rows = sqlite_store.interactions_page(0, sqlite_store.last_interaction_id(), 10)
        assert [(r.user_id, r.item_id, r.ts, r.type, r.weight) for r in rows] == [
            ("u1", "i1", 10.0, "view", 1.0), ("u2", "i1", 11.0, "view", 1.0),
            ("u1", "i2", 12.0, "purchase", 7.5), ("u3", "i2", 13.0, "view", 1.0)]
        assert rows[0].event_id == "e1" and rows[2].event_id == "e3"
        assert rows[1].event_id is not None  # the stream entry's id and the row's place
    finally:
        api.close()
        worker_bus.close()
