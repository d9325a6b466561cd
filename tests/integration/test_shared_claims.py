"""Several instances on one database: claims never overlap, leases renew and expire, mail turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from fixtures.database import open_test_store

from mssbridge.store.repo import Store
from mssbridge.store.tables import Inbox, Outbox, RowState

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def instances(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Store, Store, Clock]]:
    """Two stores, each with its own engine (as two processes), on one database and key."""
    clock = Clock()
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            open_test_store(database_url, tmp_path / "key", clock=clock)
        )
        second = await stack.enter_async_context(
            open_test_store(database_url, tmp_path / "key", clock=clock)
        )
        yield first, second, clock


def _message(n: int, room: str) -> dict[str, object]:
    return {
        "event_id": f"$e{n}",
        "room_id": room,
        "sender": "@u:h",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": f"m{n}"},
    }


async def _drain_outbox(store: Store, owner: str, seen: list[tuple[str, int]]) -> None:
    """Claim heads and close them until the queue is empty, as a worker would."""
    idle = 0
    while idle < 3:
        rows = await store.claim_outbox(owner, 60, 4)
        if not rows:
            idle += 1
            await asyncio.sleep(0.01)
            continue
        idle = 0
        for row in rows:
            seen.append((owner, row.id or 0))
            await store.finish(Outbox, row.id, RowState.DONE)


async def test_two_instances_take_every_row_once_in_room_order(
    instances: tuple[Store, Store, Clock],
) -> None:
    first, second, _clock = instances
    rooms = [f"!r{n}:h" for n in range(6)]
    events = [_message(n, rooms[n % len(rooms)]) for n in range(120)]
    assert await first.store_transaction("t", events) == len(events)
    seen: list[tuple[str, int]] = []
    await asyncio.gather(
        _drain_outbox(first, "one", seen),
        _drain_outbox(second, "two", seen),
        _drain_outbox(first, "three", seen),
    )
    ids = [row_id for _owner, row_id in seen]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == len(events)
    counts = await first.counts(Outbox)
    assert counts.by_state == {RowState.DONE: len(events)}
    # Within a room, rows were taken in the order they were written.
    room_of = {row.id: row.room_id for row in await first.rows(Outbox, [RowState.DONE], 500)}
    for room in rooms:
        taken = [row_id for row_id in ids if room_of[row_id] == room]
        assert taken == sorted(taken)


async def test_a_finished_row_is_not_taken_again(instances: tuple[Store, Store, Clock]) -> None:
    first, second, _clock = instances
    await first.store_transaction("t", [_message(1, "!a:h")])
    [row] = await first.claim_outbox("one", 60, 1)
    await first.finish(Outbox, row.id, RowState.DONE)
    assert await second.claim_outbox("two", 60, 1) == []
    assert await first.claim_outbox("one", 60, 1) == []


async def test_a_dead_instance_s_rows_come_back_after_its_lease(
    instances: tuple[Store, Store, Clock],
) -> None:
    first, second, clock = instances
    await first.store_transaction("t", [_message(1, "!a:h"), _message(2, "!b:h")])
    held = await first.claim_outbox("alive", 30, 1)
    lost = await first.claim_outbox("dead", 30, 1)
    assert len(held) == len(lost) == 1
    clock.now += 20
    assert await first.renew_leases(Outbox, "alive", 30) == 1  # the living one's heartbeat
    assert await second.claim_outbox("other", 30, 5) == []
    clock.now += 15  # the dead one's lease ran out; the renewed one did not
    taken = await second.claim_outbox("other", 30, 5)
    assert [r.id for r in taken] == [lost[0].id]
    assert await first.renew_leases(Outbox, "dead", 30) == 0  # too late: not its row any more


async def test_instances_take_the_inbox_in_turns(instances: tuple[Store, Store, Clock]) -> None:
    first, second, clock = instances
    for uid in range(1, 7):
        await first.store_mail("bal/INBOX", 1, uid, f"Subject: {uid}\r\n\r\nx\r\n".encode(), None)
    batch = await first.claim_inbox("one", 30, 4)
    assert [r.uid for r in batch] == [1, 2, 3, 4]
    # Mail 5 could be a reply to mail 4: nobody else posts mail while "one" holds a batch.
    assert await second.claim_inbox("two", 30, 4) == []
    for row in batch:
        await first.finish(Inbox, row.id, RowState.DONE)
    assert [r.uid for r in await second.claim_inbox("two", 30, 4)] == [5, 6]
    assert await first.claim_inbox("one", 30, 4) == []
    clock.now += 31  # "two" died holding them: its turn ends with its lease
    assert [r.uid for r in await first.claim_inbox("one", 30, 4)] == [5, 6]


async def test_two_readers_store_one_mail_once(instances: tuple[Store, Store, Clock]) -> None:
    first, second, _clock = instances
    await first.reset_imap_cursor("bal/INBOX", 1)
    raw = b"Subject: once\r\n\r\nbody\r\n"
    results = await asyncio.gather(
        first.store_mail("bal/INBOX", 1, 9, raw, "<m@x>"),
        second.store_mail("bal/INBOX", 1, 9, raw, "<m@x>"),
    )
    assert len([r for r in results if r is not None]) == 1
    cursor = await first.imap_cursor("bal/INBOX")
    assert cursor is not None and cursor.last_uid == 9
