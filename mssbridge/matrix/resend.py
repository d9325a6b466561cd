"""Asks the homeserver to resend the transactions it queued, as soon as the bridge can take them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("mssbridge.matrix.resend")

# After a miss, how often to try again while the homeserver or the store is still away.
RETRY_SECONDS = 5.0
# Without any miss seen: a homeserver that could not reach the bridge (a network cut the
# bridge did not notice) backs off for up to about eight minutes; this bounds the wait.
ROUTINE_SECONDS = 60.0


class ResendRequests:
    """Pings the homeserver (MSC2659) after a missed transaction or an unreachable homeserver.

    A homeserver whose transactions failed backs off, doubling its wait up to minutes. A
    successful ping makes Synapse retry at once. The ping is sent only once the store
    answers: while it cannot store, a resent transaction would only be refused again.
    """

    def __init__(
        self,
        ping: Callable[[], Awaitable[Any]],
        store_ready: Callable[[], Awaitable[Any]],
        retry_seconds: float = RETRY_SECONDS,
        routine_seconds: float = ROUTINE_SECONDS,
    ) -> None:
        self._ping = ping
        self._store_ready = store_ready
        self._retry_seconds = retry_seconds
        self._routine_seconds = routine_seconds
        self._wanted = asyncio.Event()
        self._failing = False
        self.pings = 0

    def missed(self) -> None:
        """A transaction was refused or the homeserver could not be reached: ping when possible."""
        self._wanted.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), self._routine_seconds)
            while not await self._try_once():
                await asyncio.sleep(self._retry_seconds)

    async def _try_once(self) -> bool:
        asked = self._wanted.is_set()
        self._wanted.clear()  # a miss from now on asks for another ping
        try:
            await self._store_ready()
            await self._ping()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._failing:
                log.info("homeserver ping deferred (%s); trying again", type(exc).__name__)
            self._failing = True
            self._wanted.set()
            return False
        self.pings += 1
        if asked or self._failing:
            log.info("homeserver pinged: it resends what it queued for the bridge")
        self._failing = False
        return True
