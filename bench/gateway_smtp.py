"""Benchmark: mails per second through the gateway's SMTP server, each one stored before 250.

Starts the gateway on loopback with a fresh test PKI, a SQLite (or PostgreSQL) store and a
whitelist naming the peer, then sends ``--messages`` mails of ``--size`` bytes from
``--sessions`` concurrent clients with mutual TLS (aiosmtplib), first with a new TLS session
per mail, then with one session per client for all its mails. Prints a table of the figures.

    .venv/bin/python bench/gateway_smtp.py
    .venv/bin/python bench/gateway_smtp.py --messages 2000 --sessions 20 --size 100000
    .venv/bin/python bench/gateway_smtp.py --postgres postgresql+asyncpg://postgres@127.0.0.1/x
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixtures.database import open_test_store, sqlite_url
from fixtures.gateway import (
    CHAT_DOMAIN,
    PEER_CLIENT,
    PEER_DOMAIN,
    client_context,
    gateway_settings,
    import_peer_whitelist,
    mail,
)

from mssbridge.flows.gateway import GatewayService
from mssbridge.lab.pki import generate_test_pki


async def _client(port: int, context: object, count: int, reuse: bool, size: int) -> list[float]:
    timings = []
    smtp = None
    for number in range(count):
        started = time.perf_counter()
        if smtp is None:
            smtp = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=port, start_tls=True, tls_context=context
            )
            await smtp.connect()
        message = mail(f"bench {id(timings)} {number} {reuse}", size=size)
        await smtp.sendmail(f"dr.pair@{PEER_DOMAIN}", [f"alice@{CHAT_DOMAIN}"], message)
        if not reuse:
            await smtp.quit()
            smtp = None
        timings.append(time.perf_counter() - started)
    if smtp is not None:
        await smtp.quit()
    return timings


async def run(messages: int, sessions: int, size: int, database: str | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        pki = generate_test_pki(directory / "pki")
        settings = gateway_settings(
            directory,
            pki,
            f"limits.max_message_size={max(size * 2, 100_000)}",
            f"gateway.max_sessions_per_peer={sessions}",
            f"gateway.max_messages_per_session={messages}",
        )
        url = database or sqlite_url(directory / "store.db")
        async with open_test_store(url, directory / "key") as store:
            await import_peer_whitelist(store, pki)
            service = GatewayService(settings)
            await service.start(store, lambda: None)
            assert service.server is not None
            port = service.server.addresses[0][1]
            context = client_context(pki, pki.client(PEER_CLIENT))
            print(f"{messages} mails of {size} bytes, {sessions} clients, {url.split(':')[0]}")
            print(f"{'TLS session':<22}{'mails/s':>10}{'median ms':>12}{'p95 ms':>10}")
            for reuse in (False, True):
                share = messages // sessions
                started = time.perf_counter()
                results = await asyncio.gather(
                    *(_client(port, context, share, reuse, size) for _ in range(sessions))
                )
                elapsed = time.perf_counter() - started
                timings = sorted(t for result in results for t in result)
                p95 = timings[int(len(timings) * 0.95) - 1]
                label = "one per client" if reuse else "new per mail"
                print(
                    f"{label:<22}{len(timings) / elapsed:>10.0f}"
                    f"{statistics.median(timings) * 1000:>12.1f}{p95 * 1000:>10.1f}"
                )
            await service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--postgres", default=None, help="a postgresql+asyncpg:// URL (empty db)")
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.sessions, args.size, args.postgres))


if __name__ == "__main__":
    main()
