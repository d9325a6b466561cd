"""Benchmark: directory import and look-ups at the real file's size (prints a table).

Writes a synthetic extraction of ``--rows`` lines (535,000 by default, the 2026 file), imports
it with ``DirectoryRepo.replace`` into a fresh SQLite file or a fresh PostgreSQL database, then
times, ``--repeat`` times each, the look-ups the bot makes: a name with a city (rows read,
narrowed by the city past 5,000 namesakes, and ranked), an RPPS, the ghost name of an
address, and the CLI's family-name prefix search. Medians and 95th percentiles are in milliseconds.

    .venv/bin/python bench/directory_lookup.py                        # SQLite
    .venv/bin/python bench/directory_lookup.py --database postgresql  # needs the test server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg

from mssbridge.directory.extraction import DirectoryRow, open_extraction
from mssbridge.directory.lookup import candidates, directory_name, parse_start
from mssbridge.directory.synthetic import generate_file
from mssbridge.flows.directory_start import rows_for_name
from mssbridge.security.atrest import Sealer, new_key_file
from mssbridge.store.db import make_engine, migrate
from mssbridge.store.directory_repo import DirectoryRepo
from mssbridge.store.repo import Store

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.asynccontextmanager
async def _database(kind: str, work: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{work / 'bench.sqlite3'}"
        return
    name = f"mssb_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _timed(repeat: int, action: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    laps = []
    for _ in range(repeat):
        started = time.perf_counter()
        await action()
        laps.append((time.perf_counter() - started) * 1000)
    laps.sort()
    return statistics.median(laps), laps[min(len(laps) - 1, int(len(laps) * 0.95))]


async def run(kind: str, rows: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "extraction.txt"
        started = time.perf_counter()
        generate_file(path, rows, seed=1)
        generated = time.perf_counter() - started
        new_key_file(work / "key")
        async with _database(kind, work) as url:
            engine = make_engine(url)
            try:
                await migrate(engine)
                store = Store(engine, Sealer.from_file(work / "key"))
                repo = DirectoryRepo(store)
                started = time.perf_counter()
                with open_extraction(path) as reader:
                    kept = await repo.replace(reader.rows())
                imported = time.perf_counter() - started
                with open_extraction(path) as reader:
                    sample = random.Random(2).sample(
                        [r for r in reader.rows() if r.mailbox_type == "PER"], repeat
                    )
                await _report(kind, rows, kept, generated, imported, repo, sample)
            finally:
                await engine.dispose()


async def _report(
    kind: str,
    rows: int,
    kept: int,
    generated: float,
    imported: float,
    repo: DirectoryRepo,
    sample: list[DirectoryRow],
) -> None:
    people = iter(sample * 4)
    fetched: list[int] = []

    async def by_name() -> None:
        row = next(people)
        found, ranked = await rows_for_name(repo, parse_start([row.family_name, row.city]))
        fetched.append(len(found))
        candidates(ranked)

    async def by_rpps() -> None:
        await repo.rows_by_identifier(next(people).pp_id)

    async def ghost() -> None:
        directory_name(await repo.rows_by_address(next(people).address))

    async def prefix() -> None:
        await repo.search(name=next(people).family_name[:3])

    print(f"{kind}: {rows} lines generated in {generated:.1f} s, {kept} rows imported in "
          f"{imported:.1f} s ({kept / imported:.0f} rows/s)")  # fmt: skip
    print(f"{'look-up':<28}{'median ms':>10}{'p95 ms':>10}")
    for label, action in (
        ("name + city (fetch, rank)", by_name),
        ("RPPS", by_rpps),
        ("ghost name by address", ghost),
        ("CLI prefix search", prefix),
    ):
        median, p95 = await _timed(len(sample), action)
        print(f"{label:<28}{median:>10.2f}{p95:>10.2f}")
    print(f"rows ranked per name look-up: median {statistics.median(fetched):.0f}, "
          f"max {max(fetched)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=535_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(run(args.database, args.rows, args.repeat))


if __name__ == "__main__":
    main()
