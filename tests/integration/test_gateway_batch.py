"""Gateway group commit: concurrent mails share a transaction, and each 250 waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.database import open_test_store, sqlite_url
from fixtures.gateway import (
    CHAT_DOMAIN,
    PEER_CLIENT,
    PEER_DOMAIN,
    RawSmtp,
    client_context,
    gateway_settings,
    import_peer_whitelist,
    mail,
)
from sqlmodel import select

from mssbridge.errors import ConfigError
from mssbridge.flows.gateway import GatewayService
from mssbridge.flows.gateway_intake import GatewayIntake
from mssbridge.lab.pki import TestPki
from mssbridge.mail import smtp_replies as replies
from mssbridge.security.atrest import SealError
from mssbridge.store.batch_writer import BatchWriter
from mssbridge.store.gateway_repo import AcceptedMail, GatewayRepo
from mssbridge.store.repo import Store
from mssbridge.store.tables import Audit, Inbox

pytestmark = pytest.mark.integration

ALICE = f"alice@{CHAT_DOMAIN}"
SENDER = f"dr.pair@{PEER_DOMAIN}"
TRACE = b"Received: from peer (192.0.2.1)\r\n\tby mx; Thu, 1 Jan 1970 00:00:00 GMT\r\n"


@dataclass
class Gateway:
    service: GatewayService
    store: Store
    pki: TestPki

    @property
    def port(self) -> int:
        assert self.service.server is not None
        return self.service.server.addresses[0][1]

    @property
    def intake(self) -> GatewayIntake:
        assert self.service.intake is not None
        return self.service.intake

    async def ready_to_send(self, *, secure: bool = True) -> RawSmtp:
        """A session past RCPT, waiting for DATA."""
        smtp = await RawSmtp.connect("127.0.0.1", self.port)
        if secure:
            await smtp.secure(client_context(self.pki, self.pki.client(PEER_CLIENT)))
        else:
            await smtp.command("EHLO peer.test")
        assert await smtp.envelope(SENDER, [ALICE]) == [
            replies.REPLY_SENDER_OK,
            replies.REPLY_RECIPIENT_OK,
        ]
        assert (await smtp.command("DATA")).startswith("354")
        return smtp

    async def rows(self) -> list[Inbox]:
        async with self.store.session() as session:
            return list((await session.execute(select(Inbox).order_by(Inbox.id))).scalars())

    async def audit_rows(self) -> list[Audit]:
        async with self.store.session() as session:
            return list((await session.execute(select(Audit))).scalars())


class HeldWrite:
    """Replaces the intake's writer with one whose writes wait for :meth:`release`."""

    def __init__(self, intake: GatewayIntake) -> None:
        self.open = asyncio.Event()
        self.repo = intake.repo
        self.writer: BatchWriter[AcceptedMail, tuple[int, int]] = BatchWriter(self.write)
        intake.writer = self.writer

    async def write(self, mails: list[AcceptedMail]) -> list[tuple[int, int]]:
        await self.open.wait()
        return await self.repo.store_mails(mails)

    def release(self) -> None:
        self.open.set()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory(tmp_path: Path, test_pki: TestPki) -> AsyncIterator[GatewayFactory]:
    numbers = itertools.count()
    async with contextlib.AsyncExitStack() as stack:

        async def start(*overrides: str) -> Gateway:
            directory = tmp_path / f"gw{next(numbers)}"
            directory.mkdir()
            settings = gateway_settings(
                directory, test_pki, "gateway.max_sessions_per_peer=20", *overrides
            )
            store = await stack.enter_async_context(
                open_test_store(sqlite_url(directory / "store.db"), directory / "key")
            )
            await import_peer_whitelist(store, test_pki)
            service = GatewayService(settings)
            await service.start(store, lambda: None)
            stack.push_async_callback(service.stop)
            return Gateway(service, store, test_pki)

        yield start


async def wait_for(condition: Callable[[], bool]) -> None:
    """Let the server run until ``condition()`` holds; fails only after a generous time."""
    async with asyncio.timeout(20):
        while not condition():
            await asyncio.sleep(0.01)


async def silent(smtp: RawSmtp) -> bool:
    """True when the server sends nothing on this session for a moment."""
    try:
        await smtp.reply(timeout=0.2)
    except TimeoutError:
        return True
    return False


async def test_concurrent_mails_share_one_commit_and_are_answered_after_it(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory()
    held = HeldWrite(gateway.intake)
    sessions = [await gateway.ready_to_send() for _ in range(6)]
    await sessions[0].send(mail("Lot 0") + b".\r\n")
    await wait_for(lambda: held.writer.batches == 1)  # mail 0 is being written, alone
    for number, smtp in enumerate(sessions[1:], start=1):
        await smtp.send(mail(f"Lot {number}") + b".\r\n")
    await wait_for(lambda: held.writer.pending == 5)  # the others queue behind it
    assert all([await silent(smtp) for smtp in sessions])  # no 250 before the commit
    assert await gateway.rows() == []

    held.release()
    answers = [await smtp.reply() for smtp in sessions]
    assert all(answer.startswith("250 2.0.0 OK: stored as ") for answer in answers)
    assert held.writer.batches == 2  # six mails, two transactions
    rows = await gateway.rows()
    assert sorted(f"{row.uid:016X}" for row in rows) == sorted(a.rsplit(" ", 1)[1] for a in answers)
    assert len(await gateway.audit_rows()) == 6
    for smtp in sessions:
        await smtp.close()


async def test_a_failed_batch_answers_451_to_all_its_mails_and_stores_none(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await gateway_factory()
    held = HeldWrite(gateway.intake)
    sealer = gateway.store.sealer
    seal = sealer.seal
    calls = itertools.count(1)

    def fourth_fails(data: bytes, aad: bytes) -> bytes:
        # Mail 0 is sealed alone (call 1); in the next batch, the third mail fails (call 4)
        # after two others were added to the transaction.
        if next(calls) == 4:
            raise SealError("key unavailable")
        return seal(data, aad)

    monkeypatch.setattr(sealer, "seal", fourth_fails)
    sessions = [await gateway.ready_to_send() for _ in range(5)]
    await sessions[0].send(mail("Echec 0") + b".\r\n")
    await wait_for(lambda: held.writer.batches == 1)
    for number, smtp in enumerate(sessions[1:], start=1):
        await smtp.send(mail(f"Echec {number}") + b".\r\n")
    await wait_for(lambda: held.writer.pending == 4)
    held.release()
    answers = [await smtp.reply() for smtp in sessions]
    assert answers[0].startswith("250 ")
    assert answers[1:] == [replies.REPLY_STORE_FAILED] * 4
    assert held.writer.batches == 2
    rows = await gateway.rows()
    assert [row.message_id for row in rows] == [f"<Echec.0@{PEER_DOMAIN}>"]
    assert len(await gateway.audit_rows()) == 1
    for smtp in sessions:
        await smtp.close()

    monkeypatch.setattr(sealer, "seal", seal)
    smtp = await gateway.ready_to_send()  # the peer tries again: stored
    await smtp.send(mail("Echec 3") + b".\r\n")
    assert (await smtp.reply()).startswith("250 ")
    await smtp.close()
    assert len(await gateway.rows()) == 2


async def test_stop_commits_mails_already_queued(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory()
    held = HeldWrite(gateway.intake)
    smtp = await gateway.ready_to_send()
    await smtp.send(mail("Arret") + b".\r\n")
    await wait_for(lambda: held.writer.batches == 1)
    stopping = asyncio.create_task(gateway.service.stop())
    await asyncio.sleep(0.1)
    held.release()
    await stopping
    # The connection is gone before any 250: the peer will send again and find its row.
    assert not (await smtp.reply()).startswith("250")
    await smtp.close()
    assert len(await gateway.rows()) == 1


async def test_clear_text_mail_on_loopback_when_tls_is_not_required(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory("gateway.require_tls=false")
    smtp = await gateway.ready_to_send(secure=False)
    await smtp.send(mail("Clair") + b".\r\n")
    assert (await smtp.reply()).startswith("250 2.0.0 OK: stored as ")
    assert await smtp.command(f"MAIL FROM:<dr.x@inconnu.{PEER_DOMAIN}>") == (
        replies.REPLY_SENDER_NOT_WHITELISTED
    )
    await smtp.close()
    raw = gateway.store.raw_of((await gateway.rows())[0])
    assert raw.startswith(b"Received: from peer.test (127.0.0.1)\r\n")
    assert b"(mssbridge) with ESMTP;" in raw and b"certificate" not in raw


async def test_clear_text_is_refused_by_default(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory()
    smtp = await RawSmtp.connect("127.0.0.1", gateway.port)
    await smtp.command("EHLO peer.test")
    assert await smtp.command(f"MAIL FROM:<{SENDER}>") == replies.REPLY_STARTTLS_REQUIRED
    await smtp.close()


@pytest.mark.parametrize("listen", ['["0.0.0.0:2525"]', '["127.0.0.1:25", "[::]:25"]'])
def test_tls_may_be_optional_only_on_loopback(
    tmp_path: Path, test_pki: TestPki, listen: str
) -> None:
    with pytest.raises(ConfigError, match="require_tls"):
        gateway_settings(
            tmp_path, test_pki, "gateway.require_tls=false", f"gateway.listen={listen}"
        )
    (tmp_path / "loopback").mkdir()
    settings = gateway_settings(
        tmp_path / "loopback",
        test_pki,
        "gateway.require_tls=false",
        'gateway.listen=["127.0.0.1:0", "[::1]:0", "127.0.0.2:25"]',
    )
    assert settings.gateway.require_tls is False


async def test_batch_stores_each_mail_once(store: Store) -> None:
    repo = GatewayRepo(store, "chat.example.fr")
    first = AcceptedMail(b"Subject: a\r\n\r\nA\r\n", None, TRACE, "a@p", ("@u:hs",))
    second = AcceptedMail(b"Subject: b\r\n\r\nB\r\n", "<b@p>", TRACE, "a@p", ("@u:hs", "@v:hs"))
    earlier = await repo.store_mail(
        first.received, None, trace=TRACE, sender="a@p", recipients=["@u:hs"]
    )
    answers = await repo.store_mails([second, first, second])
    assert answers[1] == earlier and answers[0] == answers[2] != earlier
    async with store.session() as session:
        rows = list((await session.execute(select(Inbox).order_by(Inbox.id))).scalars())
        audit = list((await session.execute(select(Audit))).scalars())
    assert [(row.id, row.uid) for row in rows] == [earlier, answers[0]]
    assert store.raw_of(rows[1]) == TRACE + second.received
    assert rows[1].message_id == "<b@p>" and len(audit) == 2


async def test_a_failing_batch_leaves_no_row(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = GatewayRepo(store, "chat.example.fr")
    seal = store.sealer.seal
    calls = itertools.count(1)

    def second_fails(data: bytes, aad: bytes) -> bytes:
        if next(calls) == 2:
            raise SealError("key unavailable")
        return seal(data, aad)

    monkeypatch.setattr(store.sealer, "seal", second_fails)
    mails = [
        AcceptedMail(f"Subject: {n}\r\n\r\n.\r\n".encode(), None, TRACE, "a@p", ("@u:hs",))
        for n in range(3)
    ]
    with pytest.raises(SealError):
        await repo.store_mails(mails)
    async with store.session() as session:
        assert (await session.execute(select(Inbox))).first() is None
        assert (await session.execute(select(Audit))).first() is None
