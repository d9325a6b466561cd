"""Receipts flow with the real store: reports matched to sent mail, MDNs queued and sent once."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Sequence
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any, cast

import pytest

from mssbridge.config import Settings
from mssbridge.convert.receipts import parse_report
from mssbridge.directory.whitelist import SignerInfo, Whitelist, WhitelistEntry
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.inbound import InboundFlow
from mssbridge.flows.outbound import OutboundFlow
from mssbridge.flows.receipts import MDN_TASK, UNKNOWN_REPORT, ReceiptFlow, mdn_message_id
from mssbridge.mail.smtp_out import Submission
from mssbridge.store.repo import Store
from mssbridge.store.tables import Inbox, Outbox, RowState
from mssbridge.store.whitelist_repo import WhitelistRepo

pytestmark = pytest.mark.integration

OWN = "messagerie@chu-test.mssante.fr"
HOUSE = "dr.house@correspondant.mssante.fr"
CUDDY = "dr.cuddy@correspondant.mssante.fr"
ROOM = "!portal:hospital.test"
SENT_ID = "<sent1@chu-test.mssante.fr>"
SENT_EVENT = "$sent"
BOT = "@mss_bot:hospital.test"
GHOST_HOUSE = "@mss_dr.house=correspondant.mssante.fr:hospital.test"
WHEN = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


class RecordingRooms:
    """Stands for the homeserver: records every call, answers with event ids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **_kwargs: Any) -> Any:
            self.calls.append((name, args))
            if name == "send":
                return f"$posted-{args[3]}"
            return {"create_room": "!new:hospital.test"}.get(name, "Dr Alice")

        return call

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


class RecordingSubmit:
    def __init__(self) -> None:
        self.calls: list[tuple[Sequence[str], bytes]] = []

    async def __call__(self, sender: str, recipients: Sequence[str], data: bytes) -> Submission:
        self.calls.append((list(recipients), data))
        return Submission(reply="2.0.0 Ok", accepted=tuple(recipients))


def settings(**receipts: Any) -> Settings:
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
                "address": OWN,
                "display_name": "Messagerie CHU",
                "smtp": {"host": "127.0.0.1"},
                "imap": {"host": "127.0.0.1"},
            },
            "receipts": receipts,
        }
    )


class Harness:
    def __init__(self, store: Store, config: Settings) -> None:
        self.store = store
        self.rooms = RecordingRooms()
        self.submit = RecordingSubmit()
        self.quiet = RecordingSubmit()
        self.ctx = BridgeContext(
            config,
            store,
            cast(Any, self.rooms),
            self.submit,
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
            submit_quiet=self.quiet,
        )
        self.uid = 0

    async def sent_mail(self) -> None:
        """A portal with two correspondents and one mail the bridge sent in it."""
        portal = await self.store.create_portal(
            subject="Avis", correspondents=[HOUSE, CUDDY], room_id=ROOM
        )
        await self.store.record_relay(portal, [(SENT_EVENT, SENT_ID)], "out")

    async def inbox_row(self, raw: bytes) -> Inbox:
        self.uid += 1
        row_id = await self.store.store_mail("box", 1, self.uid, raw, None)
        assert row_id is not None
        row = await self.store.get(Inbox, row_id)
        assert row is not None
        return row


def dsn(lines: Sequence[tuple[str, str, str]], original: str = SENT_ID) -> bytes:
    blocks = "".join(
        f"\r\nFinal-Recipient: rfc822; {who}\r\nAction: {action}\r\nStatus: {status}\r\n"
        for who, action, status in lines
    )
    return (
        "From: MAILER-DAEMON@smtp.chu-test.mssante.fr\r\nTo: messagerie@chu-test.mssante.fr\r\n"
        "Subject: report\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; smtp.chu-test.mssante.fr\r\nOriginal-Envelope-Id: {original}\r\n"
        f"{blocks}\r\n--b--\r\n"
    ).encode()


async def test_delivery_report_lines(store: Store) -> None:
    harness = Harness(store, settings(notify_delayed=False))
    await harness.sent_mail()
    raw = dsn(
        [
            (OWN, "relayed", "2.0.0"),  # the bridge's own copy
            (HOUSE, "relayed", "2.0.0"),
            ("stranger@correspondant.mssante.fr", "delivered", "2.0.0"),
            (CUDDY, "failed", "5.1.1"),
            (CUDDY, "delayed", "4.4.1"),
        ]
    )
    row = await harness.inbox_row(raw)
    report = parse_report(raw)
    assert report is not None
    await ReceiptFlow(harness.ctx).on_report(row, report)
    assert harness.rooms.named("mark_read") == [(GHOST_HOUSE, ROOM, SENT_EVENT)]
    [(sender, room, content, txn)] = harness.rooms.named("send")
    assert (sender, room, txn) == (BOT, ROOM, f"mssb-report-{row.id}-3")
    assert content["msgtype"] == "m.notice"
    assert CUDDY in content["body"] and "5.1.1" in content["body"]
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": SENT_EVENT}}
    closed = await store.get(Inbox, row.id or 0)
    assert closed is not None and closed.state == RowState.DONE

    # A second pass (a retry after a crash) repeats the same, idempotent, calls.
    await ReceiptFlow(harness.ctx).on_report(row, report)
    assert [args[3] for args in harness.rooms.named("send")] == [txn, txn]


async def test_delayed_delivery_notice_when_asked(store: Store) -> None:
    harness = Harness(store, settings())
    await harness.sent_mail()
    raw = dsn([(HOUSE, "delayed", "4.4.1")])
    row = await harness.inbox_row(raw)
    report = parse_report(raw)
    assert report is not None
    await ReceiptFlow(harness.ctx).on_report(row, report)
    [(_, _, content, _)] = harness.rooms.named("send")
    assert content["body"].startswith("⏳ Remise retardée pour " + HOUSE)
    assert harness.rooms.named("mark_read") == []


async def test_report_about_a_mail_the_bridge_did_not_send(store: Store) -> None:
    harness = Harness(store, settings())
    await harness.sent_mail()
    raw = dsn([(HOUSE, "delivered", "2.0.0")], original="<someone-else@correspondant.mssante.fr>")
    row = await harness.inbox_row(raw)
    # Through the inbound flow: the report is recognised before any conversation look-up.
    await InboundFlow(harness.ctx).handle(row)
    closed = await store.get(Inbox, row.id or 0)
    assert closed is not None
    assert (closed.state, closed.last_error) == (RowState.DROPPED, UNKNOWN_REPORT)
    assert harness.rooms.calls == []  # no admin room configured: nothing said anywhere


def asking_mail(notify_to: str = HOUSE, extra: str = "") -> bytes:
    return (
        f"Return-Path: <{HOUSE}>\r\nFrom: Dr House <{HOUSE}>\r\nTo: {OWN}\r\n"
        f"Subject: Question\r\nMessage-ID: <q1@correspondant.mssante.fr>\r\n"
        f"In-Reply-To: {SENT_ID}\r\nDisposition-Notification-To: {notify_to}\r\n{extra}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour\r\n"
    ).encode()


async def _whitelist(store: Store, *domains: str) -> None:
    entries = tuple(WhitelistEntry(d, "CN=mss.test,C=FR", "", None) for d in domains)
    signer = SignerInfo("CN=signer", "CN=ca", "01", WHEN, WHEN + dt.timedelta(days=365), "00")
    await WhitelistRepo(store).replace(
        Whitelist(WHEN, signer, False, "test", (), entries, len(entries), "1" * 64)
    )


async def test_read_request_is_queued_with_the_relay_and_sent_once(store: Store) -> None:
    await _whitelist(store, "correspondant.mssante.fr")
    harness = Harness(store, settings())
    await harness.sent_mail()
    row = await harness.inbox_row(asking_mail())
    await InboundFlow(harness.ctx).handle(row)
    assert harness.rooms.named("send")  # posted in the room first
    [task] = await store.rows(Outbox, ["pending"])
    assert (task.event_type, task.event_id, task.room_id) == (MDN_TASK, f"mssb-mdn-{row.id}", ROOM)

    outbound = OutboundFlow(harness.ctx)
    await outbound.handle(task)
    assert harness.submit.calls == []  # the MDN asks for no delivery report
    [(envelope, data)] = harness.quiet.calls
    assert envelope == [HOUSE, OWN]  # with the bridge's own copy, its proof after a crash
    mdn = message_from_bytes(data, policy=default_policy)
    assert mdn["Message-ID"] == mdn_message_id(row, "chu-test.mssante.fr")
    assert mdn.get_param("report-type") == "disposition-notification"
    done = await store.get(Outbox, task.id or 0)
    assert done is not None and done.state == RowState.DONE

    # The process died after the submission, before recording it: the copy in the mailbox
    # tells the retry that the MDN already left.
    done.state, done.attempt_started_at = RowState.RETRY, 1.0
    await store.store_mail("box", 1, 99, data, str(mdn["Message-ID"]))
    await outbound.handle(done)
    assert len(harness.quiet.calls) == 1


@pytest.mark.parametrize(
    ("config", "mail"),
    [
        ({"answer_read_requests": False}, asking_mail()),
        ({}, asking_mail(extra="Auto-Submitted: auto-replied\r\n")),
        ({}, asking_mail(notify_to="secretariat@correspondant.mssante.fr")),
    ],
)
async def test_read_request_not_answered(store: Store, config: dict[str, Any], mail: bytes) -> None:
    await _whitelist(store, "correspondant.mssante.fr")
    harness = Harness(store, settings(**config))
    await harness.sent_mail()
    row = await harness.inbox_row(mail)
    await InboundFlow(harness.ctx).handle(row)
    assert await store.rows(Outbox, ["pending"]) == []


async def test_read_notification_outside_the_whitelist_is_refused_quietly(store: Store) -> None:
    await _whitelist(store, "other.mssante.fr")
    harness = Harness(store, settings())
    await harness.sent_mail()
    row = await harness.inbox_row(asking_mail())
    await InboundFlow(harness.ctx).handle(row)
    [task] = await store.rows(Outbox, ["pending"])
    posted = len(harness.rooms.calls)
    await OutboundFlow(harness.ctx).handle(task)
    assert harness.quiet.calls == [] and harness.submit.calls == []
    refused = await store.get(Outbox, task.id or 0)
    assert refused is not None and refused.state == RowState.REJECTED
    assert len(harness.rooms.calls) == posted  # nothing said in the room


def read_notification(sender: str, final_recipient: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {OWN}\r\nSubject: Lu\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nLu.\r\n"
        "--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        f"Final-Recipient: rfc822; {final_recipient}\r\nOriginal-Message-ID: {SENT_ID}\r\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\r\n--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("sender", "receipts"),
    [
        (HOUSE, [(GHOST_HOUSE, ROOM, SENT_EVENT)]),
        (CUDDY, []),  # Cuddy cannot make House's ghost read anything
    ],
)
async def test_read_notification_moves_only_its_writers_receipt(
    store: Store, sender: str, receipts: list[tuple[str, str, str]]
) -> None:
    harness = Harness(store, settings())
    await harness.sent_mail()
    row = await harness.inbox_row(read_notification(sender, HOUSE))
    await InboundFlow(harness.ctx).handle(row)
    assert harness.rooms.named("mark_read") == receipts
    assert harness.rooms.named("send") == []  # never posted as a message
    closed = await store.get(Inbox, row.id or 0)
    assert closed is not None and closed.state == RowState.DONE
