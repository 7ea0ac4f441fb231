"""Run the Alembic migrations from code: no alembic.ini, any working directory,
installed package or source tree alike."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from smlrec.settings import normalize_database_url
from store.db import make_engine
from store.errors import StoreUnavailable

log = logging.getLogger(__name__)


def migrations_dir() -> Path:
    """The folder of the ``migrations`` package (env.py, versions/)."""
    package = importlib.import_module("migrations")
    for location in package.__path__:  # also right when imported as a namespace
        if (Path(location) / "env.py").is_file():
            return Path(location).resolve()
    raise FileNotFoundError("the migrations package has no env.py")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config built in code, pointing at the migrations package."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        config.attributes["url"] = normalize_database_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the latest)."""
    log.info("migrating database to %s", revision)
    try:
        command.upgrade(alembic_config(url), revision)
    except StoreUnavailable:
        raise
    except Exception as error:
        if _is_connection_error(error):
            raise StoreUnavailable(f"database unavailable: {error}") from error
        raise


def downgrade(url: str, revision: str) -> None:
    """Take the database at ``url`` back to ``revision`` (``"base"``: empty)."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (None: never migrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _is_connection_error(error: BaseException) -> bool:
    from sqlalchemy import exc

    return isinstance(error, exc.OperationalError | exc.InterfaceError)
