"""Outbound flow with the real store: an unlisted recipient is refused before any network use."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Sequence
from typing import Any, cast

import pytest

from mssbridge.config import RetrySection, Settings
from mssbridge.directory.whitelist import SignerInfo, Whitelist, WhitelistEntry
from mssbridge.errors import PolicyViolation, Rejected
from mssbridge.flows.commands import CommandFlow
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.outbound import OutboundFlow
from mssbridge.flows.worker import QueueWorker
from mssbridge.mail.smtp_out import Submission
from mssbridge.store.repo import Store
from mssbridge.store.tables import Outbox, RowState
from mssbridge.store.whitelist_repo import WhitelistRepo

pytestmark = pytest.mark.integration

ROOM = "!portal:hospital.test"
ALICE = "@alice:hospital.test"
LISTED = "dr.house@correspondant.mssante.fr"
UNLISTED = "someone@not-listed.example.fr"
WHEN = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


class RecordingRooms:
    """Stands for the homeserver: records every call, answers blandly."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **_kwargs: Any) -> Any:
            self.calls.append((name, args))
            answers: dict[str, Any] = {"download": b"file", "recent_events": []}
            return answers.get(name, "Dr Alice")

        return call

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class RecordingSubmit:
    def __init__(self) -> None:
        self.calls: list[Sequence[str]] = []

    async def __call__(self, sender: str, recipients: Sequence[str], data: bytes) -> Submission:
        self.calls.append(recipients)
        return Submission(reply="2.0.0 Ok", accepted=tuple(recipients))


def _settings(**whitelist: Any) -> Settings:
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
            "whitelist": whitelist,
        }
    )


def _whitelist(*domains: str) -> Whitelist:
    entries = tuple(WhitelistEntry(d, "CN=mss.test,C=FR", "", None) for d in domains)
    signer = SignerInfo("CN=signer", "CN=ca", "01", WHEN, WHEN + dt.timedelta(days=365), "00")
    return Whitelist(WHEN, signer, False, "test", (), entries, len(entries), "1" * 64)


class Harness:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.rooms = RecordingRooms()
        self.submit = RecordingSubmit()
        self.ctx = BridgeContext(
            settings,
            store,
            cast(Any, self.rooms),
            self.submit,
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        )
        self.rejections: list[Rejected] = []

    async def queue_file_message(self, correspondent: str) -> Outbox:
        await self.store.create_portal(subject="Avis", correspondents=[correspondent], room_id=ROOM)
        event = {
            "event_id": "$file",
            "room_id": ROOM,
            "sender": ALICE,
            "type": "m.room.message",
            "origin_server_ts": 1_790_000_000_000,
            "content": {
                "msgtype": "m.file",
                "body": "ECG.pdf",
                "url": "mxc://hospital.test/ecg",
                "info": {"size": 4, "mimetype": "application/pdf"},
            },
        }
        await self.store.store_transaction("t1", [event])
        [row] = await self.store.rows(Outbox, ["pending"])
        return row

    async def process(self, row: Outbox) -> None:
        async def on_rejected(_row: Outbox, exc: Rejected) -> None:
            self.rejections.append(exc)

        worker = QueueWorker(
            "outbox",
            self.store,
            Outbox,
            self.store.claim_outbox,
            OutboundFlow(self.ctx).handle,
            on_rejected,
            RetrySection(),
        )
        await worker.process(row)


async def test_unlisted_recipient_is_refused_before_any_network_use(store: Store) -> None:
    await WhitelistRepo(store).replace(_whitelist("correspondant.mssante.fr"))
    harness = Harness(store, _settings())
    row = await harness.queue_file_message(UNLISTED)
    with pytest.raises(PolicyViolation) as caught:
        await OutboundFlow(harness.ctx).handle(row)
    assert caught.value.code == "5.7.1"
    assert harness.submit.calls == []
    assert harness.rooms.calls == []  # not even the file was downloaded
    await harness.process(row)
    [refusal] = harness.rejections
    assert UNLISTED in refusal.user_message
    assert "domaine absent de la liste blanche MSSanté" in refusal.user_message
    stored = await store.get(Outbox, row.id or 0)
    assert stored is not None and stored.state == RowState.REJECTED
    assert stored.attempt_started_at is None
    assert harness.submit.calls == []


async def test_listed_recipient_goes_through(store: Store) -> None:
    await WhitelistRepo(store).replace(_whitelist("correspondant.mssante.fr"))
    harness = Harness(store, _settings())
    row = await harness.queue_file_message(LISTED)
    await OutboundFlow(harness.ctx).handle(row)
    assert len(harness.submit.calls) == 1 and LISTED in harness.submit.calls[0]
    assert "download" in harness.rooms.names()


async def test_no_list_imported_refuses_and_names_the_command(store: Store) -> None:
    harness = Harness(store, _settings())
    row = await harness.queue_file_message(LISTED)
    await harness.process(row)
    [refusal] = harness.rejections
    assert "mssbridge whitelist import" in refusal.user_message
    assert harness.submit.calls == [] and harness.rooms.calls == []


async def test_enforcement_off_lets_any_domain_through(store: Store) -> None:
    harness = Harness(store, _settings(enforce=False))
    row = await harness.queue_file_message(UNLISTED)
    await OutboundFlow(harness.ctx).handle(row)
    assert len(harness.submit.calls) == 1


async def test_start_command_refuses_an_unlisted_address(store: Store) -> None:
    await WhitelistRepo(store).replace(_whitelist("correspondant.mssante.fr"))
    harness = Harness(store, _settings())
    event = {
        "event_id": "$cmd",
        "room_id": "!dm:hospital.test",
        "sender": ALICE,
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": f"!mss start {UNLISTED} Avis"},
    }
    await store.store_transaction("t2", [event])
    [row] = await store.rows(Outbox, ["pending"])
    await CommandFlow(harness.ctx).run(row, event, None)
    assert "create_room" not in harness.rooms.names()
    notices = [args[2]["body"] for name, args in harness.rooms.calls if name == "send"]
    assert len(notices) == 1 and UNLISTED in notices[0] and "liste blanche" in notices[0]
