"""How every smlrec process logs: one format on stderr, set by the command-line entry
points and by the worker process it starts, which configures its own. ``plain``
lines are for a terminal; ``json`` writes one object per line for a log pipeline
(an access line's fields become the object's own)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("plain", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message (or,
    for a record carrying ``fields``, those fields), and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _AlembicPreamble(logging.Filter):
    """Drops the two lines Alembic writes at every start whether or not it migrates
    anything ("Context impl ...", "Will assume ... DDL"); the upgrades it runs stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


def configure_logging(level: str, log_format: str = "plain") -> None:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line each
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicPreamble) for f in migration.filters):
        migration.addFilter(_AlembicPreamble())
