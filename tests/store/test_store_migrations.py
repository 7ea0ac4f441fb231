"""Migrations: upgrade from scratch on SQLite and PostgreSQL, and parity with the models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from store.db import make_engine
from store.errors import StoreUnavailable
from store.migrate import current_revision, downgrade, head_revision, upgrade
from store.models import Base

TABLES = {"users", "items", "interactions", "periods", "jobs", "model_versions", "state"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_sqlite_upgrade_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///./nested/folder/smlrec.db"
    assert current_revision(url) is None
    upgrade(url)
    assert (tmp_path / "nested" / "folder" / "smlrec.db").is_file()
    assert _tables(url) >= TABLES
    assert current_revision(url) == head_revision() == "0007"
    upgrade(url)  # already at head: nothing to do
    downgrade(url, "base")
    assert not TABLES & _tables(url)
    upgrade(url)
    assert _tables(url) >= TABLES


@pytest.mark.postgres
def test_postgres_upgrade_plain_url(pg_schema_factory: Callable[..., str]) -> None:
    url = pg_schema_factory(migrated=False)
    assert not TABLES & _tables(url)
    assert url.startswith("postgresql://")
    upgrade(url)
    upgrade(url)
    assert _tables(url) >= TABLES
    assert current_revision(url) == head_revision()


def test_models_match_migrations(db_url: str) -> None:
    assert _differences(db_url) == []


def test_upgrade_unreachable_database_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        upgrade("postgresql://postgres@127.0.0.1:1/nowhere")


def _foreign_keys(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        return sorted(key["name"] for key in inspect(engine).get_foreign_keys("interactions"))
    finally:
        engine.dispose()


def test_0002_drops_the_interaction_foreign_keys_and_keeps_the_rows(db_url: str) -> None:
    """Down to 0001 (the keys come back), rows logged there, up again: the rows
    are still there, the keys gone, and ingestion goes on where it left off."""
    from store import NewInteraction, Store

    assert _foreign_keys(db_url) == []
    downgrade(db_url, "0001")
    assert _foreign_keys(db_url) == ["fk_interactions_item_idx_items",
                                     "fk_interactions_user_idx_users"]
    _log_rows_at_0004_or_before(db_url, [("u1", "i1", 1.0, "e1"), ("u2", "i1", 2.0, None)])
    store = Store.from_url(db_url)
    try:
        upgrade(db_url)
        assert _foreign_keys(db_url) == []
        result = store.ingest([NewInteraction("u2", "i2", 3.0, "e1"),
                               NewInteraction("u3", "i2", 4.0, "e3")])
        assert (result.accepted, result.duplicates) == (1, 1)
        assert store.count_open() == 3
        assert store.user_ids() == ["u1", "u2", "u3"] and store.item_ids() == ["i1", "i2"]
    finally:
        store.close()


def _log_rows_at_0004_or_before(url: str, rows: list[tuple[str, str, float, str | None]]) -> None:
    """Rows as the code of revisions 0001-0004 logged them (the store of today writes
    columns those schemas lack)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for n, (user, item, ts, event) in enumerate(rows):
                for table, external in (("users", user), ("items", item)):
                    known = conn.execute(text(f"SELECT idx FROM {table} WHERE external_id = :e"),
                                         {"e": external}).scalar()
                    if known is None:
                        conn.execute(text(
                            f"INSERT INTO {table} (idx, external_id) SELECT "
                            f"COALESCE(MAX(idx), -1) + 1, :e FROM {table}"), {"e": external})
                conn.execute(text(
                    "INSERT INTO interactions (user_idx, item_idx, ts, event_id, received_at) "
                    "SELECT u.idx, i.idx, :ts, :event, :now FROM users u, items i "
                    "WHERE u.external_id = :user AND i.external_id = :item"),
                    {"ts": ts, "event": event, "now": float(n), "user": user, "item": item})
    finally:
        engine.dispose()


def test_0005_gives_rows_logged_before_it_views_of_weight_one(db_url: str) -> None:
    from store import NewInteraction, Store

    downgrade(db_url, "0004")
    _log_rows_at_0004_or_before(db_url, [("u1", "i1", 1.0, "e1"), ("u2", "i1", 2.0, None)])
    upgrade(db_url)
    store = Store.from_url(db_url)
    try:
        store.ingest([NewInteraction("u2", "i2", 3.0, "e3", "like", 4.0)])
        through = store.last_interaction_id()
        assert [(r.user_id, r.item_id, r.type, r.weight, r.event_id)
                for r in store.interactions_page(0, through, 10)] == [
            ("u1", "i1", "view", 1.0, "e1"), ("u2", "i1", "view", 1.0, None),
            ("u2", "i2", "like", 4.0, "e3")]
    finally:
        store.close()
