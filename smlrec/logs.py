"""How every smlrec process logs: one format on stderr, set by the command-line entry
points and by the worker process it starts, which configures its own."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line each
