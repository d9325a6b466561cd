"""The gateway's delivery queue in the store: claims per domain, per-room order, sealing."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest
from fixtures.gateway import gateway_settings
from sqlmodel import select
from typer.testing import CliRunner, Result

from mssbridge.cli import app
from mssbridge.config import RetrySection
from mssbridge.daemon import open_store
from mssbridge.flows.delivery_worker import DeliveryWorker
from mssbridge.lab.pki import TestPki
from mssbridge.security.atrest import Sealer, SealError, blob_key_id, load_keyring, write_keyring
from mssbridge.store.delivery_repo import DeliveryRepo, NotActed, recipients_of
from mssbridge.store.rekey import reseal_all
from mssbridge.store.repo import Store
from mssbridge.store.tables import Audit, AuditAction, Delivery, Outbox, RowState

pytestmark = pytest.mark.integration

SLOW = "lent.mssante.fr"
FAST = "rapide.mssante.fr"


async def _queue(store: Store, room: str, domains: list[str], n: int) -> list[Delivery]:
    """Store event ``n`` of ``room`` and one delivery row per domain, like the outbound flow."""
    event = {
        "event_id": f"$e{n}",
        "room_id": room,
        "sender": "@dr.martin:hospital.test",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "x"},
    }
    await store.store_transaction(f"t{n}", [event])
    async with store.session() as session:
        row = (
            await session.execute(select(Outbox).where(Outbox.event_id == f"$e{n}"))
        ).scalar_one()
    repo = DeliveryRepo(store)
    rows = [
        repo.new(row, d, "bal@chu.mssante.fr", [f"a@{d}"], f"<m{n}@x>", f"mail {n}".encode())
        for d in domains
    ]
    async with store.session() as session, session.begin():
        session.add_all(rows)
    return rows


async def test_claims_keep_room_order_and_bound_each_domain(store: Store) -> None:
    repo = DeliveryRepo(store)
    await _queue(store, "!a", [SLOW], 1)
    await _queue(store, "!a", [SLOW, FAST], 2)  # one event, two domains: two rows
    await _queue(store, "!b", [SLOW], 3)
    await _queue(store, "!c", [SLOW], 4)
    await _queue(store, "!c", [FAST], 5)

    first = await repo.claim("w1", 60, 10, {}, per_domain=2)
    got = [(r.room_id, r.domain, r.event_id) for r in first]
    # Heads of each (room, domain): !a's second SLOW row waits for its first; at most two
    # SLOW rows at once; FAST rows are not held back by the busy SLOW domain.
    assert got == [
        ("!a", SLOW, "$e1"),
        ("!a", FAST, "$e2"),
        ("!b", SLOW, "$e3"),
        ("!c", FAST, "$e5"),
    ]

    busy = Counter(r.domain for r in first)
    assert await repo.claim("w1", 60, 10, busy, per_domain=2) == []  # all heads leased or full

    # The first SLOW delivery ends: !c's SLOW head may go, and then !a's next one.
    await store.finish(Delivery, first[0].id, RowState.DONE)
    busy[SLOW] -= 1
    second = await repo.claim("w1", 60, 10, busy, per_domain=2)
    assert [(r.room_id, r.event_id) for r in second] == [("!a", "$e2")]

    # A second instance never takes a row another one holds: only !c's SLOW head is free.
    other = await repo.claim("w2", 60, 10, {}, per_domain=5)
    assert [(r.room_id, r.event_id, r.lease_owner) for r in other] == [("!c", "$e4", "w2")]
    assert await repo.claim("w2", 60, 10, {}, per_domain=5) == []


async def test_message_is_sealed_and_dropped_when_closed(store: Store) -> None:
    repo = DeliveryRepo(store)
    await _queue(store, "!a", [FAST], 1)
    async with store.session() as session:
        stored = (await session.execute(select(Delivery))).scalar_one()
    assert stored.payload is not None and b"mail 1" not in stored.payload
    assert repo.message_of(stored) == b"mail 1"
    assert recipients_of(stored) == [f"a@{FAST}"]
    # The seal is bound to its row: another row's blob does not open as this one.
    moved = stored.model_copy(update={"domain": SLOW})
    with pytest.raises(SealError):
        repo.message_of(moved)
    await store.finish(Delivery, stored.id, RowState.REJECTED, "5.1.1 refused")
    closed = await store.get(Delivery, stored.id or 0)
    assert closed is not None and closed.payload is None and closed.state == RowState.REJECTED
    with pytest.raises(ValueError, match="holds no message"):
        repo.message_of(closed)


async def test_delivered_closes_the_row_and_traces_it(store: Store) -> None:
    repo = DeliveryRepo(store)
    await _queue(store, "!a", [FAST], 1)
    (row,) = await repo.claim("w1", 60, 10, {}, per_domain=1)
    await repo.mark_attempt(row)
    await repo.delivered(row, [f"a@{FAST}"])
    done = await store.get(Delivery, row.id or 0)
    assert done is not None
    assert (done.state, done.payload, done.attempt_started_at, done.lease_owner) == (
        RowState.DONE,
        None,
        None,
        None,
    )
    async with store.session() as session:
        trail = list((await session.execute(select(Audit))).scalars())
    delivered = [a for a in trail if a.action == AuditAction.MESSAGE_DELIVERED]
    assert len(delivered) == 1
    assert (delivered[0].queue, delivered[0].peer, delivered[0].message_id) == (
        "delivery",
        f"a@{FAST}",
        "<m1@x>",
    )


async def test_queued_mail_survives_a_key_rotation(store: Store, tmp_path: Path) -> None:
    await _queue(store, "!a", [FAST], 1)
    write_keyring(tmp_path / "key", [b"\x07" * 32, *load_keyring(tmp_path / "key")])
    rotated = Store(store.engine, Sealer.from_file(tmp_path / "key"))
    report = await reseal_all(rotated, settle=0)
    assert report.resealed["delivery.payload"] == 1
    (row,) = await DeliveryRepo(rotated).claim("w1", 60, 10, {}, per_domain=1)
    assert blob_key_id(row.payload or b"") == rotated.sealer.key_id
    assert DeliveryRepo(rotated).message_of(row) == b"mail 1"


def test_queue_list_shows_deliveries_in_gateway_outbound_mode(
    tmp_path: Path, test_pki: TestPki
) -> None:
    settings = gateway_settings(tmp_path, test_pki, "gateway.outbound=relay", "gateway.relay=r:25")

    async def fill() -> None:
        store = await open_store(settings)
        try:
            (row,) = await _queue(store, "!a", [FAST], 1)
            await store.finish(Delivery, row.id, RowState.REJECTED, "5.1.1 refused")
        finally:
            await store.engine.dispose()

    asyncio.run(fill())
    result = CliRunner().invoke(app, ["queue", "list", "--config", str(tmp_path / "config.toml")])
    assert result.exit_code == 0, result.output
    assert "delivery: rejected=1" in result.output
    assert "delivery      1 rejected" in result.output and "5.1.1 refused" in result.output
    assert "mail 1" not in result.output


async def test_worker_keeps_slots_for_other_domains(store: Store) -> None:
    """Rows of a hung domain hold its slots only; the others are delivered meanwhile."""
    for n in range(1, 4):
        await _queue(store, f"!s{n}", [SLOW], n)
    for n in range(4, 7):
        await _queue(store, f"!f{n}", [FAST], n)
    hung = asyncio.Event()
    started: list[str] = []

    async def handle(row: Delivery) -> None:
        started.append(row.domain)
        if row.domain == SLOW:
            await hung.wait()  # never set: the operator does not answer
        await DeliveryRepo(store).delivered(row, recipients_of(row))

    async def no_report(row: Delivery, exc: Exception) -> None:
        raise AssertionError("nothing is refused here")

    worker = DeliveryWorker(
        store, handle, no_report, RetrySection(), per_domain=2, lease=60, max_in_flight=3
    )
    runner = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            rows = await store.rows(Delivery, [RowState.DONE])
            if len(rows) == 3:
                break
            await asyncio.sleep(0.02)
        assert sorted(r.event_id for r in rows) == ["$e4", "$e5", "$e6"]
        assert started.count(SLOW) == 2  # per_domain, although a third row is due
        assert worker.busy() == Counter({SLOW: 2})
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def _cli(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["queue", *args, "--config", str(tmp_path / "config.toml")])


def test_queue_show_retry_and_drop_act_on_open_deliveries_only(
    tmp_path: Path, test_pki: TestPki
) -> None:
    """Retry makes a waiting delivery due now; drop gives it up; neither touches a closed row
    (its mail is gone) or one being delivered (a second attempt could deliver twice)."""
    settings = gateway_settings(tmp_path, test_pki, "gateway.outbound=relay", "gateway.relay=r:25")

    async def fill() -> list[int]:
        store = await open_store(settings)
        try:
            waiting, leased, closed, dropped = [
                (await _queue(store, f"!r{n}", [FAST], n))[0] for n in range(1, 5)
            ]
            await store.retry_later(Delivery, waiting, 3600, "4.4.1 no answer")
            (taken,) = await DeliveryRepo(store).claim("w9", 600, 1, {}, per_domain=1)
            assert taken.id == leased.id
            await store.finish(Delivery, closed.id, RowState.REJECTED, "5.1.1 refused")
            return [r.id or 0 for r in (waiting, leased, closed, dropped)]
        finally:
            await store.engine.dispose()

    waiting, leased, closed, dropped = asyncio.run(fill())
    shown = _cli(tmp_path, "show", "delivery", str(waiting))
    assert shown.exit_code == 0, shown.output
    assert f"domain           {FAST}" in shown.output and "retry" in shown.output
    assert "mail             kept (sealed)" in shown.output and "mail 1" not in shown.output
    assert "kept" not in _cli(tmp_path, "show", "delivery", str(closed)).output

    retried = _cli(tmp_path, "retry", "delivery", str(waiting))
    assert retried.exit_code == 0, retried.output
    for row_id, why in ((leased, "being delivered"), (closed, "keeps no mail"), (99, "no such")):
        refused = _cli(tmp_path, "retry", "delivery", str(row_id))
        assert refused.exit_code == 1 and why in refused.output, refused.output
    assert _cli(tmp_path, "drop", "delivery", str(dropped)).exit_code == 0
    assert _cli(tmp_path, "drop", "delivery", str(closed)).exit_code == 1

    async def check() -> None:
        store = await open_store(settings)
        try:
            rows = {r.id: r for r in await store.rows(Delivery, list(RowState))}
            assert (rows[waiting].state, rows[waiting].next_at) == (RowState.PENDING, 0.0)
            assert rows[waiting].payload is not None and rows[waiting].attempts == 1
            assert rows[leased].state == RowState.PENDING and rows[leased].lease_owner == "w9"
            assert rows[closed].state == RowState.REJECTED
            assert (rows[dropped].state, rows[dropped].payload) == (RowState.DROPPED, None)
            (due,) = await DeliveryRepo(store).claim("w1", 60, 5, {}, per_domain=5)
            assert due.id == waiting  # due at once, not in an hour
            async with store.session() as session:
                trail = (
                    await session.execute(
                        select(Audit.row_id, Audit.outcome).where(
                            Audit.action == AuditAction.ADMIN_ACTION, Audit.queue == "delivery"
                        )
                    )
                ).all()
            assert sorted(trail) == [(waiting, "queue_retry"), (dropped, "queue_drop")]
        finally:
            await store.engine.dispose()

    asyncio.run(check())


async def test_operator_retry_and_drop_in_the_store(store: Store) -> None:
    """The same rules on each database: a conditional update, audited only when it acted."""
    repo = DeliveryRepo(store)
    (row,) = await _queue(store, "!a", [FAST], 1)
    await store.retry_later(Delivery, row, 3600, "4.4.1 no answer")
    assert await repo.retry_now(row.id or 0, actor="ops") is None
    (taken,) = await repo.claim("w1", 600, 1, {}, per_domain=1)
    assert await repo.retry_now(row.id or 0, actor="ops") == NotActed.IN_PROGRESS
    assert await repo.drop(row.id or 0, actor="ops") == NotActed.IN_PROGRESS
    await store.finish(Delivery, taken.id, RowState.SHUNTED, "gave up")
    assert await repo.drop(row.id or 0, actor="ops") == NotActed.CLOSED
    assert await repo.retry_now(12345, actor="ops") == NotActed.UNKNOWN
    async with store.session() as session:
        trail = (
            await session.execute(
                select(Audit.outcome, Audit.actor).where(Audit.action == AuditAction.ADMIN_ACTION)
            )
        ).all()
    assert trail == [("queue_retry", "ops")]
