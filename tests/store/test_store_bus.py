"""The bus: the in-process one and the Redis one behave alike.

``bus_pair`` gives two handles on one bus (for Redis: two clients, as two
processes would hold)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from smlrec.settings import Settings
from store import BusUnavailable, InProcessBus, NewInteraction, RedisBus, make_bus
from store.bus import Bus
from store.bus_redis import EVENT_TTL_S

BusPair = tuple[Bus, Bus]


def _rows(n: int, tag: str = "e") -> list[NewInteraction]:
    return [
        NewInteraction(f"u{i % 13}", f"i{i % 7}", 1.7e9 + i, f"{tag}{i}" if i % 2 else None)
        for i in range(n)
    ]


def _wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _announced(publisher: Bus, got: list[int], version: int) -> bool:
    """Publish ``version`` (again, until a subscriber that may still be
    connecting has it): whether it arrived."""
    if version not in got:
        publisher.publish_active(version)
    return version in got


def test_publish_reaches_subscribers_until_they_stop(bus_pair: BusPair) -> None:
    publisher, subscriber = bus_pair
    got: list[int] = []
    stop = subscriber.subscribe_active(got.append)
    publisher.publish_active(5)
    publisher.publish_active(6)
    assert _wait_for(lambda: got == [5, 6]), got
    stop()
    stop()  # idempotent
    # a second subscriber marks when 7 has been delivered: the stopped one has not got it
    witness: list[int] = []
    stop_witness = subscriber.subscribe_active(witness.append)
    assert _wait_for(lambda: _announced(publisher, witness, 7)), witness
    stop_witness()
    assert got == [5, 6]


def test_a_failing_subscriber_does_not_stop_delivery(bus_pair: BusPair) -> None:
    publisher, subscriber = bus_pair
    got: list[int] = []

    def flaky(version: int) -> None:
        if version == 1:
            raise RuntimeError("cannot load")
        got.append(version)

    stop = subscriber.subscribe_active(flaky)
    publisher.publish_active(1)
    publisher.publish_active(2)
    assert _wait_for(lambda: got == [2]), got
    stop()


def test_append_read_ack(bus_pair: BusPair) -> None:
    api, worker = bus_pair
    first, second = _rows(1000, "a"), _rows(3, "b")
    assert api.append(first) == 1000
    assert api.append(second) == 3
    assert api.append([]) == 0
    entries = worker.read("w1", count=10, block_ms=100)
    assert [rows for _, rows in entries] == [first, second]
    assert worker.pending_count() == 2
    # not acknowledged: the same consumer gets them again first
    again = worker.read("w1", count=10, block_ms=0)
    assert [eid for eid, _ in again] == [eid for eid, _ in entries]
    assert worker.ack([entries[0][0]]) == 1
    assert [eid for eid, _ in worker.read("w1", count=10, block_ms=0)] == [entries[1][0]]
    assert worker.ack([eid for eid, _ in entries]) == 1
    assert worker.ack([]) == 0
    assert worker.read("w1", count=10, block_ms=0) == []
    assert worker.pending_count() == 0


def test_read_respects_count_and_waits_for_new_entries(bus_pair: BusPair) -> None:
    api, worker = bus_pair
    for k in range(3):
        api.append(_rows(2, f"c{k}"))
    batch = worker.read("w1", count=2, block_ms=0)
    assert len(batch) == 2
    worker.ack([eid for eid, _ in batch])
    rest = worker.read("w1", count=2, block_ms=0)
    assert len(rest) == 1
    worker.ack([eid for eid, _ in rest])

    started = time.monotonic()
    assert worker.read("w1", count=5, block_ms=200) == []
    assert time.monotonic() - started >= 0.15  # it waited (a lower bound: slowness can't fail it)

    # a blocked read returns with the entry appended meanwhile (not empty at the end of its wait)
    timer = threading.Timer(0.2, lambda: api.append(_rows(1, "late")))
    timer.start()
    woke = worker.read("w1", count=5, block_ms=60_000)
    timer.join()
    assert [rows for _, rows in woke] == [_rows(1, "late")]


def test_entries_of_a_dead_consumer_are_claimed(bus_pair: BusPair) -> None:
    api, survivor = bus_pair
    api.append(_rows(4, "x"))
    api.append(_rows(2, "y"))
    taken = api.read("dead-worker", count=10, block_ms=0)  # ... and it dies, no ack
    assert len(taken) == 2
    assert survivor.read("survivor", count=10, block_ms=0) == []
    assert survivor.claim_stale("survivor", min_idle_ms=60_000) == []  # not idle long enough
    time.sleep(0.15)
    claimed = survivor.claim_stale("survivor", min_idle_ms=100)
    assert [eid for eid, _ in claimed] == [eid for eid, _ in taken]
    assert [rows for _, rows in claimed] == [rows for _, rows in taken]
    redelivered = survivor.read("survivor", count=10, block_ms=0)
    assert [eid for eid, _ in redelivered] == [eid for eid, _ in taken]
    assert survivor.ack([eid for eid, _ in redelivered]) == 2
    assert survivor.pending_count() == 0
    assert api.read("dead-worker", count=10, block_ms=0) == []


def test_leader_lock_is_exclusive_and_refreshed_only_by_its_owner(bus_pair: BusPair) -> None:
    one, two = bus_pair
    leader = one.leader_lock("worker", ttl_s=5.0)
    standby = two.leader_lock("worker", ttl_s=5.0)
    other_name = two.leader_lock("something-else", ttl_s=5.0)
    assert leader.acquire()
    assert not standby.acquire()
    assert not standby.refresh()
    assert other_name.acquire()
    assert leader.refresh()
    standby.release()  # not the owner: no effect
    assert not standby.acquire()
    assert not standby.acquire(blocking=True, timeout=0.2)
    threading.Timer(0.2, leader.release).start()
    assert standby.acquire(blocking=True, timeout=60.0)
    assert not leader.refresh()
    standby.release()
    other_name.release()


def test_leader_lock_lapses_after_its_ttl(bus_pair: BusPair) -> None:
    one, two = bus_pair
    dead = one.leader_lock("worker", ttl_s=3.0)
    assert dead.acquire()
    successor = two.leader_lock("worker", ttl_s=30.0)
    assert not successor.acquire()
    # the holder never refreshes: the lock lapses and the successor takes it
    assert _wait_for(successor.acquire), "the lock never lapsed"
    assert not dead.refresh()
    successor.release()


def test_append_unseen_appends_and_marks_what_is_new(bus_pair: BusPair) -> None:
    one, two = bus_pair
    first = [NewInteraction("u1", "i1", 1.7e9, "a"), NewInteraction("u1", "i2", 1.7e9 + 0.25),
             NewInteraction("u2", "i1", 1.7e9 + 1, "b")]
    assert one.append_unseen(first) == 3
    # "a" is marked: the rest goes in, in order; rows without an id always do
    second = [NewInteraction("u3", "i3", 1.7e9 + 2, "c"), NewInteraction("u1", "i1", 1.7e9, "a"),
              NewInteraction("u4", "i4", 1.7e9 + 3), NewInteraction("u5", "i5", 1.7e9 + 4, "d")]
    assert two.append_unseen(second) == 3
    assert one.append_unseen([NewInteraction("u1", "i1", 1.7e9, "a")]) == 0  # all marked
    assert one.append_unseen([]) == 0
    entries = two.read("w", count=10, block_ms=100)
    assert [rows for _, rows in entries] == [first, [second[0], second[2], second[3]]]
    assert one.append_unseen([second[0], second[3]]) == 0  # "c" and "d" marked now


@pytest.mark.redis
def test_a_failed_append_marks_nothing(
    redis_bus_factory: Callable[[], RedisBus], redis_client: redis.Redis
) -> None:
    """The look-up, the append and the marks are one script: when the append
    fails (here the stream key holds a string), no id is marked, so a retry is
    not told its own rows were duplicates."""
    bus = redis_bus_factory()
    redis_client.set(bus.stream, "not a stream")
    rows = [NewInteraction("u1", "i1", 1.7e9, "x1"), NewInteraction("u2", "i2", 1.7e9, "x2")]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        bus.append_unseen(rows)
    assert redis_client.exists(bus.key("event", "x1"), bus.key("event", "x2")) == 0
    redis_client.delete(bus.stream)
    assert bus.append_unseen(rows) == 2
    assert [r for _, r in bus.read("w", count=5, block_ms=100)] == [rows]


@pytest.mark.redis
def test_ping_and_make_bus(redis_url: str) -> None:
    assert isinstance(make_bus(Settings()), InProcessBus)
    bus = make_bus(Settings(redis_url=redis_url))
    try:
        assert isinstance(bus, RedisBus)
        assert bus.prefix == "smlrec"
        bus.ping()
    finally:
        bus.close()
    InProcessBus().ping()


@pytest.mark.redis
def test_deployments_sharing_a_redis_keep_apart_by_prefix(
    redis_url: str, redis_prefix: str
) -> None:
    one = make_bus(Settings(redis_url=redis_url, redis_prefix=f"{redis_prefix}:one"))
    two = make_bus(Settings(redis_url=redis_url, redis_prefix=f"{redis_prefix}:two"))
    try:
        assert isinstance(one, RedisBus) and isinstance(two, RedisBus)
        row = NewInteraction("u1", "i1", 1.7e9, "e1")
        assert one.append_unseen([row]) == 1
        assert two.append_unseen([row]) == 1  # its own marks: not a duplicate there
        assert [rows for _, rows in one.read("w", count=5, block_ms=100)] == [[row]]
        assert [rows for _, rows in two.read("w", count=5, block_ms=100)] == [[row]]
        assert two.read("w2", count=5, block_ms=0) == []  # one entry each, no more
    finally:
        one.close()
        two.close()


@pytest.mark.redis
def test_redis_layout(redis_bus_factory: Callable[[], RedisBus], redis_client: redis.Redis) -> None:
    bus = redis_bus_factory()
    bus.append(_rows(5))
    assert redis_client.xlen(f"{bus.prefix}:interactions") == 1  # one entry per request
    bus.read("w", count=1, block_ms=0)
    groups = redis_client.xinfo_groups(f"{bus.prefix}:interactions")
    assert [g["name"] for g in groups] == [b"workers"]
    bus.append_unseen([NewInteraction("u1", "i1", 1.7e9, "e1")])
    ttl = redis_client.ttl(f"{bus.prefix}:event:e1")
    assert 0 < ttl <= EVENT_TTL_S  # the de-duplication window, not days


@pytest.mark.redis
def test_redis_subscription_survives_a_dropped_connection(
    redis_bus_factory: Callable[[], RedisBus], redis_client: redis.Redis
) -> None:
    publisher, subscriber = redis_bus_factory(), redis_bus_factory()
    got: list[int] = []
    stop = subscriber.subscribe_active(got.append)
    publisher.publish_active(1)
    assert _wait_for(lambda: got == [1])
    ours = [
        c["id"]
        for c in redis_client.client_list(_type="pubsub")
        if c.get("name") == subscriber.prefix
    ]
    assert len(ours) == 1
    redis_client.client_kill_filter(_id=ours[0])

    def announce_and_check() -> bool:
        publisher.publish_active(2)  # repeated until the listener has resubscribed
        return 2 in got

    assert _wait_for(announce_and_check, timeout=60), got
    stop()


@pytest.mark.redis
def test_redis_append_keeps_large_batches_whole(redis_bus_factory: Callable[[], RedisBus]) -> None:
    """Batches of 1,000 rows: one entry each, read back row for row, in order
    (how fast they go is bench/'s business: python -m bench.ingestion)."""
    bus = redis_bus_factory()
    batches = [_rows(1000, f"b{n}-") for n in range(3)]
    for rows in batches:
        assert bus.append(rows) == 1000
    entries = bus.read("w", count=10, block_ms=0)
    assert [rows for _, rows in entries] == batches


@pytest.mark.redis
def test_redis_stream_survives_deletion(redis_bus_factory: Callable[[], RedisBus]) -> None:
    bus = redis_bus_factory()
    bus.append(_rows(1))
    entries = bus.read("w", count=5, block_ms=0)
    bus.ack([eid for eid, _ in entries])
    bus.client.delete(bus.stream)  # the group goes with it: it is recreated
    bus.append(_rows(2))
    assert len(bus.read("w", count=5, block_ms=0)) == 1


def test_unreachable_redis_is_unavailable() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0")
    try:
        for call in (
            bus.ping,
            lambda: bus.publish_active(1),
            lambda: bus.append(_rows(1)),
            lambda: bus.read("w", 1, 0),
            lambda: bus.append_unseen(_rows(2)),
            lambda: bus.leader_lock("l", 1.0).acquire(),
        ):
            with pytest.raises(BusUnavailable):
                call()
        bus.leader_lock("l", 1.0).release()  # only logged
    finally:
        bus.close()
