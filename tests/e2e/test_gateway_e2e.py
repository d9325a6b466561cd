"""Gateway mode end to end: another operator's Postfix → the daemon's SMTP server → the room."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BridgeProcess, World

from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.mailserver import free_port
from mssbridge.lab.matrix_client import LabMatrixUser, text_body
from mssbridge.lab.operator_mta import OperatorMta, message_id
from mssbridge.lab.world import CORRESPONDENT, SERVER_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHAT_DOMAIN = "chat.chu-test.mssante.fr"
BODY = "Avis cardiologique pour Hugo, merci de rappeler"


async def test_operator_mail_reaches_the_addressed_users(
    world: World,
    synapse_lab: Any,
    bridge_factory: Callable[..., BridgeProcess],
    tmp_path: Path,
) -> None:
    """A first mail opens a room with its recipient; a reply to another one brings her in."""
    pki = world.pki
    port = free_port()
    bridge = bridge_factory(
        extra=(
            "gateway.enabled=true",
            f"gateway.domain={CHAT_DOMAIN}",
            f'gateway.listen=["127.0.0.1:{port}"]',
            f"gateway.cert_file={pki.server.chain}",
            f"gateway.key_file={pki.server.key}",
            f'tls.crl_files=["{pki.root_crl}", "{pki.intermediate_crl}"]',
        )
    )
    bridge.start()
    _, token = synapse_lab.make_user("hugo")
    # The lab whitelist lists the correspondent's domain with the lab server's DN: that
    # operator presents the server certificate as its client certificate.
    operator = OperatorMta(
        tmp_path / "operator", pki, pki.server, port, ("correspondant.mssante.fr",)
    )
    _, lea_token = synapse_lab.make_user("lea")
    ghost = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
    with operator:

        async def send(to: str, subject: str, body: str, in_reply_to: str | None = None) -> None:
            queue_id = await asyncio.to_thread(
                operator.send, CORRESPONDENT, [f"{to}@{CHAT_DOMAIN}"], subject, body, in_reply_to
            )
            delivery = await asyncio.to_thread(operator.wait_delivery, queue_id)
            assert delivery.status == "sent", delivery.detail

        await send("hugo", "Avis cardio", BODY)
        async with LabMatrixUser(synapse_lab.url, token) as hugo:
            room = await hugo.wait_for_invite(timeout=30)
            await hugo.join(room)
            event = await hugo.wait_for_event(
                room, lambda e: BODY in (text_body(e) or ""), timeout=30
            )
            assert event["sender"] == ghost
        # A reply in that thread, addressed to Léa: she is invited into the same room.
        await send(
            "lea", "Suite avis", "Léa, pouvez-vous voir ce patient ?", message_id("Avis cardio")
        )
        async with LabMatrixUser(synapse_lab.url, lea_token) as lea:
            assert await lea.wait_for_invite(timeout=30) == room
            await lea.join(room)
            reply = await lea.wait_for_event(
                room, lambda e: "pouvez-vous" in (text_body(e) or ""), timeout=30
            )
            assert reply["sender"] == ghost
    assert bridge.stop() == 0
    log = bridge.log.read_text()
    assert "gateway: SMTP listening on 127.0.0.1" in log
    assert "stored as inbox row" in log
    assert BODY not in log and "hugo@" not in log
