"""Benchmark: end-to-end relay latency both ways through the loopback lab (prints a table).

Chat → mail: from the Matrix client's send returning to the mail file landing in the
correspondent's Dovecot maildir. Mail → chat: from the correspondent's SMTP submission
returning to the ghost's event reaching the Matrix client through /sync.

    .venv/bin/python bench/relay_latency.py [--count 30] [--dir /tmp/mssbridge-bench]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.demo import RunningLab, running_lab
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX, CORRESPONDENT, SERVER_NAME


def maildir_files(lab: RunningLab) -> set[Path]:
    new = lab.mail.maildir(CORRESPONDENT) / "new"
    return set(new.iterdir()) if new.exists() else set()


async def wait_new_file(lab: RunningLab, before: set[Path], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if maildir_files(lab) - before:
            return
        await asyncio.sleep(0.002)
    raise TimeoutError("mail did not arrive")


async def measure(lab: RunningLab, count: int) -> tuple[list[float], list[float]]:
    ghost = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
    _, token = lab.synapse.register_user("bench", "bench-password")
    out: list[float] = []
    back: list[float] = []
    async with LabMatrixUser(lab.synapse.url, token) as user:
        room = await user.create_room(invite=[ghost], name="Banc d'essai")
        await user.wait_for_event(
            room,
            lambda e: (
                e.get("state_key") == ghost and (e.get("content") or {}).get("membership") == "join"
            ),
            timeout=30,
        )
        for i in range(count):
            before = maildir_files(lab)
            started = time.perf_counter()
            await user.send_text(room, f"mesure {i}")
            await wait_new_file(lab, before)
            out.append((time.perf_counter() - started) * 1000)
        parent = None
        for mail in await asyncio.to_thread(lab.correspondent.inbox):
            parent = str(mail["Message-ID"])
        for i in range(count):
            started = time.perf_counter()
            await asyncio.to_thread(
                lab.correspondent.send,
                BRIDGE_MAILBOX,
                "Re: Banc d'essai",
                f"réponse {i}",
                in_reply_to=parent,
            )
            await user.wait_for_event(
                room,
                lambda e, i=i: (
                    e.get("sender") == ghost
                    and (e.get("content") or {}).get("body") == f"réponse {i}"
                ),
                timeout=30,
            )
            back.append((time.perf_counter() - started) * 1000)
    return out, back


def row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.0f} | {p95:.0f} | "
        f"{max(values):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mssbridge-bench"))
    args = parser.parse_args()
    with running_lab(args.dir.resolve(), say=lambda _: None) as lab:
        out, back = asyncio.run(measure(lab, args.count))
    print("| direction | messages | p50 ms | p95 ms | max ms |")
    print("| --- | --- | --- | --- | --- |")
    print(row("chat → mail (send → maildir)", out))
    print(row("mail → chat (SMTP 250 → /sync)", back))


if __name__ == "__main__":
    main()
