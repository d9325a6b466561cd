"""The gateway's delivery worker: rows taken as slots free up, a bounded number per domain."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mssbridge.config import RetrySection
from mssbridge.errors import Rejected
from mssbridge.flows.worker import POLL_SECONDS, QueueWorker
from mssbridge.store.audit import outcome_of
from mssbridge.store.delivery_repo import DeliveryRepo
from mssbridge.store.repo import Store
from mssbridge.store.tables import Delivery

if TYPE_CHECKING:
    from mssbridge.metrics import BridgeMetrics

# Deliveries in progress at once in one process, all domains together: far above what a few
# domains down can hold (``per_domain`` each), so the others always find a slot.
MAX_IN_FLIGHT = 256


class DeliveryWorker(QueueWorker[Delivery]):
    """Unlike the batch loop of :class:`QueueWorker`, never waits for a slow delivery.

    Each claimed row runs in its own task; the next claim comes as soon as any finishes (or
    something new is queued), and asks only for domains with a free slot. So a domain whose
    servers are slow or down holds at most ``per_domain`` of the ``max_in_flight`` slots of
    this process, and mail to every other domain keeps leaving.
    """

    def __init__(
        self,
        store: Store,
        handle: Callable[[Delivery], Awaitable[None]],
        on_rejected: Callable[[Delivery, Rejected], Awaitable[None]],
        retry: RetrySection,
        *,
        per_domain: int,
        lease: float,
        batch: int = 16,
        max_in_flight: int = MAX_IN_FLIGHT,
        wakeup: asyncio.Event | None = None,
        closing: Callable[[], Awaitable[None]] | None = None,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        super().__init__(
            "delivery",
            store,
            Delivery,
            self._claim_free,
            handle,
            on_rejected,
            retry,
            batch=batch,
            wakeup=wakeup,
            lease=lease,
            metrics=metrics,
        )
        self.repo = DeliveryRepo(store)
        self.per_domain = per_domain
        self.max_in_flight = max_in_flight
        self._in_flight: dict[asyncio.Task[None], str] = {}
        self._closing = closing  # run once the deliveries in progress are over

    def busy(self) -> Counter[str]:
        """Deliveries in progress per domain."""
        return Counter(self._in_flight.values())

    async def _claim_free(self, owner: str, lease: float, limit: int) -> list[Delivery]:
        room = min(limit, self.max_in_flight - len(self._in_flight))
        if room <= 0:
            return []
        return await self.repo.claim(owner, lease, room, self.busy(), self.per_domain)

    def _count(self, row: Delivery, after: Delivery) -> None:
        assert self.metrics is not None
        self.metrics.delivery_closed(after.state, outcome_of(after.state, after.last_error))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._busy = len(self._in_flight)
        self.wakeup.set()  # a slot is free

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            # Cut short: deliveries in progress stop too; their rows come back after the lease.
            for task in self._in_flight:
                task.cancel()
            raise
        # Stopping: the deliveries in progress finish (the daemon bounds the wait).
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._closing is not None:
            await self._closing()

    async def _loop(self) -> None:
        while not self._stopping:
            self.wakeup.clear()
            rows = await self._claim_some(self.batch)
            for row in rows:
                task = asyncio.create_task(self.process(row), name=f"delivery-{row.id}")
                self._in_flight[task] = row.domain
                task.add_done_callback(self._finished)
            self._busy = len(self._in_flight)
            if rows:
                continue  # other domains may have due rows too
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), POLL_SECONDS)
