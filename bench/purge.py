"""Benchmark: the retention purge on a large store, and what it costs the relay meanwhile.

Seeds ``--rows`` rows past retention (half closed outbox rows with a sealed-size payload, a
quarter event/Message-ID map rows, a quarter audit rows) with bulk inserts, then measures a
relay write (store an event, claim it, record it as sent: the three transactions of an
outbound message) every ``--interval`` ms, first with the store idle, then while the purge
runs as the daemon runs it (batches of ``--batch`` rows, ``--pause`` s between batches).
Prints the query plan of each purge selection and a table of the figures.

    .venv/bin/python bench/purge.py                       # 200,000 rows, SQLite
    .venv/bin/python bench/purge.py --rows 1000000 --database sqlite postgresql
    .venv/bin/python bench/purge.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlmodel import select

from mssbridge.flows.retention import RetentionFlow
from mssbridge.policy.retention import PurgeKind, RetentionPolicy, cutoffs
from mssbridge.security.atrest import Sealer, new_key_file
from mssbridge.store.db import make_engine, migrate
from mssbridge.store.ops import _selection
from mssbridge.store.repo import Store
from mssbridge.store.tables import Outbox, Portal

DAY = 86400.0
AGE_DAYS = 200  # past every retention period (content 90, refused 30, audit 183)
POLICY = RetentionPolicy(content_days=90, audit_days=183, rejected_days=30)
SEED_CHUNK = 20_000
PLANNED_KINDS = (PurgeKind.OUTBOX, PurgeKind.MAP_OUT, PurgeKind.AUDIT)


@dataclass
class Figures:
    database: str
    rows: int
    seed_seconds: float
    purged: int
    purge_seconds: float
    idle_ms: list[float]
    busy_ms: list[float]


def seed_plan(rows: int) -> tuple[int, int, int]:
    """How many outbox, map and audit rows make ``rows``."""
    outbox = rows // 2
    maps = rows // 4
    return outbox, maps, rows - outbox - maps


def outbox_records(count: int, payload: bytes, old: float) -> Iterator[tuple[Any, ...]]:
    for n in range(count):
        yield (
            "done",
            1,
            0.0,
            None,
            0.0,
            old,
            old,
            None,
            f"$seed{n}:bench.test",
            f"!room{n % 500}:bench.test",
            "@user:bench.test",
            "m.room.message",
            payload,
            None,
        )


OUTBOX_COLUMNS = (
    "state",
    "attempts",
    "next_at",
    "lease_owner",
    "lease_until",
    "created_at",
    "updated_at",
    "last_error",
    "event_id",
    "room_id",
    "sender",
    "event_type",
    "payload",
    "attempt_started_at",
)
MAP_COLUMNS = ("portal_id", "event_id", "message_id", "direction", "created_at")
AUDIT_COLUMNS = ("at", "action", "direction", "queue", "row_id", "outcome")


def map_records(count: int, portal_id: int, old: float) -> Iterator[tuple[Any, ...]]:
    for n in range(count):
        yield (portal_id, f"$seed{n}:bench.test", f"<seed{n}@bench.test>", "out", old)


def audit_records(count: int, old: float) -> Iterator[tuple[Any, ...]]:
    for n in range(count):
        yield (old, "message_sent", "out", "outbox", n, "done")


def chunks(records: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for record in records:
        batch.append(record)
        if len(batch) == SEED_CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def seed_sqlite(path: Path, rows: int, payload: bytes, portal_id: int, old: float) -> None:
    outbox, maps, audits = seed_plan(rows)
    connection = sqlite3.connect(path)
    try:
        for table, columns, records in (
            ("outbox", OUTBOX_COLUMNS, outbox_records(outbox, payload, old)),
            ("message_map", MAP_COLUMNS, map_records(maps, portal_id, old)),
            ("audit", AUDIT_COLUMNS, audit_records(audits, old)),
        ):
            statement = (
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})"
            )
            for batch in chunks(records):
                with connection:
                    connection.executemany(statement, batch)
    finally:
        connection.close()


async def seed_postgres(dsn: str, rows: int, payload: bytes, portal_id: int, old: float) -> None:
    outbox, maps, audits = seed_plan(rows)
    connection = await asyncpg.connect(dsn)
    try:
        for table, columns, records in (
            ("outbox", OUTBOX_COLUMNS, outbox_records(outbox, payload, old)),
            ("message_map", MAP_COLUMNS, map_records(maps, portal_id, old)),
            ("audit", AUDIT_COLUMNS, audit_records(audits, old)),
        ):
            for batch in chunks(records):
                await connection.copy_records_to_table(table, records=batch, columns=columns)
        for table in ("outbox", "message_map", "audit"):
            await connection.execute(f"ANALYZE {table}")
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def postgres_database(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database on the admin DSN's server (dropped afterwards); yields its DSN."""
    name = f"mssb_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = admin_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def print_plans(store: Store) -> None:
    """The database's plan for each purge selection: it should use the time-column index."""
    dialect = store.engine.dialect.name
    cuts = cutoffs(store.clock(), POLICY)
    async with store.engine.connect() as connection:
        for kind in PLANNED_KINDS:
            _table, key, where = _selection(kind, cuts[kind])
            query = select(key).where(*where).limit(1000)
            sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
            explain = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
            result = await connection.execute(text(explain + sql))
            lines = [str(row[-1]) for row in result.all()]
            print(f"  {dialect} {kind}: " + " | ".join(line.strip() for line in lines))


async def relay_write(store: Store, portal: Portal, n: int) -> float:
    """Store an event, claim it, record it as sent; the time it took, in ms."""
    event_id = f"$relay{n}-{secrets.token_hex(4)}:bench.test"
    started = time.perf_counter()
    await store.store_transaction(
        f"txn-{event_id}",
        [
            {
                "event_id": event_id,
                "room_id": f"!live{n % 8}:bench.test",
                "sender": "@user:bench.test",
                "type": "m.room.message",
                "content": {"msgtype": "m.text", "body": "x" * 200},
            }
        ],
    )
    rows = await store.claim_outbox("bench", 60, 16)
    for row in rows:
        await store.record_relay(
            portal,
            [(row.event_id, f"<{row.event_id[1:20]}@bench.test>")],
            "out",
            queue=Outbox,
            row_id=row.id,
            last_message_id=None,
        )
    return (time.perf_counter() - started) * 1000


async def relay_until(
    store: Store, portal: Portal, stop: asyncio.Event, interval: float, first: int
) -> list[float]:
    """Relay writes every ``interval`` seconds until ``stop`` is set."""
    latencies: list[float] = []
    n = first
    while not stop.is_set():
        tick = time.perf_counter()
        latencies.append(await relay_write(store, portal, n))
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.perf_counter() - tick)))
    return latencies


async def bench_one(
    database: str, url: str, args: argparse.Namespace, workdir: Path, dsn: str | None
) -> Figures:
    key = workdir / f"{database}.key"
    if not key.exists():
        new_key_file(key)
    engine = make_engine(url)
    await migrate(engine)
    store = Store(engine, Sealer.from_file(key))
    try:
        await store.verify_key()
        portal = await store.create_portal(subject="bench", correspondents=["a@bench.test"])
        assert portal.id is not None
        payload = store.sealer.seal(os.urandom(args.payload), b"outbox:bench")
        old = time.time() - AGE_DAYS * DAY
        started = time.perf_counter()
        if database == "sqlite":
            await asyncio.to_thread(
                seed_sqlite, Path(url.split("///", 1)[1]), args.rows, payload, portal.id, old
            )
        else:
            assert dsn is not None
            await seed_postgres(dsn, args.rows, payload, portal.id, old)
        seed_seconds = time.perf_counter() - started
        print(f"{database}: seeded {args.rows:,} rows in {seed_seconds:.1f} s; plans:")
        await print_plans(store)

        interval = args.interval / 1000
        stop = asyncio.Event()
        idle = asyncio.create_task(relay_until(store, portal, stop, interval, 0))
        await asyncio.sleep(args.idle_seconds)
        stop.set()
        idle_ms = await idle

        flow = RetentionFlow(store, POLICY, args.batch, pause=args.pause)
        stop = asyncio.Event()
        busy = asyncio.create_task(relay_until(store, portal, stop, interval, 1_000_000))
        started = time.perf_counter()
        counts = await flow.run_once()
        purge_seconds = time.perf_counter() - started
        stop.set()
        busy_ms = await busy
        purged = sum(counts.values())
        return Figures(database, args.rows, seed_seconds, purged, purge_seconds, idle_ms, busy_ms)
    finally:
        await engine.dispose()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def latency(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"{statistics.median(values):.1f} / {percentile(values, 0.95):.1f} / "
        f"{percentile(values, 0.99):.1f} / {max(values):.1f}"
    )


def print_table(figures: list[Figures], args: argparse.Namespace) -> None:
    print()
    print(
        f"batch {args.batch}, pause {args.pause} s, payload {args.payload} B, "
        f"a relay write every {args.interval:.0f} ms"
    )
    print(
        "| database | rows seeded | seed rows/s | purged | purge s | purge rows/s "
        "| relay write idle p50/p95/p99/max ms | during purge p50/p95/p99/max ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for f in figures:
        print(
            f"| {f.database} | {f.rows:,} | {f.rows / f.seed_seconds:,.0f} | {f.purged:,} | "
            f"{f.purge_seconds:.1f} | {f.purged / f.purge_seconds:,.0f} | "
            f"{latency(f.idle_ms)} ({len(f.idle_ms)}) | {latency(f.busy_ms)} ({len(f.busy_ms)}) |"
        )


async def main_async(args: argparse.Namespace) -> None:
    workdir: Path = args.dir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    figures = []
    try:
        for database in args.database:
            if database == "sqlite":
                url = f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}"
                figures.append(await bench_one(database, url, args, workdir, None))
            else:
                async with postgres_database(args.postgres) as dsn:
                    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
                    figures.append(await bench_one(database, url, args, workdir, dsn))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(figures, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="expired rows to seed")
    parser.add_argument(
        "--database", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite"]
    )
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="admin DSN; a scratch database is created next to it and dropped",
    )
    parser.add_argument("--batch", type=int, default=1000, help="rows per purge transaction")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between batches")
    parser.add_argument("--payload", type=int, default=1000, help="bytes of each outbox body")
    parser.add_argument("--interval", type=float, default=25.0, help="ms between relay writes")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mssbridge-bench-purge"))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
