"""Small versions of the stress drills (``bench/drill_crash.py``, ``bench/drill_outage.py``).

The crash drill kills the daemon with SIGKILL three times under a two-way load with files;
the outage drill cuts Postfix, Synapse and PostgreSQL in turn (at TCP proxies in front of
them) while both directions keep sending. Afterwards every message is on the other side
exactly once, and in order per conversation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BridgeProcess, World

from mssbridge.lab.drills import DRILL_SETTINGS, crash_drill
from mssbridge.lab.matrix_client import LabMatrixUser

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_crash_drill_two_way_with_files_loses_and_duplicates_nothing(
    world: World,
    synapse_lab: Any,
    bridge_factory: Callable[..., BridgeProcess],
    tmp_path: Path,
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'drill.sqlite3'}"
    bridge = bridge_factory(extra=(f"bridge.database={database}", *DRILL_SETTINGS))
    bridge.start()
    _, token = synapse_lab.make_user("drill_crash")
    async with LabMatrixUser(synapse_lab.url, token) as user:
        result = await crash_drill(
            bridge,
            user,
            world.correspondent,
            world.mail,
            database,
            messages=150,
            rooms=3,
            kill_every=(2.0, 4.0),
            max_kills=3,
            min_kills=3,
            timeout=240,
            settle=8,
            rng=random.Random(7),
        )
    assert result.kills == 3
    for tally in (result.out, result.back):
        assert tally.missing == []
        assert tally.duplicates == 0
        assert tally.delivered == tally.sent == 75
    assert result.open_rows == 0
    assert bridge.stop() == 0
