"""Matrix message contents → relayed text and file references; OutboundMail → MIME message.

The bridge adds no header of its own to recognise its mail: its Message-IDs already are
(:func:`mssbridge.convert.threading.is_own_message_id`), and an extra header would only tell
the world which software relayed the mail. Humans wrote these mails, so no ``Auto-Submitted``.
Boundaries are derived from the Message-ID, so the same input always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from mssbridge.convert.address import normalize_address
from mssbridge.convert.filenames import clean_content_type, safe_filename
from mssbridge.convert.headers import clean_header_text, header_text
from mssbridge.convert.html import has_visible_text, sanitize_html
from mssbridge.convert.threading import parse_message_ids
from mssbridge.errors import MalformedInput, Rejected
from mssbridge.model import ChatText, OutboundMail

HTML_FORMAT = "org.matrix.custom.html"
TEXT_MSGTYPES = frozenset({"m.text", "m.notice", "m.emote"})
FILE_MSGTYPES = frozenset({"m.file", "m.image", "m.audio", "m.video"})
NO_SUBJECT = "(sans objet)"
MAX_DISPLAY_NAME = 100
MAX_SUBJECT = 250

UNREADABLE_MESSAGE = "Ce message Matrix est mal formé : il n'a pas été transmis."
ENCRYPTED_FILE = (
    "Ce fichier est chiffré de bout en bout : la passerelle MSSanté ne peut pas le transmettre."
)
INVALID_FILE = "Ce fichier Matrix n'a pas d'adresse valide : il n'a pas été transmis."

# Headers the message builder owns; extra headers may not set them (RFC 5322 §3.6 and MIME).
RESERVED_HEADERS = frozenset(
    {
        "from", "sender", "to", "cc", "bcc", "date", "message-id", "subject", "in-reply-to",
        "references", "mime-version", "content-type", "content-transfer-encoding",
        "content-disposition", "return-path", "received",
    }
)  # fmt: skip

_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 §2.2 ftext
_MXC_URL = re.compile(r"mxc://[A-Za-z0-9.:\[\]-]+/[A-Za-z0-9_-]+")
# JSON may carry lone UTF-16 surrogates (``"\\ud800"``); no UTF-8 encoder accepts them.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class MediaRef:
    """A file a Matrix message points to, to be downloaded and attached to the mail."""

    mxc_url: str
    filename: str
    mimetype: str
    size: int | None


def render_chat_content(content: Mapping[str, Any], sender_name: str = "") -> ChatText:
    """Return the text of an ``m.room.message`` content as the mail carries it.

    Edits use ``m.new_content``; reply fallbacks are stripped; emotes read ``* Name action``;
    for files the text is the caption, empty when there is none.
    """
    current = _effective_content(content)
    msgtype = _msgtype(current)
    body = current.get("body")
    if not isinstance(body, str):
        raise MalformedInput(UNREADABLE_MESSAGE, code="5.6.0", detail="body is not a string")
    body = _scrub(body)
    is_reply = _is_reply(current)
    text = _strip_reply_fallback(body) if is_reply else body
    html = _formatted_body(current)
    if msgtype in FILE_MSGTYPES:
        return _caption(current, text, html)
    if msgtype == "m.emote":
        name = clean_header_text(sender_name, MAX_DISPLAY_NAME)
        html = f"* {html_lib.escape(name)} {html}" if html else None
        text = f"* {name} {text}"
    return ChatText(body=text, html=html)


def attachment_ref(content: Mapping[str, Any]) -> MediaRef | None:
    """Return the file a file message (m.file, m.image, m.audio, m.video) carries, else None.

    Raises Rejected for end-to-end encrypted files (the bridge does not decrypt) and
    MalformedInput when the ``url`` is not an ``mxc://`` URI.
    """
    current = _effective_content(content)
    if _msgtype(current) not in FILE_MSGTYPES:
        return None
    if "file" in current:
        raise Rejected(ENCRYPTED_FILE, code="5.6.1", detail="encrypted file object")
    url = current.get("url")
    if not isinstance(url, str) or not _MXC_URL.fullmatch(url):
        raise MalformedInput(INVALID_FILE, code="5.6.0", detail="missing or invalid mxc url")
    info = current.get("info")
    info = info if isinstance(info, Mapping) else {}
    name = _file_name(current)
    mimetype = clean_content_type(info.get("mimetype"), name)
    return MediaRef(url, safe_filename(name, mimetype, 1), mimetype, _size(info.get("size")))


def build_message(mail: OutboundMail) -> EmailMessage:
    """Build the MIME message (SMTP policy: CRLF, UTF-8 text parts, RFC 2231 file names).

    Values the bridge computes itself (addresses, Message-IDs, extra headers) raise ValueError
    when invalid; values people typed (display name, subject, file names) are cleaned instead.
    """
    message = EmailMessage(policy=policy.SMTP)
    _set_headers(message, mail)
    message.set_content(_normalize_newlines(mail.text), cte="quoted-printable")
    html = sanitize_html(_scrub(mail.html)) if mail.html else ""
    if html:
        message.add_alternative(_html_document(html), subtype="html", cte="quoted-printable")
    for index, attachment in enumerate(mail.attachments, start=1):
        content_type = clean_content_type(attachment.content_type, attachment.filename)
        filename = safe_filename(attachment.filename, content_type, index)
        maintype, subtype = content_type.split("/", 1)
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=filename,
            params={"name": filename},
        )
    _finish_parts(message, mail.message_id)
    return message


def _effective_content(content: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(content, Mapping):
        raise MalformedInput(UNREADABLE_MESSAGE, code="5.6.0", detail="content is not an object")
    relation = content.get("m.relates_to")
    new_content = content.get("m.new_content")
    if (
        isinstance(relation, Mapping)
        and relation.get("rel_type") == "m.replace"
        and isinstance(new_content, Mapping)
    ):
        return new_content
    return content


def _msgtype(content: Mapping[str, Any]) -> str | None:
    """The msgtype when it is a string: JSON may put a list or an object there."""
    msgtype = content.get("msgtype")
    return msgtype if isinstance(msgtype, str) else None


def _is_reply(content: Mapping[str, Any]) -> bool:
    relation = content.get("m.relates_to")
    return isinstance(relation, Mapping) and isinstance(relation.get("m.in_reply_to"), Mapping)


def _strip_reply_fallback(body: str) -> str:
    """Drop the leading ``> `` lines and the blank line after them (Matrix reply fallback)."""
    lines = body.split("\n")
    index = 0
    while index < len(lines) and (lines[index].startswith("> ") or lines[index] == ">"):
        index += 1
    if index and index < len(lines) and not lines[index].strip():
        index += 1
    return "\n".join(lines[index:]) if index else body


def _formatted_body(content: Mapping[str, Any]) -> str | None:
    formatted = content.get("formatted_body")
    if content.get("format") != HTML_FORMAT or not isinstance(formatted, str):
        return None
    cleaned = sanitize_html(_scrub(formatted))
    return cleaned if has_visible_text(cleaned) else None


def _caption(content: Mapping[str, Any], text: str, html: str | None) -> ChatText:
    filename = content.get("filename")
    if isinstance(filename, str) and filename and filename != content.get("body"):
        return ChatText(body=text, html=html)
    return ChatText(body="")


def _size(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _file_name(content: Mapping[str, Any]) -> str:
    for key in ("filename", "body"):
        value = content.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _set_headers(message: EmailMessage, mail: OutboundMail) -> None:
    from_name = header_text(mail.from_name, MAX_DISPLAY_NAME)
    message["From"] = _address(mail.from_address, from_name)
    if not mail.to:
        raise ValueError("a mail needs at least one recipient")
    message["To"] = [_address(address) for address in mail.to]
    message["Subject"] = header_text(mail.thread.subject, MAX_SUBJECT) or NO_SUBJECT
    message["Date"] = format_datetime(_aware(mail.date))
    message["Message-ID"] = _message_id(mail.message_id)
    if mail.thread.in_reply_to:
        message["In-Reply-To"] = _message_id(mail.thread.in_reply_to)
    if mail.thread.references:
        message["References"] = " ".join(_message_id(ref) for ref in mail.thread.references)
    for name, value in mail.extra_headers:
        _check_extra_header(name, value)
        message[name] = value


def _address(address: str, display_name: str = "") -> Address:
    addr_spec = normalize_address(address)
    if not addr_spec.isascii():
        raise ValueError(f"non-ASCII address cannot be sent without SMTPUTF8: {addr_spec!r}")
    return Address(display_name=display_name, addr_spec=addr_spec)


def _message_id(value: str) -> str:
    ids = parse_message_ids(value)
    if len(ids) != 1 or ids[0] != value or not value.isascii():
        raise ValueError(f"not a single <id>: {value!r}")
    return value


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check_extra_header(name: str, value: str) -> None:
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    if name.lower() in RESERVED_HEADERS:
        raise ValueError(f"header {name!r} is set by the message builder")
    if any(unicodedata.category(char) == "Cc" and char != "\t" for char in value):
        raise ValueError(f"control character in header {name!r}")


def _scrub(text: str) -> str:
    """Replace lone surrogates with U+FFFD so the text can be encoded."""
    return _SURROGATE.sub("\ufffd", text)


def _normalize_newlines(text: str) -> str:
    return _scrub(text).replace("\r\n", "\n").replace("\r", "\n")


def _html_document(fragment: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        f"<body>\n{fragment}\n</body></html>\n"
    )


def _finish_parts(message: EmailMessage, message_id: str) -> None:
    """Give multiparts stable boundaries and drop MIME-Version from sub-parts."""
    seed = hashlib.sha256(message_id.encode("utf-8")).hexdigest()
    for depth, part in enumerate(message.walk()):
        if part is not message:
            del part["MIME-Version"]
        if part.is_multipart():
            # "=_" cannot occur in quoted-printable or base64 bodies, so it cannot clash.
            part.set_boundary(f"=_{seed[:24]}_{depth}")
