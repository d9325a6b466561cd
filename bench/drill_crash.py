"""Crash drill: SIGKILL the daemon every 2–6 s under a two-way load with files (prints a table).

Chat → mail (text and files over several rooms) and mail → chat (the correspondent's replies
in the rooms' threads) run at the same time while the daemon is killed with SIGKILL and
restarted, again and again, until everything has arrived; then every message must be on the
other side exactly once.

    .venv/bin/python bench/drill_crash.py                      # 2,000 messages, SQLite
    .venv/bin/python bench/drill_crash.py --messages 10000     # the release drill
    .venv/bin/python bench/drill_crash.py --db postgresql      # a new database on 127.0.0.1:5432
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

from mssbridge.lab.drills import (
    TALLY_HEADER,
    CrashResult,
    DrillLab,
    crash_drill,
    drill_lab,
    table,
    tally_rows,
)
from mssbridge.lab.matrix_client import LabMatrixUser


async def run(lab: DrillLab, args: argparse.Namespace) -> CrashResult:
    _, token = lab.synapse.register_user("drill", "drill-password")
    async with LabMatrixUser(lab.synapse.url, token) as user:
        return await crash_drill(
            lab.bridge,
            user,
            lab.correspondent,
            lab.mail,
            lab.database_url,
            messages=args.messages,
            rooms=args.rooms,
            kill_every=(args.min_gap, args.max_gap),
            timeout=args.timeout,
            rng=random.Random(args.seed),
            say=lambda line: print(line, file=sys.stderr, flush=True),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="both directions together")
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--min-gap", type=float, default=2.0, help="seconds between kills, min")
    parser.add_argument("--max-gap", type=float, default=6.0, help="seconds between kills, max")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mssbridge-drill-crash"))
    args = parser.parse_args()
    with drill_lab(args.dir.resolve(), args.db) as lab:
        lab.bridge.start()
        result = asyncio.run(run(lab, args))
    print(f"Crash drill on {args.db}: {result.kills} kills in {result.seconds:.0f} s")
    print(table(tally_rows(result.out, result.back), TALLY_HEADER))
    print(f"rows left open: {result.open_rows}")
    ok = result.out.exact and result.back.exact and result.open_rows == 0
    print("exactly once: " + ("yes" if ok else "NO"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
