"""Gateway mode's SMTP server (aiosmtpd): STARTTLS, client certificates, limits, store first.

The server speaks the protocol and enforces the transport rules; every decision about a
sender, a recipient or storing a mail belongs to a :class:`GatewayPolicy` (the flow).
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import functools
import logging
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session, login_always_fail

from mssbridge.config import Settings
from mssbridge.mail import smtp_replies as replies
from mssbridge.mail.smtp_data import CRLF, DataReader, DataVerdict
from mssbridge.security.peer_dn import Dn, certificate_dn
from mssbridge.security.tls import refusal_reason

log = logging.getLogger("mssbridge.smtp_in")

# aiosmtpd logs every command line (addresses included) at INFO under this name.
AIOSMTPD_LOGGER = "mail.log"
# Past this many bytes after DATA the peer is cut off: twice the limit is plenty to
# read a message that was announced smaller than it is.
RUNAWAY_FACTOR = 2
# Seconds between two re-armings of the data timeout while a message is read.
DATA_TIMER_STEP = 1.0
_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.:_\[\]-]")
# A path aiosmtpd's parser (``email``'s header parser) reads exactly as this does: a
# dot-atom local part at a domain of letters, digits and hyphens, or the null path ``<>``;
# then nothing, or one space and the parameters as sent. Anything else is left to it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(
    rf"<((?:{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)?)>"
    r"(?: (?!\()([!-~][ -~]*))?"
)
_DATA_REPLIES = {
    DataVerdict.TOO_LARGE: replies.REPLY_TOO_LARGE,
    DataVerdict.LINE_TOO_LONG: replies.REPLY_LINE_TOO_LONG,
    DataVerdict.BARE_LINE_ENDING: replies.REPLY_BARE_LINE_ENDING,
}


class GatewayPolicy(Protocol):
    """What the server asks at each step; a returned reply string is a refusal."""

    async def check_sender(
        self, sender: str, subject: Dn | None, subject_text: str, peer: str
    ) -> str | None: ...

    def check_recipient(self, address: str, peer: str) -> tuple[str | None, str | None]: ...

    async def deliver(
        self, sender: str, users: list[str], raw: bytes, trace: bytes, peer: str
    ) -> str: ...


@dataclass(frozen=True)
class ServerLimits:
    """The protocol limits of ``[gateway]`` and ``limits.max_message_size``."""

    max_message_size: int = 10_000_000
    max_recipients: int = 50
    max_sessions_per_peer: int = 10
    max_messages_per_session: int = 100
    command_timeout: float = 300.0
    data_timeout: float = 180.0
    max_line_length: int = 998
    max_command_length: int = 512
    require_tls: bool = True  # false: loopback benchmarks and tests only (config.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        gateway = settings.gateway
        return cls(
            max_message_size=settings.limits.max_message_size,
            max_recipients=gateway.max_recipients,
            max_sessions_per_peer=gateway.max_sessions_per_peer,
            max_messages_per_session=gateway.max_messages_per_session,
            command_timeout=gateway.command_timeout,
            data_timeout=gateway.data_timeout,
            max_line_length=gateway.max_line_length,
            max_command_length=gateway.max_command_length,
            require_tls=gateway.require_tls,
        )

    def call_limits(self) -> dict[str, int]:
        """How often a session may send each command (aiosmtpd answers 421 past it)."""
        messages = self.max_messages_per_session
        return {
            "MAIL": messages,
            "DATA": messages,
            "RCPT": messages * self.max_recipients,
            "RSET": messages + 10,
            "*": 20,
        }


class PeerSessions:
    """Open sessions per peer address, to refuse one more than ``limit`` with 421."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: collections.Counter[str] = collections.Counter()

    def admit(self, address: str) -> bool:
        if self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def count(self, address: str) -> int:
        return self._open[address]


class GatewaySession(Session):
    """aiosmtpd's session plus what the TLS handshake told about the peer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.cert_dn: Dn | None = None
        self.cert_subject = ""
        self.tls_version = ""
        self.cipher = ""


class GatewayEnvelope(Envelope):
    """aiosmtpd's envelope plus the Matrix users its recipients map to."""

    def __init__(self) -> None:
        super().__init__()
        self.users: list[str] = []


def peer_name(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def peer_address(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def trace_header(
    helo: str, address: str, hostname: str, tls_version: str, cipher: str, now: float
) -> bytes:
    """The Received: line the server prepends (RFC 5321 §4.4, ESMTPS per RFC 3848).

    No ``tls_version``: a clear-text session (``require_tls = false``), said as ESMTP.
    """
    helo = _HELO_UNSAFE.sub("", helo)[:255] or "unknown"
    date = email.utils.formatdate(now, usegmt=True)
    if tls_version:
        how = f"ESMTPS\r\n\t({tls_version} {cipher}, client certificate verified)"
    else:
        how = "ESMTP"
    line = f"Received: from {helo} ({address})\r\n\tby {hostname} (mssbridge) with {how}"
    line += f"; {date}\r\n"
    return line.encode("ascii", "replace")


def simple_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) of a plain ``MAIL FROM``/``RCPT TO`` argument, as aiosmtpd's
    parser would return them; None for any other form, which is left to that parser."""
    match = _SIMPLE_PATH.fullmatch(arg)
    if match is None:
        return None
    address, parameters = match.group(1), match.group(2) or ""
    if not address:  # the parser leaves the space before the null path's parameters
        return "<>", f" {parameters}" if parameters else ""
    return address, parameters


def _mail_size_parameter(options: Sequence[str]) -> int | None:
    for option in options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


class GatewayHandler:
    """aiosmtpd hooks: each step is checked here or by the policy, then answered."""

    def __init__(
        self,
        policy: GatewayPolicy,
        limits: ServerLimits,
        refused: Callable[[str], None] = lambda code: None,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.refused = refused

    def _refuse(self, reply: str) -> str:
        self.refused(replies.code_of(reply))
        return reply

    @functools.cached_property
    def hooks(self) -> dict[str, Callable[..., object]]:
        """aiosmtpd's table of ``handle_*`` hooks, looked up once, not per connection."""
        return {
            name.removeprefix("handle_"): getattr(self, name)
            for name in dir(self)
            if name.startswith("handle_")
        }

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # No AUTH: peers authenticate with their certificate. SIZE is announced here so
        # that this server, not aiosmtpd, answers the SIZE parameter and the data.
        kept = [line for line in lines if not line[4:].startswith(("AUTH", "HELP"))]
        return [
            *kept,
            f"250-SIZE {self.limits.max_message_size}",
            "250 ENHANCEDSTATUSCODES",
        ]

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        """After the handshake (a failed one never gets here): note who the peer is."""
        assert isinstance(session, GatewaySession)
        extra = session.ssl or {}
        ssl_object = extra.get("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        session.tls_version = ssl_object.version() or "" if ssl_object is not None else ""
        cipher = extra.get("cipher")
        session.cipher = cipher[0] if cipher else ""
        if der:
            try:
                session.cert_dn, session.cert_subject = certificate_dn(der)
            except ValueError:  # OpenSSL verified it, but it cannot be parsed here
                log.warning(
                    "gateway: %s certificate unreadable; treated as none", peer_name(session)
                )
        log.info(
            "gateway: %s TLS %s %s, client certificate %s",
            peer_name(session),
            session.tls_version,
            session.cipher,
            session.cert_subject or "none",
        )
        return True

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        assert isinstance(session, GatewaySession)
        peer = peer_name(session)
        if session.ssl is None and self.limits.require_tls:
            log.warning("gateway: refused %s: MAIL before STARTTLS", peer)
            return self._refuse(replies.REPLY_STARTTLS_REQUIRED)
        if session.ssl is not None and session.cert_dn is None:
            log.warning("gateway: refused %s: no client certificate presented", peer)
            return self._refuse(replies.REPLY_CERT_REQUIRED)
        declared = _mail_size_parameter(mail_options)
        if declared is not None and declared > self.limits.max_message_size:
            log.warning("gateway: refused %s: announced size %d over the limit", peer, declared)
            return self._refuse(replies.REPLY_TOO_LARGE)
        refusal = await self.policy.check_sender(
            address, session.cert_dn, session.cert_subject, peer
        )
        if refusal is not None:
            return self._refuse(refusal)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.REPLY_SENDER_OK

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        assert isinstance(envelope, GatewayEnvelope)
        peer = peer_name(session)
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            log.warning("gateway: %s over %d recipients", peer, self.limits.max_recipients)
            return self._refuse(replies.REPLY_TOO_MANY_RECIPIENTS)
        refusal, user = self.policy.check_recipient(address, peer)
        if refusal is not None or user is None:
            return self._refuse(refusal or replies.REPLY_UNKNOWN_RECIPIENT)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if user not in envelope.users:
            envelope.users.append(user)
        return replies.REPLY_RECIPIENT_OK

    async def handle_VRFY(
        self, server: SMTP, session: Session, envelope: Envelope, address: str
    ) -> str:
        return replies.REPLY_VRFY


class GatewaySMTP(SMTP):
    """aiosmtpd's protocol with this gateway's limits, and its own DATA reading."""

    def __init__(
        self,
        handler: GatewayHandler,
        *,
        sessions: PeerSessions,
        tls_context: ssl.SSLContext,
        hostname: str,
        clock: Callable[[], float] = time.time,
        on_closed: Callable[[GatewaySMTP], None] = lambda protocol: None,
    ) -> None:
        limits = handler.limits
        # Instance values, read by aiosmtpd's constructor: the stream limit is a data line
        # (RFC 5321 §4.5.3.1.6: 998 octets) with its CRLF and a transparency dot.
        self.line_length_limit = limits.max_line_length + 3
        self.command_size_limit = limits.max_command_length
        self.command_size_limits = collections.defaultdict(lambda: limits.max_command_length)
        self._lean_init(handler, tls_context, hostname, asyncio.get_running_loop())
        self.gateway = handler
        self.sessions = sessions
        self._data_timer_armed = 0.0  # loop time the data timeout was last re-armed
        self.clock = clock
        self.on_closed = on_closed

    @staticmethod
    def aiosmtpd_options(limits: ServerLimits) -> dict[str, object]:
        """The options aiosmtpd's own constructor would be given (see :meth:`_lean_init`)."""
        return {
            "data_size_limit": None,  # announced and enforced by this class (552 5.3.4)
            "ident": replies.REPLY_GREETING_IDENT,
            "require_starttls": False,  # MAIL answers 530 5.7.0 itself, with the enhanced code
            "timeout": limits.command_timeout,
            "auth_require_tls": True,
            "auth_exclude_mechanism": ("LOGIN", "PLAIN"),
            "command_call_limit": limits.call_limits(),
        }

    def _lean_init(
        self,
        handler: GatewayHandler,
        tls_context: ssl.SSLContext,
        hostname: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """aiosmtpd's constructor with :meth:`aiosmtpd_options`, minus its per-connection
        inspection of the handler and of this class (``inspect.getmembers``, ``dir``), which
        cost more CPU than the rest of a small mail's session: the tables it builds are the
        same for every connection. tests/unit/test_smtp_lean_init.py checks both agree."""
        options = self.aiosmtpd_options(handler.limits)
        call_limits = options["command_call_limit"]
        assert isinstance(call_limits, dict)
        self.__ident__ = replies.REPLY_GREETING_IDENT
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = None
        self.enable_SMTPUTF8 = False
        self._decode_data = False
        self.hostname = hostname
        self.tls_context = tls_context
        self.require_starttls = False
        self._timeout_duration = handler.limits.command_timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = login_always_fail
        self._auth_required = False
        self._auth_methods = {}  # LOGIN and PLAIN excluded, the handler has no others
        self._handle_hooks = handler.hooks
        self._ehlo_hook_ver = "new"
        self._smtp_methods = {name: getattr(self, f"smtp_{name}") for name in _commands(type(self))}
        self._enforce_call_limit = True
        self._call_limit_base = call_limits
        self._call_limit_default = call_limits["*"]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parsing, without ``email``'s header parser for plain paths."""
        simple = simple_path(arg)
        if simple is None:
            return super()._getaddr(arg)
        return simple

    def connection_lost(self, error: Exception | None) -> None:
        # Called once for the TCP connection, also after STARTTLS (aiosmtpd closes both).
        super().connection_lost(error)
        self.on_closed(self)

    async def handle_exception(self, error: Exception) -> str:
        """A failed handshake (aiosmtpd then hangs up) or an unexpected error (451 4.3.0)."""
        peer = peer_name(self.session) if self.session is not None else "?"
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ssl.SSLError):
            log.warning("gateway: TLS handshake with %s refused: %s", peer, refusal_reason(cause))
            self.gateway.refused("tls")
        else:
            log.error("gateway: SMTP session with %s failed (%s)", peer, type(error).__name__)
        return replies.REPLY_STORE_FAILED

    def _create_session(self) -> Session:
        return GatewaySession(self.loop)

    def _create_envelope(self) -> Envelope:
        return GatewayEnvelope()

    async def _handle_client(self) -> None:
        assert self.session is not None
        address = peer_address(self.session)
        if not self.sessions.admit(address):
            log.warning("gateway: refused %s: over %d sessions", address, self.sessions.limit)
            self.gateway.refused(replies.code_of(replies.REPLY_TOO_MANY_SESSIONS))
            await self.push(replies.REPLY_TOO_MANY_SESSIONS)
            assert self.transport is not None
            self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            self.sessions.release(address)

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        envelope = self.envelope
        session = self.session
        assert isinstance(envelope, GatewayEnvelope) and isinstance(session, GatewaySession)
        if not envelope.rcpt_tos:
            await self.push(replies.REPLY_NEED_RECIPIENTS)
            return
        if arg:
            await self.push(replies.REPLY_DATA_SYNTAX)
            return
        limits = self.gateway.limits
        await self.push(replies.REPLY_START_DATA)
        self._data_timer_armed = -DATA_TIMER_STEP
        reader = DataReader(limits.max_message_size, limits.max_line_length)
        runaway = RUNAWAY_FACTOR * limits.max_message_size + self.line_length_limit
        while not await self._read_piece(reader):
            if reader.received > runaway:
                log.warning(
                    "gateway: %s sent over %d bytes of data; cut off", peer_name(session), runaway
                )
                await self._finish_data(replies.REPLY_TOO_LARGE)
                assert self.transport is not None
                self.transport.close()
                return
        self._reset_timeout()
        if reader.verdict is not DataVerdict.OK:
            log.warning(
                "gateway: refused data from %s: %s", peer_name(session), reader.verdict.value
            )
            await self._finish_data(_DATA_REPLIES[reader.verdict])
            return
        trace = trace_header(
            session.host_name or "",
            peer_address(session),
            self.hostname,
            session.tls_version,
            session.cipher,
            self.clock(),
        )
        sender, users = envelope.mail_from or "", list(envelope.users)
        self._set_post_data_state()  # whatever happens next, the transaction is over
        reply = await self.gateway.policy.deliver(
            sender, users, reader.message(), trace, peer_name(session)
        )
        if not reply.startswith("2"):
            self.gateway.refused(replies.code_of(reply))
        await self.push(reply)

    async def _read_piece(self, reader: DataReader) -> bool:
        """Read one line (or a fragment of an over-long one) into ``reader``; True at the end."""
        # The data timeout counts from the last line read. Re-arming the timer for each line
        # costs a timer handle per line; re-arming it at most every DATA_TIMER_STEP seconds,
        # for that much longer, still leaves the peer at least data_timeout per line.
        now = self.loop.time()
        if now - self._data_timer_armed >= DATA_TIMER_STEP:
            self._reset_timeout(self.gateway.limits.data_timeout + DATA_TIMER_STEP)
            self._data_timer_armed = now
        try:
            piece = await self._reader.readuntil(CRLF)
        except asyncio.LimitOverrunError as exc:
            piece = await self._reader.read(exc.consumed)
        return reader.feed(piece)

    async def _finish_data(self, reply: str) -> None:
        self.gateway.refused(replies.code_of(reply))
        self._set_post_data_state()
        await self.push(reply)


_COMMANDS: dict[type[SMTP], tuple[str, ...]] = {}


def _commands(protocol: type[SMTP]) -> tuple[str, ...]:
    """The commands a protocol class answers (its ``smtp_*`` methods), found once."""
    found = _COMMANDS.get(protocol)
    if found is None:
        names = (name for name in dir(protocol) if name.startswith("smtp_"))
        found = _COMMANDS[protocol] = tuple(name.removeprefix("smtp_") for name in names)
    return found


def split_listen(entry: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` as (host, port)."""
    host, _, port = entry.rpartition(":")
    return host.strip("[]"), int(port)


class GatewayServer:
    """The listening sockets; each connection gets the TLS context in force when it opens."""

    def __init__(
        self,
        handler: GatewayHandler,
        tls_context: Callable[[], ssl.SSLContext],
        hostname: str,
        listen: Sequence[str],
        *,
        reuse_port: bool = False,
        sessions: PeerSessions | None = None,
    ) -> None:
        self.handler = handler
        self.tls_context = tls_context
        self.hostname = hostname
        self.listen = tuple(listen)
        self.reuse_port = reuse_port  # several processes accept on the same addresses
        # Given when several processes share the per-peer cap (gateway.processes).
        self.sessions = sessions or PeerSessions(handler.limits.max_sessions_per_peer)
        self._servers: list[asyncio.Server] = []
        self._protocols: set[GatewaySMTP] = set()

    def _protocol(self) -> GatewaySMTP:
        protocol = GatewaySMTP(
            self.handler,
            sessions=self.sessions,
            tls_context=self.tls_context(),
            hostname=self.hostname,
            on_closed=self._protocols.discard,
        )
        self._protocols.add(protocol)
        return protocol

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the server listens (the real port when the config asked for port 0)."""
        found = []
        for server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                found.append((str(host), int(port)))
        return found

    async def start(self) -> None:
        logging.getLogger(AIOSMTPD_LOGGER).setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        try:
            for entry in self.listen:
                host, port = split_listen(entry)
                server = await loop.create_server(
                    self._protocol, host, port, reuse_address=True, reuse_port=self.reuse_port
                )
                self._servers.append(server)
        except OSError:
            await self.stop()
            raise
        log.info("gateway: SMTP listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))

    async def stop(self) -> None:
        """Stop listening and close the sessions; a mail not yet answered 250 is not stored
        as far as its sender knows, and will be sent again."""
        for server in self._servers:
            server.close()
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                protocol.transport.close()
        self._protocols.clear()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
