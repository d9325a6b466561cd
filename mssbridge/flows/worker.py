"""A queue worker: claims due rows, runs a flow on each, and applies the retry/shunt rules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic

from mssbridge.config import RetrySection
from mssbridge.errors import ConfigError, Rejected, TemporaryFailure
from mssbridge.policy.retry import gives_up, next_delay
from mssbridge.store.audit import outcome_of
from mssbridge.store.db import is_store_unavailable
from mssbridge.store.repo import Queue, Store
from mssbridge.store.tables import RowState

if TYPE_CHECKING:
    from mssbridge.metrics import BridgeMetrics

log = logging.getLogger("mssbridge.worker")

LEASE_SECONDS = 60.0
POLL_SECONDS = 1.0
# Leases are renewed this many times per lease period while the worker holds rows.
RENEWALS_PER_LEASE = 3


def worker_identity() -> str:
    """A name unique to this process, used as the lease owner."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_dead_local_owner(owner: str) -> bool:
    """True for a lease owner that ran on this host and whose process no longer exists."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def release_dead_leases(store: Store) -> int:
    """At start, take back the rows a crashed process of this host still holds."""
    released = 0
    for owner in await store.lease_owners():
        if is_dead_local_owner(owner):
            count = await store.release_leases(owner)
            log.info("released %d row(s) leased by dead worker %s", count, owner)
            released += count
    return released


class QueueWorker(Generic[Queue]):
    """Processes one queue: at most one row per conversation at a time, many conversations."""

    def __init__(
        self,
        name: str,
        store: Store,
        table: type[Queue],
        claim: Callable[[str, float, int], Awaitable[list[Queue]]],
        handle: Callable[[Queue], Awaitable[None]],
        on_rejected: Callable[[Queue, Rejected], Awaitable[None]],
        retry: RetrySection,
        batch: int = 16,
        wakeup: asyncio.Event | None = None,
        parallel: bool = True,
        metrics: BridgeMetrics | None = None,
        lease: float = LEASE_SECONDS,
    ) -> None:
        self.name = name
        self.store = store
        self.table: type[Queue] = table
        self.claim: Callable[[str, float, int], Awaitable[list[Queue]]] = claim
        self.handle: Callable[[Queue], Awaitable[None]] = handle
        self.on_rejected: Callable[[Queue, Rejected], Awaitable[None]] = on_rejected
        self.retry = retry
        self.batch = batch
        self.parallel = parallel
        self.metrics = metrics
        self.lease = lease
        self.direction = "out" if table.__tablename__ == "outbox" else "in"
        self.owner = worker_identity()
        self.wakeup = wakeup or asyncio.Event()
        self._stopping = False
        self._busy = 0
        self._store_down = False
        # Rows this worker leased whose outcome the store did not take (it went away): taken
        # back as soon as it answers, instead of at the end of their lease.
        self._unrecorded: set[int] = set()

    def wake(self) -> None:
        self.wakeup.set()

    def stop(self) -> None:
        self._stopping = True
        self.wakeup.set()

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._keep_leases(), name=f"{self.name}-leases")
        try:
            await self._run()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _run(self) -> None:
        if self.parallel:
            await self._run_parallel()
            return
        while not self._stopping:
            self.wakeup.clear()
            rows = await self._claim_some(self.batch)
            self._busy = len(rows)
            for row in rows:
                await self.process(row)
            self._busy = 0
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), POLL_SECONDS)

    async def _run_parallel(self) -> None:
        """Up to ``batch`` rows at a time; a slot freed by a finished row is filled at once.

        The claim only offers a room's oldest open row, and only when it is not leased: a
        room's next row waits for the one in flight, whatever the others do.
        """
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                self.wakeup.clear()
                free = self.batch - len(in_flight)
                rows = await self._claim_some(free) if free > 0 else []
                in_flight.update(asyncio.create_task(self.process(row)) for row in rows)
                self._busy = len(in_flight)
                if rows and len(in_flight) < self.batch:
                    continue  # there may be more due rows than that claim took
                woken = asyncio.create_task(self.wakeup.wait())
                try:
                    done, _ = await asyncio.wait(
                        {*in_flight, woken},
                        timeout=None if in_flight else POLL_SECONDS,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    woken.cancel()
                in_flight.difference_update(done)
                self._busy = len(in_flight)
        finally:
            if in_flight:  # a stop lets the rows in hand finish (the daemon bounds the wait)
                await asyncio.gather(*in_flight, return_exceptions=True)
            self._busy = 0

    async def _claim_some(self, limit: int) -> list[Queue]:
        """Take back unrecorded rows, then claim up to ``limit``; none while the store is away."""
        try:
            await self._take_back_unrecorded()
            rows = await self.claim(self.owner, self.lease, limit)
        except Exception as exc:
            if not is_store_unavailable(exc):
                log.exception("%s: cannot claim rows", self.name)
            elif not self._store_down:
                log.warning("%s: store unavailable (%s)", self.name, type(exc).__name__)
            self._store_down = True
            return []
        if self._store_down:
            log.info("%s: store available again", self.name)
        self._store_down = False
        return rows

    async def _take_back_unrecorded(self) -> None:
        """Free the leases of rows whose outcome went unrecorded, so they run again now.

        What a lease's end would do, without the wait: their effects are idempotent or
        checked (relay.md), and an inbox row held this way holds every later mail.
        """
        if not self._unrecorded:
            return
        released = await self.store.release_rows(self.table, self.owner, sorted(self._unrecorded))
        log.info("%s: %d row(s) whose outcome was not recorded are due again", self.name, released)
        self._unrecorded.clear()

    async def _keep_leases(self) -> None:
        """Renew the leases of the rows in hand, so only a dead process's rows expire.

        A row whose flow outlasts the lease (a slow server, a batch taken in order) stays
        this worker's; rows of a process that died are free for another instance after one
        lease period at most.
        """
        while True:
            await asyncio.sleep(self.lease / RENEWALS_PER_LEASE)
            if not self._busy:
                continue
            try:
                await self.store.renew_leases(self.table, self.owner, self.lease)
            except Exception as exc:
                log.warning("%s: cannot renew leases (%s)", self.name, type(exc).__name__)

    async def process(self, row: Queue) -> None:
        """Run the flow on one row, then count how the row came out (when metrics are on)."""
        try:
            await self._process(row)
        except Exception as exc:  # the store failed while closing the row: keep working
            log.warning(
                "%s row %s: outcome not recorded (%s); the row runs again once the store answers",
                self.name,
                row.id,
                type(exc).__name__,
            )
            if row.id is not None:
                self._unrecorded.add(row.id)
            return
        if self.metrics is not None:
            await self._observe(row)

    async def _observe(self, row: Queue) -> None:
        """Read the row's state back (a primary-key read) and feed the counters."""
        assert self.metrics is not None
        try:
            after = await self.store.get(self.table, row.id or 0)
        except Exception:
            return
        if after is not None:
            self._count(row, after)

    def _count(self, row: Queue, after: Queue) -> None:
        """Feed the counters with how ``row`` came out (``after``, read back)."""
        assert self.metrics is not None
        self.metrics.closed(
            self.direction,
            after.state,
            created_at=row.created_at,
            reason=outcome_of(after.state, after.last_error),
            now=self.store.clock(),
        )

    async def _process(self, row: Queue) -> None:
        """Run the flow; the flow closes the row itself on success, atomically with its effect."""
        try:
            await self.handle(row)
        except Rejected as exc:
            log.warning("%s row %s rejected (%s): %s", self.name, row.id, exc.code, exc)
            await self.store.finish(self.table, row.id, RowState.REJECTED, f"{exc.code} {exc}")
            await self._report(row, exc)
        except TemporaryFailure as exc:
            await self._retry_or_give_up(row, exc)
        except ConfigError as exc:
            # A certificate or trust problem: retrying soon cannot help, giving up would lose
            # the message; keep it queued at the slowest pace until an operator fixes it.
            log.error("%s row %s held: configuration problem: %s", self.name, row.id, exc)
            await self._retry_or_give_up(row, TemporaryFailure(str(exc)), self.retry.max_delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_store_unavailable(exc):
                # Database down, locked or full under the flow: not the row's fault. Its
                # effects are idempotent or checked (relay.md), so it is simply run again.
                log.warning(
                    "%s row %s: store unavailable (%s)", self.name, row.id, type(exc).__name__
                )
                await self.store.retry_later(
                    self.table, row, self.retry.first_delay, "store unavailable"
                )
                return
            log.exception("%s row %s shunted after an unexpected error", self.name, row.id)
            await self.store.finish(
                self.table, row.id, RowState.SHUNTED, f"unexpected {type(exc).__name__}"
            )
            await self._report(
                row,
                Rejected(
                    "Une erreur inattendue a bloqué ce message ; il est conservé pour "
                    "l'équipe informatique.",
                    code="4.3.0",
                ),
            )

    async def _retry_or_give_up(
        self, row: Queue, exc: TemporaryFailure, delay: float | None = None
    ) -> None:
        now = self.store.clock()
        if gives_up(row.created_at, now, self.retry.give_up_after):
            log.warning("%s row %s: giving up after %d attempts", self.name, row.id, row.attempts)
            await self.store.finish(self.table, row.id, RowState.REJECTED, f"expired: {exc}")
            await self._report(
                row,
                Rejected(
                    "Le message n'a pas pu être transmis malgré plusieurs tentatives.",
                    code="4.4.7",
                ),
            )
            return
        if delay is None:
            delay = next_delay(row.attempts, self.retry.first_delay, self.retry.max_delay)
        log.info(
            "%s row %s: temporary failure (%s); retry in %.0f s", self.name, row.id, exc, delay
        )
        await self.store.retry_later(self.table, row, delay, str(exc)[:500])

    async def _report(self, row: Queue, exc: Rejected) -> None:
        try:
            await self.on_rejected(row, exc)
        except Exception:
            log.exception("%s row %s: could not report the refusal", self.name, row.id)
