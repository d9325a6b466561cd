"""Delivery (DSN, RFC 3464) and read (MDN, RFC 8098) reports → what each says, per recipient.

A report is recognised by its top-level ``multipart/report`` type and ``report-type``
parameter (RFC 6522). The original message it is about is named, most reliable first, by
the MDN's ``Original-Message-ID``, the DSN's ``Original-Envelope-Id`` (the bridge puts the
Message-ID there), the ``Message-ID`` of the returned headers or message, then the report's
own ``In-Reply-To`` and ``References``.

Only codes and the servers' diagnostics are kept from a report: never the returned text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from email import errors as email_errors
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses
from enum import StrEnum

from mssbridge.convert.address import normalize_address
from mssbridge.convert.threading import parse_message_ids

DELIVERY_STATUS = "delivery-status"
DISPOSITION_NOTIFICATION = "disposition-notification"
MAX_DIAGNOSTIC = 200
MAX_FIELD_BLOCKS = 200  # recipients of one DSN; more is not a report the bridge asked for

_DISPOSITION_WORDS = {"deleted": "supprimé", "denied": "refusé", "failed": "non traité"}
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_XTEXT = re.compile(r"\+([0-9A-F]{2})")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # the end of the header block (RFC 5322 §2.1)
_PARSE_ERRORS = (
    email_errors.MessageError,
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    UnicodeError,
    RecursionError,
)


class Outcome(StrEnum):
    """What the bridge does with one recipient's line of a report."""

    READ = "read"  # delivered or relayed (DSN), displayed or processed (MDN): a read receipt
    FAILED = "failed"  # not delivered, or a negative MDN: a room notice
    DELAYED = "delayed"  # still being tried: a room notice when receipts.notify_delayed
    IGNORED = "ignored"  # nothing to show (an action or disposition the bridge does not know)


@dataclass(frozen=True)
class RecipientReport:
    """One recipient's line of a report: who, what happened, and the server's words."""

    recipient: str  # normalised address; "" when the report names none usable
    outcome: Outcome
    action: str  # DSN Action (failed, delayed, delivered…) or MDN disposition type
    status: str  # RFC 3463 code (DSN) or the MDN error code; "" when none
    diagnostic: str  # the server's diagnostic or the MDN error label, printable, cut short


@dataclass(frozen=True)
class Report:
    """A delivery or read report, reduced to what the bridge acts on."""

    report_type: str  # DELIVERY_STATUS or DISPOSITION_NOTIFICATION
    original_ids: tuple[str, ...]  # Message-IDs of the reported mail, most reliable first
    recipients: tuple[RecipientReport, ...]
    sender: str = ""  # the report's From address, normalised; "" when unusable


def parse_report(raw: bytes) -> Report | None:
    """Read a DSN or an MDN; None for any other mail (or a report too broken to use)."""
    try:
        # A first look at the header block only: most mails are not reports, and parsing
        # a mail with large attachments whole costs several times its size in memory.
        blank_line = _BLANK_LINE.search(raw)
        head = raw[: blank_line.end()] if blank_line else raw
        first_look = BytesParser(policy=policy.default).parsebytes(head, headersonly=True)
        if first_look.get_content_type() != "multipart/report":
            return None
        message = BytesParser(policy=policy.default).parsebytes(raw)
        if message.get_content_type() != "multipart/report":
            return None
        report_type = str(message.get_param("report-type", "", header="content-type")).lower()
        if report_type == DELIVERY_STATUS:
            report = _delivery_report(message)
        elif report_type == DISPOSITION_NOTIFICATION:
            report = _disposition_report(message)
        else:
            return None
        if report is None:
            return None
        senders = getaddresses([_unfold(str(v)) for v in message.get_all("from") or []])
        return replace(report, sender=_address(senders[0][1]) if senders else "")
    except _PARSE_ERRORS:
        return None


def decode_xtext(value: str) -> str:
    """Decode RFC 3461 §4 xtext (``+2B`` for ``+``)."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


def notice_text(report: Report, line: RecipientReport) -> str | None:
    """The room notice for a failed or delayed line (codes and diagnostics only), else None."""
    who = line.recipient or "un destinataire"
    detail = ", ".join(x for x in (line.status, line.diagnostic) if x)
    reason = f" ({detail})" if detail else ""
    if line.outcome == Outcome.DELAYED:
        return f"⏳ Remise retardée pour {who}{reason} : le serveur de messagerie réessaie."
    if line.outcome != Outcome.FAILED:
        return None
    if report.report_type == DELIVERY_STATUS:
        return f"⚠️ Message non remis à {who}{reason}."
    if line.status or line.diagnostic:
        return f"⚠️ Le message n'a pas pu être intégré chez {who}{reason}."
    done = _DISPOSITION_WORDS.get(line.action, "refusé")
    return f"⚠️ Accusé de lecture négatif de {who} : message {done}."


# -- DSN ---------------------------------------------------------------------------------


def _delivery_report(message: Message) -> Report | None:
    part = _first_part(message, ("message/delivery-status", "message/global-delivery-status"))
    if part is None:
        return None
    blocks = _field_blocks(part)
    if not blocks:
        return None
    per_message, per_recipient = blocks[0], blocks[1:MAX_FIELD_BLOCKS]
    ids: list[str] = []
    envelope_id = _field(per_message, "original-envelope-id")
    if envelope_id:
        ids.extend(parse_message_ids(decode_xtext(envelope_id)))
    ids.extend(_returned_ids(message))
    ids.extend(_own_threading_ids(message))
    recipients = tuple(_recipient_line(block) for block in per_recipient if block)
    return Report(DELIVERY_STATUS, tuple(dict.fromkeys(ids)), recipients)


def _recipient_line(block: list[tuple[str, str]]) -> RecipientReport:
    action = _field(block, "action").split(None, 1)[0].lower() if _field(block, "action") else ""
    status = _field(block, "status").split(None, 1)[0] if _field(block, "status") else ""
    if not _ENHANCED.match(status):
        status = ""
    recipient = _address(_field(block, "original-recipient")) or _address(
        _field(block, "final-recipient")
    )
    diagnostic = _printable(_after_type(_field(block, "diagnostic-code")))
    return RecipientReport(recipient, _delivery_outcome(action), action, status, diagnostic)


def _delivery_outcome(action: str) -> Outcome:
    # "relayed": handed to a server that sends no reports, which is how Postfix reports its
    # LMTP delivery into the mailbox store: the operator accepted the mail for the mailbox.
    if action in {"delivered", "relayed", "expanded"}:
        return Outcome.READ
    if action == "failed":
        return Outcome.FAILED
    if action == "delayed":
        return Outcome.DELAYED
    return Outcome.IGNORED


# -- MDN ---------------------------------------------------------------------------------


def _disposition_report(message: Message) -> Report | None:
    part = _first_part(
        message,
        ("message/disposition-notification", "message/global-disposition-notification"),
    )
    if part is None:
        return None
    fields = [item for block in _field_blocks(part) for item in block]
    if not fields:
        return None
    ids = [*parse_message_ids(_field(fields, "original-message-id")), *_returned_ids(message)]
    ids.extend(_own_threading_ids(message))
    recipient = _address(_field(fields, "final-recipient")) or _address(
        _field(fields, "original-recipient")
    )
    line = _disposition_line(recipient, _field(fields, "disposition"), _field(fields, "error"))
    return Report(DISPOSITION_NOTIFICATION, tuple(dict.fromkeys(ids)), (line,))


def _disposition_line(recipient: str, disposition: str, error_field: str) -> RecipientReport:
    """``Disposition: action-mode/sending-mode; type[/modifier,…]`` (RFC 8098 §3.2.6).

    The ANS writes an integration error as ``processed/Error: <code>^<label>``; RFC 3798's
    separate ``Error:`` field is read too.
    """
    _, _, rest = disposition.partition(";")
    kind, _, modifiers = rest.strip().partition("/")
    kind = kind.strip().lower()
    error = ""
    modifier = modifiers.strip()
    if modifier.lower().startswith("error"):
        error = modifier.partition(":")[2].strip() or "error"
    elif error_field:
        error = error_field.strip()
    code, label = _error_code(error)
    if error:
        outcome = Outcome.FAILED
    elif kind in {"displayed", "processed"}:
        outcome = Outcome.READ
    elif kind in {"deleted", "denied", "failed"}:
        outcome = Outcome.FAILED
    else:
        outcome = Outcome.IGNORED  # dispatched, or a type this bridge does not know
    return RecipientReport(recipient, outcome, kind, code, _printable(label))


def _error_code(error: str) -> tuple[str, str]:
    """``902^Identifiant de patient inconnu^…`` → ("902", "Identifiant de patient inconnu")."""
    if not error:
        return "", ""
    pieces = [p.strip() for p in error.split("^")]
    if len(pieces) > 1 and pieces[0].isdigit() and len(pieces[0]) <= 6:
        return pieces[0], pieces[1]
    return "", error


# -- shared ------------------------------------------------------------------------------


def _first_part(message: Message, types: Iterable[str]) -> Message | None:
    wanted = set(types)
    payload = message.get_payload()
    for part in payload if isinstance(payload, list) else ():
        if isinstance(part, Message) and part.get_content_type() in wanted:
            return part
    return None


def _field_blocks(part: Message) -> list[list[tuple[str, str]]]:
    """The groups of ``Name: value`` fields of a report part, names in lower case."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [
            [(name.lower(), _unfold(str(value))) for name, value in block.raw_items()]
            for block in payload
            if isinstance(block, Message)
        ]
    text = payload if isinstance(payload, str) else ""
    blocks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    parser = HeaderParser(policy=policy.compat32)
    return [
        [(name.lower(), _unfold(value)) for name, value in parser.parsestr(block).items()]
        for block in blocks
        if block.strip()
    ]


def _returned_ids(message: Message) -> Iterator[str]:
    """Message-IDs of the returned headers (text/rfc822-headers) or message (message/rfc822)."""
    payload = message.get_payload()
    for part in payload if isinstance(payload, list) else ():
        if not isinstance(part, Message):
            continue
        content_type = part.get_content_type()
        if content_type in {"text/rfc822-headers", "message/rfc822-headers"}:
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                headers = HeaderParser(policy=policy.compat32).parsestr(
                    text.decode("utf-8", "replace")
                )
                yield from parse_message_ids(headers.get("message-id"))
        elif content_type in {"message/rfc822", "message/global"}:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                yield from parse_message_ids(_unfold(str(inner[0].get("message-id", ""))))


def _own_threading_ids(message: Message) -> list[str]:
    references = parse_message_ids(_unfold(str(message.get("references", ""))))
    return [
        *parse_message_ids(_unfold(str(message.get("in-reply-to", "")))),
        *reversed(references),
    ]


def _field(fields: list[tuple[str, str]], name: str) -> str:
    return next((value for key, value in fields if key == name), "")


def _after_type(value: str) -> str:
    """``rfc822; a@b`` → ``a@b``; ``smtp; 550 …`` → ``550 …`` (RFC 3464 typed fields)."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and kind.strip().replace("-", "").isalnum() else value.strip()


def _address(value: str) -> str:
    if not value:
        return ""
    candidate = _after_type(value).strip("<> ")
    try:
        return normalize_address(candidate)
    except ValueError:
        return ""


def _unfold(value: str) -> str:
    return " ".join(value.split())


def _printable(value: str) -> str:
    text = "".join(c if c.isprintable() else " " for c in value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_DIAGNOSTIC else text[: MAX_DIAGNOSTIC - 1] + "…"
