"""Retention purge on SQLite and PostgreSQL, and of the bridge's mailbox on the real Dovecot."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from pathlib import Path

import pytest
from fixtures.database import open_test_store
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlmodel import col

from mssbridge.config import MailboxSection, TlsSection
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.flows.retention import OpenMailbox, RetentionFlow, ghost_redactor
from mssbridge.lab.pki import DEFAULT_CLIENT_NAMES
from mssbridge.mail import smtp_out
from mssbridge.mail.imap import ImapMailbox
from mssbridge.metrics import BridgeMetrics
from mssbridge.policy.retention import DAY, PurgeKind, RetentionPolicy
from mssbridge.security.tls import client_context
from mssbridge.store import audit
from mssbridge.store.delivery_repo import DeliveryRepo
from mssbridge.store.ops import BridgedEvent, OpsStore
from mssbridge.store.repo import Store
from mssbridge.store.tables import (
    OPEN_STATES,
    Audit,
    AuditAction,
    Delivery,
    Inbox,
    MatrixTxn,
    MessageMap,
    Outbox,
    Portal,
    RowState,
)

pytestmark = pytest.mark.integration

POLICY = RetentionPolicy(content_days=90, audit_days=183, rejected_days=30)
START = 1_700_000_000.0
MAILBOX = DEFAULT_CLIENT_NAMES[0]
PASSWORD = "lab-password"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_test_store(database_url, tmp_path / "key", clock=Clock()) as ready:
        yield ready


def _event(event_id: str, room: str = "!p:h") -> dict[str, object]:
    return {
        "event_id": event_id,
        "room_id": room,
        "sender": "@alice:h",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "DUPONT Jeanne"},
    }


async def _count(store: Store, table: type, *where: object) -> int:
    async with store.session() as session:
        query = select(func.count()).select_from(table)
        for clause in where:
            query = query.where(clause)  # type: ignore[arg-type]
        return int((await session.execute(query)).scalar_one())


async def _conversation(store: Store, tag: str, portal: Portal) -> None:
    """One of each kind of row, stamped at the store clock's current time."""
    await store.store_transaction(f"txn-{tag}", [_event(f"$sent-{tag}"), _event(f"$bad-{tag}")])
    sent, bad = await store.rows(Outbox, ["pending"])
    await store.record_relay(
        portal,
        [(f"$sent-{tag}", f"<out-{tag}@b>")],
        "out",
        queue=Outbox,
        row_id=sent.id,
        last_message_id=f"<out-{tag}@b>",
    )
    await store.finish(Outbox, bad.id, RowState.REJECTED, "5.1.1 refused")
    uid = {"old": 1, "mid": 2, "new": 3}[tag]
    relayed = await store.store_mail("bal/INBOX", 1, uid, f"M {tag}".encode(), f"<in-{tag}@c>")
    [row] = [r for r in await store.rows(Inbox, ["pending"]) if r.id == relayed]
    await store.record_relay(
        portal,
        [(f"$ghost-{tag}", f"<in-{tag}@c>")],
        "in",
        queue=Inbox,
        row_id=row.id,
        last_message_id=f"<in-{tag}@c>",
    )


async def test_purge_removes_only_what_is_past_each_period(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    portal = await store.create_portal(
        subject="s", correspondents=["dr@c.fr"], room_id="!p:h", conversation_key="k"
    )
    await _conversation(store, "old", portal)
    clock.now = START + 60 * DAY
    await _conversation(store, "mid", portal)  # 40 days old at the purge: only refusals go
    clock.now = START + 100 * DAY
    await _conversation(store, "new", portal)
    redacted: list[str] = []

    async def redact(event: BridgedEvent) -> None:
        assert event.room_id == "!p:h" and json.loads(event.correspondents) == ["dr@c.fr"]
        redacted.append(event.event_id)

    flow = RetentionFlow(store, POLICY, batch=2, redact=redact, actor="test", pause=0)
    planned = await flow.plan()
    assert planned[PurgeKind.OUTBOX] == 1 and planned[PurgeKind.OUTBOX_REJECTED] == 2
    assert planned[PurgeKind.MATRIX_TXN] == 2 and planned[PurgeKind.AUDIT] == 0
    counts = await flow.run_once()
    assert counts == {
        PurgeKind.OUTBOX: 1,
        PurgeKind.INBOX: 0,
        PurgeKind.DELIVERY: 0,
        PurgeKind.OUTBOX_REJECTED: 2,
        PurgeKind.INBOX_REJECTED: 0,
        PurgeKind.DELIVERY_REJECTED: 0,
        PurgeKind.MAP_OUT: 1,
        PurgeKind.MAP_IN: 1,
        PurgeKind.MATRIX_TXN: 2,
        PurgeKind.PORTAL_TEXT: 0,  # the conversation spoke within the period
        PurgeKind.AUDIT: 0,
    }  # no mailbox given: inbox rows wait for a run that can expunge their copies
    assert redacted == ["$ghost-old"]
    assert await _count(store, Outbox) == 3  # mid sent, new sent, new refused
    assert await _count(store, MessageMap) == 4
    assert await _count(store, MatrixTxn) == 1
    assert await _count(store, Portal) == 1  # the thread survives its content
    assert await _count(store, Inbox) == 3
    assert (await store.portal_by_id(portal.id or 0)) is not None
    # What is left is exactly what is still within its period.
    assert await flow.plan() == {**{k: 0 for k in PurgeKind}, PurgeKind.INBOX: 1}
    purged = [r async for r in audit.export(store, 0.0) if r.action == AuditAction.PURGED]
    assert {r.outcome for r in purged} >= {"outbox=1", "outbox_rejected=2", "map_in=1"}
    assert all(r.actor == "test" for r in purged)

    # Half a year later, the audit trail of the first days goes too (and only it).
    clock.now = START + 200 * DAY
    before = await _count(store, Audit, Audit.at < START + 17 * DAY)
    counts = await flow.run_once()
    assert counts[PurgeKind.AUDIT] == before > 0
    assert await _count(store, Audit, Audit.at < START + 17 * DAY) == 0


async def test_silent_conversation_loses_its_subject_and_patient_but_keeps_its_thread(
    store: Store,
) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    silent = await store.create_portal(
        subject="Mme DUPONT Jeanne, 12/03/1950", correspondents=["dr@c.fr"], room_id="!s:h"
    )
    await store.set_patient(silent.id, b"patient context")
    await _conversation(store, "old", silent)
    talking = await store.create_portal(
        subject="M. MARTIN Paul", correspondents=["dr@c.fr"], room_id="!p:h"
    )
    await store.set_patient(talking.id, b"other patient")
    clock.now = START + 60 * DAY
    await _conversation(store, "mid", talking)  # 40 days old at the purge
    clock.now = START + 100 * DAY
    flow = RetentionFlow(store, POLICY, batch=2, redact=_no_redact, actor="test", pause=0)
    assert (await flow.plan())[PurgeKind.PORTAL_TEXT] == 1
    assert (await flow.run_once())[PurgeKind.PORTAL_TEXT] == 1

    blanked = await store.portal_by_id(silent.id or 0)
    assert blanked is not None
    assert (blanked.subject, blanked.patient) == ("", None)
    # What threads a reply that comes months later is still there.
    assert blanked.room_id == "!s:h" and blanked.last_message_id == "<in-old@c>"
    assert blanked.correspondents
    kept = await store.portal_by_id(talking.id or 0)
    assert kept is not None and kept.subject == "M. MARTIN Paul" and kept.patient is not None
    purged = [r async for r in audit.export(store, 0.0) if r.action == AuditAction.PURGED]
    assert "portal_text=1" in {r.outcome for r in purged}
    assert (await flow.run_once())[PurgeKind.PORTAL_TEXT] == 0  # nothing left to blank


async def _no_redact(_event: BridgedEvent) -> None:
    return None


async def test_requeued_row_is_not_purged(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    await store.store_transaction("t", [_event("$r")])
    [row] = await store.rows(Outbox, ["pending"])
    await store.finish(Outbox, row.id, RowState.SHUNTED, "unexpected X")
    clock.now = START + 31 * DAY
    cutoff = clock.now - 30 * DAY
    ops = OpsStore(store)
    assert await ops.count(PurgeKind.OUTBOX_REJECTED, cutoff) == 1
    assert await store.requeue(Outbox, row.id or 0, actor="os:admin")
    # A purge that selected it before the requeue finds it no longer past retention.
    assert await ops.purge_rows(PurgeKind.OUTBOX_REJECTED, cutoff, [row.id]) == 0
    assert await _count(store, Outbox) == 1


async def _deliveries(store: Store, tag: str) -> dict[RowState, int]:
    """One gateway delivery row in each state, closed at the store clock's current time."""
    await store.store_transaction(f"txn-d-{tag}", [_event(f"$d-{tag}")])
    [row] = [r for r in await store.rows(Outbox, ["pending"]) if r.event_id == f"$d-{tag}"]
    repo = DeliveryRepo(store)
    rows = {
        state: repo.new(row, f"{state}.mssante.fr", "bal@b", ["dr@c"], f"<d-{tag}@b>", b"mail")
        for state in RowState
    }
    async with store.session() as session, session.begin():
        session.add_all(rows.values())
    ids = {state: delivery.id or 0 for state, delivery in rows.items()}
    await store.finish(Delivery, ids[RowState.RETRY], RowState.RETRY, "4.2.1 busy")
    for state in (RowState.DONE, RowState.DROPPED, RowState.REJECTED, RowState.SHUNTED):
        await store.finish(Delivery, ids[state], state, None if state is RowState.DONE else "x")
    return ids


async def test_closed_deliveries_go_after_their_period_open_ones_stay(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    old = await _deliveries(store, "old")
    clock.now = START + 60 * DAY
    mid = await _deliveries(store, "mid")  # 40 days old at the purge: only refusals go
    clock.now = START + 100 * DAY
    metrics = BridgeMetrics(CollectorRegistry())
    flow = RetentionFlow(store, POLICY, batch=1, metrics=metrics, actor="test", pause=0)
    planned = await flow.plan()
    assert (planned[PurgeKind.DELIVERY], planned[PurgeKind.DELIVERY_REJECTED]) == (2, 4)

    counts = await flow.run_once()
    assert (counts[PurgeKind.DELIVERY], counts[PurgeKind.DELIVERY_REJECTED]) == (2, 4)
    async with store.session() as session:
        left = {(d.id, d.state) for d in (await session.execute(select(Delivery))).scalars()}
    kept = [RowState.PENDING, RowState.RETRY]  # open rows are never purged, however old
    assert left == {
        *((old[state], state) for state in kept),
        *((mid[state], state) for state in [*kept, RowState.DONE, RowState.DROPPED]),
    }
    purged = [r async for r in audit.export(store, 0.0) if r.action == AuditAction.PURGED]
    delivery_rows = [r for r in purged if r.queue == "delivery"]
    # One audit row per batch (of one row here), with the kind and the count, by the actor.
    assert (
        sorted(r.outcome for r in delivery_rows) == ["delivery=1"] * 2 + ["delivery_rejected=1"] * 4
    )
    assert all(r.actor == "test" for r in delivery_rows)
    sample = metrics.registry.get_sample_value
    assert sample("mssbridge_purged_rows_total", {"kind": "delivery"}) == 2
    assert sample("mssbridge_purged_rows_total", {"kind": "delivery_rejected"}) == 4
    assert (await flow.plan())[PurgeKind.DELIVERY] == 0

    clock.now = START + 200 * DAY  # the mid rows' turn; the open ones still stay
    counts = await flow.run_once()
    assert (counts[PurgeKind.DELIVERY], counts[PurgeKind.DELIVERY_REJECTED]) == (2, 0)
    assert await _count(store, Delivery) == 4
    assert await _count(store, Delivery, col(Delivery.state).in_(OPEN_STATES)) == 4


async def test_ghost_redactor_tries_each_correspondent() -> None:
    calls: list[tuple[str, str]] = []

    async def redact(user: str, room: str, event: str, reason: str) -> None:
        calls.append((user, event))
        if user == "@mss_a:h":
            raise Rejected("no", code="5.7.0")
        if user == "@mss_down:h":
            raise TemporaryFailure("down")

    redactor = ghost_redactor(redact, lambda address: f"@mss_{address}:h")
    await redactor(BridgedEvent(1, "$e", "!r:h", json.dumps(["a", "b"])))
    assert calls == [("@mss_a:h", "$e"), ("@mss_b:h", "$e")]
    await redactor(BridgedEvent(2, "$f", None, "[]"))  # no room: nothing to do
    with pytest.raises(TemporaryFailure):
        await redactor(BridgedEvent(3, "$g", "!r:h", json.dumps(["down"])))


async def test_purge_speed(store: Store) -> None:
    """Figure for docs/retention.md: rows/s of the batched purge (content rows)."""
    clock = store.clock
    assert isinstance(clock, Clock)
    total = 3000
    for start in range(0, total, 500):
        await store.store_transaction(
            f"bulk-{start}", [_event(f"$b{n}", room=f"!r{n}:h") for n in range(start, start + 500)]
        )
    async with store.session() as session, session.begin():
        from sqlalchemy import update

        await session.execute(update(Outbox).values(state=RowState.DONE))
    clock.now = START + 91 * DAY
    flow = RetentionFlow(store, POLICY, batch=1000, pause=0)
    started = time.perf_counter()
    counts = await flow.run_once()
    elapsed = time.perf_counter() - started
    assert counts[PurgeKind.OUTBOX] == total
    print(
        f"\npurge: {total} rows in {elapsed:.2f} s = {total / elapsed:.0f} rows/s "
        f"({store.engine.dialect.name})"
    )


# -- the bridge's mailbox on the real Dovecot ----------------------------------------------


def _mail() -> tuple[bytes, str]:
    message = EmailMessage(policy=SMTP_POLICY)
    message_id = f"<{uuid.uuid4()}@correspondant.mssante.fr>"
    message["From"] = "emetteur@correspondant.mssante.fr"
    message["To"] = MAILBOX
    message["Subject"] = "Compte rendu"
    message["Date"] = formatdate()
    message["Message-ID"] = message_id
    message.set_content("Bonjour\n")
    return message.as_bytes(), message_id


async def _uids_by_message_id(session: ImapMailbox) -> dict[str, int]:
    from mssbridge.flows.mail_intake import header_message_id

    found = {}
    for uid, _size in await session.new_messages(0):
        mid = header_message_id(await session.fetch(uid))
        if mid:
            found[mid] = uid
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_mailbox_copies_past_retention_are_expunged(
    store: Store,
    lab_mailbox: Callable[..., MailboxSection],
    lab_tls: Callable[..., TlsSection],
) -> None:
    context: ssl.SSLContext = client_context(lab_tls())
    mailbox = lab_mailbox(MAILBOX)
    sent = []
    for _ in range(4):
        raw, message_id = _mail()
        await smtp_out.submit(
            mailbox,
            context,
            PASSWORD,
            sender="emetteur@correspondant.mssante.fr",
            recipients=[MAILBOX],
            message=raw,
        )
        sent.append(message_id)
    reader = ImapMailbox(mailbox, context, PASSWORD)
    await reader.connect()
    try:
        uidvalidity = await reader.select()
        for _ in range(50):
            uids = await _uids_by_message_id(reader)
            if all(m in uids for m in sent):
                break
            await asyncio.sleep(0.2)
        assert all(m in uids for m in sent)
    finally:
        await reader.close()
    key = f"{MAILBOX}/INBOX"
    clock = store.clock
    assert isinstance(clock, Clock)
    # Two mails relayed long ago, one refused long ago, one relayed recently.
    old, refused, new = sent[:2], sent[2], sent[3]
    for message_id in old:
        raw_copy = b"x" + message_id.encode()
        row = await store.store_mail(key, uidvalidity, uids[message_id], raw_copy, message_id)
        await store.finish(Inbox, row, RowState.DONE)
    row = await store.store_mail(
        key,
        uidvalidity,
        uids[refused],
        b"",
        None,
        state=RowState.REJECTED,
        size=10,
        error="5.3.4 too big",
    )
    clock.now = START + 95 * DAY
    row = await store.store_mail(key, uidvalidity, uids[new], b"y", new)
    await store.finish(Inbox, row, RowState.DONE)

    async def open_mailbox() -> OpenMailbox:
        session = ImapMailbox(mailbox, context, PASSWORD)
        await session.connect()
        return OpenMailbox(session, key, await session.select())

    flow = RetentionFlow(store, POLICY, batch=1, open_mailbox=open_mailbox, pause=0)
    counts = await flow.run_once()
    assert counts[PurgeKind.INBOX] == 2 and counts[PurgeKind.INBOX_REJECTED] == 1
    check = ImapMailbox(mailbox, context, PASSWORD)
    await check.connect()
    try:
        await check.select()
        left = await _uids_by_message_id(check)
    finally:
        await check.close()
    assert not any(m in left for m in [*old, refused])
    assert new in left
    assert [r.message_id for r in await store.rows(Inbox, ["done"])] == [new]
