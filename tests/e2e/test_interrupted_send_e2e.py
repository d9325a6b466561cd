"""A submission cut off mid-way, then a restart with a quiet mailbox: sent once, without delay."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BridgeProcess, World
from test_relay_e2e import mails_matching, mentions, open_portal, text_of

from mssbridge import config as config_module
from mssbridge.lab.matrix_client import LabMatrixUser

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# Longer than the restart takes: the reader's first pass comes before the copy could be
# there, so only a later pass, asked for by the check, can settle it.
SELF_COPY_WAIT = 10.0


@pytest.fixture
async def silent_smtp() -> AsyncIterator[int]:
    """A port that accepts connections and never answers: a submission hangs there."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    yield port
    server.close()
    for writer in held:
        writer.close()


def outbox_rows(database: Path, where: str) -> int:
    with sqlite3.connect(database) as db:
        (count,) = db.execute(f"SELECT count(*) FROM outbox WHERE {where}").fetchone()
    return int(count)


def attempted_rows(database: Path) -> int:
    return outbox_rows(database, "attempt_started_at IS NOT NULL")


def own_copies(database: Path) -> list[tuple[str, int, bool]]:
    """(state, size, body kept) of the inbox rows closed as the bridge's own copies."""
    with sqlite3.connect(database) as db:
        found = db.execute(
            "SELECT state, size, raw IS NOT NULL FROM inbox WHERE last_error = 'own mail'"
        ).fetchall()
    return [(str(state), int(size), bool(kept)) for state, size, kept in found]


def open_rows(database: Path) -> int:
    return outbox_rows(database, "state IN ('pending', 'retry')")


async def test_interrupted_submission_is_sent_once_soon_after_restart(
    world: World,
    synapse_lab: Any,
    bridge_factory: Callable[..., BridgeProcess],
    silent_smtp: int,
    tmp_path: Path,
) -> None:
    database = tmp_path / "store.sqlite3"
    shared = (f"bridge.database=sqlite+aiosqlite:///{database}", "metrics.listen=")
    stuck = bridge_factory(
        extra=(*shared, f"mailbox.smtp.port={silent_smtp}", "mailbox.smtp.timeout=600")
    )
    stuck.start()
    _, token = synapse_lab.make_user("ines")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as ines:
        room = await open_portal(ines, f"Coupure {tag}")
        await ines.send_text(room, f"Interrompu {tag}")
        deadline = time.monotonic() + 30
        while attempted_rows(database) == 0:
            assert time.monotonic() < deadline, "the submission never started"
            await asyncio.sleep(0.2)
        stuck.kill()  # the outcome of that submission is unknown to the store

        # Nothing arrives in the bridge's mailbox from now on: only a reading asked for by
        # the check after the interruption can tell that the mail never left.
        key = config_module.load(stuck.config).bridge.key_file
        bridge = bridge_factory(
            extra=(*shared, f"bridge.key_file={key}", f"mailbox.self_copy_wait={SELF_COPY_WAIT}")
        )
        bridge.start()
        [mail] = await mails_matching(world, mentions(f"Interrompu {tag}"), 1, timeout=60)
        assert "reading the mailbox for its copy" in bridge.log.read_text()
        await asyncio.sleep(2)  # time for a duplicate to show up, if there were one
        again = await mails_matching(world, mentions(f"Interrompu {tag}"), 1)
        assert len(again) == 1
        assert text_of(mail).strip() == f"Interrompu {tag}"
        assert open_rows(database) == 0
        # Its copy came back: the reader closed it at once and kept only its Message-ID.
        deadline = time.monotonic() + 30
        while not own_copies(database):
            assert time.monotonic() < deadline, "the bridge's own copy was never read"
            await asyncio.sleep(0.2)
        [(state, size, body_kept)] = own_copies(database)
        assert (state, body_kept) == ("dropped", False) and size > 0
