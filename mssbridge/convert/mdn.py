"""Read notifications the bridge sends: whether a mail asks for one, and the MDN itself.

The layout is the one the ANS describes for automatic processing (RFC 8098, RFC 6522): a
``multipart/report; report-type=disposition-notification`` with a human-readable text, the
``message/disposition-notification`` fields (``Reporting-UA``, ``Original-Recipient``,
``Final-Recipient``, ``Original-Message-ID``, ``Disposition: automatic-action/
MDN-sent-automatically; processed``), then the original mail. The bridge says *processed*:
the mail reached the conversation, which does not prove that a person read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import format_datetime, formataddr, getaddresses
from enum import StrEnum
from typing import cast

from mssbridge.convert.address import normalize_address
from mssbridge.convert.headers import header_text
from mssbridge.convert.threading import parse_message_ids

DISPOSITION = "automatic-action/MDN-sent-automatically; processed"
DOCUMENT_SUBJECT = re.compile(r"^XDM/1\.0/DDM\+", re.IGNORECASE)
SUBJECT_PREFIX = "Accusé de réception : "
DEFAULT_SUBJECT = "Accusé de réception"
HUMAN_TEXT = (
    "Votre message a été reçu par la messagerie instantanée de {name} et remis dans la "
    "conversation de ses destinataires.\n\n"
    "Cet accusé est envoyé automatiquement : il ne signifie pas que le message a déjà été lu.\n"
)
# Room left for the MDN's own parts when the original mail is returned in full.
REPORT_OVERHEAD = 16_384
XDM_NAME = "ihe_xdm.zip"
MAX_SUBJECT = 500
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # the end of the header block (RFC 5322 §2.1)


class NoMdn(StrEnum):
    """Why a mail gets no read notification (said in logs, never with an address)."""

    NOT_REQUESTED = "not requested"
    AUTOMATIC = "automatic mail or report"
    NO_MESSAGE_ID = "no Message-ID"
    SEVERAL_ADDRESSES = "several notification addresses"
    RETURN_PATH_DIFFERS = "notification address differs from Return-Path"
    OWN_ADDRESS = "the bridge's own address"


@dataclass(frozen=True)
class MdnRequest:
    """A mail's request for a read notification, checked against RFC 8098 §2.1."""

    notify_to: str
    original_message_id: str
    original_recipient: str  # the original's Original-Recipient field, "" when absent
    subject: str


@dataclass(frozen=True)
class MdnAnswer:
    """Everything the bridge's MDN carries besides the request itself."""

    message_id: str
    from_address: str
    from_name: str
    date: datetime
    reporting_ua: str  # "<domain>; mssbridge <version>"
    organisation: str  # named in the human-readable text
    max_size: int  # the original is returned in full only when the MDN stays under it
    extra_headers: tuple[tuple[str, str], ...] = ()


def mdn_request(raw: bytes, *, automatic: bool, own_address: str) -> MdnRequest | NoMdn:
    """Whether ``raw`` asks for a read notification that may be sent automatically.

    Never for a report or an automatic mail (loops), nor when the address differs from the
    ``Return-Path`` the delivering server recorded (RFC 8098 §2.1: it would need the user's
    consent, which an unattended bridge cannot ask for).
    """
    # The header block only: the parser would read a 10 MB body too, at five times its size.
    blank_line = _BLANK_LINE.search(raw)
    head = raw[: blank_line.end()] if blank_line else raw
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(head)
    requested = headers.get_all("disposition-notification-to") or []
    if not requested:
        return NoMdn.NOT_REQUESTED
    if automatic:
        return NoMdn.AUTOMATIC
    addresses = _addresses([str(v) for v in requested])
    if len(addresses) != 1:
        return NoMdn.SEVERAL_ADDRESSES
    target = addresses[0]
    if target.lower() == own_address.lower():
        return NoMdn.OWN_ADDRESS
    return_path = _addresses([str(v) for v in headers.get_all("return-path") or []])
    if not return_path or return_path[0].lower() != target.lower():
        return NoMdn.RETURN_PATH_DIFFERS
    message_ids = parse_message_ids(str(headers.get("message-id", "")))
    if not message_ids:
        return NoMdn.NO_MESSAGE_ID
    # header_text, not one decoding: an encoded word inside one would become a line break.
    subject = header_text(str(headers.get("subject", "")), MAX_SUBJECT)
    return MdnRequest(
        notify_to=target,
        original_message_id=message_ids[0],
        original_recipient=" ".join(str(headers.get("original-recipient", "")).split()),
        subject=subject,
    )


def build_mdn(request: MdnRequest, answer: MdnAnswer, original: bytes) -> EmailMessage:
    """The MDN answering ``request`` for the original mail ``original`` (raw bytes).

    Serialise it with ``email.policy.SMTP`` (CRLF): its report part is CRLF text already.
    """
    mdn = EmailMessage(policy=policy.SMTP)
    mdn["From"] = formataddr((answer.from_name, answer.from_address))
    mdn["To"] = request.notify_to
    mdn["Subject"] = mdn_subject(request.subject)
    mdn["Date"] = format_datetime(answer.date)
    mdn["Message-ID"] = answer.message_id
    mdn["In-Reply-To"] = request.original_message_id
    mdn["References"] = request.original_message_id
    mdn["Auto-Submitted"] = "auto-replied"  # RFC 3834: no automatic answer to this one
    for name, value in answer.extra_headers:
        mdn[name] = value
    mdn.set_content(HUMAN_TEXT.format(name=answer.organisation), charset="utf-8", cte="8bit")
    mdn.make_mixed()
    mdn.replace_header("Content-Type", "multipart/report")
    mdn.set_param("report-type", "disposition-notification")
    # The email package types attach() for EmailMessage parts; plain Message parts are fine.
    mdn.attach(cast(EmailMessage, _notification_part(request, answer)))
    for part in _returned_parts(original, answer.max_size):
        mdn.attach(cast(EmailMessage, part))
    return mdn


def mdn_subject(subject: str) -> str:
    """A document mail's subject is kept as the ANS asks; others get a French prefix."""
    if DOCUMENT_SUBJECT.match(subject):
        return subject
    return f"{SUBJECT_PREFIX}{subject}" if subject else DEFAULT_SUBJECT


def disposition_fields(request: MdnRequest, answer: MdnAnswer) -> list[tuple[str, str]]:
    """The ``message/disposition-notification`` fields, in the ANS order."""
    recipient = f"rfc822;{answer.from_address}"
    return [
        ("Reporting-UA", answer.reporting_ua),
        ("Original-Recipient", request.original_recipient or recipient),
        ("Final-Recipient", recipient),
        ("Original-Message-ID", request.original_message_id),
        ("Disposition", DISPOSITION),
    ]


def _notification_part(request: MdnRequest, answer: MdnAnswer) -> Message:
    """The machine-readable part, one unfolded line per field as in the ANS example.

    Written as text rather than as a header block: a generator would fold a long
    ``Original-Message-ID`` before its value, which simple readers take badly.
    """
    lines = [
        f"{name}: {' '.join(value.split())}" for name, value in disposition_fields(request, answer)
    ]
    part = Message(policy=policy.compat32)
    part["Content-Type"] = "message/disposition-notification"
    part.set_payload("\r\n".join(lines) + "\r\n")
    return part


def _returned_parts(original: bytes, max_size: int) -> list[Message]:
    """The original mail in full (with its IHE_XDM.ZIP and PDFs again, as the ANS asks),
    or only its header when the whole would not fit under the size limit (RFC 6522 §3)."""
    parsed = BytesParser(policy=policy.compat32).parsebytes(original)
    if len(original) + REPORT_OVERHEAD > max_size:
        headers = Message(policy=policy.compat32)
        headers["Content-Type"] = "text/rfc822-headers"
        header_bytes = original.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        headers.set_payload(header_bytes.decode("ascii", "replace") + "\r\n")
        return [headers]
    whole = Message(policy=policy.compat32)
    whole["Content-Type"] = "message/rfc822"
    whole.set_payload([parsed])
    parts: list[Message] = [whole]
    documents = _document_parts(parsed)
    if documents and 2 * len(original) + REPORT_OVERHEAD <= max_size:
        parts.extend(documents)
    return parts


def _document_parts(message: Message) -> list[Message]:
    """IHE_XDM.ZIP and the PDFs of a document mail; none for a mail without IHE_XDM.ZIP."""
    found: list[Message] = []
    has_xdm = False
    for part in message.walk():
        name = (part.get_filename() or "").lower()
        if part.is_multipart():
            continue
        if name == XDM_NAME:
            has_xdm = True
            found.append(part)
        elif part.get_content_type() == "application/pdf" and name:
            found.append(part)
    return found if has_xdm else []


def _addresses(values: list[str]) -> list[str]:
    found: list[str] = []
    for _, address in getaddresses(values):
        try:
            found.append(normalize_address(address))
        except ValueError:
            continue
    return list(dict.fromkeys(found))
