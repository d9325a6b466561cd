"""WhitelistCache: one look at the store per few seconds, and a new import seen after that."""

from __future__ import annotations

from dataclasses import dataclass, field

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
