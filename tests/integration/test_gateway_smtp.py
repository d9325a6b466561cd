"""Gateway SMTP server against raw clients: TLS and certificates, whitelist, limits, store first."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.database import open_test_store, sqlite_url
from fixtures.gateway import (
    CHAT_DOMAIN,
    OTHER_LISTED_DOMAIN,
    PEER_CLIENT,
    PEER_DOMAIN,
    SERVER_NAME,
    UNLISTED_CLIENT,
    RawSmtp,
    client_context,
    gateway_settings,
    import_peer_whitelist,
    mail,
)
from sqlalchemy import text
from sqlmodel import select

from mssbridge.flows.gateway import GatewayService
from mssbridge.lab.pki import TestPki
from mssbridge.mail import smtp_replies as replies
from mssbridge.store.gateway_repo import recipients_of
from mssbridge.store.repo import Store
from mssbridge.store.tables import Audit, Inbox, RowState

pytestmark = pytest.mark.integration

LIMIT = 20_000
ALICE = f"alice@{CHAT_DOMAIN}"
SENDER = f"dr.pair@{PEER_DOMAIN}"
SECRET = "CONTENU-CONFIDENTIEL-42"


@dataclass
class Gateway:
    service: GatewayService
    store: Store
    pki: TestPki
    stored: list[int]

    @property
    def port(self) -> int:
        assert self.service.server is not None
        return self.service.server.addresses[0][1]

    async def client(self, files: str | None = PEER_CLIENT, *, secure: bool = True) -> RawSmtp:
        smtp = await RawSmtp.connect("127.0.0.1", self.port)
        if secure:
            cert = self.pki.client(files) if files else None
            await smtp.secure(client_context(self.pki, cert))
        return smtp

    async def rows(self) -> list[Inbox]:
        async with self.store.session() as session:
            return list((await session.execute(select(Inbox).order_by(Inbox.id))).scalars())


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory(tmp_path: Path, test_pki: TestPki) -> AsyncIterator[GatewayFactory]:
    """Starts gateways (each with its own SQLite store) on free ports; stops them after."""
    numbers = itertools.count()
    async with contextlib.AsyncExitStack() as stack:

        async def start(*overrides: str, whitelist: bool = True) -> Gateway:
            directory = tmp_path / f"gw{next(numbers)}"
            directory.mkdir()
            settings = gateway_settings(
                directory, test_pki, f"limits.max_message_size={LIMIT}", *overrides
            )
            store = await stack.enter_async_context(
                open_test_store(sqlite_url(directory / "store.db"), directory / "key")
            )
            if whitelist:
                await import_peer_whitelist(store, test_pki)
            stored: list[int] = []
            service = GatewayService(settings)
            await service.start(store, lambda: stored.append(1))
            stack.push_async_callback(service.stop)
            return Gateway(service, store, test_pki, stored)

        yield start


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory()


async def test_listed_peer_mail_is_stored_before_250(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    smtp = await RawSmtp.connect("127.0.0.1", gateway.port)
    assert smtp.greeting.startswith("220 ")
    ehlo = await smtp.command("EHLO peer.test")
    assert "STARTTLS" in ehlo and f"SIZE {LIMIT}" in ehlo and "ENHANCEDSTATUSCODES" in ehlo
    assert "AUTH" not in ehlo
    await smtp.starttls(client_context(gateway.pki, gateway.pki.client(PEER_CLIENT)))
    after = await smtp.command("EHLO peer.test")
    assert "STARTTLS" not in after and "AUTH" not in after
    assert await smtp.envelope(SENDER, [ALICE, f"bob@{CHAT_DOMAIN}"]) == [
        replies.REPLY_SENDER_OK,
        replies.REPLY_RECIPIENT_OK,
        replies.REPLY_RECIPIENT_OK,
    ]
    message = mail("Premier", SECRET)
    reply = await smtp.data(message)
    assert reply.startswith("250 2.0.0 OK: stored as ")
    await smtp.command("QUIT")
    await smtp.close()

    rows = await gateway.rows()
    assert len(rows) == 1
    row = rows[0]
    assert row.state == RowState.PENDING
    assert recipients_of(row) == (f"@alice:{SERVER_NAME}", f"@bob:{SERVER_NAME}")
    assert reply.endswith(f"{row.uid:016X}")
    raw = gateway.store.raw_of(row)
    assert raw.startswith(b"Received: from peer.test (127.0.0.1)\r\n")
    assert raw.endswith(message)
    assert b"client certificate verified" in raw
    assert row.message_id == f"<Premier@{PEER_DOMAIN}>"
    assert gateway.stored == [1]
    async with gateway.store.session() as session:
        audit = (await session.execute(select(Audit))).scalars().all()
    received = [a for a in audit if a.action == "message_received"]
    assert len(received) == 1 and received[0].actor == SENDER
    # The bridge's and aiosmtpd's own lines (the SQL driver's DEBUG lines are silenced by
    # logs.setup in the daemon).
    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("mssbridge", "mail."))
    )
    assert "stored as inbox row" in ours
    assert SECRET not in ours and "Premier" not in ours and "alice" not in ours


async def test_resent_mail_is_not_stored_twice(gateway: Gateway) -> None:
    replies_seen = []
    for _ in range(2):
        smtp = await gateway.client()
        await smtp.envelope(SENDER, [ALICE])
        replies_seen.append(await smtp.data(mail("Double")))
        await smtp.close()
    assert replies_seen[0] == replies_seen[1] and replies_seen[0].startswith("250 ")
    assert len(await gateway.rows()) == 1


async def test_mail_before_starttls_is_refused(gateway: Gateway) -> None:
    smtp = await gateway.client(secure=False)
    await smtp.command("EHLO peer.test")
    assert await smtp.command(f"MAIL FROM:<{SENDER}>") == replies.REPLY_STARTTLS_REQUIRED
    assert (await smtp.command("HELO peer.test")).startswith("250")
    assert await smtp.command(f"MAIL FROM:<{SENDER}>") == replies.REPLY_STARTTLS_REQUIRED
    assert (await smtp.command(f"RCPT TO:<{ALICE}>")).startswith("503")
    await smtp.close()
    assert await gateway.rows() == []


async def test_peer_without_certificate_is_refused(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    smtp = await gateway.client(None)
    assert await smtp.command(f"MAIL FROM:<{SENDER}>") == replies.REPLY_CERT_REQUIRED
    await smtp.close()
    assert "no client certificate presented" in caplog.text


@pytest.mark.parametrize("which", ["rogue_client", "revoked_client", "expired_client"])
async def test_untrusted_certificates_fail_the_handshake(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, which: str
) -> None:
    caplog.set_level(logging.INFO)
    smtp = await RawSmtp.connect("127.0.0.1", gateway.port)
    await smtp.command("EHLO peer.test")
    context = client_context(gateway.pki, getattr(gateway.pki, which))
    try:
        await smtp.starttls(context)
        # TLS 1.3: the client learns of the refusal on its first read.
        reply = await smtp.command("EHLO peer.test")
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        reply = ""
    assert reply == "", reply  # no session: an alert or a closed connection
    await smtp.close()
    expected = {
        "rogue_client": "unknown CA",
        "revoked_client": "certificate revoked",
        "expired_client": "certificate has expired",
    }[which]
    for _ in range(50):
        if "refused: " in caplog.text:
            break
        await asyncio.sleep(0.02)
    assert re.search(rf"TLS handshake with 127\.0\.0\.1:\d+ refused: {expected}", caplog.text)


async def test_sender_domain_must_be_whitelisted(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    smtp = await gateway.client()
    reply = await smtp.command("MAIL FROM:<x@inconnu.example>")
    assert reply == replies.REPLY_SENDER_NOT_WHITELISTED
    await smtp.close()
    assert "sender domain inconnu.example not in the whitelist" in caplog.text


async def test_certificate_must_be_listed_for_the_sender_domain(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    # The peer's valid certificate, but for a domain that another operator serves.
    smtp = await gateway.client()
    reply = await smtp.command(f"MAIL FROM:<x@{OTHER_LISTED_DOMAIN}>")
    assert reply == replies.REPLY_CERT_NOT_LISTED
    await smtp.close()
    # A certificate of the right PKI that the list does not name, for the peer's domain.
    smtp = await gateway.client(UNLISTED_CLIENT)
    assert await smtp.command(f"MAIL FROM:<{SENDER}>") == replies.REPLY_CERT_NOT_LISTED
    await smtp.close()
    assert f"certificate CN={UNLISTED_CLIENT}" in caplog.text
    assert f"not listed for {PEER_DOMAIN}" in caplog.text


async def test_null_sender_needs_a_listed_certificate(gateway: Gateway) -> None:
    smtp = await gateway.client()
    assert await smtp.command("MAIL FROM:<>") == replies.REPLY_SENDER_OK
    await smtp.close()
    smtp = await gateway.client(UNLISTED_CLIENT)
    assert await smtp.command("MAIL FROM:<>") == replies.REPLY_CERT_NOT_LISTED
    await smtp.close()


async def test_no_whitelist_is_a_temporary_refusal(
    gateway_factory: GatewayFactory,
) -> None:
    gateway: Gateway = await gateway_factory(whitelist=False)
    smtp = await gateway.client()
    assert await smtp.command(f"MAIL FROM:<{SENDER}>") == replies.REPLY_NO_WHITELIST
    await smtp.close()


async def test_recipients_are_mapped_and_checked(
    gateway_factory: GatewayFactory,
) -> None:
    gateway: Gateway = await gateway_factory(
        f'access.users=["@alice:{SERVER_NAME}", "@secretariat:{SERVER_NAME}"]',
    )
    smtp = await gateway.client()
    assert await smtp.command(f"MAIL FROM:<{SENDER}>") == replies.REPLY_SENDER_OK
    assert await smtp.command(f"RCPT TO:<{ALICE}>") == replies.REPLY_RECIPIENT_OK
    assert await smtp.command(f"RCPT TO:<ALICE@{CHAT_DOMAIN.upper()}>") == (
        replies.REPLY_RECIPIENT_OK
    )
    assert await smtp.command("RCPT TO:<alice@ailleurs.example>") == replies.REPLY_RELAY_DENIED
    for refused in (f"bob@{CHAT_DOMAIN}", f"mss_bot@{CHAT_DOMAIN}", f"a+b@{CHAT_DOMAIN}"):
        assert await smtp.command(f"RCPT TO:<{refused}>") == replies.REPLY_UNKNOWN_RECIPIENT
    assert (await smtp.data(mail("Alice"))).startswith("250 ")
    await smtp.close()
    rows = await gateway.rows()
    assert recipients_of(rows[0]) == (f"@alice:{SERVER_NAME}",)


async def test_recipient_cap(gateway_factory: GatewayFactory) -> None:
    gateway: Gateway = await gateway_factory("gateway.max_recipients=3")
    smtp = await gateway.client()
    envelope = await smtp.envelope(SENDER, [f"u{n}@{CHAT_DOMAIN}" for n in range(4)])
    assert envelope == [replies.REPLY_SENDER_OK] + [replies.REPLY_RECIPIENT_OK] * 3 + [
        replies.REPLY_TOO_MANY_RECIPIENTS
    ]
    assert (await smtp.data(mail("Trois"))).startswith("250 ")
    await smtp.close()
    assert len(recipients_of((await gateway.rows())[0])) == 3


async def test_size_limit_exact_and_one_byte_over(gateway: Gateway) -> None:
    smtp = await gateway.client()
    await smtp.envelope(SENDER, [ALICE])
    assert (await smtp.data(mail("Exact", size=LIMIT))).startswith("250 ")
    await smtp.envelope(SENDER, [ALICE])
    assert await smtp.data(mail("Over", size=LIMIT + 1)) == replies.REPLY_TOO_LARGE
    # The session goes on after a refusal.
    assert await smtp.command(f"MAIL FROM:<{SENDER}> SIZE={LIMIT + 1}") == replies.REPLY_TOO_LARGE
    assert await smtp.command(f"MAIL FROM:<{SENDER}> SIZE={LIMIT}") == replies.REPLY_SENDER_OK
    await smtp.close()
    rows = await gateway.rows()
    assert len(rows) == 1 and gateway.store.raw_of(rows[0]).endswith(mail("Exact", size=LIMIT))


async def test_runaway_data_is_cut_off(gateway: Gateway) -> None:
    smtp = await gateway.client()
    await smtp.envelope(SENDER, [ALICE])
    assert (await smtp.command("DATA")).startswith("354")
    line = b"y" * 98 + b"\r\n"
    try:
        for _ in range(3 * LIMIT // len(line)):
            await smtp.send(line)
    except (ConnectionError, ssl.SSLError):
        pass
    assert await smtp.reply() == replies.REPLY_TOO_LARGE
    assert await smtp.reply() == ""  # then the server hangs up
    await smtp.close()


@pytest.mark.parametrize(
    "payload",
    [
        # A bare LF ending, then an LF-only "end of data" hiding a second transaction.
        b"Subject: a\r\n\r\nhello\n.\nMAIL FROM:<evil@inconnu.example>\r\n",
        b"Subject: a\r\n\r\nhello\r\n.\nRCPT TO:<mallory@chat.chu-test.mssante.fr>\r\n",
        b"Subject: a\r\n\r\nhello\n.\r\nDATA\r\n",
        b"Subject: a\r\n\r\nbare CR\r.\rthere\r\n",
        b"Subject: a\nX: b\r\n\r\nbody\r\n",
    ],
)
async def test_bare_line_endings_are_refused(gateway: Gateway, payload: bytes) -> None:
    smtp = await gateway.client()
    await smtp.envelope(SENDER, [ALICE])
    assert (await smtp.command("DATA")).startswith("354")
    await smtp.send(payload + b".\r\n")
    assert await smtp.reply() == replies.REPLY_BARE_LINE_ENDING
    # Exactly one reply: nothing after the fake end was read as a command.
    assert await smtp.command("NOOP") == "250 OK"
    await smtp.close()
    assert await gateway.rows() == []


async def test_long_line_is_refused(gateway: Gateway) -> None:
    smtp = await gateway.client()
    await smtp.envelope(SENDER, [ALICE])
    long_line = b"Subject: long\r\n\r\n" + b"z" * 999 + b"\r\n"
    assert await smtp.data(long_line) == replies.REPLY_LINE_TOO_LONG
    await smtp.envelope(SENDER, [ALICE])
    assert (await smtp.data(b"Subject: ok\r\n\r\n" + b"z" * 998 + b"\r\n")).startswith("250 ")
    await smtp.close()
    assert len(await gateway.rows()) == 1


async def test_sessions_per_peer_are_capped(gateway_factory: GatewayFactory) -> None:
    gateway: Gateway = await gateway_factory("gateway.max_sessions_per_peer=2")
    first = await RawSmtp.connect("127.0.0.1", gateway.port)
    second = await RawSmtp.connect("127.0.0.1", gateway.port)
    third = await RawSmtp.connect("127.0.0.1", gateway.port)
    assert first.greeting.startswith("220") and second.greeting.startswith("220")
    assert third.greeting == replies.REPLY_TOO_MANY_SESSIONS
    await first.command("QUIT")
    await first.close()
    await asyncio.sleep(0.1)
    fourth = await RawSmtp.connect("127.0.0.1", gateway.port)
    assert fourth.greeting.startswith("220")
    for client in (second, third, fourth):
        await client.close()


async def test_idle_session_times_out(gateway_factory: GatewayFactory) -> None:
    gateway: Gateway = await gateway_factory("gateway.command_timeout=1.0")
    smtp = await RawSmtp.connect("127.0.0.1", gateway.port)
    assert await smtp.reply(timeout=5.0) == ""  # closed by the server
    await smtp.close()


async def test_store_failure_is_a_temporary_refusal(gateway: Gateway) -> None:
    async with gateway.store.engine.begin() as connection:
        await connection.execute(text("DROP TABLE inbox"))
    smtp = await gateway.client()
    await smtp.envelope(SENDER, [ALICE])
    assert await smtp.data(mail("Perdu")) == replies.REPLY_STORE_FAILED
    await smtp.close()
    assert gateway.stored == []


async def test_recipients_json_column(gateway: Gateway) -> None:
    smtp = await gateway.client()
    await smtp.envelope(SENDER, [ALICE, ALICE])
    assert (await smtp.data(mail("Deux fois"))).startswith("250 ")
    await smtp.close()
    row = (await gateway.rows())[0]
    assert json.loads(row.recipients or "") == [f"@alice:{SERVER_NAME}"]


async def test_locked_store_is_a_temporary_refusal_then_stores_once(gateway: Gateway) -> None:
    """SQLite locked by another process: 451 after the busy timeout, 250 once released."""
    import sqlite3

    path = gateway.store.engine.url.database
    assert path
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        smtp = await gateway.client()
        await smtp.envelope(SENDER, [ALICE])
        assert (await smtp.command("DATA")).startswith("354")
        await smtp.send(mail("Verrou") + b".\r\n")
        assert await smtp.reply(timeout=40) == replies.REPLY_STORE_FAILED
        await smtp.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert gateway.stored == [] and await gateway.rows() == []
    smtp = await gateway.client()
    await smtp.envelope(SENDER, [ALICE])
    assert (await smtp.data(mail("Verrou"))).startswith("250 ")
    await smtp.close()
    assert gateway.stored == [1] and len(await gateway.rows()) == 1
