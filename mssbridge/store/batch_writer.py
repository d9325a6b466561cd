"""Group commit: items submitted close together are written by one call, one transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("mssbridge.batch_writer")

Item = TypeVar("Item")
Result = TypeVar("Result")

# A mail's share of a commit: most of the cost of a small mail is the commit's fsync, so a
# batch of a few dozen mails costs little more than one; past that the batch only adds
# latency and memory.
DEFAULT_MAX_BATCH = 64
# Waiting for more items after the first trades latency for fewer commits. The writer
# batches without waiting anyway: what arrives while a commit runs forms the next batch.
DEFAULT_MAX_WAIT = 0.0
# Submitters beyond this many wait their turn to queue (backpressure on the sessions).
DEFAULT_MAX_PENDING = 1024


class WriterClosed(RuntimeError):
    """The writer was closed: nothing submitted now can be written."""


class BatchWriter(Generic[Item, Result]):
    """Writer tasks (one by default); :meth:`submit` returns an item's result once its
    batch is written.

    ``write`` gets a batch of items and returns one result per item, in order, only once
    they are durable; if it raises, every submitter of that batch gets the exception (the
    write must then have kept none of the batch: one transaction). A submitter cancelled
    before its batch is taken is left out of it. With ``writers`` above 1, that many batches
    may be written at once (a database whose commits overlap, unlike SQLite's).
    """

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_pending: int = DEFAULT_MAX_PENDING,
        writers: int = 1,
    ) -> None:
        if max_batch < 1 or max_wait < 0 or max_pending < 1 or writers < 1:
            raise ValueError("max_batch, max_pending and writers must be >= 1, max_wait >= 0")
        self._write = write
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]] | None] = asyncio.Queue(
            max_pending
        )
        self.writers = writers
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.batches = 0  # how many write calls were made (for tests and benchmarks)

    @property
    def pending(self) -> int:
        """Items queued and not yet taken into a batch."""
        return self._queue.qsize()

    async def submit(self, item: Item) -> Result:
        """Queue ``item``; return its result once the batch holding it is written."""
        if self._closed or (self._tasks and all(task.done() for task in self._tasks)):
            raise WriterClosed("the batch writer is closed")
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"batch-writer-{number}")
                for number in range(self.writers)
            ]
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def close(self) -> None:
        """Write what is queued, then stop the writer tasks; later submits raise."""
        if self._closed:
            return
        self._closed = True
        for _ in self._tasks:  # one end mark per task: each stops at the first it takes
            await self._queue.put(None)
        await asyncio.gather(*self._tasks)

    async def _run(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            batch, stop = await self._gather(entry)
            await self._write_batch(batch)
            if stop:
                return

    async def _gather(
        self, first: tuple[Item, asyncio.Future[Result]]
    ) -> tuple[list[tuple[Item, asyncio.Future[Result]]], bool]:
        """``first`` and what is queued behind it, waiting up to ``max_wait`` for more."""
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    entry = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                entry = self._queue.get_nowait()
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        waiting = [(item, future) for item, future in batch if not future.done()]
        if not waiting:
            return
        self.batches += 1
        try:
            results = await self._write([item for item, _ in waiting])
            if len(results) != len(waiting):
                raise RuntimeError(f"{len(results)} results for {len(waiting)} items")
        except Exception as exc:  # every waiter of the batch gets it; the writer goes on
            log.debug("batch of %d not written (%s)", len(waiting), type(exc).__name__)
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException as exc:  # cancelled: the waiters must not hang
            for _, future in waiting:
                if not future.done():
                    future.set_exception(WriterClosed(f"writer stopped ({type(exc).__name__})"))
            raise
        for (_, future), result in zip(waiting, results, strict=True):
            if not future.done():
                future.set_result(result)
