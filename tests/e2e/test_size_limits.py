"""The size limit both ways, with the real servers: refused early, reported precisely."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import BridgeProcess, World

from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX, CORRESPONDENT, SERVER_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

LIMIT = 60_000
GHOST = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)


async def test_oversize_both_ways_is_refused_with_a_clear_notice(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    _, token = synapse_lab.make_user("ivan")
    async with LabMatrixUser(synapse_lab.url, token) as ivan:
        admin_room = await ivan.create_room(
            invite=[synapse_lab.bot_user_id], name="Exploitation passerelle"
        )
        bridge = bridge_factory(
            extra=(f"limits.max_message_size={LIMIT}", f"bridge.admin_room={admin_room}")
        )
        bridge.start()
        await ivan.wait_for_event(
            admin_room, lambda e: e.get("sender") == synapse_lab.bot_user_id, timeout=30
        )
        room = await ivan.create_room(invite=[GHOST], name="Gros fichiers")
        await ivan.wait_for_event(
            room,
            lambda e: (
                e.get("state_key") == GHOST and (e.get("content") or {}).get("membership") == "join"
            ),
            timeout=30,
        )
        # Outbound: a file whose encoded mail exceeds the limit is refused, with its name.
        big = secrets.token_bytes(50_000)  # 50 kB raw, about 68 kB once base64-encoded
        sent = await ivan.send_file(room, "scanner.pdf", big, "application/pdf")
        notice = await ivan.wait_for_event(
            room,
            lambda e: (
                e.get("sender") == synapse_lab.bot_user_id
                and "scanner.pdf" in str((e.get("content") or {}).get("body", ""))
            ),
            timeout=30,
        )
        assert "non transmis" in notice["content"]["body"]
        assert "de plus que la limite" in notice["content"]["body"]
        assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
        # ... and the room goes on: a small message still leaves.
        tag = secrets.token_hex(4)
        await ivan.send_text(room, f"Petit message {tag}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            inbox = await asyncio.to_thread(world.correspondent.inbox)
            if any(
                f"Petit message {tag}" in str(m.get_body(("plain",)).get_content())
                for m in inbox
                if m.get_body(("plain",)) is not None
            ):
                break
            await asyncio.sleep(0.3)
        else:
            raise AssertionError("the small message did not leave after the refusal")

        # Inbound: a mail over the limit is not fetched; the operators are told.
        await asyncio.to_thread(
            world.correspondent.send, BRIDGE_MAILBOX, f"Trop gros {tag}", "x" * (LIMIT + 10)
        )
        report = await ivan.wait_for_event(
            admin_room,
            lambda e: "refusé" in str((e.get("content") or {}).get("body", "")),
            timeout=30,
        )
        assert "limite" in report["content"]["body"]
        events = await ivan.messages(room, limit=50)
        assert not any(
            f"Trop gros {tag}" in str((e.get("content") or {}).get("body", "")) for e in events
        )
