"""The homeserver is pinged after a miss, only once the store answers, and again later."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from mssbridge.matrix.resend import ResendRequests


class Peers:
    """A homeserver and a store that can each be down; pings are counted."""

    def __init__(self) -> None:
        self.homeserver_up = True
        self.store_up = True
        self.pings = 0
        self.store_checks = 0

    async def ping(self) -> None:
        if not self.homeserver_up:
            raise ConnectionError("homeserver away")
        self.pings += 1

    async def store_ready(self) -> None:
        self.store_checks += 1
        if not self.store_up:
            raise OSError("database away")


@pytest.fixture
async def running() -> AsyncIterator[tuple[ResendRequests, Peers]]:
    peers = Peers()
    resend = ResendRequests(peers.ping, peers.store_ready, retry_seconds=0.05, routine_seconds=5)
    task = asyncio.create_task(resend.run())
    yield resend, peers
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def settle(seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)


async def test_nothing_is_sent_without_a_miss(running: tuple[ResendRequests, Peers]) -> None:
    _, peers = running
    await settle()
    assert peers.pings == 0


async def test_one_miss_gives_one_ping(running: tuple[ResendRequests, Peers]) -> None:
    resend, peers = running
    resend.missed()
    resend.missed()  # before the ping: the same request
    await settle()
    assert peers.pings == 1


async def test_no_ping_while_the_store_is_down(running: tuple[ResendRequests, Peers]) -> None:
    resend, peers = running
    peers.store_up = False
    resend.missed()
    await settle()
    assert peers.pings == 0
    assert peers.store_checks >= 2  # it keeps checking
    peers.store_up = True
    await settle()
    assert peers.pings == 1


async def test_homeserver_away_is_retried_until_it_answers(
    running: tuple[ResendRequests, Peers],
) -> None:
    resend, peers = running
    peers.homeserver_up = False
    resend.missed()
    await settle()
    assert peers.pings == 0
    peers.homeserver_up = True
    await settle()
    assert peers.pings == 1
    await settle()
    assert peers.pings == 1  # answered: no more pings


async def test_a_routine_ping_bounds_a_miss_nobody_saw() -> None:
    peers = Peers()
    resend = ResendRequests(peers.ping, peers.store_ready, retry_seconds=0.05, routine_seconds=0.1)
    task = asyncio.create_task(resend.run())
    await settle(0.35)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert 2 <= peers.pings <= 4
    assert resend.pings == peers.pings
