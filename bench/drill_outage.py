"""Outage drill: Postfix, then Synapse, then the database go away for minutes under load.

Each peer is cut at a TCP proxy between it and the daemon (the servers themselves keep
running: others may use them, and the correspondent and the chat users still reach theirs).
Both directions keep sending during each outage; after each restore the drill waits until
everything sent so far has arrived, exactly once and in order per conversation, and times it.
A message to an address the mail server refuses (550) is written during the Postfix outage:
its room must get the bot's notice soon after Postfix is back.

    .venv/bin/python bench/drill_outage.py                        # 3 min each, PostgreSQL
    .venv/bin/python bench/drill_outage.py --outage 30 --per-phase 30
    .venv/bin/python bench/drill_outage.py --db sqlite            # no database outage
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from mssbridge.lab.drills import (
    TALLY_HEADER,
    DrillLab,
    OutageResult,
    Phase,
    drill_lab,
    outage_drill,
    table,
    tally_rows,
)
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import SERVER_NAME


async def run(lab: DrillLab, args: argparse.Namespace) -> OutageResult:
    phases = [
        Phase("Postfix (SMTP submission)", [lab.proxies["smtp"]]),
        Phase("Synapse (both ways)", [lab.proxies["matrix"], lab.proxies["appservice"]]),
    ]
    if "database" in lab.proxies:
        phases.append(Phase("PostgreSQL", [lab.proxies["database"]]))
    _, token = lab.synapse.register_user("drill", "drill-password")
    async with LabMatrixUser(lab.synapse.url, token) as user:
        return await outage_drill(
            user,
            lab.correspondent,
            lab.mail,
            lab.database_url,
            phases,
            outage=args.outage,
            per_phase=args.per_phase,
            rooms=args.rooms,
            bot_id=f"@mss_bot:{SERVER_NAME}",
            recovery_timeout=args.recovery_timeout,
            say=lambda line: print(line, file=sys.stderr, flush=True),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--outage", type=float, default=180.0, help="seconds per outage")
    parser.add_argument("--per-phase", type=int, default=100, help="messages each way")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--recovery-timeout", type=float, default=600.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mssbridge-drill-outage"))
    args = parser.parse_args()
    with drill_lab(args.dir.resolve(), args.db) as lab:
        lab.bridge.start()
        result = asyncio.run(run(lab, args))
        log = lab.bridge.log.read_text(errors="replace")
    print(f"Outage drill on {args.db}")
    print(
        table(
            [
                (
                    p.name,
                    f"{p.down_seconds:.0f}",
                    str(p.sent),
                    "not recovered" if p.recovery_seconds is None else f"{p.recovery_seconds:.1f}",
                )
                for p in result.phases
            ],
            ("outage", "down s", "messages sent meanwhile", "recovery s"),
        )
    )
    print()
    print(table(tally_rows(result.out, result.back), TALLY_HEADER))
    notice = "none" if result.notice_seconds is None else f"{result.notice_seconds:.1f} s"
    print(f"refusal notice after Postfix came back: {notice}")
    print(f"rows left open: {result.open_rows}")
    print(f"daemon restarts: {log.count('--- start') - 1}, tracebacks: {log.count('Traceback')}")
    ok = (
        result.out.exact
        and result.back.exact
        and not result.out.out_of_order
        and not result.back.out_of_order
        and result.open_rows == 0
        and result.notice_seconds is not None
    )
    print("everything delivered once, in order: " + ("yes" if ok else "NO"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
