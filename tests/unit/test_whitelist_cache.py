"""WhitelistCache: one look at the store per few seconds, and a new import seen after that."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mssbridge.store.whitelist_cache import WhitelistCache
from mssbridge.store.whitelist_repo import WhitelistRepo


@dataclass
class Imported:
    id: int


@dataclass
class FakeWhitelist:
    """The two look-ups the cache makes, counted."""

    import_id: int | None = 1
    dns: dict[str, list[str]] = field(default_factory=lambda: {"a.fr": ["CN=a"]})
    reads: list[str] = field(default_factory=list)

    async def current(self) -> Imported | None:
        self.reads.append("current")
        return None if self.import_id is None else Imported(self.import_id)

    async def operator_dns(self, domain: str) -> list[str]:
        self.reads.append(domain)
        return list(self.dns.get(domain, []))

    async def all_dns(self) -> list[str]:
        self.reads.append("*")
        return sorted(dn for dns in self.dns.values() for dn in dns)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache_of(fake: FakeWhitelist, clock: Clock) -> WhitelistCache:
    repo: WhitelistRepo = fake  # type: ignore[assignment]
    return WhitelistCache(repo, fake.all_dns, recheck_after=5.0, clock=clock)


async def test_lookups_are_kept_until_the_recheck() -> None:
    fake, clock = FakeWhitelist(), Clock()
    cache = cache_of(fake, clock)
    for _ in range(3):
        assert await cache.in_force()
        assert await cache.operator_dns("a.fr") == ["CN=a"]
        assert await cache.operator_dns("b.fr") == []
        assert await cache.any_operator_dns() == ["CN=a"]
    assert fake.reads == ["current", "a.fr", "b.fr", "*"]

    clock.now += 5.0  # same import still in force: the domains stay known
    assert await cache.in_force()
    assert await cache.operator_dns("a.fr") == ["CN=a"]
    assert fake.reads == ["current", "a.fr", "b.fr", "*", "current"]


async def test_a_new_import_replaces_what_was_known() -> None:
    fake, clock = FakeWhitelist(), Clock()
    cache = cache_of(fake, clock)
    assert await cache.in_force() and await cache.operator_dns("a.fr") == ["CN=a"]
    fake.import_id, fake.dns = 2, {"a.fr": ["CN=a2"], "b.fr": ["CN=b"]}
    clock.now += 4.9
    assert await cache.operator_dns("a.fr") == ["CN=a"]  # within the delay: the list read before
    clock.now += 0.1
    assert await cache.in_force()
    assert await cache.operator_dns("a.fr") == ["CN=a2"]
    assert await cache.any_operator_dns() == ["CN=a2", "CN=b"]


async def test_no_list_in_force_is_asked_again_each_time() -> None:
    fake, clock = FakeWhitelist(import_id=None), Clock()
    cache = cache_of(fake, clock)
    assert not await cache.in_force()
    assert not await cache.in_force()
    fake.import_id = 1
    assert await cache.in_force()
    assert fake.reads == ["current"] * 3


@dataclass
class SlowWhitelist(FakeWhitelist):
    """Each look-up waits for ``gate``, so that sessions ask at the same time."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False

    async def current(self) -> Imported | None:
        self.reads.append("current")
        await self.gate.wait()
        if self.fail:
            raise OSError("store gone")
        return None if self.import_id is None else Imported(self.import_id)

    async def operator_dns(self, domain: str) -> list[str]:
        self.reads.append(domain)
        await self.gate.wait()
        return list(self.dns.get(domain, []))


async def _together(count: int, gate: asyncio.Event, call: Any) -> list[Any]:
    tasks = [asyncio.ensure_future(call()) for _ in range(count)]
    await asyncio.sleep(0)
    gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_sessions_asking_together_share_one_read() -> None:
    fake, clock = SlowWhitelist(), Clock()
    cache = cache_of(fake, clock)
    assert await _together(20, fake.gate, cache.in_force) == [True] * 20
    assert fake.reads == ["current"]
    fake.gate.clear()
    found = await _together(20, fake.gate, lambda: cache.operator_dns("a.fr"))
    assert found == [["CN=a"]] * 20
    assert fake.reads == ["current", "a.fr"]
    clock.now += 5.0  # stale: the next burst reads once more, not once per session
    fake.gate.clear()
    assert await _together(20, fake.gate, cache.in_force) == [True] * 20
    assert fake.reads == ["current", "a.fr", "current"]


async def test_a_shared_read_that_fails_fails_every_waiter_then_is_retried() -> None:
    fake, clock = SlowWhitelist(fail=True), Clock()
    cache = cache_of(fake, clock)
    results = await _together(5, fake.gate, cache.in_force)
    assert all(isinstance(result, OSError) for result in results)
    assert fake.reads == ["current"]
    fake.fail = False
    assert await cache.in_force()
    assert fake.reads == ["current", "current"]


async def test_a_waiter_cancelled_does_not_cancel_the_shared_read() -> None:
    fake, clock = SlowWhitelist(), Clock()
    cache = cache_of(fake, clock)
    first = asyncio.ensure_future(cache.in_force())
    second = asyncio.ensure_future(cache.in_force())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    fake.gate.set()
    assert await second
    assert fake.reads == ["current"]
