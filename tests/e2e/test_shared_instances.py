"""Two daemons on one PostgreSQL database share the work; one is killed, the other finishes it.

The homeserver pushes appservice transactions to one registered URL, so the first daemon
receives the Matrix events while the second only runs workers; both read the mailbox over
IMAP and both claim rows of both queues from the shared database.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import World
from fixtures.database import create_postgres_database, drop_postgres_database
from test_relay_e2e import (
    body_contains,
    ghost_events,
    mails_matching,
    mentions,
    open_portal,
    text_of,
    wait_ghost_events,
)

from mssbridge.lab.bridge_process import BridgeProcess
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.synapse import free_port
from mssbridge.lab.world import BRIDGE_MAILBOX, write_bridge_config

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOMS = 4
OUT = 80  # chat messages, round robin over the rooms
IN = 60  # mails, replies in the rooms' threads
LEASE_SECONDS = 5  # short, so that the killed daemon's rows come back within the test
OPEN_STATES = ("pending", "retry")


@pytest.fixture
def shared_database() -> Iterator[str]:
    name, url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(name)


@pytest.fixture
def two_bridges(
    world: World, synapse_lab: Any, tmp_path: Path, shared_database: str
) -> Iterator[tuple[BridgeProcess, BridgeProcess]]:
    """Same mailbox, tokens, database and at-rest key; the first owns the appservice port."""
    common = (
        f"bridge.database={shared_database}",
        f"bridge.lease_seconds={LEASE_SECONDS}",
        "mailbox.self_copy_wait=20",  # the default: the copy may be slow to land under load
        "metrics.listen=",
    )
    bridges = []
    for name, port, extra in (
        ("first", synapse_lab.appservice_port, common),
        ("second", free_port(), (*common, f"bridge.key_file={tmp_path / 'first' / 'at-rest.key'}")),
    ):
        config = write_bridge_config(
            tmp_path / name / "config.toml",
            world.pki,
            world.mail,
            homeserver_url=synapse_lab.url,
            as_token=synapse_lab.as_token,
            hs_token=synapse_lab.hs_token,
            appservice_port=port,
            extra=(*extra, f"matrix.listen_port={port}"),
        )
        bridges.append(BridgeProcess(config, port, config.parent / "bridge.log"))
    try:
        yield bridges[0], bridges[1]
    finally:
        for bridge in bridges:
            bridge.stop()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _leased_by(db: asyncpg.Connection, owner: str) -> int:
    total = 0
    for table in ("outbox", "inbox"):
        total += await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE lease_owner = $1 AND state = ANY($2::text[]) "
            "AND lease_until >= extract(epoch from now())",
            owner,
            list(OPEN_STATES),
        )
    return total


async def _open_rows(db: asyncpg.Connection) -> int:
    total = 0
    for table in ("outbox", "inbox"):
        total += await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE state = ANY($1::text[])", list(OPEN_STATES)
        )
    return total


async def test_two_instances_relay_everything_once_and_survive_a_kill(
    world: World,
    synapse_lab: Any,
    shared_database: str,
    two_bridges: tuple[BridgeProcess, BridgeProcess],
) -> None:
    first, second = two_bridges
    first.start()
    second.start()
    assert second.process is not None
    second_owner = f"{socket.gethostname()}:{second.process.pid}"
    _, token = synapse_lab.make_user("erin")
    tag = secrets.token_hex(4)
    db = await asyncpg.connect(_dsn(shared_database))
    try:
        async with LabMatrixUser(synapse_lab.url, token) as erin:
            rooms = list(
                await asyncio.gather(
                    *(open_portal(erin, f"Partage {tag} {n}") for n in range(ROOMS))
                )
            )
            for n, room in enumerate(rooms):
                await erin.send_text(room, f"Root {tag} {n}")
            roots = await mails_matching(world, mentions(f"Root {tag} "), ROOMS)
            parents = {int(text_of(m).split()[-1]): str(m["Message-ID"]) for m in roots}

            async def chat() -> None:
                for i in range(OUT):
                    await erin.send_text(rooms[i % ROOMS], f"Out {tag} #{i}")

            def mail() -> None:
                for i in range(IN):
                    world.correspondent.send(
                        BRIDGE_MAILBOX,
                        f"Re: Partage {tag}",
                        f"In {tag} #{i}",
                        in_reply_to=parents[i % ROOMS],
                    )

            async def kill_second_while_it_holds_rows() -> int:
                """SIGKILL the second daemon mid-way: it has relayed a few messages and
                holds leased rows."""
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    log = second.log.read_text()
                    done = log.count("sent as mail") + log.count("posted in portal")
                    if done >= 4 and await _leased_by(db, second_owner):
                        second.kill()
                        return await _leased_by(db, second_owner)
                    await asyncio.sleep(0.01)
                raise AssertionError(f"the second daemon never took work:\n{second.tail()}")

            loading = asyncio.gather(chat(), asyncio.to_thread(mail))
            held_at_kill = await kill_second_while_it_holds_rows()
            await loading
            # It died holding rows: they come back to the first daemon when the leases end.
            assert held_at_kill >= 1

            out = await mails_matching(world, mentions(f"Out {tag} #"), OUT, timeout=150)
            for room in rooms:
                await wait_ghost_events(erin, room, body_contains(f"In {tag} #"), IN // ROOMS)

            deadline = time.monotonic() + 30
            while await _open_rows(db) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert await _open_rows(db) == 0, "rows left in the queues"
            await asyncio.sleep(2)  # time for a duplicate to show up, if there were one

            out = await mails_matching(world, mentions(f"Out {tag} #"), OUT)
            assert sorted(text_of(m).strip() for m in out) == sorted(
                f"Out {tag} #{i}" for i in range(OUT)
            )
            assert len({str(m["Message-ID"]) for m in out}) == OUT
            for n, room in enumerate(rooms):
                seen = await ghost_events(erin, room, body_contains(f"In {tag} #"))
                numbers = sorted(int(str(e["content"]["body"]).split("#", 1)[1]) for e in seen)
                assert numbers == list(range(n, IN, ROOMS))
    finally:
        await db.close()

    # Both daemons relayed part of it: the work was shared, not merely failed over.
    for bridge in (first, second):
        log = bridge.log.read_text()
        assert log.count("sent as mail") + log.count("posted in portal") >= 1
    assert first.stop() == 0
