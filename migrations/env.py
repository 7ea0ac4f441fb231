"""Alembic environment: the schema comes from ``store.models``, the database URL
from the Config's ``url`` attribute (see ``store.migrate``), its
``sqlalchemy.url`` option, or ``SMLREC_DATABASE_URL``.
A caller may also hand over an open connection as the ``connection`` attribute.
"""

from __future__ import annotations

import logging

from alembic import context
from sqlalchemy import Connection, pool, text

from smlrec.settings import get_settings, normalize_database_url
from store.db import make_engine
from store.models import Base

log = logging.getLogger("migrations")

config = context.config
target_metadata = Base.metadata

# Held while migrating so that replicas starting together upgrade one at a time.
_PG_MIGRATION_LOCK = (0x736D6C72, 100)


def _database_url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return normalize_database_url(url or get_settings().database_url)


def _configure(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,
        transactional_ddl=True,
        compare_type=True,
    )


def _migrate(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                {"ns": _PG_MIGRATION_LOCK[0], "key": _PG_MIGRATION_LOCK[1]},
            )
        context.run_migrations()


def run_migrations_offline() -> None:
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = make_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _migrate(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
