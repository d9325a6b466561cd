"""SIGTERM amid a stream of sends: what is in flight finishes, the rest waits for the next start."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from conftest import BridgeProcess, World
from test_relay_e2e import mails_matching, mentions, open_portal, text_of

from mssbridge import config as config_module
from mssbridge.lab.matrix_client import LabMatrixUser

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

COUNT = 20


def interrupted_rows(bridge: BridgeProcess) -> int:
    """Open outbox rows still leased, or whose submission started without a recorded end."""
    settings = config_module.load(bridge.config)
    path = settings.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM outbox WHERE state IN ('pending', 'retry') "
            "AND (lease_owner IS NOT NULL OR attempt_started_at IS NOT NULL)"
        ).fetchone()
    return int(count)


async def test_sigterm_finishes_the_sends_in_flight(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    _, token = synapse_lab.make_user("fred")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as fred:
        room = await open_portal(fred, f"Arrêt {tag}")
        for i in range(COUNT):
            await fred.send_text(room, f"Stop {tag} #{i}")
        await mails_matching(world, mentions(f"Stop {tag} #"), 1)
        # Mid-stream: one room's mails leave one after the other, so one is being sent now.
        assert bridge.stop() == 0
        assert "stopping: finishing work in progress" in bridge.log.read_text()
        assert interrupted_rows(bridge) == 0

        bridge.start()
        await mails_matching(world, mentions(f"Stop {tag} #"), COUNT)
        await asyncio.sleep(2)  # time for a duplicate to show up, if there were one
        out = await mails_matching(world, mentions(f"Stop {tag} #"), COUNT)
        assert sorted(text_of(m).strip() for m in out) == sorted(
            f"Stop {tag} #{i}" for i in range(COUNT)
        )
    assert bridge.stop() == 0
