"""Gateway mode sending itself, end to end: Matrix → the daemon → the relay → the correspondent."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import BridgeProcess, World

from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.mailserver import free_port
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX, CORRESPONDENT, SERVER_NAME
from mssbridge.mail.dkim import DkimStatus, DkimVerifier, generate_key

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHAT_DOMAIN = "chat.chu-test.mssante.fr"
SELECTOR = "e2e"


async def _mails(world: World, token: str, timeout: float = 60) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inbox = await asyncio.to_thread(world.correspondent.inbox)
        found = [m for m in inbox if token in str(m.get_body(("plain",)).get_content())]  # type: ignore[union-attr]
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"no mail with {token} in {timeout} s")


def _raw(world: World, message_id: str) -> bytes:
    """The mail as the correspondent's server stored it (its maildir), for the signature."""
    maildir = world.mail.maildir(CORRESPONDENT)
    for path in [*maildir.glob("new/*"), *maildir.glob("cur/*")]:
        data = path.read_bytes()
        if f"Message-ID: {message_id}".encode() in data:
            return data
    raise AssertionError(f"{message_id} not in {maildir}")


async def _portal(user: LabMatrixUser, ghost: str, name: str) -> str:
    room = await user.create_room(invite=[ghost], name=name)
    await user.wait_for_event(
        room,
        lambda e: (
            e.get("state_key") == ghost and (e.get("content") or {}).get("membership") == "join"
        ),
        timeout=30,
    )
    return room


def _is_notice(bot: str, text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("sender") == bot and text in str((e.get("content") or {}).get("body"))


async def test_users_write_from_their_own_address_through_the_relay(
    world: World,
    synapse_lab: Any,
    bridge_factory: Callable[..., BridgeProcess],
    tmp_path: Path,
) -> None:
    pki = world.pki
    key_file, record = generate_key(SELECTOR, CHAT_DOMAIN, tmp_path / "dkim")
    bridge = bridge_factory(
        extra=(
            "gateway.enabled=true",
            f"gateway.domain={CHAT_DOMAIN}",
            f'gateway.listen=["127.0.0.1:{free_port()}"]',
            f"gateway.cert_file={pki.server.chain}",
            f"gateway.key_file={pki.server.key}",
            f'tls.crl_files=["{pki.root_crl}", "{pki.intermediate_crl}"]',
            "gateway.outbound=relay",
            f"gateway.relay=127.0.0.1:{world.mail.smtp_port}",
            f"dkim.key_file={key_file}",
            f"dkim.selector={SELECTOR}",
        )
    )
    bridge.start()
    tag = secrets.token_hex(4)
    localpart = f"iris{tag}"
    _, token = synapse_lab.make_user(localpart)
    async with LabMatrixUser(synapse_lab.url, token) as iris:
        await iris.set_display_name("Dr Iris Bernard")
        room = await _portal(iris, ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME), tag)
        await iris.send_text(room, f"Bonjour {tag}")
        (mail,) = await _mails(world, tag)
        # A 5xx from the other side is told in the room.
        unknown = ghost_user_id("inconnu@correspondant.mssante.fr", "mss_", SERVER_NAME)
        refused_room = await _portal(iris, unknown, f"{tag} inconnu")
        sent = await iris.send_text(refused_room, "Bonjour ?")
        notice = await iris.wait_for_event(
            refused_room, _is_notice(synapse_lab.bot_user_id, "non transmis"), timeout=60
        )
    assert str(mail["From"]) == f"Dr Iris Bernard <{localpart}@{CHAT_DOMAIN}>"
    assert str(mail["Return-Path"]) == f"<{BRIDGE_MAILBOX}>"
    raw = _raw(world, str(mail["Message-ID"]))
    verdict = DkimVerifier.from_keys({f"{CHAT_DOMAIN}/{SELECTOR}": record}).verify(raw)
    assert (verdict.status, verdict.domain) == (DkimStatus.PASS, CHAT_DOMAIN)
    assert "inconnu@correspondant.mssante.fr" in notice["content"]["body"]
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
    assert bridge.stop() == 0
    log = bridge.log.read_text()
    assert "took it" in log and f"Bonjour {tag}" not in log
