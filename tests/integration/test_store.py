"""The store on SQLite and PostgreSQL: migrations, idempotent writes, claims, per-room order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fixtures.database import open_test_store
from sqlalchemy import text

from mssbridge.errors import ConfigError
from mssbridge.security.atrest import Sealer, load_key, new_key_file
from mssbridge.store.db import migrate
from mssbridge.store.repo import Store
from mssbridge.store.tables import Inbox, Outbox, RowState

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_test_store(database_url, tmp_path / "key", clock=Clock()) as ready:
        await migrate(ready.engine)  # a second start finds the schema up to date
        yield ready


def _message(event_id: str, room: str = "!a:h", body: str = "hello") -> dict[str, object]:
    return {
        "event_id": event_id,
        "room_id": room,
        "sender": "@u:h",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": body},
    }


async def test_transaction_is_stored_once(store: Store) -> None:
    events = [_message("$1"), _message("$2")]
    assert await store.store_transaction("t1", events) == 2
    assert await store.store_transaction("t1", events) == 0  # replayed transaction
    assert await store.store_transaction("t2", [_message("$2"), _message("$3")]) == 1
    rows = await store.rows(Outbox, ["pending"])
    assert [r.event_id for r in rows] == ["$1", "$2", "$3"]
    assert store.event_of(rows[0])["content"] == {"msgtype": "m.text", "body": "hello"}


async def test_bodies_are_encrypted_in_the_database(store: Store) -> None:
    await store.store_transaction("t", [_message("$1", body="Patient DUPONT, INR 4.2")])
    await store.store_mail("bal/INBOX", 7, 1, b"Subject: x\r\n\r\nINR 4.2 DUPONT\r\n", "<m@x>")
    async with store.engine.connect() as conn:
        payloads = (await conn.execute(text("select payload from outbox"))).scalars().all()
        raws = (await conn.execute(text("select raw from inbox"))).scalars().all()
    for blob in [*payloads, *raws]:
        assert b"DUPONT" not in bytes(blob)
        assert b"INR" not in bytes(blob)


async def test_wrong_key_is_refused_at_start(store: Store, tmp_path: Path) -> None:
    new_key_file(tmp_path / "other")
    other = Store(store.engine, Sealer(load_key(tmp_path / "other")))
    with pytest.raises(ConfigError, match="cannot open the store"):
        await other.verify_key()


async def test_mail_store_advances_cursor_and_deduplicates(store: Store) -> None:
    first = await store.store_mail("bal/INBOX", 7, 10, b"raw-1", "<1@x>")
    assert first is not None
    cursor = await store.imap_cursor("bal/INBOX")
    assert cursor is not None and (cursor.uidvalidity, cursor.last_uid) == (7, 10)
    # the same bytes seen again after a UIDVALIDITY change: not stored twice
    await store.reset_imap_cursor("bal/INBOX", 8)
    assert await store.store_mail("bal/INBOX", 8, 1, b"raw-1", "<1@x>") is None
    cursor = await store.imap_cursor("bal/INBOX")
    assert cursor is not None and (cursor.uidvalidity, cursor.last_uid) == (8, 1)
    row = await store.get(Inbox, first)
    assert row is not None and store.raw_of(row) == b"raw-1"
    # oversize mails are recorded without content, and never collide with each other
    a = await store.store_mail("bal/INBOX", 8, 2, b"", None, state=RowState.REJECTED, size=9)
    b = await store.store_mail("bal/INBOX", 8, 3, b"", None, state=RowState.REJECTED, size=9)
    assert a is not None and b is not None and a != b


async def test_claims_keep_room_order_and_leases(store: Store) -> None:
    await store.store_transaction(
        "t", [_message("$a1", "!a:h"), _message("$b1", "!b:h"), _message("$a2", "!a:h")]
    )
    first = await store.claim_outbox("w1", 60, 10)
    assert sorted(r.event_id for r in first) == ["$a1", "$b1"]  # one head per room
    assert await store.claim_outbox("w2", 60, 10) == []  # leased to w1
    a1 = next(r for r in first if r.event_id == "$a1")
    await store.retry_later(Outbox, a1, 30, "4.4.1 down")
    # $a2 waits behind $a1 (order per conversation), even though it is due
    assert await store.claim_outbox("w2", 60, 10) == []
    clock = store.clock
    assert isinstance(clock, Clock)
    clock.now += 31
    again = await store.claim_outbox("w2", 60, 10)
    assert [r.event_id for r in again] == ["$a1"]
    assert again[0].attempts == 1
    await store.finish(Outbox, again[0].id, RowState.DONE)
    assert [r.event_id for r in await store.claim_outbox("w2", 60, 10)] == ["$a2"]


async def test_expired_lease_is_taken_over(store: Store) -> None:
    await store.store_transaction("t", [_message("$1")])
    assert len(await store.claim_outbox("dead-worker", 60, 10)) == 1
    clock = store.clock
    assert isinstance(clock, Clock)
    clock.now += 61
    taken = await store.claim_outbox("w2", 60, 10)
    assert [r.lease_owner for r in taken] == ["w2"]


async def test_portal_threading_lookup_and_relay_record(store: Store) -> None:
    portal = await store.create_portal(subject="Avis", correspondents=["a@b.fr"], room_id="!p:h")
    await store.store_transaction("t", [_message("$1", "!p:h")])
    row = (await store.rows(Outbox, ["pending"]))[0]
    await store.record_relay(
        portal,
        [("$1", "<m1@bridge>")],
        "out",
        queue=Outbox,
        row_id=row.id,
        last_message_id="<m1@bridge>",
    )
    assert (await store.get(Outbox, row.id)).state == RowState.DONE  # type: ignore[union-attr]
    found = await store.portal_for_message_ids(["<unknown@x>", "<m1@bridge>"])
    assert found is not None and found.id == portal.id
    fresh = await store.portal_by_room("!p:h")
    assert fresh is not None
    assert fresh.root_message_id == "<m1@bridge>" and fresh.last_message_id == "<m1@bridge>"
    assert await store.message_id_of_event("$1") == "<m1@bridge>"
    assert await store.is_known_message_id("<m1@bridge>", "out")
    assert not await store.is_known_message_id("<m1@bridge>", "in")


async def test_redacted_pending_event_is_dropped(store: Store) -> None:
    await store.store_transaction("t", [_message("$1")])
    assert await store.cancel_pending_event("$1")
    assert not await store.cancel_pending_event("$1")
    assert (await store.rows(Outbox, ["dropped"]))[0].event_id == "$1"
