"""Raw mail → InboundMail (sender, threading ids, clean text without history, files) → Matrix.

Choices:
- quoted history is removed (the room already shows it), signatures are kept (they carry the
  correspondent's phone and identifiers); forwarded mails (subject ``TR:``, ``Fwd:`` …) keep
  everything, since the forwarded text is the message;
- when the plain text had history removed but the HTML has no marker telling where its history
  starts, the HTML is dropped and the room gets the clean plain text;
- S/MIME and PGP signature parts are not relayed as files; attached mails become ``.eml`` files;
- a mail with neither text nor subject to show yields no text message (:func:`chat_content`
  returns None), only its files.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import errors as email_errors
from email import policy
from email.feedparser import BytesFeedParser
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from mssbridge.convert.address import normalize_address
from mssbridge.convert.filenames import clean_content_type, safe_filename
from mssbridge.convert.headers import (
    clean_header_text,
    decode_bytes,
    decode_words,
    raw_header_text,
)
from mssbridge.convert.html import (
    has_visible_text,
    html_to_text,
    sanitize_html,
    strip_quoted_html,
    text_to_html,
)
from mssbridge.convert.threading import parse_message_ids
from mssbridge.errors import MalformedInput
from mssbridge.model import Attachment, InboundMail

NOT_A_MAIL = "Le courriel reçu est illisible : ce n'est pas un message valide."
NO_SENDER = "Le courriel reçu n'indique pas d'expéditeur valide."

MAX_PART_DEPTH = 20
MAX_SUBJECT = 500
MAX_PARSED_HEADER = 8192  # characters of a header value given to the email header registry
FEED_PIECE = 64 * 1024  # bytes of mail given to the parser at a time


class _BoundedPolicy(policy.EmailPolicy):
    """``policy.default`` made safe for hostile headers.

    The header registry takes seconds on a value of 100 KB and parses again on every access,
    so values are cut at MAX_PARSED_HEADER first (MIME headers are far shorter); and attached
    mails are written back with their headers as received, never refolded (refolding parses).
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if isinstance(value, str) and len(value) > MAX_PARSED_HEADER:
            value = value[:MAX_PARSED_HEADER]
        return super().header_fetch_parse(name, value)


PARSE_POLICY = _BoundedPolicy(refold_source="none")
AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list"})
REPORT_TYPES = frozenset(
    {
        "multipart/report",
        "message/delivery-status",
        "message/disposition-notification",
        "message/global-delivery-status",
        "message/global-disposition-notification",
    }
)
SIGNATURE_TYPES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)
ATTACHED_MAIL_TYPES = frozenset({"message/rfc822", "message/global"})
# Parts of a delivery or read report that name the original message (RFC 3462, 3464, 8098).
REPORTED_HEADER_TYPES = frozenset(
    {"text/rfc822-headers", "message/rfc822-headers", "message/disposition-notification"}
)
_REPORTED_ID = re.compile(rb"^(?:original-)?message-id\s*:\s*(<[^>\r\n]{1,990}>)", re.I | re.M)

# The email package documents that parsing never raises, but its lazy accessors can on hostile
# input; every part is read through these.
_PART_ERRORS = (
    email_errors.MessageError,
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    UnicodeError,
    RecursionError,
)
_FORWARD_SUBJECT = re.compile(r"^\s*(?:tr|fwd?|wg|transf|rv)\s*:", re.IGNORECASE)
_ATTRIBUTION_START = re.compile(r"^\s*(?:le|on|am|el|il)\b", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(r"(?:a\s+écrit|a\s+ecrit|wrote|schrieb)\s*:\s*$", re.IGNORECASE)
_ATTRIBUTION_TAIL = re.compile(r"(?:écrit|ecrit|wrote)\s*:\s*$", re.IGNORECASE)
_SEPARATOR = re.compile(
    r"^\s*-{3,}\s*(?:original message|message d'origine|message original|mail original"
    r"|courriel original)\s*-{3,}\s*$",
    re.IGNORECASE,
)
_COMMENT = re.compile(r"\([^()]*\)")  # RFC 5322 comments, not nested
_UNDERSCORES = re.compile(r"^\s*_{8,}\s*$")
_FROM_LINE = re.compile(r"^\s*\*?(?:de|from)\s*\*?\s*:\s*\*?\s*\S", re.IGNORECASE)
_HEADER_LINE = re.compile(
    r"^\s*\*?(?:envoyé|envoye|sent|date|à|to|cc|objet|subject)\s*\*?\s*:", re.IGNORECASE
)


@dataclass
class _Body:
    """What the MIME walk collects."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    report: bool = False
    reported_ids: list[str] = field(default_factory=list)


def parse_mail(raw: bytes) -> InboundMail:
    """Parse raw mail bytes; raise MalformedInput only when there is no message or no sender."""
    try:
        message = _parse(raw)
        headers = _raw_headers(message)
    except _PART_ERRORS as exc:
        raise MalformedInput(NOT_A_MAIL, code="5.6.0", detail=type(exc).__name__) from None
    if not headers:
        raise MalformedInput(NOT_A_MAIL, code="5.6.0", detail="no header")
    sender = _first_address(headers, "from") or _first_address(headers, "sender")
    if sender is None:
        raise MalformedInput(NO_SENDER, code="5.1.7", detail="no usable From or Sender")
    subject = clean_header_text(decode_words(_header(headers, "subject")), MAX_SUBJECT)
    body = _walk(message)
    text, html = _clean_body(body, forwarded=bool(_FORWARD_SUBJECT.match(subject)))
    message_ids = parse_message_ids(_header(headers, "message-id"))
    return InboundMail(
        message_id=message_ids[0] if message_ids else None,
        sender_address=sender[1],
        sender_name=sender[0],
        subject=subject,
        date=_date(_header(headers, "date")),
        in_reply_to=parse_message_ids(_header(headers, "in-reply-to")),
        references=parse_message_ids(_header(headers, "references")),
        text=text,
        html=html,
        attachments=tuple(body.attachments),
        auto_submitted=body.report or _is_auto_submitted(headers, message),
        reported_ids=tuple(dict.fromkeys(body.reported_ids)),
        recipients=_recipients(headers),
    )


def _parse(raw: bytes) -> Message:
    """The parsed mail, fed to the parser in pieces.

    ``BytesParser.parsebytes`` decodes the whole mail to a string and copies that into a
    StringIO (four bytes a character): about five times the mail at once. Fed piece by piece
    (as the parser reads a file), the same message is built holding one piece of text.
    """
    parser = BytesFeedParser(policy=PARSE_POLICY)
    for start in range(0, len(raw), FEED_PIECE):
        parser.feed(raw[start : start + FEED_PIECE])
    return parser.close()


def chat_content(mail: InboundMail, show_subject: bool | None = None) -> dict[str, Any] | None:
    """Return the ``m.room.message`` content for a mail's text, or None when nothing to show.

    The subject is shown once, in bold, on the first mail of a thread: by default when the
    mail refers to no earlier one (no In-Reply-To nor References); ``show_subject`` overrides.
    """
    if show_subject is None:
        show_subject = not mail.in_reply_to and not mail.references
    subject = mail.subject if show_subject else ""
    text = mail.text.strip("\n")
    if not subject and not text.strip():
        return None
    content: dict[str, Any] = {"msgtype": "m.text", "body": _join(subject, text)}
    if subject or mail.html:
        html_body = mail.html or (text_to_html(text) if text else "")
        heading = f"<p><strong>{text_to_html(subject)}</strong></p>" if subject else ""
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = heading + html_body
    content["m.mentions"] = {}  # relayed text never pings anyone
    return content


def attachment_content(att: Attachment, mxc_url: str) -> dict[str, Any]:
    """Return the ``m.room.message`` content for a relayed file (image, video, audio, file)."""
    if not mxc_url.startswith("mxc://"):
        raise ValueError(f"not an mxc:// URI: {mxc_url!r}")
    major = att.content_type.split("/", 1)[0]
    msgtype = {"image": "m.image", "video": "m.video", "audio": "m.audio"}.get(major, "m.file")
    return {
        "msgtype": msgtype,
        "body": att.filename,
        "filename": att.filename,
        "url": mxc_url,
        "info": {"mimetype": att.content_type, "size": len(att.data)},
        "m.mentions": {},
    }


def strip_quoted_text(text: str) -> str:
    """Remove the quoted history of a plain-text reply; never return less than nothing.

    Cuts at the first ``-----Original Message-----``-style separator or Outlook header block
    (``De : … Envoyé : … À : … Objet : …``), then drops a trailing ``>``-quoted block with its
    ``Le … a écrit :`` / ``On … wrote:`` attribution. Quotes followed by new text are kept.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    end = _hard_marker(lines)
    end = _trailing_quote_start(lines[:end])
    result = "\n".join(lines[:end]).rstrip()
    return result if result.strip() else text.rstrip()


def _raw_headers(message: Message) -> list[tuple[str, str]]:
    return [(name.lower(), raw_header_text(value)) for name, value in message.raw_items()]


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return " ".join(value for key, value in headers if key == name)


def _addresses(headers: list[tuple[str, str]], name: str) -> Iterator[tuple[str, str]]:
    values = [value for key, value in headers if key == name]
    for display, address in getaddresses(values):
        try:
            normalized = normalize_address(address)
        except ValueError:
            continue
        yield clean_header_text(decode_words(display)), normalized


def _first_address(headers: list[tuple[str, str]], name: str) -> tuple[str, str] | None:
    return next(_addresses(headers, name), None)


def _recipients(headers: list[tuple[str, str]]) -> tuple[str, ...]:
    found = [address for key in ("to", "cc") for _, address in _addresses(headers, key)]
    return tuple(dict.fromkeys(found))


def _date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _is_auto_submitted(headers: list[tuple[str, str]], message: Message) -> bool:
    value = _COMMENT.sub(" ", _header(headers, "auto-submitted"))
    auto = value.split(";", 1)[0].strip().lower()
    if auto and auto != "no":
        return True
    if _header(headers, "precedence").strip().lower() in AUTO_PRECEDENCE:
        return True
    if any(key in {"x-autoreply", "x-autorespond"} for key, _ in headers):
        return True
    return _content_type(message) in REPORT_TYPES


def _walk(message: Message) -> _Body:
    body = _Body()
    for part in _leaves(message, 0):
        try:
            _collect(part, body)
        except _PART_ERRORS:
            continue  # one unreadable part must not lose the rest of the mail
    return body


def _leaves(part: Message, depth: int) -> Iterator[Message]:
    content_type = _content_type(part)
    if depth > MAX_PART_DEPTH:
        return
    if content_type.startswith("multipart/") and part.is_multipart():
        payload = part.get_payload()
        for child in payload if isinstance(payload, list) else ():
            if isinstance(child, Message):
                yield from _leaves(child, depth + 1)
        return
    yield part


def _reported_ids(part: Message) -> list[str]:
    """Message-IDs of the original message that a report part quotes."""
    try:
        raw = part.as_bytes()
    except _PART_ERRORS:
        return []
    return [m.decode("ascii", "replace") for m in _REPORTED_ID.findall(raw)]


def _collect(part: Message, body: _Body) -> None:
    content_type = _content_type(part)
    if content_type in REPORTED_HEADER_TYPES:
        body.report = True
        body.reported_ids.extend(_reported_ids(part))
        return
    if body.report and content_type in ATTACHED_MAIL_TYPES:
        body.reported_ids.extend(_reported_ids(part)[:1])  # the returned original's own id
    if content_type in REPORT_TYPES:
        body.report = True
        return
    if content_type in SIGNATURE_TYPES:
        return
    filename = part.get_filename()
    disposition = part.get_content_disposition()
    if content_type in {"text/plain", "text/html"} and not filename and disposition != "attachment":
        target = body.plain if content_type == "text/plain" else body.html
        target.append(_part_text(part))
        return
    data = _part_bytes(part, content_type)
    if data is None:
        return
    name = safe_filename(decode_words(filename or ""), content_type, len(body.attachments) + 1)
    body.attachments.append(Attachment(filename=name, content_type=content_type, data=data))


def _content_type(part: Message) -> str:
    try:
        return clean_content_type(part.get_content_type())
    except _PART_ERRORS:
        return "application/octet-stream"


def _part_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    try:
        charset = part.get_content_charset()
    except _PART_ERRORS:
        charset = None
    return decode_bytes(data, charset)


def _part_bytes(part: Message, content_type: str) -> bytes | None:
    if content_type in ATTACHED_MAIL_TYPES:
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        return inner.as_bytes() if isinstance(inner, Message) else None
    if content_type.startswith("message/"):
        return None
    data = _decoded(part)
    return data if isinstance(data, bytes) else None


def _decoded(part: Message) -> Any:
    """``part.get_payload(decode=True)``, holding less at once for a well-formed base64 file.

    The email package splits the encoded text into lines and joins them again, about three
    times the text besides the result; removing the line ends gives the same bytes. Anything
    else (other encodings, bad padding or characters) is the email package's, with its defects.
    """
    payload = part.get_payload()
    cte = str(part.get("content-transfer-encoding", "")).lower()
    if cte == "base64" and isinstance(payload, str) and payload.isascii():
        encoded = payload.encode("ascii").translate(None, b"\r\n")
        if len(encoded) % 4 == 0:
            with contextlib.suppress(binascii.Error):
                return base64.b64decode(encoded, validate=True)
        del encoded
    return part.get_payload(decode=True)


def _clean_body(body: _Body, forwarded: bool) -> tuple[str, str | None]:
    plain = "\n".join(text.replace("\r\n", "\n").replace("\r", "\n") for text in body.plain)
    raw_html = "".join(body.html)
    html, html_cut = _clean_html(raw_html, keep_history=forwarded) if raw_html else (None, False)
    source = plain if plain.strip() else html_to_text(html or "")
    text = source.rstrip() if forwarded else strip_quoted_text(source)
    if html is not None and text != source.rstrip() and not html_cut:
        html = None  # the HTML still holds history we could not locate: show plain text only
    return text.strip("\n"), html


def _clean_html(raw_html: str, keep_history: bool) -> tuple[str | None, bool]:
    stripped, found = (raw_html, False) if keep_history else strip_quoted_html(raw_html)
    html = sanitize_html(stripped)
    if not has_visible_text(html):
        html, found = sanitize_html(raw_html), False
    return (html if has_visible_text(html) else None), found


def _hard_marker(lines: list[str]) -> int:
    for index, line in enumerate(lines):
        if _SEPARATOR.match(line) or _is_header_block(lines, index):
            return _start_of_separation(lines, index)
    return len(lines)


def _start_of_separation(lines: list[str], index: int) -> int:
    """Take the blank lines and Outlook's underscore rule before a marker with it."""
    while index > 0 and (not lines[index - 1].strip() or _UNDERSCORES.match(lines[index - 1])):
        index -= 1
    return index


def _is_header_block(lines: list[str], index: int) -> bool:
    if not _FROM_LINE.match(lines[index]):
        return False
    following = lines[index + 1 : index + 7]
    return sum(1 for line in following if _HEADER_LINE.match(line)) >= 2


def _trailing_quote_start(lines: list[str]) -> int:
    end = len(lines)
    while end > 0 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith(">")):
        end -= 1
    if not any(line.lstrip().startswith(">") for line in lines[end:]):
        return len(lines)
    return _attribution_start(lines, end)


def _attribution_start(lines: list[str], end: int) -> int:
    """Include the ``Le … a écrit :`` line (possibly wrapped over two lines) before a quote."""
    if end == 0 or not _ATTRIBUTION_TAIL.search(lines[end - 1]):
        return end
    if _ATTRIBUTION_START.match(lines[end - 1]):
        return end - 1
    previous = lines[end - 2].rstrip() if end > 1 else ""
    if _ATTRIBUTION_START.match(previous) and not previous.endswith((".", "!", "?")):
        return end - 2  # attribution wrapped over two lines
    return end - 1 if _ATTRIBUTION_END.search(lines[end - 1]) else end


def _join(subject: str, text: str) -> str:
    return f"{subject}\n\n{text}" if subject and text else subject or text
