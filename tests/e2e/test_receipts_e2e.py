"""Receipts end to end: real Postfix DSNs, MDNs both ways, read receipts seen from Matrix."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from typing import Any

import pytest
from conftest import BridgeProcess, World

from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.mailserver import BOUNCE_LOCALPART
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX, CORRESPONDENT, SERVER_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

GHOST = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
BOUNCING = f"{BOUNCE_LOCALPART}@correspondant.mssante.fr"
BOUNCING_GHOST = ghost_user_id(BOUNCING, "mss_", SERVER_NAME)
TIMEOUT = 60.0


async def wait_for(check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


async def portal_with(user: LabMatrixUser, name: str, ghosts: list[str]) -> str:
    room = await user.create_room(invite=ghosts, name=name)
    for ghost in ghosts:
        await user.wait_for_event(
            room,
            lambda e, g=ghost: (  # type: ignore[misc]
                e.get("type") == "m.room.member"
                and e.get("state_key") == g
                and (e.get("content") or {}).get("membership") == "join"
            ),
            timeout=30,
        )
    return room


async def mail_with(world: World, token: str) -> EmailMessage:
    async def find() -> EmailMessage | None:
        for mail in await asyncio.to_thread(world.correspondent.inbox):
            body = mail.get_body(preferencelist=("plain",))
            if body is not None and token in str(body.get_content()):
                return mail
        return None

    found: EmailMessage = await wait_for(find, f"mail with {token}")
    return found


async def readers_of(user: LabMatrixUser, room: str, event_id: str) -> set[str]:
    return (await user.read_receipts(room)).get(event_id, set())


async def bot_notices(user: LabMatrixUser, room: str, bot: str) -> list[dict[str, Any]]:
    events = await user.messages(room, limit=100)
    return [
        e
        for e in events
        if e.get("sender") == bot and (e.get("content") or {}).get("msgtype") == "m.notice"
    ]


def correspondent_mdn(original_id: str, disposition: str, subject: str = "Lu") -> bytes:
    """An MDN as the correspondent's mail client writes it (RFC 8098)."""
    return (
        f"From: Dr Gregory House <{CORRESPONDENT}>\r\nTo: {BRIDGE_MAILBOX}\r\n"
        f"Subject: {subject}\r\nMessage-ID: {make_msgid(domain='correspondant.mssante.fr')}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="r"\r\n'
        "\r\n--r\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAccusé de lecture.\r\n"
        "--r\r\nContent-Type: message/disposition-notification\r\n\r\n"
        "Reporting-UA: correspondant.mssante.fr; Client de messagerie\r\n"
        f"Final-Recipient: rfc822; {CORRESPONDENT}\r\n"
        f"Original-Message-ID: {original_id}\r\nDisposition: {disposition}\r\n\r\n--r--\r\n"
    ).encode()


async def test_postfix_delivery_reports_become_a_receipt_and_a_notice(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    _, token = synapse_lab.make_user("rita")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as rita:
        room = await portal_with(rita, f"Remise {tag}", [GHOST, BOUNCING_GHOST])
        started = time.monotonic()
        sent = await rita.send_text(room, f"Bilan {tag}")
        mail = await mail_with(world, f"Bilan {tag}")
        assert mail["Disposition-Notification-To"] == BRIDGE_MAILBOX

        # Postfix's success DSN for the delivery to dr.house: his ghost's read receipt.
        readers = await wait_for(
            lambda: _having(readers_of(rita, room, sent), GHOST), "ghost's read receipt"
        )
        receipt_seconds = time.monotonic() - started
        assert BOUNCING_GHOST not in readers  # the bounced recipient has read nothing

        # Postfix's failure DSN for the bounced recipient: a notice from the bot.
        [notice] = await wait_for(
            lambda: bot_notices(rita, room, synapse_lab.bot_user_id), "failure notice"
        )
        body = notice["content"]["body"]
        assert BOUNCING in body and "5.1.1" in body and "Mailbox does not exist" in body
        assert tag not in body  # codes and diagnostics, no content
        assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
        # the reports are not relayed as the correspondent's messages
        ghost_texts = [e for e in await rita.messages(room) if e.get("sender") == GHOST]
        assert not [e for e in ghost_texts if e.get("type") == "m.room.message"]
    assert bridge.stop() == 0
    log = bridge.log.read_text()
    assert tag not in log
    assert "delivery-status report" in log
    print(f"receipt after {receipt_seconds:.1f} s")


async def _having(readers: Any, user_id: str) -> set[str] | None:
    found: set[str] = await readers
    return found if user_id in found else None


async def test_correspondent_read_notifications_become_a_receipt_or_a_notice(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    # No DSN here: only the MDN can put the ghost's receipt on the message.
    bridge = bridge_factory(extra=("receipts.request_delivery=false",))
    bridge.start()
    _, token = synapse_lab.make_user("sam")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as sam:
        room = await portal_with(sam, f"Lecture {tag}", [GHOST])
        read = await sam.send_text(room, f"Premier {tag}")
        first = await mail_with(world, f"Premier {tag}")
        refused = await sam.send_text(room, f"Second {tag}")
        second = await mail_with(world, f"Second {tag}")
        await asyncio.sleep(2)
        assert GHOST not in await readers_of(sam, room, read)  # nothing before the MDN

        await asyncio.to_thread(
            world.correspondent.send_raw,
            BRIDGE_MAILBOX,
            correspondent_mdn(
                str(first["Message-ID"]), "manual-action/MDN-sent-manually; displayed"
            ),
        )
        await wait_for(lambda: _having(readers_of(sam, room, read), GHOST), "receipt from MDN")

        await asyncio.to_thread(
            world.correspondent.send_raw,
            BRIDGE_MAILBOX,
            correspondent_mdn(
                str(second["Message-ID"]),
                "automatic-action/MDN-sent-automatically; processed/Error: "
                "902^Identifiant de patient inconnu",
            ),
        )
        [notice] = await wait_for(
            lambda: bot_notices(sam, room, synapse_lab.bot_user_id), "integration error notice"
        )
        assert "902" in notice["content"]["body"]
        assert "Identifiant de patient inconnu" in notice["content"]["body"]
        assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == refused
        assert GHOST not in await readers_of(sam, room, refused)
    assert bridge.stop() == 0


def mail_asking_for_mdn(
    subject: str, text: str, notify_to: str, in_reply_to: str | None = None
) -> tuple[str, bytes]:
    mail = EmailMessage()
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
    mail["From"] = f"Dr Gregory House <{CORRESPONDENT}>"
    mail["To"] = BRIDGE_MAILBOX
    mail["Subject"] = subject
    mail["Message-ID"] = make_msgid(domain="correspondant.mssante.fr")
    mail["Disposition-Notification-To"] = notify_to
    mail.set_content(text)
    return str(mail["Message-ID"]), mail.as_bytes(policy=SMTP)


async def mdns_for(world: World, original_id: str) -> list[EmailMessage]:
    found = []
    for mail in await asyncio.to_thread(world.correspondent.inbox):
        if mail.get_content_type() != "multipart/report":
            continue
        if original_id.encode() in mail.as_bytes():
            found.append(mail)
    return found


async def test_read_notification_requests_are_answered_once_after_the_room_got_the_mail(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    tina_id, token = synapse_lab.make_user("tina")
    bridge = bridge_factory(invite=(tina_id,))
    bridge.start()
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as tina:
        asked, raw = mail_asking_for_mdn(
            f"Demande {tag}", f"Merci de confirmer {tag}", CORRESPONDENT
        )
        other, other_raw = mail_asking_for_mdn(
            f"Re: Demande {tag}",
            f"Autre adresse {tag}",
            "secretariat@correspondant.mssante.fr",
            in_reply_to=asked,
        )
        await asyncio.to_thread(world.correspondent.send_raw, BRIDGE_MAILBOX, raw)
        room = await tina.wait_for_invite(timeout=TIMEOUT)
        await tina.join(room)
        await tina.wait_for_event(
            room, lambda e: f"confirmer {tag}" in str((e.get("content") or {}).get("body")), 30
        )
        bridge.kill()  # wherever the MDN is (queued, in flight, sent), it must leave once
        bridge.start()
        [mdn] = await wait_for(lambda: mdns_for(world, asked), "MDN to the correspondent")
        assert mdn["To"] == CORRESPONDENT
        assert mdn["Auto-Submitted"] == "auto-replied"
        assert mdn.get_param("report-type") == "disposition-notification"
        parts = list(mdn.iter_parts())
        assert [p.get_content_type() for p in parts] == [
            "text/plain",
            "message/disposition-notification",
            "message/rfc822",
        ]
        fields = parts[1].get_payload()[0]
        assert fields["Original-Message-ID"] == asked
        assert fields["Final-Recipient"] == f"rfc822;{BRIDGE_MAILBOX}"
        assert fields["Original-Recipient"] == f"rfc822;{BRIDGE_MAILBOX}"
        assert fields["Reporting-UA"].startswith("chu-test.mssante.fr; mssbridge ")
        assert fields["Disposition"] == "automatic-action/MDN-sent-automatically; processed"

        # A request to another address than the sender's (Return-Path) is not answered.
        await asyncio.to_thread(world.correspondent.send_raw, BRIDGE_MAILBOX, other_raw)
        await tina.wait_for_event(
            room, lambda e: f"Autre adresse {tag}" in str((e.get("content") or {}).get("body")), 30
        )
        await asyncio.sleep(3)  # time for a duplicate or a wrong answer to show up
        assert len(await mdns_for(world, asked)) == 1
        assert await mdns_for(world, other) == []
    assert bridge.stop() == 0
    assert tag not in bridge.log.read_text()
