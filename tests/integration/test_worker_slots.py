"""The outbox worker fills a slot as soon as a row is done, and keeps each room's order."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mssbridge.config import RetrySection
from mssbridge.errors import Rejected
from mssbridge.flows.worker import QueueWorker
from mssbridge.store.repo import Store
from mssbridge.store.tables import Outbox, RowState

pytestmark = pytest.mark.integration


def _event(event_id: str, room: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "room_id": room,
        "sender": "@alice:h",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": event_id},
    }


async def _never_rejected(_row: Outbox, _exc: Rejected) -> None:
    raise AssertionError("no row is rejected here")


async def test_a_slow_room_does_not_hold_the_others_and_order_holds(store: Store) -> None:
    events = [_event("$slow", "!slow:h")]
    events += [_event(f"$fast-{i}", "!fast:h") for i in range(4)]
    events += [_event(f"$other-{i}", "!other:h") for i in range(3)]
    await store.store_transaction("t1", events)
    release_slow = asyncio.Event()
    running: dict[str, str] = {}  # room → event in flight
    started: list[str] = []
    overlaps: list[str] = []

    async def handle(row: Outbox) -> None:
        if row.room_id in running:
            overlaps.append(row.event_id)  # two rows of one room at once
        running[row.room_id] = row.event_id
        started.append(row.event_id)
        if row.event_id == "$slow":
            await release_slow.wait()
        else:
            await asyncio.sleep(0.01)
        del running[row.room_id]
        await store.finish(Outbox, row.id, RowState.DONE)

    worker = QueueWorker(
        "outbox",
        store,
        Outbox,
        store.claim_outbox,
        handle,
        _never_rejected,
        RetrySection(),
        batch=2,
    )
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(20):
            # With two slots and one held by the slow row, the rest still flows through the other.
            while len(started) < len(events):
                await asyncio.sleep(0.02)
            assert await store.rows(Outbox, ["pending"]) != []  # the slow row is still open
            release_slow.set()
            while await store.rows(Outbox, ["pending", "retry"]):
                await asyncio.sleep(0.02)
    finally:
        release_slow.set()
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    assert overlaps == []
    assert [e for e in started if e.startswith("$fast")] == [f"$fast-{i}" for i in range(4)]
    assert [e for e in started if e.startswith("$other")] == [f"$other-{i}" for i in range(3)]
