"""When the store cannot write (SQLite locked by another process, disk full), the daemon
refuses new work so that its peers keep it: appservice transactions answer 500 (the
homeserver sends them again), a mail that was not stored is not flagged \\Seen; once the
store writes again, everything is relayed, exactly once, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import secrets
import sqlite3
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BridgeProcess, World
from test_relay_e2e import (
    body_contains,
    ghost_events,
    mails_matching,
    mentions,
    open_portal,
    text_of,
    wait_ghost_events,
)

from mssbridge.lab.drills import DRILL_SETTINGS
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def put_transaction(port: int, hs_token: str, txn_id: str, events: list[dict[str, Any]]) -> int:
    """PUT an appservice transaction as the homeserver would; return the HTTP status."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_matrix/app/v1/transactions/{txn_id}",
        data=json.dumps({"events": events}).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {hs_token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def chat_event(room: str, sender: str, body: str, size: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"$drill-{secrets.token_hex(8)}",
        "room_id": room,
        "sender": sender,
        "type": "m.room.message",
        "origin_server_ts": int(time.time() * 1000),
        "content": {"msgtype": "m.text", "body": body + " " * size},
    }


def bridge_mailbox_flags(world: World, tag: str, text: str) -> list[bool]:
    """For each mail of the bridge's mailbox whose subject has ``tag`` and whose body has
    ``text``: is it \\Seen?"""
    context = ssl.create_default_context(cafile=str(world.pki.ca_bundle))
    cert = world.pki.client(BRIDGE_MAILBOX)  # the server takes the user from the certificate
    context.load_cert_chain(str(cert.chain), str(cert.key))
    with imaplib.IMAP4_SSL(world.mail.host, world.mail.imaps_port, ssl_context=context) as imap:
        imap.login(BRIDGE_MAILBOX, world.mail.password)
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("SEARCH", "SUBJECT", tag)
        seen = []
        for uid in data[0].split() if data and data[0] else []:
            _, parts = imap.uid("FETCH", uid, "(FLAGS BODY.PEEK[TEXT])")
            head, body = next((p[0], p[1]) for p in parts if isinstance(p, tuple))
            if text.encode() in body:
                seen.append(b"\\Seen" in head)
        return seen


async def wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.3)


PINGED = "homeserver pinged: it resends what it queued"


async def _refused_then_relayed(
    world: World,
    synapse_lab: Any,
    bridge: BridgeProcess,
    user_name: str,
    hold: Callable[[], contextlib.AbstractContextManager[None]],
    big: int = 0,
) -> None:
    """Open a portal, make the store refuse (``hold``), check the refusals, release, count."""
    bridge.start()
    user_id, token = synapse_lab.make_user(user_name)
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as user:
        room = await open_portal(user, f"Refus {tag}")
        await user.send_text(room, f"Root {tag}")
        [root] = await mails_matching(world, mentions(f"Root {tag}"), 1)
        direct = [chat_event(room, user_id, f"Direct {tag}", big)]
        pinged_before = bridge.log.read_text().count(PINGED)
        with hold():
            # Straight to the endpoint: the answer is a 5xx, so the homeserver keeps it.
            status = await asyncio.to_thread(
                put_transaction, bridge.port, synapse_lab.hs_token, f"drill-{tag}", direct
            )
            assert status == 500
            for i in range(3):
                await user.send_text(room, f"Held {tag} #{i}")
            await asyncio.to_thread(
                world.correspondent.send,
                BRIDGE_MAILBOX,
                f"Re: Refus {tag}",
                f"Mail {tag}",
                in_reply_to=str(root["Message-ID"]),
            )
            await wait_for(lambda: "store unavailable" in bridge.log.read_text(), 60)
            await wait_for(lambda: bool(bridge_mailbox_flags(world, tag, f"Mail {tag}")))
            await asyncio.sleep(12)  # a store attempt of the IMAP reader fails meanwhile
            assert bridge_mailbox_flags(world, tag, f"Mail {tag}") == [False]
            assert not await ghost_events(user, room, body_contains(f"Mail {tag}"))
        # The homeserver sends its transaction again: the same id is stored this time.
        status = await asyncio.to_thread(
            put_transaction, bridge.port, synapse_lab.hs_token, f"drill-{tag}", direct
        )
        assert status == 200
        await mails_matching(world, mentions(f"Held {tag} #"), 3, timeout=120)
        # The refused transactions made the bridge ask the homeserver to resend, once the
        # store answered again, rather than leave it to its backoff.
        assert bridge.log.read_text().count(PINGED) > pinged_before
        await mails_matching(world, mentions(f"Direct {tag}"), 1, timeout=60)
        await wait_ghost_events(user, room, body_contains(f"Mail {tag}"), 1, timeout=120)
        await asyncio.sleep(3)  # time for a duplicate to show up, if there were one
        held = await mails_matching(world, mentions(f"Held {tag} #"), 3)
        assert sorted(text_of(m).strip() for m in held) == [f"Held {tag} #{i}" for i in range(3)]
        assert len(await mails_matching(world, mentions(f"Direct {tag}"), 1)) == 1
        assert len(await ghost_events(user, room, body_contains(f"Mail {tag}"))) == 1
        assert bridge_mailbox_flags(world, tag, f"Mail {tag}") == [True]
    assert bridge.log.read_text().count("--- start") == 1  # recovered without a restart
    assert bridge.stop() == 0


async def test_locked_database_refuses_then_recovers(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess], tmp_path: Path
) -> None:
    path = tmp_path / "store.sqlite3"
    bridge = bridge_factory(extra=(f"bridge.database=sqlite+aiosqlite:///{path}", *DRILL_SETTINGS))

    @contextlib.contextmanager
    def exclusive_lock() -> Iterator[None]:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()

    await _refused_then_relayed(world, synapse_lab, bridge, "locked_db", exclusive_lock)


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs mounted for this test (root in the lab), unmounted afterwards."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_refuses_then_recovers(
    world: World,
    synapse_lab: Any,
    bridge_factory: Callable[..., BridgeProcess],
    tiny_filesystem: Path,
) -> None:
    path = tiny_filesystem / "store.sqlite3"
    bridge = bridge_factory(extra=(f"bridge.database=sqlite+aiosqlite:///{path}", *DRILL_SETTINGS))
    filler = tiny_filesystem / "filler"

    @contextlib.contextmanager
    def full_disk() -> Iterator[None]:
        with filler.open("wb") as handle, contextlib.suppress(OSError):
            while True:  # until ENOSPC
                handle.write(b"\0" * 65536)
                handle.flush()
        try:
            yield
        finally:
            filler.unlink()

    # The directly posted transaction is larger than whatever room the WAL file still has.
    await _refused_then_relayed(world, synapse_lab, bridge, "full_disk", full_disk, big=60_000)
