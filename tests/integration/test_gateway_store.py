"""Gateway mode's store side (SQLite and PostgreSQL) and its TLS context reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures.gateway import (
    CHAT_DOMAIN,
    OTHER_OPERATOR_DN,
    PEER_CLIENT,
    gateway_settings,
    import_peer_whitelist,
    subject_of,
)
from sqlmodel import select

from mssbridge.errors import ConfigError
from mssbridge.flows.gateway import gateway_status
from mssbridge.flows.retention import OpenMailbox, RetentionFlow
from mssbridge.lab.pki import TestPki
from mssbridge.policy.retention import PurgeKind, RetentionPolicy
from mssbridge.security.gateway_tls import GatewayTls
from mssbridge.store.gateway_repo import SMTP_UIDVALIDITY, GatewayRepo, recipients_of
from mssbridge.store.repo import Store
from mssbridge.store.tables import Audit, Inbox, RowState

pytestmark = pytest.mark.integration

TRACE = b"Received: from peer (192.0.2.1)\r\n\tby mx; Thu, 1 Jan 1970 00:00:00 GMT\r\n"
MAIL = b"Subject: x\r\nMessage-ID: <m1@peer>\r\n\r\nbody\r\n"


async def test_smtp_mail_becomes_a_sealed_pending_row(store: Store) -> None:
    repo = GatewayRepo(store, "chat.example.fr")
    row_id, key = await repo.store_mail(
        MAIL, "<m1@peer>", trace=TRACE, sender="a@peer.fr", recipients=["@u:hs", "@v:hs"]
    )
    async with store.session() as session:
        row = await session.get(Inbox, row_id)
        audit = (await session.execute(select(Audit))).scalars().all()
    assert row is not None
    assert (row.mailbox, row.uidvalidity, row.uid) == (
        "smtp:chat.example.fr",
        SMTP_UIDVALIDITY,
        key,
    )
    assert row.state == RowState.PENDING and row.size == len(TRACE + MAIL)
    assert row.raw is not None and MAIL not in row.raw  # sealed
    assert store.raw_of(row) == TRACE + MAIL
    assert recipients_of(row) == ("@u:hs", "@v:hs")
    assert [(a.action, a.actor, a.peer, a.row_id) for a in audit] == [
        ("message_received", "a@peer.fr", "@u:hs @v:hs", row_id)
    ]


async def test_same_mail_to_same_recipients_is_stored_once(store: Store) -> None:
    repo = GatewayRepo(store, "chat.example.fr")
    first = await repo.store_mail(MAIL, None, trace=TRACE, sender="a@p", recipients=["@u:hs"])
    later_trace = TRACE.replace(b"1970", b"1971")
    again = await repo.store_mail(MAIL, None, trace=later_trace, sender="a@p", recipients=["@u:hs"])
    other = await repo.store_mail(MAIL, None, trace=TRACE, sender="a@p", recipients=["@v:hs"])
    assert again == first and other != first
    async with store.session() as session:
        rows = (await session.execute(select(Inbox))).scalars().all()
    assert len(rows) == 2


async def test_operator_dns_of_the_list(store: Store, test_pki: TestPki) -> None:
    repo = GatewayRepo(store, "chat.example.fr")
    assert await repo.operator_dns() == []
    await import_peer_whitelist(store, test_pki)
    assert sorted(await repo.operator_dns()) == sorted(
        [subject_of(test_pki.client(PEER_CLIENT)), OTHER_OPERATOR_DN]
    )


def test_recipients_of_a_mailbox_row_or_a_damaged_one() -> None:
    assert recipients_of(Inbox(recipients=None)) == ()  # type: ignore[call-arg]
    assert recipients_of(Inbox(recipients="not json")) == ()  # type: ignore[call-arg]
    assert recipients_of(Inbox(recipients=json.dumps({"a": 1}))) == ()  # type: ignore[call-arg]


def test_gateway_needs_crls(tmp_path: Path, test_pki: TestPki) -> None:
    settings = gateway_settings(tmp_path, test_pki, "tls.crl_files=[]")
    with pytest.raises(ConfigError, match=r"tls\.crl_files"):
        GatewayTls(settings)


def test_reload_swaps_the_context_only_when_the_files_load(
    tmp_path: Path, test_pki: TestPki
) -> None:
    chain = tmp_path / "gateway.pem"
    key = tmp_path / "gateway.key"
    shutil.copy(test_pki.server.chain, chain)
    shutil.copy(test_pki.server.key, key)
    settings = gateway_settings(
        tmp_path, test_pki, f"gateway.cert_file={chain}", f"gateway.key_file={key}"
    )
    tls = GatewayTls(settings)
    first = tls.context
    assert tls.reload() and tls.context is not first
    second = tls.context
    chain.write_text("not a certificate\n")
    assert not tls.reload()
    assert tls.context is second


class _RecordingMailbox:
    """Stands for the IMAP session of the retention purge; records what it is asked to expunge."""

    def __init__(self) -> None:
        self.deleted: list[list[int]] = []

    async def delete(self, uids: list[int]) -> None:
        self.deleted.append(list(uids))

    async def close(self) -> None:
        return None


async def test_retention_purges_gateway_rows_without_touching_the_mailbox(store: Store) -> None:
    repo = GatewayRepo(store, "chat.example.fr")
    row_id, _ = await repo.store_mail(MAIL, None, trace=TRACE, sender="a@p", recipients=["@u:hs"])
    async with store.session() as session, session.begin():
        row = await session.get(Inbox, row_id)
        assert row is not None
        row.state, row.updated_at = RowState.DONE, 0.0
    imap = _RecordingMailbox()

    async def open_mailbox() -> OpenMailbox:
        return OpenMailbox(imap, "bal@chu.example.fr/INBOX", 1)  # type: ignore[arg-type]

    flow = RetentionFlow(store, RetentionPolicy(), 100, open_mailbox=open_mailbox, pause=0)
    counts = await flow.run_once()
    assert counts[PurgeKind.INBOX] == 1
    assert imap.deleted == []  # an SMTP row names no message of the mailbox
    async with store.session() as session:
        assert await session.get(Inbox, row_id) is None


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("server", "listed, "),
        ("other", "with other certificate DNs than CN=localhost"),
        (None, "is not in the whitelist in force"),
    ],
)
async def test_check_says_whether_peers_will_accept_the_gateway(
    store: Store, test_pki: TestPki, tmp_path: Path, listed: str | None, expected: str
) -> None:
    settings = gateway_settings(tmp_path, test_pki)
    dn = subject_of(test_pki.server) if listed == "server" else OTHER_OPERATOR_DN
    await import_peer_whitelist(store, test_pki, [(CHAT_DOMAIN, dn)] if listed else [])
    if listed == "server":
        assert expected in await gateway_status(settings, store)
    else:
        with pytest.raises(ValueError, match=expected):
            await gateway_status(settings, store)
