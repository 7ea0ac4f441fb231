"""Redis holds only what is in flight (distributed mode, real Redis).

Checked in Redis itself: once the worker has stored the rows (checked in the
database: each acknowledged row once), the stream holds no entry, and each
de-duplication mark expires within the configured window instead of days.
"""

from __future__ import annotations

import pytest
import redis
from worker_testkit import REDIS_URL

from smlrec.settings import Settings
from store import NewInteraction, RedisBus, Store, make_bus
from worker.ingest import StreamDrainer

pytestmark = pytest.mark.redis

WINDOW_S = 90


def test_stored_entries_leave_the_stream_and_marks_expire_within_the_window(
    sqlite_store: Store, redis_prefix: str, redis_client: redis.Redis
) -> None:
    settings = Settings(redis_url=REDIS_URL, redis_prefix=redis_prefix,
                        dedup_window_seconds=WINDOW_S)
    api, worker_bus = make_bus(settings), make_bus(settings)
    assert isinstance(api, RedisBus) and isinstance(worker_bus, RedisBus)
    try:
        for r in range(30):
            rows = [NewInteraction(f"u{n}", f"i{(n * 3) % 50}", 1.7e9 + n, f"e{r}-{n}")
                    for n in range(100)]
            assert api.append_unseen(rows) == 100
        assert api.append_unseen([NewInteraction("u1", "i1", 1.7e9, "e0-1")]) == 0  # a repeat
        ingestor = StreamDrainer(sqlite_store, worker_bus, "w1")
        while ingestor.drain():
            pass
        assert sqlite_store.count_open() == 3000
        assert redis_client.xlen(api.stream) == 0  # every entry was stored, then trimmed
        assert api.backlog() == 0
        ttls = [redis_client.ttl(key) for key in
                redis_client.scan_iter(match=f"{redis_prefix}:event:*", count=1000)]
        assert len(ttls) == 3000 and all(0 < ttl <= WINDOW_S for ttl in ttls)

        # an entry delivered and not yet acknowledged stays (a worker may still store it)
        api.append([NewInteraction("u1", "i2", 1.7e9, "pending")])
        assert worker_bus.read("w2", count=1, block_ms=0)
        api.append([NewInteraction("u1", "i3", 1.7e9, "undelivered")])
        worker_bus.trim()
        assert redis_client.xlen(api.stream) == 2
        assert api.backlog() == 2
    finally:
        api.close()
        worker_bus.close()
