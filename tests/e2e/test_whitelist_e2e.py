"""The daemon refuses mail to a domain outside the (lab's signed) whitelist and says so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import BridgeProcess, World

from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import SERVER_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

UNLISTED = "someone@not-listed.example.fr"


def _bot_says(bot: str, token: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e.get("sender") == bot and token in str((e.get("content") or {}).get("body", ""))
    )


async def test_unlisted_recipient_is_refused_with_a_room_notice(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    _, token = synapse_lab.make_user("hugo")
    ghost = ghost_user_id(UNLISTED, "mss_", SERVER_NAME)
    bot = synapse_lab.bot_user_id
    async with LabMatrixUser(synapse_lab.url, token) as hugo:
        room = await hugo.create_room(invite=[ghost], name="Hors liste blanche")
        warning = await hugo.wait_for_event(room, _bot_says(bot, "liste blanche"), timeout=30)
        assert UNLISTED in warning["content"]["body"]
        sent = await hugo.send_text(room, "Bonjour ?")
        notice = await hugo.wait_for_event(room, _bot_says(bot, "non transmis"), timeout=30)
        body = notice["content"]["body"]
        assert UNLISTED in body and "domaine absent de la liste blanche MSSanté" in body
        assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
    assert bridge.stop() == 0
    log = bridge.log.read_text()
    assert "sent as mail" not in log  # nothing was submitted
    assert "5.7.1" in log
