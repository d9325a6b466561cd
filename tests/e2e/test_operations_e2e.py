"""Operations end to end: m.room.retention on portal rooms, metrics and health of the daemon
process, and the scheduled purge redacting the ghost's message and expunging the mailbox."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import BridgeProcess, World
from sqlalchemy import text
from test_relay_e2e import body_contains, wait_ghost_events

from mssbridge import config
from mssbridge.lab.mailserver import free_port
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX
from mssbridge.store.db import make_engine

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

NINETY_DAYS_MS = 90 * 86_400_000
HUNDRED_DAYS = 100 * 86_400.0


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


def _sample(metrics_text: str, line_start: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _age_store(bridge: BridgeProcess) -> None:
    """Make everything the bridge stored look 100 days old (the test cannot wait 90 days)."""
    engine = make_engine(config.load(bridge.config).database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE message_map SET created_at = created_at - :d"), {"d": HUNDRED_DAYS}
            )
            await conn.execute(
                text("UPDATE inbox SET updated_at = updated_at - :d"), {"d": HUNDRED_DAYS}
            )
    finally:
        await engine.dispose()


async def test_retention_metrics_and_health_of_the_daemon(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    erin_id, token = synapse_lab.make_user("erin")
    port = free_port()
    bridge = bridge_factory(invite=(erin_id,), extra=(f"metrics.listen=127.0.0.1:{port}",))
    bridge.start()
    tag = secrets.token_hex(4)
    base = f"http://127.0.0.1:{port}"
    async with LabMatrixUser(synapse_lab.url, token) as erin:
        await asyncio.to_thread(
            world.correspondent.send, BRIDGE_MAILBOX, f"Bilan {tag}", f"Résultats {tag}."
        )
        room = await erin.wait_for_invite(timeout=60)
        await erin.join(room)
        [event] = await wait_ghost_events(erin, room, body_contains(f"Résultats {tag}"), 1)
        # The room the bridge opened drops its events after the content period.
        assert await erin.state(room, "m.room.retention") == {"max_lifetime": NINETY_DAYS_MS}

        status, metrics_text = await _get(f"{base}/metrics")
        assert status == 200
        received = 'mssbridge_messages_total{direction="in",outcome="received"}'
        relayed = 'mssbridge_messages_total{direction="in",outcome="relayed"}'
        assert _sample(metrics_text, received) >= 1 and _sample(metrics_text, relayed) >= 1
        assert _sample(metrics_text, 'mssbridge_relay_latency_seconds_count{direction="in"}') >= 1
        assert _sample(metrics_text, "mssbridge_certificate_days_left") > 0
        assert 0 <= _sample(metrics_text, "mssbridge_whitelist_age_days") < 1
        assert tag not in metrics_text
        status, health = await _get(f"{base}/health")
        assert status == 200 and '"store": true' in health

        # 100 days later (as far as the store can tell), the scheduled purge runs at start.
        assert bridge.stop() == 0
        await _age_store(bridge)
        bridge.start()
        deadline = time.monotonic() + 60
        redacted = False
        while time.monotonic() < deadline and not redacted:
            for e in await erin.messages(room, limit=100):
                if e.get("event_id") == event["event_id"]:
                    redacted = not e.get("content") and "redacted_because" in e.get("unsigned", {})
            if not redacted:
                await asyncio.sleep(0.5)
        assert redacted, bridge.tail()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, metrics_text = await _get(f"{base}/metrics")
            if _sample(metrics_text, 'mssbridge_purged_rows_total{kind="inbox"}') >= 1:
                break
            await asyncio.sleep(0.5)
        assert _sample(metrics_text, 'mssbridge_purged_rows_total{kind="map_in"}') >= 1
        assert _sample(metrics_text, 'mssbridge_purged_rows_total{kind="inbox"}') >= 1, (
            bridge.tail()
        )
    assert bridge.stop() == 0
    assert "retention purge:" in bridge.log.read_text()
