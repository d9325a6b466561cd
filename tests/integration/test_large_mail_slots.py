"""Outbound large files: downloaded only in their mail's turn, refused without waiting for one."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any, cast

import pytest

from mssbridge.config import Settings
from mssbridge.errors import TooLarge
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.outbound import LARGE_MAIL_BYTES, LARGE_MAIL_SLOTS, OutboundFlow
from mssbridge.mail.smtp_out import Submission
from mssbridge.store.repo import Store
from mssbridge.store.tables import Outbox

pytestmark = pytest.mark.integration

ALICE = "@alice:hospital.test"
CORRESPONDENT = "dr.house@correspondant.mssante.fr"
FILE_BYTES = LARGE_MAIL_BYTES + 200_000


class Homeserver:
    """Stands for the homeserver; counts the files downloaded and not yet sent as mail."""

    def __init__(self) -> None:
        self.held = 0
        self.most_held = 0
        self.downloads = 0
        self.release = asyncio.Event()

    async def download(self, _mxc_url: str) -> bytes:
        self.downloads += 1
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        await self.release.wait()
        return b"%" * FILE_BYTES

    def __getattr__(self, name: str) -> Any:
        async def call(*_args: Any, **_kwargs: Any) -> Any:
            return [] if name == "recent_events" else "Dr Alice"

        return call


class Submit:
    def __init__(self, homeserver: Homeserver) -> None:
        self.homeserver = homeserver
        self.sent = 0

    async def __call__(self, sender: str, recipients: Sequence[str], data: bytes) -> Submission:
        self.sent += 1
        self.homeserver.held -= 1  # the mail is gone: its file is no longer needed
        return Submission(reply="2.0.0 Ok", accepted=tuple(recipients))


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "matrix": {
                "homeserver_url": "http://127.0.0.1:1",
                "server_name": "hospital.test",
                "as_token": "a",
                "hs_token": "h",
            },
            "tls": {"ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem"},
            "mailbox": {
                "address": "messagerie@chu-test.mssante.fr",
                "smtp": {"host": "127.0.0.1"},
                "imap": {"host": "127.0.0.1"},
            },
            "whitelist": {"enforce": False},
        }
    )


async def _file_rows(store: Store, sizes: Sequence[int]) -> list[Outbox]:
    """One file message per room (so that no room waits for another), declaring ``sizes``."""
    events = []
    for n, size in enumerate(sizes):
        room = f"!room{n}:hospital.test"
        await store.create_portal(subject="Avis", correspondents=[CORRESPONDENT], room_id=room)
        events.append(
            {
                "event_id": f"$file{n}",
                "room_id": room,
                "sender": ALICE,
                "type": "m.room.message",
                "origin_server_ts": 1_790_000_000_000 + n,
                "content": {
                    "msgtype": "m.file",
                    "body": f"scanner-{n}.bin",
                    "url": f"mxc://hospital.test/file{n}",
                    "info": {"size": size, "mimetype": "application/octet-stream"},
                },
            }
        )
    await store.store_transaction("t1", events)
    return sorted(await store.rows(Outbox, ["pending"]), key=lambda r: r.id)


def _flow(store: Store) -> tuple[OutboundFlow, Homeserver, Submit]:
    homeserver = Homeserver()
    submit = Submit(homeserver)
    ctx = BridgeContext(
        _settings(),
        store,
        cast(Any, homeserver),
        submit,
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
    )
    return OutboundFlow(ctx), homeserver, submit


async def test_large_files_are_downloaded_only_in_their_turn(store: Store) -> None:
    flow, homeserver, submit = _flow(store)
    rows = await _file_rows(store, [FILE_BYTES] * (LARGE_MAIL_SLOTS + 3))
    running = asyncio.gather(*(flow.handle(row) for row in rows))
    await asyncio.sleep(0.2)
    # The rows waiting for a turn have not fetched their file.
    assert homeserver.downloads == LARGE_MAIL_SLOTS
    homeserver.release.set()
    await asyncio.wait_for(running, 30)
    assert submit.sent == len(rows)
    assert homeserver.most_held == LARGE_MAIL_SLOTS


async def test_small_files_do_not_wait_for_large_ones(store: Store) -> None:
    flow, homeserver, _submit = _flow(store)
    rows = await _file_rows(store, [FILE_BYTES] * LARGE_MAIL_SLOTS + [2_000])
    running = asyncio.gather(*(flow.handle(row) for row in rows))
    await asyncio.sleep(0.2)
    assert homeserver.downloads == len(rows)  # the small one is fetched while both turns are taken
    homeserver.release.set()
    await asyncio.wait_for(running, 30)


async def test_declared_oversize_is_refused_without_waiting_for_a_turn(store: Store) -> None:
    flow, homeserver, submit = _flow(store)
    limit = _settings().limits.max_message_size
    rows = await _file_rows(store, [FILE_BYTES] * LARGE_MAIL_SLOTS + [limit + 1])
    running = asyncio.gather(*(flow.handle(row) for row in rows[:-1]))
    await asyncio.sleep(0.2)
    with pytest.raises(TooLarge):
        await asyncio.wait_for(flow.handle(rows[-1]), 2)
    assert homeserver.downloads == LARGE_MAIL_SLOTS
    homeserver.release.set()
    await asyncio.wait_for(running, 30)
    assert submit.sent == LARGE_MAIL_SLOTS
