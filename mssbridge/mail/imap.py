"""Read the MSSanté mailbox over IMAP (aioimaplib): UIDs, raw bytes, flags and IDLE.

aioimaplib 2.0 has neither STARTTLS nor SASL EXTERNAL/PLAIN; both are added here on top
of its protocol object: STARTTLS upgrades the transport with ``loop.start_tls`` (RFC 3501
§6.2.1, capabilities fetched again afterwards), and AUTHENTICATE sends its initial
response inline when the server has SASL-IR (RFC 4959), else answers the continuation.

Errors: refused or lost connections and timeouts raise :class:`TemporaryFailure`; refused
credentials raise :class:`Rejected` with code ``5.7.8`` (RFC 4954); certificate problems
raise :class:`TlsRefused` (a configuration error).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
from collections.abc import Sequence
from typing import Any

from aioimaplib import aioimaplib

from mssbridge.config import MailboxSection
from mssbridge.errors import BridgeError, Rejected, TemporaryFailure
from mssbridge.security.tls import TlsRefused, describe_refusal, is_certificate_refusal

log = logging.getLogger("mssbridge.mail.imap")

BRIDGED_KEYWORD = "$Bridged"
AUTH_REFUSED_CODE = "5.7.8"  # RFC 4954: authentication credentials invalid
ALERT_CERTIFICATE = re.compile(rb"\[ALERT\].*certificate", re.IGNORECASE)
UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
PERMANENT_FLAGS = re.compile(rb"\[PERMANENTFLAGS \(([^)]*)\)\]")
FETCH_UID = re.compile(rb"\bUID (\d+)")
FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
SEEN_FLAG = re.compile(rb"FLAGS \([^)]*\\Seen\b", re.IGNORECASE)
BODY_LITERAL = re.compile(rb"BODY\[\] \{(\d+)\}$")
CHANGE = re.compile(rb"^\d+ (EXISTS|RECENT)$")
IDLE_DONE_TIMEOUT = 5.0
DELETE_CHUNK = 500  # UIDs per command: keeps command lines short
FETCH_CHUNK = 200  # messages per size listing: keeps each answer short


class MessageGone(BridgeError):
    """The UID does not exist (any more) in the selected folder."""


class _SaslCommand(aioimaplib.Command):
    """AUTHENTICATE that answers a server continuation with its (base64) response."""

    def __init__(self, protocol: aioimaplib.IMAP4ClientProtocol, response: str, *args: str):
        super().__init__("AUTHENTICATE", protocol.new_tag(), *args, loop=protocol.loop)
        self._protocol = protocol
        self._response = response

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        if result == "Pending" and line.startswith(b"+"):
            self._protocol.transport.write(self._response.encode("ascii") + b"\r\n")
            return
        super().append_to_resp(line, result)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class ImapMailbox:
    """One IMAP session on ``mailbox.imap.folder``; not safe for concurrent use.

    Use: ``connect()``, ``select()`` (compare UIDVALIDITY with the stored one), then loop
    on ``new_messages(last_uid)`` / ``fetch(uid)`` / ``mark_seen(uid)`` and
    ``wait_for_changes(timeout)``; ``close()`` at the end.
    """

    def __init__(self, mailbox: MailboxSection, tls_context: ssl.SSLContext, password: str) -> None:
        self._mailbox = mailbox
        self._tls = tls_context
        self._password = password
        self._client: aioimaplib.IMAP4 | None = None
        self._keywords_allowed = False
        self._connection_lost = False

    @property
    def peer(self) -> str:
        return f"IMAP {self._mailbox.imap.host}:{self._mailbox.imap.port}"

    @property
    def _timeout(self) -> float:
        return self._mailbox.imap.timeout

    # -- session -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection (implicit TLS or STARTTLS) and authenticate per ``auth.method``."""
        imap = self._mailbox.imap
        implicit = imap.security == "tls"
        client = aioimaplib.IMAP4(
            host=imap.host,
            port=imap.port,
            timeout=self._timeout,
            ssl_context=self._tls if implicit else None,
            conn_lost_cb=self._on_connection_lost,
        )
        self._client = client
        self._connection_lost = False
        try:
            await client.wait_hello_from_server()
            if not implicit:
                await self._starttls(client)
            await self._authenticate(client)
        except BaseException as exc:
            await self.close()
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def _on_connection_lost(self, _exc: Exception | None) -> None:
        """Wake a pending IDLE wait: aioimaplib itself would keep waiting for pushes."""
        self._connection_lost = True
        if self._client is not None:
            self._client.protocol.idle_queue.put_nowait(aioimaplib.STOP_WAIT_SERVER_PUSH)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, BridgeError | asyncio.CancelledError):
            return exc
        for candidate in (exc, exc.__cause__, exc.__context__):
            if candidate is not None and is_certificate_refusal(candidate):
                return TlsRefused(describe_refusal(candidate, self.peer))
        if isinstance(exc, OSError | TimeoutError | aioimaplib.AioImapException):
            return TemporaryFailure(f"{self.peer}: {type(exc).__name__}: {exc}")
        return exc

    async def _starttls(self, client: aioimaplib.IMAP4) -> None:
        """RFC 3501 §6.2.1: STARTTLS, handshake, then forget and re-read capabilities."""
        protocol = client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise TlsRefused(f"{self.peer}: the server does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await asyncio.wait_for(protocol.execute(command), self._timeout)
        if response.result != "OK":
            raise TemporaryFailure(f"{self.peer}: STARTTLS refused: {_text(response)}")
        transport = await protocol.loop.start_tls(
            protocol.transport,
            protocol,
            self._tls,
            server_hostname=self._mailbox.imap.host,
            ssl_handshake_timeout=self._timeout,
        )
        if transport is None:
            raise TemporaryFailure(f"{self.peer}: connection closed during STARTTLS")
        protocol.transport = transport
        protocol.capabilities = set()
        await asyncio.wait_for(protocol.capability(), self._timeout)

    async def _authenticate(self, client: aioimaplib.IMAP4) -> None:
        auth = self._mailbox.auth
        username = auth.username or self._mailbox.address
        if auth.method == "login":
            response = await client.login(username, self._password)
        elif auth.method == "plain":
            initial = _b64(f"\0{username}\0{self._password}")
            response = await self._sasl(client, "PLAIN", initial)
        else:
            response = await self._sasl(client, "EXTERNAL", "=")
        if response.result != "OK":
            raise self._auth_refusal(response)
        await asyncio.wait_for(client.protocol.capability(), self._timeout)

    def _auth_refusal(self, response: aioimaplib.Response) -> BridgeError:
        text = _text(response)
        if any(ALERT_CERTIFICATE.search(line) for line in _lines(response)):
            return TlsRefused(f"{self.peer}: the server refused our client certificate: {text}")
        return Rejected(
            "La messagerie MSSanté a refusé l'identification de la passerelle.",
            code=AUTH_REFUSED_CODE,
            detail=f"{self.peer}: authentication refused: {text}",
        )

    async def _sasl(
        self, client: aioimaplib.IMAP4, mechanism: str, initial: str
    ) -> aioimaplib.Response:
        """AUTHENTICATE with an initial response ("=" is an empty one, RFC 4959 §3)."""
        protocol = client.protocol
        if f"AUTH={mechanism}" not in protocol.capabilities:
            raise Rejected(
                "La messagerie MSSanté ne propose pas la méthode d'identification configurée.",
                code="5.7.4",
                detail=f"{self.peer}: no AUTH={mechanism} (mailbox.auth.method)",
            )
        if "SASL-IR" in protocol.capabilities:
            command = _SaslCommand(protocol, "", mechanism, initial)
        else:
            command = _SaslCommand(protocol, "" if initial == "=" else initial, mechanism)
        async with protocol.state_condition:
            # scrub: aioimaplib logs commands at DEBUG; never the credentials.
            execution = protocol.execute(command, scrub=initial)
            response = await asyncio.wait_for(execution, self._timeout)
            if response.result == "OK":
                protocol.state = aioimaplib.AUTH
            protocol.state_condition.notify_all()
        return response

    async def close(self) -> None:
        """LOGOUT if possible, then drop the connection; never raises."""
        client, self._client = self._client, None
        if client is None:
            return
        transport = client.protocol.transport
        usable = transport is not None and not transport.is_closing()
        with contextlib.suppress(Exception):
            if usable and client.protocol.state in (aioimaplib.AUTH, aioimaplib.SELECTED):
                await asyncio.wait_for(client.logout(), min(self._timeout, 5.0))
        if transport is not None:
            transport.close()
        if not client._client_task.done():
            client._client_task.cancel()
            with contextlib.suppress(BaseException):
                await client._client_task

    # -- mailbox -----------------------------------------------------------------------

    def _require(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise RuntimeError("ImapMailbox is not connected")
        return self._client

    async def _run(self, coro: Any, what: str) -> aioimaplib.Response:
        """Await an IMAP command; network trouble and NO/BAD answers are TemporaryFailure."""
        try:
            response: aioimaplib.Response = await asyncio.wait_for(coro, self._timeout)
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise TemporaryFailure(f"{self.peer}: {what}: {type(exc).__name__}") from exc
        if response.result != "OK":
            raise TemporaryFailure(f"{self.peer}: {what}: {response.result} {_text(response)}")
        return response

    async def select(self) -> int:
        """Select the configured folder and return its UIDVALIDITY (RFC 3501 §2.3.1.1)."""
        folder = self._mailbox.imap.folder
        response = await self._run(self._require().select(_quote(folder)), "SELECT")
        uid_validity = _search_lines(UIDVALIDITY, response)
        if uid_validity is None:
            raise TemporaryFailure(f"{self.peer}: SELECT gave no UIDVALIDITY")
        flags = PERMANENT_FLAGS.search(b" ".join(_lines(response)))
        self._keywords_allowed = flags is not None and b"\\*" in flags.group(1)
        return int(uid_validity)

    async def new_messages(
        self, after_uid: int, *, unseen_only: bool = False
    ) -> list[tuple[int, int]]:
        """(uid, RFC822.SIZE) of every message with a UID above ``after_uid``, ascending.

        ``UID n:*`` always matches the last message, even when its UID is below n
        (RFC 3501 §6.4.8), so the result is filtered. With ``unseen_only``, messages
        already flagged ``\\Seen`` (relayed before, or read by a person) are left out.
        """
        client = self._require()
        # The UIDs first (one line), then their sizes a chunk at a time: aioimaplib parses the
        # lines of one read recursively, and a backlog of a thousand mails in one answer
        # overflowed its stack, for good (the reader never got past it).
        searched = await self._run(
            client.uid_search(f"UID {after_uid + 1}:*", charset=None), "UID SEARCH"
        )
        uids = sorted(
            {
                int(word)
                for line in _lines(searched)
                # aioimaplib drops "SEARCH"; "3 EXISTS" and the tagged line are not UIDs
                if (words := line.removeprefix(b"SEARCH").split())
                and all(word.isdigit() for word in words)
                for word in words
                if int(word) > after_uid
            }
        )
        found = {}
        for start in range(0, len(uids), FETCH_CHUNK):
            chunk = ",".join(str(uid) for uid in uids[start : start + FETCH_CHUNK])
            response = await self._run(
                client.uid("fetch", chunk, "(UID RFC822.SIZE FLAGS)"), "UID FETCH sizes"
            )
            for line in _lines(response):
                uid, size = FETCH_UID.search(line), FETCH_SIZE.search(line)
                if not (uid and size and int(uid.group(1)) > after_uid):
                    continue
                if unseen_only and SEEN_FLAG.search(line):
                    continue
                found[int(uid.group(1))] = int(size.group(1))
        return sorted(found.items())

    async def fetch(self, uid: int) -> bytes:
        """The message exactly as stored (``BODY.PEEK[]``: does not set \\Seen)."""
        client = self._require()
        response = await self._run(client.uid("fetch", str(uid), "(UID BODY.PEEK[])"), "UID FETCH")
        body = _literal_for_uid(response.lines, uid)
        if body is None:
            raise MessageGone(f"{self.peer}: UID {uid} not found")
        return body

    async def mark_seen(self, uid: int) -> None:
        """Set \\Seen, plus the ``$Bridged`` keyword when the folder accepts new keywords."""
        flags = "\\Seen " + BRIDGED_KEYWORD if self._keywords_allowed else "\\Seen"
        await self._run(
            self._require().uid("store", str(uid), "+FLAGS.SILENT", f"({flags})"), "UID STORE"
        )

    async def delete(self, uids: Sequence[int]) -> None:
        """Remove these messages: ``\\Deleted`` then ``UID EXPUNGE`` (UIDPLUS, RFC 4315).

        Without UIDPLUS a plain EXPUNGE is used, which also removes any other message already
        flagged ``\\Deleted`` in the folder. UIDs no longer present are ignored.
        """
        client = self._require()
        wanted = sorted(set(uids))
        for start in range(0, len(wanted), DELETE_CHUNK):
            uid_set = ",".join(str(uid) for uid in wanted[start : start + DELETE_CHUNK])
            await self._run(
                client.uid("store", uid_set, "+FLAGS.SILENT", "(\\Deleted)"), "UID STORE"
            )
            if client.has_capability("UIDPLUS"):
                await self._run(client.uid("expunge", uid_set), "UID EXPUNGE")
            else:
                await self._run(client.expunge(), "EXPUNGE")

    async def wait_for_changes(self, timeout: float, wake: asyncio.Event | None = None) -> bool:
        """IDLE (RFC 2177) until the server reports EXISTS/RECENT, ``wake`` is set or
        ``timeout`` passes.

        Returns True when something arrived. Callers look for new UIDs afterwards either
        way: a timeout or a wake-up is also the moment for a check.
        """
        client = self._require()
        _drain(client.protocol.idle_queue)
        if wake is not None and wake.is_set():
            return False
        try:
            idle = await asyncio.wait_for(client.idle_start(timeout=timeout), self._timeout)
            try:
                changed = await self._watch(client, timeout, wake)
            finally:
                await self._end_idle(client, idle)
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise TemporaryFailure(f"{self.peer}: IDLE: {type(exc).__name__}") from exc
        return changed

    async def _watch(
        self, client: aioimaplib.IMAP4, timeout: float, wake: asyncio.Event | None
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            try:
                batch = await _push_or_wake(client, remaining, wake)
            except TimeoutError:
                return False
            if batch is None:  # woken: the caller wants a pass now
                return False
            if self._connection_lost:
                raise TemporaryFailure(f"{self.peer}: connection lost during IDLE")
            if batch == aioimaplib.STOP_WAIT_SERVER_PUSH:
                return False
            if any(CHANGE.match(bytes(line)) for line in batch):
                return True
        return False

    async def _end_idle(self, client: aioimaplib.IMAP4, idle: asyncio.Future[Any]) -> None:
        if self._connection_lost:
            idle.cancel()
            return
        if client.has_pending_idle():
            client.idle_done()
        await asyncio.wait_for(idle, IDLE_DONE_TIMEOUT)


def _drain(queue: asyncio.Queue[Any]) -> None:
    while not queue.empty():
        queue.get_nowait()


def _lines(response: aioimaplib.Response) -> list[bytes]:
    return [line for line in response.lines if isinstance(line, bytes)]


def _text(response: aioimaplib.Response) -> str:
    lines = _lines(response)
    return lines[-1].decode("utf-8", "replace") if lines else ""


def _search_lines(pattern: re.Pattern[bytes], response: aioimaplib.Response) -> bytes | None:
    for line in _lines(response):
        match = pattern.search(line)
        if match:
            return match.group(1)
    return None


def _literal_for_uid(lines: list[Any], uid: int) -> bytes | None:
    """The ``BODY[]`` literal of the FETCH response whose UID is ``uid``.

    aioimaplib gives ``b"n FETCH (UID u BODY[] {size}"``, then the literal as a
    bytearray, then the rest of the response (``b")"`` or ``b" UID u)"``).
    """
    for index, line in enumerate(lines[:-1]):
        if not isinstance(line, bytes):
            continue
        header = BODY_LITERAL.search(line)
        literal = lines[index + 1]
        if header is None or not isinstance(literal, bytearray):
            continue
        if len(literal) != int(header.group(1)):
            continue
        trailer = lines[index + 2] if index + 2 < len(lines) else b""
        found = FETCH_UID.search(line) or FETCH_UID.search(bytes(trailer))
        if found and int(found.group(1)) == uid:
            return bytes(literal)
    return None


def _quote(folder: str) -> str:
    """An IMAP quoted string (RFC 3501 §4.3) for folder names with spaces."""
    escaped = folder.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


async def probe(mailbox: MailboxSection, tls_context: ssl.SSLContext, password: str) -> str:
    """Connect, authenticate, select the folder; describe it (for ``mssbridge check``)."""
    session = ImapMailbox(mailbox, tls_context, password)
    await session.connect()
    try:
        uid_validity = await session.select()
        pending = await session.new_messages(0)
        idle = "IDLE" if session._require().has_capability("IDLE") else "no IDLE"
    finally:
        await session.close()
    return (
        f"{session.peer}: {mailbox.imap.security}, auth {mailbox.auth.method}, folder "
        f"{mailbox.imap.folder!r} UIDVALIDITY {uid_validity}, {len(pending)} message(s), {idle}"
    )


async def _push_or_wake(
    client: aioimaplib.IMAP4, timeout: float, wake: asyncio.Event | None
) -> Any:
    """The next server push during IDLE, or None as soon as ``wake`` is set."""
    if wake is None:
        return await client.wait_server_push(timeout=timeout)
    push = asyncio.ensure_future(client.wait_server_push(timeout=timeout))
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait((push, woken), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        push.cancel()
        raise
    finally:
        woken.cancel()
    if not push.done():
        # A push lost to this cancellation is harmless: the caller reads the mailbox next.
        push.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await push
        return None
    return push.result()
