"""Submit raw message bytes to the MSSanté SMTP server; map replies to TemporaryFailure/Rejected.

Error mapping (RFC 5321 §4.2.1, enhanced codes RFC 3463):

- 4xx reply, refused connection, timeout, lost connection: :class:`TemporaryFailure`.
- 5xx reply: :class:`Rejected` with the enhanced code (``"5.1.1"``) and a French message.
- Certificate refused by either side (TLS alert, or the server's reply naming the client
  certificate): :class:`TlsRefused`, a configuration error: retrying cannot help.
- Some recipients refused, others accepted: the message *was* submitted; :func:`submit`
  returns normally with the refusals in :attr:`Submission.refused`, so the caller records
  the accepted ones as sent and reports or retries only the refused ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import aiosmtplib

from mssbridge.config import MailboxSection
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.security.tls import TlsRefused, describe_refusal, is_certificate_refusal

log = logging.getLogger("mssbridge.mail.smtp_out")

ENHANCED_CODE = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
# Postfix (smtpd_tls_req_ccert) answers "421 4.7.1 … No client certificate presented" or
# "… Client certificate not trusted" right after the handshake instead of a TLS alert.
CERTIFICATE_REPLY = re.compile(r"certificate", re.IGNORECASE)
# RFC 3461: ask for failure and success reports, with headers only (no health data back).
DSN_RCPT_OPTIONS = ("NOTIFY=SUCCESS,FAILURE",)
DSN_MAIL_OPTIONS = ("RET=HDRS",)
# ENVID carries the mail's Message-ID, so a report names it even without the returned headers.
MAX_ENVID = 100  # RFC 3461 §4.4
# DATA is written in pieces of this size, each when the connection took the previous one;
# TLS and the transport's buffers hold a few of them at a time.
DATA_PIECE = 64 * 1024
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"^\.", re.M)
_MESSAGE_ID_FIELD = re.compile(rb"^message-id[ \t]*:[ \t]*(<[!-~]{1,98}>)[ \t]*\r?$", re.I | re.M)


@dataclass(frozen=True)
class RefusedRecipient:
    """One recipient the server refused while accepting the message for others."""

    address: str
    reply_code: int
    code: str  # enhanced status code, e.g. "5.1.1"

    @property
    def permanent(self) -> bool:
        return self.reply_code >= 500


@dataclass(frozen=True)
class Submission:
    """The outcome of an accepted submission (no message content)."""

    reply: str  # final reply to DATA, e.g. "2.0.0 Ok: queued as 4Fxyz"
    accepted: tuple[str, ...]
    refused: tuple[RefusedRecipient, ...] = ()


def enhanced_code(reply_code: int, text: str) -> str:
    """The RFC 3463 code of a reply, or one derived from the basic reply code."""
    match = ENHANCED_CODE.match(text)
    if match:
        return match.group(1)
    return f"{str(reply_code)[0]}.0.0"


def _client(mailbox: MailboxSection, tls_context: ssl.SSLContext) -> aiosmtplib.SMTP:
    implicit = mailbox.smtp.security == "tls"
    return aiosmtplib.SMTP(
        hostname=mailbox.smtp.host,
        port=mailbox.smtp.port,
        timeout=mailbox.smtp.timeout,
        use_tls=implicit,
        start_tls=not implicit,
        tls_context=tls_context,
    )


def _peer(mailbox: MailboxSection) -> str:
    return f"SMTP {mailbox.smtp.host}:{mailbox.smtp.port}"


def _fail_on_connect(mailbox: MailboxSection, exc: BaseException) -> Exception:
    """Translate an error raised before the envelope into the bridge's error types."""
    peer = _peer(mailbox)
    cause = exc.__cause__ or exc.__context__
    for candidate in (exc, cause):
        if candidate is not None and is_certificate_refusal(candidate):
            return TlsRefused(describe_refusal(candidate, peer))
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return Rejected(
            "La messagerie MSSanté a refusé l'identification de la passerelle.",
            code=enhanced_code(exc.code, exc.message),
            detail=f"{peer}: authentication refused: {exc.code} {exc.message}",
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if CERTIFICATE_REPLY.search(exc.message):
            return TlsRefused(f"{peer}: the server refused our client certificate: {exc.message}")
        if exc.code >= 500:
            return Rejected(
                "La messagerie MSSanté refuse la connexion de la passerelle.",
                code=enhanced_code(exc.code, exc.message),
                detail=f"{peer}: {exc.code} {exc.message}",
            )
    return TemporaryFailure(f"{peer}: {type(exc).__name__}: {exc}")


async def _authenticate(smtp: aiosmtplib.SMTP, mailbox: MailboxSection, password: str) -> None:
    """SASL per ``auth.method``; with ``external`` the client certificate is the identity."""
    method = mailbox.auth.method
    username = mailbox.auth.username or mailbox.address
    if method == "plain":
        await smtp.auth_plain(username, password)
    elif method == "login":
        await smtp.auth_login(username, password)


async def _open(
    mailbox: MailboxSection, tls_context: ssl.SSLContext, password: str
) -> aiosmtplib.SMTP:
    """Connect, secure, EHLO and authenticate; raise the bridge's error types."""
    smtp = _client(mailbox, tls_context)
    try:
        await smtp.connect()
        if smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()  # RFC 3207 §4.2: forget pre-TLS extensions, ask again
        await _authenticate(smtp, mailbox, password)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        smtp.close()
        raise _fail_on_connect(mailbox, exc) from exc
    return smtp


class ConnectionPool:
    """Open, authenticated submission sessions kept for the next mails (RFC 5321 §3.3).

    A new session costs a TCP and a TLS handshake with both certificates, and two EHLOs; a
    kept one costs a NOOP, which also proves it is still open. Only a session whose last
    transaction succeeded is kept, for ``idle`` seconds at most, and only with the TLS
    context it was opened with (a SIGHUP reload applies to the next new session).
    """

    def __init__(self, size: int = 16, idle: float = 20.0) -> None:
        self.size = size
        self.idle = idle
        self._free: list[tuple[aiosmtplib.SMTP, ssl.SSLContext, float]] = []

    async def take(
        self, mailbox: MailboxSection, tls_context: ssl.SSLContext, password: str
    ) -> aiosmtplib.SMTP:
        now = time.monotonic()
        while self._free:
            smtp, context, since = self._free.pop()
            if context is not tls_context or now - since > self.idle:
                await _quit(smtp)
                continue
            try:
                await smtp.noop()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()
                continue
            return smtp
        return await _open(mailbox, tls_context, password)

    async def give_back(self, smtp: aiosmtplib.SMTP, tls_context: ssl.SSLContext) -> None:
        if smtp.is_connected and len(self._free) < self.size:
            self._free.append((smtp, tls_context, time.monotonic()))
        else:
            await _quit(smtp)

    async def close(self) -> None:
        while self._free:
            await _quit(self._free.pop()[0])


def _refusal(address: str, reply_code: int, text: str) -> RefusedRecipient:
    return RefusedRecipient(address, reply_code, enhanced_code(reply_code, text))


def _all_refused(refused: Sequence[RefusedRecipient]) -> Exception:
    addresses = ", ".join(r.address for r in refused)
    if any(not r.permanent for r in refused):
        return TemporaryFailure(f"recipients deferred: {', '.join(r.code for r in refused)}")
    return Rejected(
        f"Le serveur MSSanté a refusé le(s) destinataire(s) : {addresses}.",
        code=refused[0].code,
        detail=f"all recipients refused: {', '.join(r.code for r in refused)}",
    )


def _envelope_failure(exc: aiosmtplib.SMTPResponseException, peer: str) -> Exception:
    code = enhanced_code(exc.code, exc.message)
    if exc.code < 500:
        return TemporaryFailure(f"{peer}: {exc.code} {code}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        message = "Le serveur MSSanté a refusé l'adresse d'expédition de la passerelle."
    elif isinstance(exc, aiosmtplib.SMTPDataError):
        message = "Le serveur MSSanté a refusé le message."
    else:
        message = "Le serveur MSSanté a refusé l'envoi."
    return Rejected(message, code=code, detail=f"{peer}: {exc.code} {code}")


async def _send(
    smtp: aiosmtplib.SMTP, sender: str, recipients: Sequence[str], message: bytes, dsn: bool
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """One mail transaction, like ``SMTP.sendmail`` but with the data sent in pieces.

    ``sendmail`` counts the size on a normalised copy, builds the whole message three more
    times (line ends, dots, end line) and hands it to TLS in one write: about six times the
    mail at once. Here each piece is prepared and written only when the connection took the
    previous one.
    """
    use_dsn = dsn and smtp.supports_extension("dsn")
    mail_options = [*DSN_MAIL_OPTIONS, *_envelope_id(message)] if use_dsn else []
    if smtp.supports_extension("size"):
        mail_options.insert(0, f"SIZE={wire_size(message)}")  # RFC 1870
    try:
        await smtp.mail(sender, options=mail_options)
        errors = await _recipients(smtp, recipients, DSN_RCPT_OPTIONS if use_dsn else ())
        reply = await _data(smtp, message)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        # A refused transaction is reset, so that the session can carry the next one.
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await smtp.rset()
        raise
    return errors, reply.message


async def _recipients(
    smtp: aiosmtplib.SMTP, recipients: Sequence[str], options: Sequence[str]
) -> dict[str, aiosmtplib.SMTPResponse]:
    """RCPT each recipient; the refusals, or SMTPRecipientsRefused when all were refused."""
    refused: list[aiosmtplib.SMTPRecipientRefused] = []
    for address in recipients:
        try:
            await smtp.rcpt(address, options=options)
        except aiosmtplib.SMTPRecipientRefused as exc:
            refused.append(exc)
    if len(refused) == len(recipients):
        raise aiosmtplib.SMTPRecipientsRefused(refused)
    return {r.recipient: aiosmtplib.SMTPResponse(r.code, r.message) for r in refused}


async def _data(smtp: aiosmtplib.SMTP, message: bytes) -> aiosmtplib.SMTPResponse:
    """DATA, the message piece by piece, and the server's final reply."""
    start = await smtp.execute_command(b"DATA")
    if start.code != aiosmtplib.SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # The protocol's flow control (asyncio's pause_writing): wait until the transport took
    # the previous piece. Without it every piece is buffered at once, as sendmail does.
    drain = getattr(protocol, "_drain_helper", None)
    try:
        for piece in data_pieces(message):
            if drain is not None:
                await asyncio.wait_for(drain(), smtp.timeout)
            protocol.write(piece)
        # No await between the last write and this: the reply cannot arrive unlooked-for.
        reply = await protocol.read_response(timeout=smtp.timeout)
    except BaseException:
        smtp.close()  # cut off mid-data, the session cannot carry anything else
        raise
    if reply.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply


def data_pieces(message: bytes, size: int = DATA_PIECE) -> Iterator[bytes]:
    """``message`` as DATA carries it, in pieces of about ``size`` bytes, ending with ".".

    Each piece ends at a line end, so each is converted alone: lone CR and LF become CRLF,
    a line starting with "." gets a second one (RFC 5321 §4.5.2), as aiosmtplib does.
    """
    start = 0
    while start < len(message):
        cut = message.find(b"\n", min(start + size, len(message)) - 1)
        end = len(message) if cut < 0 else cut + 1
        lines = _LINE_END.sub(b"\r\n", message[start:end])
        yield _LEADING_DOT.sub(b"..", lines)
        start = end
    if not message.endswith((b"\n", b"\r")):
        yield b"\r\n"
    yield b".\r\n"


def wire_size(message: bytes) -> int:
    """The message's size with CRLF line ends, before dots are doubled (RFC 1870 SIZE)."""
    pairs = message.count(b"\r\n")
    # A lone CR or LF becomes two bytes; a message not ending a line gets a final CRLF.
    lone = message.count(b"\r") + message.count(b"\n") - 2 * pairs
    return len(message) + lone + (0 if message.endswith((b"\n", b"\r")) else 2)


def _envelope_id(message: bytes) -> tuple[str, ...]:
    """``ENVID=`` with the Message-ID of the message's header, xtext-encoded (RFC 3461 §4.4)."""
    end = message.find(b"\r\n\r\n")
    found = _MESSAGE_ID_FIELD.search(message, 0, end if end >= 0 else len(message))
    if found is None:
        return ()
    value = "".join(
        chr(c) if 0x21 <= c <= 0x7E and c not in b"+=" else f"+{c:02X}" for c in found.group(1)
    )
    return (f"ENVID={value}",) if len(value) <= MAX_ENVID else ()


async def submit(
    mailbox: MailboxSection,
    tls_context: ssl.SSLContext,
    password: str,
    *,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    dsn: bool = False,
    pool: ConnectionPool | None = None,
) -> Submission:
    """Submit ``message`` (sent as is, CRLF bytes) to ``recipients``; see the module doc.

    With ``dsn`` and a server advertising DSN, asks for success and failure reports
    (``NOTIFY=SUCCESS,FAILURE``, ``RET=HDRS``, ``ENVID=<Message-ID>``). With ``pool``, the
    session comes from it and goes back to it after a successful transaction.
    """
    if not recipients:
        raise ValueError("submit needs at least one recipient")
    peer = _peer(mailbox)
    if pool is not None:
        smtp = await pool.take(mailbox, tls_context, password)
    else:
        smtp = await _open(mailbox, tls_context, password)
    kept = False
    try:
        errors, reply = await _send(smtp, sender, recipients, message, dsn)
        if pool is not None:
            await pool.give_back(smtp, tls_context)
            kept = True
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise _all_refused(
            [_refusal(r.recipient, r.code, r.message) for r in exc.recipients]
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _envelope_failure(exc, peer) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TemporaryFailure(f"{peer}: {type(exc).__name__}: {exc}") from exc
    finally:
        if not kept:
            await _quit(smtp)
    refused = tuple(_refusal(a, r.code, r.message) for a, r in errors.items())
    accepted = tuple(r for r in recipients if r not in errors)
    log.info("submitted to %d recipient(s), %d refused: %s", len(accepted), len(refused), reply)
    return Submission(reply=reply, accepted=accepted, refused=refused)


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        if smtp.is_connected:
            await smtp.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        smtp.close()


async def probe(mailbox: MailboxSection, tls_context: ssl.SSLContext, password: str) -> str:
    """Connect, secure, authenticate and QUIT; describe what worked (for ``mssbridge check``)."""
    smtp = await _open(mailbox, tls_context, password)
    try:
        tls_version = _tls_version(smtp)
        extensions = sorted(smtp.esmtp_extensions)
    finally:
        await _quit(smtp)
    auth = "certificate only" if mailbox.auth.method == "external" else mailbox.auth.method.upper()
    return (
        f"{_peer(mailbox)}: {mailbox.smtp.security} {tls_version}, auth {auth}, "
        f"extensions {' '.join(extensions)}"
    )


def _tls_version(smtp: aiosmtplib.SMTP) -> str:
    ssl_object = smtp.get_transport_info("ssl_object")
    version = ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None
    return version or "TLS"
