"""Plain data shared by the pure conversion code and the flows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Attachment:
    """A file carried by a chat message or a mail."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class MailThread:
    """Where an outbound mail sits in its thread (RFC 5322 §3.6.4)."""

    subject: str
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutboundMail:
    """Everything needed to build one MIME message from the chat side."""

    message_id: str
    from_address: str
    from_name: str
    to: tuple[str, ...]
    date: datetime
    thread: MailThread
    text: str
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    extra_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ChatText:
    """The text of a Matrix message as the bridge relays it."""

    body: str
    html: str | None = None


@dataclass(frozen=True)
class InboundMail:
    """A parsed mail ready to be posted in Matrix: sender, threading keys, clean text, files."""

    message_id: str | None
    sender_address: str
    sender_name: str
    subject: str
    date: datetime | None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    text: str = ""
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    auto_submitted: bool = False
    # In a delivery or read report: the Message-ID(s) of the original message it is about.
    reported_ids: tuple[str, ...] = ()
    recipients: tuple[str, ...] = field(default_factory=tuple)
