"""A large mail submitted to the real Postfix in pieces: delivered byte for byte, little held."""

from __future__ import annotations

import asyncio
import ssl
import tracemalloc
import uuid
from collections.abc import Callable
from email.utils import formatdate

import pytest

from mssbridge.config import MailboxSection, TlsSection
from mssbridge.lab.pki import DEFAULT_CLIENT_NAMES
from mssbridge.mail import smtp_out
from mssbridge.mail.imap import ImapMailbox
from mssbridge.security.tls import client_context

pytestmark = pytest.mark.integration

MAILBOX = DEFAULT_CLIENT_NAMES[0]  # the CN of the organisation certificate
SENDER = "emetteur@correspondant.mssante.fr"
PASSWORD = "lab-password"
BODY_BYTES = 3_000_000
DELIVERY_TIMEOUT = 20  # seconds


def _large_message() -> bytes:
    """A CRLF mail whose every body line starts with a dot, so every piece starts with one."""
    head = (
        f"From: {SENDER}\r\nTo: {MAILBOX}\r\nSubject: Imagerie\r\nDate: {formatdate()}\r\n"
        f"Message-ID: <{uuid.uuid4()}@correspondant.mssante.fr>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    lines = [b".%07d %s\r\n" % (n, b"z" * 60) for n in range(BODY_BYTES // 72)]
    return head + b"".join(lines) + b".\r\n..\r\n.fin\r\n"


async def _delivered(session: ImapMailbox, after_uid: int, sent: bytes) -> bytes:
    """The delivered mail that ends with ``sent`` (Postfix delivers it in the background)."""
    for _attempt in range(DELIVERY_TIMEOUT * 10):
        for uid, _size in await session.new_messages(after_uid):
            raw = await session.fetch(uid)
            if raw.endswith(sent):
                return raw
        await asyncio.sleep(0.1)
    raise AssertionError("sent message not found in the mailbox")


async def test_large_dotted_mail_arrives_byte_identical_and_is_sent_in_pieces(
    lab_mailbox: Callable[..., MailboxSection], lab_tls: Callable[..., TlsSection]
) -> None:
    context: ssl.SSLContext = client_context(lab_tls())
    mailbox = lab_mailbox(MAILBOX)
    session = ImapMailbox(mailbox, context, PASSWORD)
    await session.connect()
    pool = smtp_out.ConnectionPool()
    try:
        await session.select()
        found = await session.new_messages(0)
        before = found[-1][0] if found else 0
        first, second = _large_message(), _large_message()
        tracemalloc.start()
        try:
            result = await smtp_out.submit(
                mailbox,
                context,
                PASSWORD,
                sender=SENDER,
                recipients=[MAILBOX],
                message=first,
                pool=pool,
            )
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.accepted == (MAILBOX,)
        # Whole-message copies (line ends, dots, the TLS buffers) would each cost len(first).
        assert peak < len(first) // 2
        # The session stays usable after the data phase: the pool's kept one carries the next.
        await smtp_out.submit(
            mailbox,
            context,
            PASSWORD,
            sender=SENDER,
            recipients=[MAILBOX],
            message=second,
            pool=pool,
        )
        for sent in (first, second):
            raw = await _delivered(session, before, sent)
            # Postfix and Dovecot only prepend trace headers (Return-Path, Received…).
            assert raw[-len(sent) :] == sent
    finally:
        await pool.close()
        await session.close()
