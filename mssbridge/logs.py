"""Logging set-up: one line per record, ids and counts only, never message content."""

from __future__ import annotations

import logging
import sys


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library loggers that would print request bodies or URLs with tokens at DEBUG.
    for noisy in (
        "mssbridge.matrix.mautrix",
        "mau",
        "aiohttp.access",
        "aiosqlite",
        "sqlalchemy.engine",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
