"""The idle SMTP session cache of gateway delivery, with a stand-in session."""

from __future__ import annotations

import asyncio
from typing import cast

import aiosmtplib

from mssbridge.mail.smtp_sessions import SessionCache


class FakeSession:
    def __init__(self, alive: bool = True) -> None:
        self.alive = alive
        self.is_connected = True
        self.quits = 0
        self.noops = 0

    async def noop(self) -> None:
        self.noops += 1
        if not self.alive:
            raise aiosmtplib.SMTPServerDisconnected("gone")

    async def quit(self) -> None:
        self.quits += 1
        self.is_connected = False

    def close(self) -> None:
        self.is_connected = False


def _smtp(session: FakeSession) -> aiosmtplib.SMTP:
    return cast(aiosmtplib.SMTP, session)


async def test_a_session_is_handed_out_once_and_only_to_its_domain() -> None:
    cache = SessionCache(idle_seconds=5, per_domain=2)
    first = FakeSession()
    cache.give("a.fr", _smtp(first), "mx.a.fr")
    assert await cache.take("b.fr") is None
    assert await cache.take("a.fr") == (first, "mx.a.fr")
    assert first.noops == 1  # checked alive before use
    assert await cache.take("a.fr") is None  # in use: not handed out twice
    await cache.close()


async def test_dead_expired_and_surplus_sessions_are_closed() -> None:
    cache = SessionCache(idle_seconds=0.2, per_domain=1)
    dead = FakeSession(alive=False)
    cache.give("a.fr", _smtp(dead), "mx")
    assert await cache.take("a.fr") is None and not dead.is_connected
    kept, surplus = FakeSession(), FakeSession()
    cache.give("a.fr", _smtp(kept), "mx")
    cache.give("a.fr", _smtp(surplus), "mx")  # over per_domain: said goodbye at once
    await asyncio.sleep(0.05)
    assert surplus.quits == 1 and cache.idle("a.fr") == 1
    await asyncio.sleep(0.3)  # past idle_seconds: QUIT
    assert kept.quits == 1 and cache.idle("a.fr") == 0
    assert await cache.take("a.fr") is None


async def test_close_says_goodbye_to_every_idle_session() -> None:
    cache = SessionCache(idle_seconds=60)
    sessions = [FakeSession() for _ in range(3)]
    for n, session in enumerate(sessions):
        cache.give(f"d{n}.fr", _smtp(session), "mx")
    await cache.close()
    assert [s.quits for s in sessions] == [1, 1, 1]
