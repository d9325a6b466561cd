"""BatchWriter: what is submitted together is written together, and answered only after."""

from __future__ import annotations

import asyncio

import pytest

from mssbridge.store.batch_writer import BatchWriter, WriterClosed


class Recorder:
    """A write function that records its batches and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail_with: Exception | None = None

    async def write(self, items: list[int]) -> list[str]:
        self.entered.set()
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(items))
        return [f"row {item}" for item in items]


async def until(condition: object, *, steps: int = 1000) -> None:
    """Let the loop run until ``condition()`` holds (no wall-clock assertion)."""
    assert callable(condition)
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


async def test_items_queued_during_a_write_form_the_next_batch() -> None:
    recorder = Recorder()
    writer: BatchWriter[int, str] = BatchWriter(recorder.write)
    recorder.gate.clear()
    first = asyncio.create_task(writer.submit(0))
    await recorder.entered.wait()
    others = [asyncio.create_task(writer.submit(n)) for n in range(1, 6)]
    await until(lambda: writer.pending == 5)
    assert not any(task.done() for task in [first, *others])  # nothing answered yet
    recorder.gate.set()
    assert await asyncio.gather(first, *others) == [f"row {n}" for n in range(6)]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]
    assert writer.batches == 2
    await writer.close()


async def test_no_result_before_the_write_returns() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    writer: BatchWriter[int, str] = BatchWriter(recorder.write)
    task = asyncio.create_task(writer.submit(7))
    await recorder.entered.wait()
    for _ in range(50):
        await asyncio.sleep(0)
    assert not task.done() and recorder.batches == []
    recorder.gate.set()
    assert await task == "row 7"
    await writer.close()


async def test_a_failed_write_fails_every_item_of_its_batch_only() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    writer: BatchWriter[int, str] = BatchWriter(recorder.write)
    first = asyncio.create_task(writer.submit(0))
    await recorder.entered.wait()
    batch = [asyncio.create_task(writer.submit(n)) for n in (1, 2, 3)]
    await until(lambda: writer.pending == 3)
    recorder.fail_with = OSError("disk full")
    recorder.gate.set()
    results = await asyncio.gather(first, *batch, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert recorder.batches == []
    recorder.fail_with = None
    assert await writer.submit(4) == "row 4"  # the writer goes on
    assert recorder.batches == [[4]]
    await writer.close()


async def test_a_wrong_result_count_fails_the_batch() -> None:
    async def short(items: list[int]) -> list[str]:
        return []

    writer: BatchWriter[int, str] = BatchWriter(short)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await writer.submit(1)
    await writer.close()


async def test_batch_size_is_bounded() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    writer: BatchWriter[int, str] = BatchWriter(recorder.write, max_batch=3)
    tasks = [asyncio.create_task(writer.submit(0))]
    await recorder.entered.wait()
    tasks += [asyncio.create_task(writer.submit(n)) for n in range(1, 8)]
    await until(lambda: writer.pending == 7)
    recorder.gate.set()
    await asyncio.gather(*tasks)
    assert recorder.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
    await writer.close()


async def test_max_wait_gathers_items_that_come_soon_after() -> None:
    recorder = Recorder()
    writer: BatchWriter[int, str] = BatchWriter(recorder.write, max_wait=30.0, max_batch=3)
    tasks = [asyncio.create_task(writer.submit(n)) for n in range(3)]
    await asyncio.gather(*tasks)  # the third item fills the batch: no 30 s wait
    assert recorder.batches == [[0, 1, 2]]
    await writer.close()


async def test_a_cancelled_submitter_is_left_out_of_its_batch() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    writer: BatchWriter[int, str] = BatchWriter(recorder.write)
    first = asyncio.create_task(writer.submit(0))
    await recorder.entered.wait()
    gone = asyncio.create_task(writer.submit(1))
    kept = asyncio.create_task(writer.submit(2))
    await until(lambda: writer.pending == 2)
    gone.cancel()
    recorder.gate.set()
    assert await first == "row 0" and await kept == "row 2"
    assert recorder.batches == [[0], [2]]
    await writer.close()


async def test_backpressure_holds_submitters_past_max_pending() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    writer: BatchWriter[int, str] = BatchWriter(recorder.write, max_pending=2)
    tasks = [asyncio.create_task(writer.submit(0))]
    await recorder.entered.wait()
    tasks += [asyncio.create_task(writer.submit(n)) for n in (1, 2, 3)]
    await until(lambda: writer.pending == 2)
    for _ in range(50):
        await asyncio.sleep(0)
    assert writer.pending == 2  # the third waits to queue
    recorder.gate.set()
    assert await asyncio.gather(*tasks) == [f"row {n}" for n in range(4)]
    await writer.close()


async def test_close_writes_what_is_queued_then_refuses() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    writer: BatchWriter[int, str] = BatchWriter(recorder.write)
    tasks = [asyncio.create_task(writer.submit(0))]
    await recorder.entered.wait()
    tasks.append(asyncio.create_task(writer.submit(1)))
    await until(lambda: writer.pending == 1)
    closing = asyncio.create_task(writer.close())
    recorder.gate.set()
    await closing
    assert await asyncio.gather(*tasks) == ["row 0", "row 1"]
    with pytest.raises(WriterClosed):
        await writer.submit(2)


async def test_writers_write_batches_side_by_side() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    written: list[list[int]] = []

    async def write(items: list[int]) -> list[str]:
        if items == [0]:
            return await recorder.write(items)  # held until the gate opens
        written.append(items)
        return [f"row {item}" for item in items]

    writer: BatchWriter[int, str] = BatchWriter(write, writers=2)
    first = asyncio.create_task(writer.submit(0))
    await recorder.entered.wait()
    assert await writer.submit(1) == "row 1"  # the second writer did not wait for the first
    assert not first.done() and written == [[1]]
    recorder.gate.set()
    assert await first == "row 0"
    await writer.close()
    with pytest.raises(WriterClosed):
        await writer.submit(2)


def test_bounds_are_checked() -> None:
    async def write(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError):
        BatchWriter(write, max_batch=0)
    with pytest.raises(ValueError):
        BatchWriter(write, max_wait=-1.0)
    with pytest.raises(ValueError):
        BatchWriter(write, writers=0)
