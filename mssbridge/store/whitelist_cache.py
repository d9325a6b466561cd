"""The whitelist as the gateway's MAIL checks read it: from memory, re-checked every few seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from mssbridge.store.whitelist_repo import WhitelistRepo

# How long a list in force is trusted without asking the store again. An import (daily, or
# by hand) reaches new MAIL commands within this delay; until then they are checked against
# the list read before, as a session opened just before the import would be.
RECHECK_AFTER = 5.0
# Sender domains remembered at once (the list holds a few thousand; unknown domains are
# remembered too, so a peer cannot grow this without bound).
MAX_DOMAINS = 20_000

T = TypeVar("T")


def _shared(
    read: Coroutine[Any, Any, T], done: Callable[[asyncio.Task[T]], object]
) -> asyncio.Task[T]:
    """``read`` as a task several sessions may wait for; ``done`` runs once it ends."""
    task = asyncio.ensure_future(read)
    task.add_done_callback(done)
    # A failure reaches every waiter; if they were all gone, it is not reported as unseen.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


class WhitelistCache:
    """Answers "which DNs may send for this domain" without a query per MAIL command.

    The import in force is re-read at most every ``recheck_after`` seconds; the DNs of a
    domain are kept until another import is in force. No list in force is never kept: the
    next MAIL asks again.
    """

    def __init__(
        self,
        whitelist: WhitelistRepo,
        all_dns: Callable[[], Awaitable[list[str]]],
        *,
        recheck_after: float = RECHECK_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.whitelist = whitelist
        self._all_dns = all_dns
        self.recheck_after = recheck_after
        self.clock = clock
        self._import_id: int | None = None
        self._checked_at = 0.0
        self._by_domain: dict[str, list[str]] = {}
        self._any_domain: list[str] | None = None
        self._recheck: asyncio.Task[bool] | None = None
        self._domain_reads: dict[str, asyncio.Task[list[str]]] = {}

    async def in_force(self) -> bool:
        """Whether a list was imported (re-read when the last look is too old).

        Sessions that find the last look too old at the same time share one read.
        """
        now = self.clock()
        if self._import_id is not None and now - self._checked_at < self.recheck_after:
            return True
        if self._recheck is None:
            self._recheck = _shared(self._read_in_force(now), self._recheck_done)
        return await asyncio.shield(self._recheck)

    def _recheck_done(self, task: asyncio.Task[bool]) -> None:
        self._recheck = None

    async def _read_in_force(self, now: float) -> bool:
        current = await self.whitelist.current()
        import_id = None if current is None else current.id
        if import_id != self._import_id:
            self._by_domain.clear()
            self._any_domain = None
        self._import_id = import_id
        self._checked_at = now
        return import_id is not None

    async def operator_dns(self, domain: str) -> list[str]:
        """The DNs listed for ``domain`` in the list in force (call :meth:`in_force` first)."""
        found = self._by_domain.get(domain)
        if found is not None:
            return found
        reading = self._domain_reads.get(domain)
        if reading is None:  # the first session asking reads it; the others wait for that
            reading = _shared(
                self._read_domain(domain), lambda task: self._domain_reads.pop(domain, None)
            )
            self._domain_reads[domain] = reading
        return list(await asyncio.shield(reading))

    async def _read_domain(self, domain: str) -> list[str]:
        import_id = self._import_id
        found = await self.whitelist.operator_dns(domain)
        if import_id == self._import_id:  # not read across an import: keep it
            if len(self._by_domain) >= MAX_DOMAINS:
                self._by_domain.clear()
            self._by_domain[domain] = found
        return found

    async def any_operator_dns(self) -> list[str]:
        """Every operator DN of the list in force (for the null sender)."""
        if self._any_domain is not None:
            return self._any_domain
        import_id = self._import_id
        found = await self._all_dns()
        if import_id == self._import_id:
            self._any_domain = found
        return found
