"""Alembic migrations for the smlrec schema; run them with ``store.migrate.upgrade(url)``."""
