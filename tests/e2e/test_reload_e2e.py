"""SIGHUP (systemctl reload): new TLS settings for every connection, the IMAP session included."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import BRIDGE_MAILBOX, BridgeProcess, World
from test_relay_e2e import body_contains, mails_matching, mentions, open_portal, wait_ghost_events

from mssbridge.lab.matrix_client import LabMatrixUser

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

RENEWED = "reconnecting with the reloaded TLS settings"


async def wait_for_log(bridge: BridgeProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in bridge.log.read_text():
        assert time.monotonic() < deadline, f"not in the log after {timeout} s: {text}"
        await asyncio.sleep(0.2)


async def test_reload_renews_the_idle_imap_session_and_keeps_relaying(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    _, token = synapse_lab.make_user("hugo")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as hugo:
        room = await open_portal(hugo, f"Rechargement {tag}")
        await hugo.send_text(room, f"Avant {tag}")
        [root] = await mails_matching(world, mentions(f"Avant {tag}"), 1)
        assert bridge.process is not None
        bridge.process.send_signal(signal.SIGHUP)
        await wait_for_log(bridge, "TLS reloaded (generation 1)")
        # The reader was in IDLE with nothing arriving: it leaves it for the new settings.
        await wait_for_log(bridge, RENEWED)
        await asyncio.to_thread(
            world.correspondent.send,
            BRIDGE_MAILBOX,
            f"Re: Rechargement {tag}",
            f"Après {tag}",
            in_reply_to=str(root["Message-ID"]),
        )
        await wait_ghost_events(hugo, room, body_contains(f"Après {tag}"), 1)
        await hugo.send_text(room, f"Encore {tag}")
        await mails_matching(world, mentions(f"Encore {tag}"), 1)
    log = bridge.log.read_text()
    assert log.count(RENEWED) == 1
    assert "IMAP unavailable" not in log
    assert bridge.stop() == 0
