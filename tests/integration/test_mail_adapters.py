"""SMTP submission and IMAP reading against the real Postfix + Dovecot lab (mutual TLS).

Every IMAP session of the lab's organisation certificate lands in the mailbox named by
its CN (Dovecot takes the user name from the certificate), so tests share that mailbox
and find their own message by UID range and content, never by position.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from pathlib import Path

import pytest

from mssbridge.config import MailboxSection, TlsSection
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.lab.mailserver import (
    TEMPFAIL_LOCALPART,
    UNKNOWN_LOCALPART,
    MailLab,
    MailLabError,
    free_port,
)
from mssbridge.lab.pki import DEFAULT_CLIENT_NAMES, TestPki
from mssbridge.mail import imap, smtp_out
from mssbridge.mail.imap import ImapMailbox, MessageGone
from mssbridge.security.tls import TlsRefused, client_context

pytestmark = pytest.mark.integration

MAILBOX = DEFAULT_CLIENT_NAMES[0]  # the CN of the organisation certificate
SENDER = "emetteur@correspondant.mssante.fr"
PASSWORD = "lab-password"
DELIVERY_TIMEOUT = 10.0

MailboxFactory = Callable[..., MailboxSection]
TlsFactory = Callable[..., TlsSection]


def _message(with_attachment: bool = True) -> bytes:
    """A CRLF message with a binary attachment and lines that SMTP must dot-stuff."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = SENDER
    message["To"] = MAILBOX
    message["Subject"] = "Compte rendu"
    message["Date"] = formatdate()  # else Postfix inserts one and the tail would differ
    message["Message-ID"] = f"<{uuid.uuid4()}@correspondant.mssante.fr>"
    message.set_content("Bonjour,\n.ligne qui commence par un point\n\nfin  \n")
    if with_attachment:
        message.add_attachment(
            os.urandom(40_000), maintype="application", subtype="pdf", filename="cr.pdf"
        )
    data = message.as_bytes()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    return data


@pytest.fixture
def org_context(lab_tls: TlsFactory) -> ssl.SSLContext:
    return client_context(lab_tls())


@pytest.fixture
async def reader(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> AsyncIterator[ImapMailbox]:
    session = ImapMailbox(lab_mailbox(MAILBOX), org_context, PASSWORD)
    await session.connect()
    await session.select()
    yield session
    await session.close()


async def _last_uid(session: ImapMailbox) -> int:
    found = await session.new_messages(0)
    return found[-1][0] if found else 0


async def _find(session: ImapMailbox, after_uid: int, sent: bytes) -> tuple[int, int, bytes]:
    """The (uid, size, raw bytes) of the message above ``after_uid`` that ends with ``sent``."""
    for uid, size in await session.new_messages(after_uid):
        raw = await session.fetch(uid)
        if raw.endswith(sent):
            return uid, size, raw
    raise AssertionError("sent message not found in the mailbox")


async def _submit(mailbox: MailboxSection, context: ssl.SSLContext, message: bytes) -> str:
    result = await smtp_out.submit(
        mailbox, context, PASSWORD, sender=SENDER, recipients=[MAILBOX], message=message
    )
    assert result.accepted == (MAILBOX,) and result.refused == ()
    return result.reply


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize("auth", ["external", "plain", "login"])
async def test_submit_wakes_idle_and_fetch_is_byte_exact(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext, auth: str, security: str
) -> None:
    session = ImapMailbox(
        lab_mailbox(MAILBOX, auth=auth, imap_security=security), org_context, PASSWORD
    )
    await session.connect()
    try:
        assert await session.select() > 0
        before = await _last_uid(session)
        waiting = asyncio.create_task(session.wait_for_changes(DELIVERY_TIMEOUT))
        sent = _message()
        reply = await _submit(lab_mailbox(MAILBOX, auth=auth), org_context, sent)
        assert reply.startswith("2.0.0")
        assert await waiting is True
        uid, size, raw = await _find(session, before, sent)
    finally:
        await session.close()
    assert uid > before
    # Postfix and Dovecot only prepend trace headers (Return-Path, Received…).
    assert hashlib.sha256(raw[-len(sent) :]).digest() == hashlib.sha256(sent).digest()
    assert size == len(raw)


async def test_idle_times_out_without_news(reader: ImapMailbox) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await reader.wait_for_changes(0.3) is False
    assert loop.time() - started < 2.0
    # The session is still usable after IDLE ends.
    assert isinstance(await reader.new_messages(0), list)


async def test_wake_ends_idle_at_once_and_keeps_the_session(reader: ImapMailbox) -> None:
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    started = loop.time()
    waiting = asyncio.create_task(reader.wait_for_changes(DELIVERY_TIMEOUT * 6, wake=wake))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # IDLE runs until woken
    wake.set()
    assert await asyncio.wait_for(waiting, 5.0) is False
    assert loop.time() - started < DELIVERY_TIMEOUT
    # DONE was sent cleanly: the next commands and IDLE work.
    assert isinstance(await reader.new_messages(0), list)
    assert await reader.wait_for_changes(5.0, wake=wake) is False  # already set: no IDLE
    wake.clear()
    assert await reader.wait_for_changes(0.3, wake=wake) is False


async def test_connection_lost_during_idle_is_temporary(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    session = ImapMailbox(lab_mailbox(MAILBOX), org_context, PASSWORD)
    await session.connect()
    await session.select()
    waiting = asyncio.create_task(session.wait_for_changes(DELIVERY_TIMEOUT))
    await asyncio.sleep(0.2)
    session._require().protocol.transport.abort()
    with pytest.raises(TemporaryFailure, match="connection lost"):
        await asyncio.wait_for(waiting, 2.0)
    await session.close()


async def test_new_messages_above_last_uid_is_empty(reader: ImapMailbox) -> None:
    # "UID n:*" matches the last message even when n is beyond it (RFC 3501 §6.4.8).
    last = await _last_uid(reader)
    assert await reader.new_messages(last) == []
    assert await reader.new_messages(last + 100) == []


async def test_fetch_does_not_set_seen_and_mark_seen_does(
    reader: ImapMailbox, lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    before = await _last_uid(reader)
    sent = _message(with_attachment=False)
    await _submit(lab_mailbox(MAILBOX), org_context, sent)
    assert await reader.wait_for_changes(DELIVERY_TIMEOUT)
    uid, _, _ = await _find(reader, before, sent)
    assert b"\\Seen" not in await _flags(reader, uid)
    await reader.mark_seen(uid)
    flags = await _flags(reader, uid)
    assert b"\\Seen" in flags and imap.BRIDGED_KEYWORD.encode() in flags


async def _flags(session: ImapMailbox, uid: int) -> bytes:
    response = await session._require().uid("fetch", str(uid), "(FLAGS)")
    return b" ".join(line for line in response.lines if isinstance(line, bytes))


async def test_fetch_of_unknown_uid_raises_message_gone(reader: ImapMailbox) -> None:
    with pytest.raises(MessageGone):
        await reader.fetch(await _last_uid(reader) + 1000)


async def test_probes_describe_both_services(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    smtp_text = await smtp_out.probe(lab_mailbox(MAILBOX), org_context, PASSWORD)
    imap_text = await imap.probe(lab_mailbox(MAILBOX), org_context, PASSWORD)
    assert "TLSv1.3" in smtp_text and "dsn" in smtp_text
    assert "UIDVALIDITY" in imap_text and "IDLE" in imap_text


# -- refusals ---------------------------------------------------------------------------


async def test_unknown_domain_is_rejected_with_code(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    with pytest.raises(Rejected) as raised:
        await smtp_out.submit(
            lab_mailbox(MAILBOX),
            org_context,
            PASSWORD,
            sender=SENDER,
            recipients=["dr.x@domaine-inconnu.example"],
            message=_message(False),
        )
    assert raised.value.code == "5.7.1"
    assert "dr.x@domaine-inconnu.example" in raised.value.user_message


async def test_unknown_user_is_rejected_with_5_1_1(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    with pytest.raises(Rejected) as raised:
        await smtp_out.submit(
            lab_mailbox(MAILBOX),
            org_context,
            PASSWORD,
            sender=SENDER,
            recipients=[f"{UNKNOWN_LOCALPART}@correspondant.mssante.fr"],
            message=_message(False),
        )
    assert raised.value.code == "5.1.1"


async def test_deferred_recipient_is_temporary(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    with pytest.raises(TemporaryFailure):
        await smtp_out.submit(
            lab_mailbox(MAILBOX),
            org_context,
            PASSWORD,
            sender=SENDER,
            recipients=[f"{TEMPFAIL_LOCALPART}@correspondant.mssante.fr"],
            message=_message(False),
        )


async def test_partial_acceptance_reports_refused_recipients(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    deferred = f"{TEMPFAIL_LOCALPART}@correspondant.mssante.fr"
    unknown = f"{UNKNOWN_LOCALPART}@correspondant.mssante.fr"
    result = await smtp_out.submit(
        lab_mailbox(MAILBOX),
        org_context,
        PASSWORD,
        sender=SENDER,
        recipients=[MAILBOX, deferred, unknown],
        message=_message(False),
        dsn=True,
    )
    assert result.accepted == (MAILBOX,)
    refused = {r.address: (r.code, r.permanent) for r in result.refused}
    assert refused == {deferred: ("4.2.1", False), unknown: ("5.1.1", True)}


async def test_pool_keeps_a_session_only_after_a_successful_transaction(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    pool = smtp_out.ConnectionPool()
    mailbox = lab_mailbox(MAILBOX)

    async def submit(recipient: str) -> smtp_out.Submission:
        return await smtp_out.submit(
            mailbox,
            org_context,
            PASSWORD,
            sender=SENDER,
            recipients=[recipient],
            message=_message(False),
            pool=pool,
        )

    await submit(MAILBOX)
    first = pool._free[0][0]
    await submit(MAILBOX)
    assert [entry[0] for entry in pool._free] == [first]  # one session served both
    with pytest.raises(Rejected):
        await submit("dr.x@domaine-inconnu.example")
    assert pool._free == [] and not first.is_connected  # closed, not kept
    await submit(MAILBOX)
    pool._free[0][0].close()  # the server dropped the kept session: a new one is opened
    assert (await submit(MAILBOX)).accepted == (MAILBOX,)
    await pool.close()
    assert pool._free == []


async def test_wrong_password_is_rejected(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext
) -> None:
    with pytest.raises(Rejected) as smtp_refusal:
        await smtp_out.probe(lab_mailbox(MAILBOX, auth="plain"), org_context, "wrong")
    session = ImapMailbox(lab_mailbox(MAILBOX, auth="plain"), org_context, "wrong")
    with pytest.raises(Rejected) as imap_refusal:
        await session.connect()
    assert smtp_refusal.value.code == imap_refusal.value.code == "5.7.8"


def _no_certificate_context(test_pki: TestPki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(test_pki.ca_bundle))
    return context


def _client_context_for(test_pki: TestPki, lab_tls: TlsFactory, which: str) -> ssl.SSLContext:
    if which == "none":
        return _no_certificate_context(test_pki)
    return client_context(lab_tls(getattr(test_pki, which)))


@pytest.mark.parametrize("which", ["none", "rogue_client", "expired_client"])
async def test_smtp_refuses_bad_client_certificate(
    lab_mailbox: MailboxFactory, lab_tls: TlsFactory, test_pki: TestPki, which: str
) -> None:
    context = _client_context_for(test_pki, lab_tls, which)
    with pytest.raises(TlsRefused, match="client certificate"):
        await smtp_out.submit(
            lab_mailbox(MAILBOX),
            context,
            PASSWORD,
            sender=SENDER,
            recipients=[MAILBOX],
            message=_message(False),
        )


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize("which", ["none", "rogue_client", "expired_client", "revoked_client"])
async def test_imap_refuses_bad_client_certificate(
    lab_mailbox: MailboxFactory,
    lab_tls: TlsFactory,
    test_pki: TestPki,
    which: str,
    security: str,
) -> None:
    context = _client_context_for(test_pki, lab_tls, which)
    session = ImapMailbox(lab_mailbox(MAILBOX, imap_security=security), context, PASSWORD)
    with pytest.raises(TlsRefused, match="client certificate"):
        await session.connect()


@pytest.mark.parametrize("service", ["smtp", "imap-starttls", "imaps"])
async def test_server_outside_trust_anchors_is_refused(
    lab_mailbox: MailboxFactory, lab_tls: TlsFactory, test_pki: TestPki, service: str
) -> None:
    context = client_context(lab_tls(ca_file=test_pki.rogue_ca_cert))
    mailbox = lab_mailbox(MAILBOX, imap_security="tls" if service == "imaps" else "starttls")
    with pytest.raises(TlsRefused, match="not trusted"):
        if service == "smtp":
            await smtp_out.probe(mailbox, context, PASSWORD)
        else:
            await ImapMailbox(mailbox, context, PASSWORD).connect()


async def test_peer_down_is_temporary(
    lab_mailbox: MailboxFactory, org_context: ssl.SSLContext, mail_lab: MailLab
) -> None:
    closed = free_port()
    mailbox = lab_mailbox(MAILBOX)
    down = mailbox.model_copy(
        update={
            "smtp": mailbox.smtp.model_copy(update={"port": closed}),
            "imap": mailbox.imap.model_copy(update={"port": closed}),
        }
    )
    with pytest.raises(TemporaryFailure):
        await smtp_out.probe(down, org_context, PASSWORD)
    with pytest.raises(TemporaryFailure):
        await ImapMailbox(down, org_context, PASSWORD).connect()


def test_lab_start_failure_reports_logs_and_leaves_nothing_running(
    tmp_path: Path, test_pki: TestPki
) -> None:
    lab = MailLab(tmp_path / "lab", test_pki, ["chu-test.mssante.fr"], PASSWORD)
    with socket.socket() as busy:
        busy.bind((lab.host, lab.smtp_port))
        busy.listen()
        with pytest.raises(MailLabError, match="Address already in use"):
            lab.start()
    assert not _port_accepts(lab.host, lab.imaps_port)


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
