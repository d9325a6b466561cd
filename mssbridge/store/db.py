"""Database engine set-up (SQLite WAL or PostgreSQL) and schema migrations applied at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# PostgreSQL advisory lock key held while migrating (any constant of ours).
MIGRATION_LOCK = 0x6D7362_00


def is_store_unavailable(exc: BaseException) -> bool:
    """The store could not answer (server down or cut, locked, disk full), as opposed to a
    statement it refused: the same work may succeed later."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    """An async engine for the URL; SQLite gets WAL, full sync and a busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 10})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Instances starting together on one database migrate one after the other.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), "heads")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent; safe at every start)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
