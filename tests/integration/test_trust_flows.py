"""Flows with the real store: DKIM signing and the reject policy, and who may drive the bridge."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from fixtures.settings import offline_config

from mssbridge import config
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.inbound import InboundFlow
from mssbridge.flows.outbound import NOT_ALLOWED, OutboundFlow
from mssbridge.mail.dkim import Dkim, DkimSigner, DkimVerifier, generate_key, load_private_key
from mssbridge.mail.smtp_out import Submission
from mssbridge.matrix.rooms import MatrixRooms
from mssbridge.security.atrest import Sealer
from mssbridge.store import audit
from mssbridge.store.db import make_engine, migrate
from mssbridge.store.repo import Store
from mssbridge.store.tables import AuditAction, Inbox, Outbox, RowState

pytestmark = pytest.mark.integration

SERVER = "hospital.test"
BRIDGE_DOMAIN = "hopital.mssante.fr"
PEER_DOMAIN = "chu-test.mssante.fr"
ADMIN_ROOM = "!admin:hospital.test"


@dataclass
class FakeRooms:
    """The Matrix side, recorded: what the flows post, create, join and decline."""

    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    declined: list[tuple[str, str, str]] = field(default_factory=list)
    joined: list[tuple[str, str]] = field(default_factory=list)
    created: int = 0

    async def send(self, sender: str, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        self.sent.append((sender, room_id, content))
        return f"$ev-{txn_id}"

    async def display_name(self, room_id: str, user_id: str) -> str:
        return "Dr Alice"

    async def create_room(self, creator: str, name: str, topic: str = "") -> str:
        self.created += 1
        return f"!new{self.created}:hospital.test"

    async def ensure_ghost(self, user_id: str, display_name: str) -> None:
        return None

    async def join(self, user_id: str, room_id: str) -> None:
        self.joined.append((user_id, room_id))

    async def show_name_in_room(self, user_id: str, room_id: str, display_name: str) -> None:
        return None

    async def invite(self, inviter: str, room_id: str, user_id: str) -> None:
        return None

    async def decline_invite(self, user_id: str, room_id: str, reason: str) -> None:
        self.declined.append((user_id, room_id, reason))

    async def room_name(self, user_id: str, room_id: str) -> str:
        return ""

    async def recent_events(self, user_id: str, room_id: str) -> list[dict[str, Any]]:
        return []

    def notices(self, room_id: str) -> list[str]:
        return [str(c.get("body")) for _s, r, c in self.sent if r == room_id]


@dataclass
class World:
    ctx: BridgeContext
    rooms: FakeRooms
    store: Store
    submitted: list[bytes]
    peer_signer: DkimSigner


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    base = tmp_path_factory.mktemp("dkim-keys")
    return {
        "bridge": generate_key("b1", BRIDGE_DOMAIN, base / "bridge"),
        "peer": generate_key("p1", PEER_DOMAIN, base / "peer"),
    }


@pytest.fixture
async def world(
    database_url: str, tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> AsyncIterator[World]:
    path = tmp_path / "config.toml"
    offline_config(
        path,
        "bridge.admin_room=" + ADMIN_ROOM,
        f"matrix.server_name={SERVER}",
        "mailbox.address=bal@" + BRIDGE_DOMAIN,
        "mailbox.self_copy=false",
        "whitelist.enforce=false",
        f'access.admins=["@it:{SERVER}"]',
        f"dkim.key_file={keys['bridge'][0]}",
        "dkim.selector=b1",
        "dkim.verify_policy=reject",
    )
    settings = config.load(path)
    engine = make_engine(database_url)
    await migrate(engine)
    store = Store(engine, Sealer.from_file(settings.bridge.key_file))
    submitted: list[bytes] = []

    async def submit(sender: str, recipients: Sequence[str], message: bytes) -> Submission:
        submitted.append(message)
        return Submission("2.0.0 Ok", tuple(recipients))

    verifier = DkimVerifier.from_keys(
        {f"{PEER_DOMAIN}/p1": keys["peer"][1], f"{BRIDGE_DOMAIN}/b1": keys["bridge"][1]}
    )
    signer = DkimSigner("b1", BRIDGE_DOMAIN, load_private_key(keys["bridge"][0]))
    rooms = FakeRooms()
    ctx = BridgeContext(
        settings,
        store,
        cast(MatrixRooms, rooms),
        submit,
        ssl.create_default_context(),
        Dkim(signer, verifier, reject_failures=settings.dkim.verify_policy == "reject"),
    )
    peer = DkimSigner("p1", PEER_DOMAIN, load_private_key(keys["peer"][0]))
    yield World(ctx, rooms, store, submitted, peer)
    await engine.dispose()


def _mail(uid: int, body: str = "Bonjour, le patient va mieux.") -> bytes:
    return (
        f"From: Dr House <dr.house@{PEER_DOMAIN}>\r\n"
        f"To: bal@{BRIDGE_DOMAIN}\r\n"
        f"Subject: Avis {uid}\r\n"
        f"Message-ID: <{uid}@{PEER_DOMAIN}>\r\n"
        "Date: Mon, 05 Jan 2026 10:00:00 +0100\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


async def _inbound(world: World, raw: bytes, uid: int) -> Inbox:
    row_id = await world.store.store_mail("bal/INBOX", 1, uid, raw, f"<{uid}@{PEER_DOMAIN}>")
    row = await world.store.get(Inbox, row_id or 0)
    assert row is not None
    await InboundFlow(world.ctx).handle(row)
    fresh = await world.store.get(Inbox, row_id or 0)
    assert fresh is not None
    return fresh


async def test_reject_policy_keeps_a_forged_mail_out_of_the_rooms(world: World) -> None:
    good = await _inbound(world, world.peer_signer.sign(_mail(1)), 1)
    assert good.state == RowState.DONE
    assert good.auth_results == f"dkim=pass header.d={PEER_DOMAIN} header.s=p1"

    forged = world.peer_signer.sign(_mail(2)).replace(b"va mieux", b"va mal")
    bad = await _inbound(world, forged, 2)
    assert bad.state == RowState.REJECTED and (bad.last_error or "").startswith("5.7.20")
    assert (bad.auth_results or "").startswith("dkim=fail")
    assert world.store.raw_of(bad) == forged  # kept, not relayed
    assert not any("va mal" in str(c.get("body")) for _s, _r, c in world.rooms.sent)
    (notice,) = world.rooms.notices(ADMIN_ROOM)
    assert "DKIM" in notice and "va mal" not in notice

    unsigned = await _inbound(world, _mail(3), 3)
    assert unsigned.state == RowState.DONE and unsigned.auth_results == "dkim=none"

    rows = [r async for r in audit.export(world.store, 0.0)]
    rejected = [r for r in rows if r.action == AuditAction.MESSAGE_REJECTED]
    assert [(r.row_id, r.outcome) for r in rejected] == [(bad.id, "5.7.20")]
    relayed = [r for r in rows if r.action == AuditAction.MESSAGE_RELAYED]
    assert [r.actor for r in relayed] == [f"dr.house@{PEER_DOMAIN}"] * 2


async def test_record_policy_relays_and_keeps_the_verdict(world: World) -> None:
    world.ctx.dkim = Dkim(world.ctx.dkim.signer, world.ctx.dkim.verifier, reject_failures=False)
    forged = world.peer_signer.sign(_mail(4)).replace(b"va mieux", b"va mal")
    row = await _inbound(world, forged, 4)
    assert row.state == RowState.DONE and (row.auth_results or "").startswith("dkim=fail")


def _event(event_id: str, sender: str, room: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "room_id": room, "sender": sender, **extra}


async def _outbound(world: World, event: dict[str, Any]) -> Outbox:
    await world.store.store_transaction(f"t-{event['event_id']}", [event])
    row = next(
        r for r in await world.store.rows(Outbox, ["pending"]) if r.event_id == event["event_id"]
    )
    await OutboundFlow(world.ctx).handle(row)
    fresh = await world.store.get(Outbox, row.id or 0)
    assert fresh is not None
    return fresh


def _message(event_id: str, sender: str, room: str, body: str) -> dict[str, Any]:
    content = {"msgtype": "m.text", "body": body}
    return _event(event_id, sender, room, type="m.room.message", content=content)


async def test_outgoing_mail_is_signed_and_traced(world: World) -> None:
    room = "!portal:hospital.test"
    await world.store.create_portal(
        subject="Avis", correspondents=[f"dr.house@{PEER_DOMAIN}"], room_id=room
    )
    row = await _outbound(world, _message("$m1", f"@alice:{SERVER}", room, "Merci pour l'avis"))
    assert row.state == RowState.DONE
    (mail,) = world.submitted
    assert mail.startswith(b"DKIM-Signature:")
    assert world.ctx.dkim.verifier.verify(mail).header == (
        f"dkim=pass header.d={BRIDGE_DOMAIN} header.s=b1"
    )
    (sent,) = [r async for r in audit.export(world.store, 0.0)]
    assert (sent.action, sent.actor, sent.peer) == (
        AuditAction.MESSAGE_SENT,
        f"@alice:{SERVER}",
        f"dr.house@{PEER_DOMAIN}",
    )


async def test_outsiders_cannot_drive_the_bridge(world: World) -> None:
    room = "!r:evil.test"
    outsider = "@mallory:evil.test"
    ghost = f"@mss_dr.house={PEER_DOMAIN}:{SERVER}"
    invite = _event(
        "$inv",
        outsider,
        room,
        type="m.room.member",
        state_key=ghost,
        content={"membership": "invite"},
    )
    row = await _outbound(world, invite)
    assert row.state == RowState.DROPPED
    assert world.rooms.declined == [(ghost, room, NOT_ALLOWED)]
    assert (ghost, room) not in world.rooms.joined
    assert await world.store.portal_by_room(room) is None

    bot_invite = {**invite, "event_id": "$inv2", "state_key": f"@mss_bot:{SERVER}"}
    await _outbound(world, bot_invite)
    assert world.rooms.declined[-1][0] == f"@mss_bot:{SERVER}"
    assert not world.rooms.joined

    command = await _outbound(world, _message("$c", outsider, room, "!mss start x@y.fr"))
    assert command.state == RowState.DROPPED
    assert NOT_ALLOWED in world.rooms.notices(room)
    denied = [
        r.actor
        async for r in audit.export(world.store, 0.0)
        if r.action == AuditAction.ACCESS_DENIED
    ]
    assert denied == [outsider] * 3


async def test_queue_counts_in_status_for_admins_only(world: World) -> None:
    room = "!bot:hospital.test"
    await _outbound(world, _message("$s1", f"@alice:{SERVER}", room, "!mss status"))
    await _outbound(world, _message("$s2", f"@it:{SERVER}", room, "!mss status"))
    user_view, admin_view = world.rooms.notices(room)
    assert "Envois" not in user_view
    assert "Envois : done=1" in admin_view and "Réceptions : vide" in admin_view
