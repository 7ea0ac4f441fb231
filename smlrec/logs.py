"""How every smlrec process logs: one format on stderr, set by the command-line entry
points and by the worker process it starts, which configures its own."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _AlembicPreamble(logging.Filter):
    """Drops the two lines Alembic writes at every start whether or not it migrates
    anything ("Context impl ...", "Will assume ... DDL"); the upgrades it runs stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line each
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicPreamble) for f in migration.filters):
        migration.addFilter(_AlembicPreamble())
