"""Gateway mode, outbound, end to end in-process: a Matrix message through the flows to a real
Postfix playing another operator, found by MX records of the lab DNS server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from fixtures.database import open_test_store, sqlite_url
from fixtures.gateway import (
    CHAT_DOMAIN,
    PEER_DOMAIN,
    SERVER_NAME,
    gateway_settings,
    import_peer_whitelist,
    subject_of,
)
from sqlmodel import select

from mssbridge.config import Settings
from mssbridge.convert.threading import message_id_for_event
from mssbridge.errors import ConfigError, Rejected, TemporaryFailure
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.delivery import DeliveryFlow, Route
from mssbridge.flows.delivery_worker import DeliveryWorker
from mssbridge.flows.gateway_sending import GatewaySending, sending_status
from mssbridge.flows.outbound import OutboundFlow
from mssbridge.lab.dns_server import LabDnsServer
from mssbridge.lab.mailserver import MailLab
from mssbridge.lab.pki import TestPki
from mssbridge.mail import mx
from mssbridge.mail.dkim import DkimStatus, DkimVerifier, generate_key
from mssbridge.mail.smtp_direct import InterruptedDelivery
from mssbridge.mail.smtp_out import Submission
from mssbridge.matrix.rooms import MatrixRooms
from mssbridge.store.delivery_repo import DeliveryRepo
from mssbridge.store.repo import Store
from mssbridge.store.tables import Delivery, Outbox, RowState

pytestmark = pytest.mark.integration

USER = f"@dr.martin:{SERVER_NAME}"
RECIPIENT = f"dr.house@{PEER_DOMAIN}"
SLOW_DOMAIN = "lent.mssante.fr"  # its MX accepts connections and never answers
NULL_DOMAIN = "sans-courriel.mssante.fr"  # null MX
SLOW_HOST = "127.0.0.2"
SELECTOR = "g1"


@dataclass
class FakeRooms:
    """The Matrix side of the flows, recorded."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def send(self, sender: str, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        self.sent.append((room_id, content))
        return f"$ev-{txn_id}"

    async def display_name(self, room_id: str, user_id: str) -> str:
        return "Dr Alice Martin"

    def notices(self, room_id: str) -> list[str]:
        return [str(c.get("body")) for r, c in self.sent if r == room_id]


class BlackHole:
    """An MX that takes TCP connections and never says a word."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> None:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)

        self.server = await asyncio.start_server(hold, SLOW_HOST, port)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()


@dataclass
class Bridge:
    settings: Settings
    store: Store
    rooms: FakeRooms
    ctx: BridgeContext
    outbound: OutboundFlow
    worker: DeliveryWorker
    zone: dict[tuple[str, str], list[str]]
    public_key: str
    hole: BlackHole


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return generate_key(SELECTOR, CHAT_DOMAIN, tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def zone() -> Iterator[dict[tuple[str, str], list[str]]]:
    yield {
        (PEER_DOMAIN, "MX"): ["10 mx.correspondant.test."],
        ("mx.correspondant.test", "A"): ["127.0.0.1"],
        (SLOW_DOMAIN, "MX"): ["10 mx.lent.test."],
        ("mx.lent.test", "A"): [SLOW_HOST],
        (NULL_DOMAIN, "MX"): ["0 ."],
    }


@pytest.fixture
async def bridge(
    tmp_path: Path,
    test_pki: TestPki,
    mail_lab: MailLab,
    dkim_key: tuple[Path, str],
    zone: dict[tuple[str, str], list[str]],
) -> AsyncIterator[Bridge]:
    settings = gateway_settings(
        tmp_path,
        test_pki,
        "gateway.outbound=mx",
        "gateway.max_per_domain=1",
        f"dkim.key_file={dkim_key[0]}",
        f"dkim.selector={SELECTOR}",
        "receipts.request_read=false",
    )
    server_dn = subject_of(test_pki.server)  # what the lab Postfix presents
    hole = BlackHole()
    await hole.start(mail_lab.smtp_port)
    async with (
        LabDnsServer(zone) as dns_server,
        open_test_store(sqlite_url(tmp_path / "store.db"), tmp_path / "key") as store,
    ):
        await import_peer_whitelist(
            store, test_pki, [(d, server_dn) for d in (PEER_DOMAIN, SLOW_DOMAIN, NULL_DOMAIN)]
        )
        rooms = FakeRooms()

        async def no_mailbox(sender: str, recipients: Any, message: bytes) -> Submission:
            raise AssertionError("gateway mode must not submit to the mailbox")

        ctx = BridgeContext(
            settings, store, cast(MatrixRooms, rooms), no_mailbox, ssl.create_default_context()
        )
        sending = GatewaySending(settings)
        route = Route(
            lambda: sending.tls.client,
            resolver=mx.resolver([dns_server.host], dns_server.port, lifetime=2.0),
            port=mail_lab.smtp_port,
            timeout=30.0,
        )
        worker = sending.attach(ctx, route)
        try:
            yield Bridge(
                settings, store, rooms, ctx, OutboundFlow(ctx), worker, zone, dkim_key[1], hole
            )
        finally:
            await hole.close()


async def _say(bridge: Bridge, room: str, correspondents: list[str], text: str) -> str:
    """A message of USER in a portal room, handled by the outbound flow; its event id."""
    store = bridge.store
    if await store.portal_by_room(room) is None:
        await store.create_portal(subject="Suivi", correspondents=correspondents, room_id=room)
    event_id = f"${secrets.token_hex(8)}"
    event = {
        "event_id": event_id,
        "room_id": room,
        "sender": USER,
        "type": "m.room.message",
        "origin_server_ts": 1_790_000_000_000,
        "content": {"msgtype": "m.text", "body": text},
    }
    await store.store_transaction(f"txn-{event_id}", [event])
    async with store.session() as session:
        row = (
            await session.execute(select(Outbox).where(Outbox.event_id == event_id))
        ).scalar_one()
    await bridge.outbound.handle(row)
    return event_id


def _copies(mail_lab: MailLab, address: str, message_id: str) -> list[bytes]:
    new = mail_lab.maildir(address) / "new"
    if not new.exists():
        return []
    found = [f.read_bytes() for f in sorted(new.glob("*"))]
    return [m for m in found if f"Message-ID: {message_id}".encode() in m]


async def _wait_copies(
    mail_lab: MailLab, address: str, message_id: str, count: int = 1
) -> list[bytes]:
    for _ in range(200):
        found = _copies(mail_lab, address, message_id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} not delivered {count}x\n{mail_lab.logs()}")


async def _deliveries(store: Store) -> list[Delivery]:
    async with store.session() as session:
        return list((await session.execute(select(Delivery).order_by(Delivery.id))).scalars())


async def _wait_rows(store: Store, rooms: list[str]) -> dict[str, Delivery]:
    """The delivery rows by room, once those of ``rooms`` are closed."""
    for _ in range(200):
        rows = {r.room_id: r for r in await _deliveries(store)}
        if all(rows[room].state == RowState.DONE for room in rooms):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"rows of {rooms} not closed")


async def _process_due(bridge: Bridge) -> list[Delivery]:
    """One claim of the delivery worker, each row run through its rules (no loop)."""
    rows = await DeliveryRepo(bridge.store).claim("test", 60, 10, {}, per_domain=10)
    for row in rows:
        await bridge.worker.process(row)
    return rows


async def test_message_leaves_from_the_users_address_signed_for_the_chat_domain(
    bridge: Bridge, mail_lab: MailLab
) -> None:
    event_id = await _say(bridge, "!r1:hospital.test", [RECIPIENT], "Bonjour confrère")
    message_id = message_id_for_event(event_id, bridge.ctx.mail_domain)
    (queued,) = await _deliveries(bridge.store)
    assert (queued.domain, queued.state, queued.message_id) == (PEER_DOMAIN, "pending", message_id)
    outbox = await bridge.store.get(Outbox, queued.outbox_id)
    assert outbox is not None and outbox.state == RowState.DONE  # closed with the queueing

    runner = asyncio.create_task(bridge.worker.run())
    try:
        (raw,) = await _wait_copies(mail_lab, RECIPIENT, message_id)
    finally:
        bridge.worker.stop()
        await asyncio.wait_for(runner, 10)
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert mail["From"] == f"Dr Alice Martin <dr.martin@{CHAT_DOMAIN}>"
    assert mail["Return-Path"] == f"<{bridge.settings.mailbox.address}>"
    assert "Bonjour confrère" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    verdict = DkimVerifier.from_keys({f"{CHAT_DOMAIN}/{SELECTOR}": bridge.public_key}).verify(raw)
    assert (verdict.status, verdict.domain) == (DkimStatus.PASS, CHAT_DOMAIN)
    (done,) = await _deliveries(bridge.store)
    assert (done.state, done.payload, done.attempt_started_at) == (RowState.DONE, None, None)
    assert bridge.rooms.sent == []  # no notice


async def test_a_silent_domain_does_not_hold_up_another(bridge: Bridge, mail_lab: MailLab) -> None:
    # Two conversations with the silent domain first, then two with the working one.
    await _say(bridge, "!slow1:hospital.test", [f"a@{SLOW_DOMAIN}"], "un")
    await _say(bridge, "!slow2:hospital.test", [f"b@{SLOW_DOMAIN}"], "deux")
    fast = [
        await _say(bridge, f"!fast{n}:hospital.test", [RECIPIENT], f"rapide {n}") for n in (1, 2)
    ]
    runner = asyncio.create_task(bridge.worker.run())
    try:
        for event_id in fast:
            message_id = message_id_for_event(event_id, bridge.ctx.mail_domain)
            await _wait_copies(mail_lab, RECIPIENT, message_id)
        rows = await _wait_rows(bridge.store, [f"!fast{n}:hospital.test" for n in (1, 2)])
        # Both fast mails went while the silent domain still holds its one slot
        # (gateway.max_per_domain = 1): one connection, one row in flight, one waiting.
        assert bridge.hole.connections == 1
        in_flight = [rows[f"!slow{n}:hospital.test"] for n in (1, 2)]
        assert [r.state for r in in_flight] == ["pending", "pending"]
        assert in_flight[0].attempt_started_at is not None and in_flight[0].lease_owner
        assert in_flight[1].attempt_started_at is None and in_flight[1].lease_owner is None
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_refusals_are_told_in_the_room(bridge: Bridge, mail_lab: MailLab) -> None:
    await _say(bridge, "!refus:hospital.test", [f"inconnu@{PEER_DOMAIN}"], "x")
    await _say(bridge, "!nullmx:hospital.test", [f"a@{NULL_DOMAIN}"], "x")
    both = f"dr.house@{PEER_DOMAIN}"
    partial = await _say(bridge, "!partiel:hospital.test", [both, f"inconnu@{PEER_DOMAIN}"], "x")
    await _process_due(bridge)
    rows = {r.room_id: r for r in await _deliveries(bridge.store)}
    assert rows["!refus:hospital.test"].state == RowState.REJECTED
    assert rows["!nullmx:hospital.test"].state == RowState.REJECTED
    assert rows["!partiel:hospital.test"].state == RowState.DONE
    assert all(r.payload is None for r in rows.values())
    (refused,) = bridge.rooms.notices("!refus:hospital.test")
    assert f"a refusé le(s) destinataire(s) : inconnu@{PEER_DOMAIN}" in refused
    assert (rows["!refus:hospital.test"].last_error or "").startswith("5.1.1 ")
    assert (rows["!nullmx:hospital.test"].last_error or "").startswith("5.1.10 ")
    (null_mx,) = bridge.rooms.notices("!nullmx:hospital.test")
    assert "n'accepte pas de courriel" in null_mx
    (partly,) = bridge.rooms.notices("!partiel:hospital.test")
    assert f"inconnu@{PEER_DOMAIN} (5.1.1)" in partly and "Les autres destinataires" in partly
    await _wait_copies(mail_lab, both, message_id_for_event(partial, bridge.ctx.mail_domain))


async def test_a_user_without_an_address_is_refused_before_anything_is_queued(
    bridge: Bridge,
) -> None:
    gateway = bridge.settings.gateway.model_copy(update={"default_rule": False})
    strict = bridge.settings.model_copy(update={"gateway": gateway})
    assert bridge.ctx.gateway_out is not None
    bridge.ctx.gateway_out = dataclasses.replace(bridge.ctx.gateway_out, settings=strict)
    with pytest.raises(Rejected) as raised:
        await _say(bridge, "!anonyme:hospital.test", [RECIPIENT], "x")
    assert raised.value.code == "5.7.1"
    assert f"pas d'adresse MSSanté dans le domaine {CHAT_DOMAIN}" in raised.value.user_message
    assert await _deliveries(bridge.store) == []


async def test_crash_windows(
    bridge: Bridge, mail_lab: MailLab, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    store = bridge.store
    # 1. Killed while connecting (before any DATA): the retry delivers the one copy.
    bridge.zone[(PEER_DOMAIN, "MX")] = ["10 mx.lent.test."]  # the peer's MX is silent for now
    before = await _say(bridge, "!crash1:hospital.test", [RECIPIENT], "avant DATA")
    (row,) = await DeliveryRepo(store).claim("dead", 60, 10, {}, per_domain=10)
    attempt = asyncio.create_task(bridge.worker.process(row))
    while bridge.hole.connections == 0:
        await asyncio.sleep(0.02)
    attempt.cancel()  # the process dies here
    with contextlib.suppress(asyncio.CancelledError):
        await attempt
    bridge.zone[(PEER_DOMAIN, "MX")] = ["10 mx.correspondant.test."]
    await store.release_leases("dead")  # what the next start does for a dead process
    caplog.set_level(logging.WARNING, "mssbridge.delivery")
    await _process_due(bridge)
    before_id = message_id_for_event(before, bridge.ctx.mail_domain)
    await _wait_copies(mail_lab, RECIPIENT, before_id)
    assert "last attempt has no recorded outcome" in caplog.text

    # 2. Killed after the peer's 250, before the commit: the one possible duplicate, with
    # the same Message-ID; a third copy never comes.
    class Killed(BaseException):
        pass

    async def killed(self: DeliveryRepo, row: Delivery, accepted: Any) -> None:
        raise Killed

    after = await _say(bridge, "!crash2:hospital.test", [RECIPIENT], "après 250")
    after_id = message_id_for_event(after, bridge.ctx.mail_domain)
    (row,) = await DeliveryRepo(store).claim("dead", 60, 10, {}, per_domain=10)
    with monkeypatch.context() as patch:
        patch.setattr(DeliveryRepo, "delivered", killed)
        with pytest.raises(Killed):
            await bridge.worker.process(row)
    left = await store.get(Delivery, row.id or 0)
    assert left is not None and left.state == "pending" and left.attempt_started_at is not None
    await store.release_leases("dead")
    await _process_due(bridge)
    copies = await _wait_copies(mail_lab, RECIPIENT, after_id, count=2)
    assert await _process_due(bridge) == []  # the row is closed: nothing more leaves
    await asyncio.sleep(0.5)
    assert len(_copies(mail_lab, RECIPIENT, after_id)) == len(copies) == 2
    assert len(_copies(mail_lab, RECIPIENT, before_id)) == 1


async def test_relay_mode_sends_through_the_relay_whatever_the_mx(
    bridge: Bridge, mail_lab: MailLab, tmp_path: Path, test_pki: TestPki, dkim_key: tuple[Path, str]
) -> None:
    settings = gateway_settings(
        tmp_path / "relay",
        test_pki,
        "gateway.outbound=relay",
        f"gateway.relay=127.0.0.1:{mail_lab.smtp_port}",
        f"dkim.key_file={dkim_key[0]}",
        f"dkim.selector={SELECTOR}",
    )
    ctx = BridgeContext(
        settings, bridge.store, bridge.ctx.rooms, bridge.ctx.submit, ssl.create_default_context()
    )
    worker = GatewaySending(settings).attach(ctx)  # the daemon's route: system resolver, port 25
    bridge.zone[(PEER_DOMAIN, "MX")] = ["10 mx.lent.test."]  # not asked: the relay decides
    relay_bridge = dataclasses.replace(bridge, ctx=ctx, outbound=OutboundFlow(ctx), worker=worker)
    event_id = await _say(relay_bridge, "!relais:hospital.test", [RECIPIENT], "par le relais")
    (row,) = await _process_due(relay_bridge)
    message_id = message_id_for_event(event_id, ctx.mail_domain)
    (raw,) = await _wait_copies(mail_lab, RECIPIENT, message_id)
    assert f"From: Dr Alice Martin <dr.martin@{CHAT_DOMAIN}>".encode() in raw
    done = await bridge.store.get(Delivery, row.id or 0)
    assert done is not None and done.state == RowState.DONE
    assert bridge.hole.connections == 0


def test_check_line_and_a_missing_key(
    tmp_path: Path, test_pki: TestPki, dkim_key: tuple[Path, str]
) -> None:
    with_key = gateway_settings(
        tmp_path / "a",
        test_pki,
        "gateway.outbound=mx",
        f"dkim.key_file={dkim_key[0]}",
        f"dkim.selector={SELECTOR}",
    )
    line = sending_status(with_key)
    assert "MX of each domain" in line and f"{SELECTOR}._domainkey.{CHAT_DOMAIN}" in line
    without = gateway_settings(tmp_path / "b", test_pki, "gateway.outbound=mx")
    with pytest.raises(ConfigError, match=r"needs dkim\.key_file"):
        GatewaySending(without)


async def test_a_rooms_mails_leave_in_order_on_one_session(
    bridge: Bridge, mail_lab: MailLab
) -> None:
    log = mail_lab.postfix_log
    start = len(log.read_text(errors="replace").splitlines())
    events = [await _say(bridge, "!suite:hospital.test", [RECIPIENT], f"n°{n}") for n in range(3)]
    ids = [message_id_for_event(e, bridge.ctx.mail_domain) for e in events]
    runner = asyncio.create_task(bridge.worker.run())
    try:
        for message_id in ids:
            await _wait_copies(mail_lab, RECIPIENT, message_id)
        await _wait_rows(bridge.store, ["!suite:hospital.test"])
    finally:
        bridge.worker.stop()
        await asyncio.wait_for(runner, 10)  # stopping says goodbye to the idle session
    # The lab's Postfix is shared: another test's session may end in the same lines, so
    # look for the one session that carried all three mails.
    one_session = "mail=3 rcpt=3 data=3"
    for _ in range(200):
        lines = log.read_text(errors="replace").splitlines()[start:]
        if any("disconnect from" in line and one_session in line for line in lines):
            break
        await asyncio.sleep(0.05)
    received = [i for line in lines for i in ids if f"message-id={i}" in line]
    assert received == ids  # the order they were written in
    sessions = [line for line in lines if "disconnect from" in line and one_session in line]
    assert len(sessions) == 1, lines


@pytest.mark.parametrize(
    ("error", "kept"),
    [
        (InterruptedDelivery("MX x:25: SMTPServerDisconnected: after DATA"), True),
        (TemporaryFailure("no MX host took the mail"), False),
        (Rejected("refusé", code="5.1.1"), False),
    ],
)
async def test_the_attempt_mark_stays_only_while_the_outcome_is_unknown(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch, error: Exception, kept: bool
) -> None:
    async def fails(*_args: Any) -> None:
        raise error

    monkeypatch.setattr(DeliveryFlow, "_deliver", fails)
    await _say(bridge, "!marque:hospital.test", [RECIPIENT], "x")
    (row,) = await DeliveryRepo(bridge.store).claim("w", 60, 10, {}, per_domain=1)
    with pytest.raises(type(error)):
        await bridge.worker.handle(row)
    stored = await bridge.store.get(Delivery, row.id or 0)
    assert stored is not None and (stored.attempt_started_at is not None) is kept
