"""Ingestion: dense ids, event-id idempotency, atomicity, concurrency, large batches."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from store import NewInteraction, Store, StoreUnavailable


def _rows(n: int, prefix: str = "e", users: int = 10, items: int = 7) -> list[NewInteraction]:
    return [
        NewInteraction(f"u{i % users}", f"i{i % items}", 1_000.0 + i, f"{prefix}{i}")
        for i in range(n)
    ]


def test_dense_ids_in_order_of_first_appearance(store: Store) -> None:
    result = store.ingest(
        [
            NewInteraction("alice", "x", 1.0, None),
            NewInteraction("bob", "y", 2.0, None),
            NewInteraction("alice", "z", 3.0, None),
        ]
    )
    assert (result.accepted, result.duplicates, result.period_id, result.dropped) == (3, 0, 0, 0)
    store.ingest([NewInteraction("carol", "y", 4.0, None), NewInteraction("bob", "w", 5.0, None)])
    assert store.user_ids() == ["alice", "bob", "carol"]
    assert store.item_ids() == ["x", "y", "z", "w"]
    assert store.user_ids(start=1) == ["bob", "carol"] and store.user_ids(start=3) == []
    assert store.item_ids(start=2) == ["z", "w"]
    assert store.user_index("carol") == 2
    assert store.user_index("nobody") is None
    assert store.item_index("w") == 3
    assert store.item_index("nothing") is None
    assert store.user_indices(["carol", "nobody", "alice"]) == {"carol": 2, "alice": 0}
    assert store.seen_items(0).tolist() == [0, 2]
    assert store.seen_items(1).tolist() == [1, 3]
    assert store.seen_items(99).tolist() == [] and store.seen_items(99).dtype.name == "int64"


def test_ids_and_seen_items_come_in_index_order(store: Store) -> None:
    """Whatever order the rows lie in on disk (a rewritten row moves to the end
    of a PostgreSQL table): ids by dense index, a user's items sorted."""
    items = [f"i{k}" for k in range(12)]
    store.ingest([NewInteraction("u", item, float(n), None)
                  for n, item in enumerate(reversed(items))])
    store.ingest([NewInteraction("v", item, 20.0, None) for item in items])
    with store._engine.begin() as conn:
        conn.execute(text("UPDATE items SET external_id = external_id WHERE idx < 6"))
        conn.execute(text("UPDATE users SET external_id = external_id WHERE idx = 0"))
    assert store.item_ids() == list(reversed(items))
    assert store.item_ids(start=10) == ["i1", "i0"]
    assert store.user_ids() == ["u", "v"]
    assert store.seen_items(0).tolist() == list(range(12))
    assert store.seen_items(1).tolist() == list(range(12))


def test_a_row_whose_event_id_went_in_meanwhile_is_not_counted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should an event id be stored between the lookup and the insert (both run
    under the log lock, so only a writer outside the store could), the insert
    skips that row and the count says so: the count comes from the driver's
    rowcount, not from the rows sent. Here the lookup is made to miss it."""
    store.ingest([NewInteraction("u1", "i1", 1.0, "e1")])
    monkeypatch.setattr(store, "_stored_event_ids", lambda session, event_ids: set())
    result = store.ingest([NewInteraction("u2", "i1", 2.0, "e1"),
                           NewInteraction("u2", "i2", 3.0, "e2"),
                           NewInteraction("u3", "i2", 4.0, None)])
    assert (result.accepted, result.duplicates) == (2, 1)
    assert store.count_open() == 3


def test_event_ids_are_idempotent_within_and_across_batches(store: Store) -> None:
    batch = [
        NewInteraction("u1", "i1", 1.0, "e1"),
        NewInteraction("u1", "i2", 2.0, "e2"),
        NewInteraction("u2", "i1", 3.0, "e1"),  # repeated inside the batch
        NewInteraction("u2", "i3", 4.0, None),  # no event id: always accepted
    ]
    first = store.ingest(batch)
    assert (first.accepted, first.duplicates) == (3, 1)
    again = store.ingest(batch)
    assert (again.accepted, again.duplicates) == (1, 3)
    assert store.count_open() == 4
    # nothing new at all: every row counted, in the open period
    store.close_period()
    none_new = store.ingest(batch[:3])
    assert (none_new.accepted, none_new.duplicates, none_new.period_id) == (0, 3, 1)
    assert store.count_open() == 0
    # a row skipped as a duplicate creates no user or item
    store.ingest([NewInteraction("ghost", "phantom", 5.0, "e2")])
    assert "ghost" not in store.user_ids()
    assert "phantom" not in store.item_ids()


def test_ids_of_up_to_128_characters_are_accepted(store: Store) -> None:
    longest = "x" * 128
    done = store.ingest([NewInteraction(longest, longest, 1.0, longest),
                         NewInteraction("u", "i", 2.0, "e")])  # a one-character event id
    assert (done.accepted, done.duplicates) == (2, 0)
    assert store.user_ids() == [longest, "u"] and store.item_ids() == [longest, "i"]
    for bad, message in (
        (NewInteraction("", "i", 1.0, None), "user_id must be 1 to 128 characters, got ''"),
        (NewInteraction("u", "y" * 129, 1.0, None),
         f"item_id must be 1 to 128 characters, got '{'y' * 129}'"),
        (NewInteraction("u", "i", 1.0, ""), "event_id must be 1 to 128 characters"),
        (NewInteraction("u", "i", 1.0, "e" * 129), "event_id must be 1 to 128 characters"),
        (NewInteraction("u", "i", float("inf"), None),
         "ts must be a finite number of Unix seconds, got inf"),
    ):
        with pytest.raises(ValueError) as refused:
            store.ingest([NewInteraction("ok", "ok", 1.0, None), bad])
        assert str(refused.value) == message
    assert store.count_open() == 2


def test_empty_batch_and_invalid_rows(store: Store) -> None:
    assert store.ingest([]).accepted == 0
    with pytest.raises(ValueError, match="user_id"):
        store.ingest([NewInteraction("", "i", 1.0, None)])
    with pytest.raises(ValueError, match="item_id"):
        store.ingest([NewInteraction("u", "i" * 129, 1.0, None)])
    with pytest.raises(ValueError, match="ts"):
        store.ingest([NewInteraction("u", "i", float("nan"), None)])
    assert store.count_open() == 0


def test_a_failing_row_leaves_nothing_behind(store: Store, db_url: str) -> None:
    store.ingest([NewInteraction("old-user", "old-item", 1.0, "e0")])
    engine = store._engine
    # A database-level constraint the last row of the batch violates.
    with engine.begin() as connection:
        if store.dialect == "postgresql":
            connection.execute(
                text("ALTER TABLE interactions ADD CONSTRAINT ts_positive CHECK (ts >= 0)")
            )
        else:
            connection.execute(
                text(
                    "CREATE TRIGGER ts_positive BEFORE INSERT ON interactions "
                    "WHEN NEW.ts < 0 BEGIN SELECT RAISE(ABORT, 'ts must be >= 0'); END"
                )
            )
    batch = [*_rows(50, prefix="new"), NewInteraction("new-user", "new-item", -1.0, "bad")]
    with pytest.raises(Exception, match="ts"):
        store.ingest(batch)
    assert store.count_open() == 1
    assert store.user_ids() == ["old-user"]
    assert store.item_ids() == ["old-item"]
    # the same batch without the bad row goes through, with the next dense ids
    result = store.ingest(batch[:-1])
    assert result.accepted == 50
    assert store.user_index("u0") == 1


def test_concurrent_writers_get_unique_dense_ids(db_url: str) -> None:
    threads, batches, per_batch = 6, 5, 200
    stores = [Store.from_url(db_url) for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def batch(worker: int, b: int) -> list[NewInteraction]:
        return [
            # users shared between threads and users of this thread only
            NewInteraction(
                f"shared{i % 40}" if i % 2 else f"t{worker}-u{i % 30}",
                f"item{(i * 7 + worker) % 90}",
                float(i),
                f"t{worker}-b{b}-{i}",
            )
            for i in range(per_batch)
        ]

    expected_users = {r.user_id for w in range(threads) for r in batch(w, 0)}
    expected_items = {r.item_id for w in range(threads) for r in batch(w, 0)}

    def write(worker: int) -> None:
        try:
            start.wait()
            for b in range(batches):
                stores[worker].ingest(batch(worker, b))
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for s in stores:
        s.close()
    assert not errors
    check = Store.from_url(db_url)
    try:
        assert check.count_open() == threads * batches * per_batch
        users, items = check.user_ids(), check.item_ids()
        assert len(users) == len(set(users)) and set(users) == expected_users
        assert len(items) == len(set(items)) and set(items) == expected_items
        arrays = check.period_arrays(0)
        assert len(arrays) == threads * batches * per_batch
        assert arrays.n_users == len(users) and arrays.n_items == len(items)
        assert set(arrays.users.tolist()) == set(range(len(users)))
        # interaction ids follow the dense ids: a user's first row comes after
        # the first rows of every user with a smaller index
        first_seen: dict[int, int] = {}
        for position, user in enumerate(arrays.users.tolist()):
            first_seen.setdefault(user, position)
        assert [first_seen[u] for u in range(len(users))] == sorted(first_seen.values())
    finally:
        check.close()


def test_thousand_row_batches_are_stored_whole(store: Store) -> None:
    """Batches of 1,000 rows on top of a warm table: each accepted in full, new
    users and items created once (how fast is bench/'s business:
    python -m bench.ingestion)."""
    store.ingest(_rows(1000, prefix="warm", users=500, items=300))
    before = store.count_open()
    for round_ in range(3):
        rows = [
            NewInteraction(f"u{round_}-{i % 400}", f"i{i % 250}", float(i), f"r{round_}-{i}")
            for i in range(1000)
        ]
        result = store.ingest(rows)
        assert (result.accepted, result.duplicates) == (1000, 0)
    assert store.count_open() == before + 3000
    users = store.user_ids()
    assert len(users) == len(set(users))
    assert {f"u{r}-{n}" for r in range(3) for n in range(400)} <= set(users)


def test_dead_database_is_unavailable() -> None:
    dead = Store.from_url("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StoreUnavailable):
            dead.ping()
        with pytest.raises(StoreUnavailable):
            dead.ingest([NewInteraction("u", "i", 1.0, None)])
        with pytest.raises(StoreUnavailable):
            dead.active_version()
    finally:
        dead.close()


def test_ping(store: Store, tmp_path: Path) -> None:
    assert store.ping() is None  # answers without raising
    gone = Store.from_url(f"sqlite:///{tmp_path}")  # a directory, not a database file
    try:
        with pytest.raises(StoreUnavailable):
            gone.ping()
    finally:
        gone.close()
