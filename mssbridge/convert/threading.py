"""Message-IDs, References and subjects that tie mails to conversations (RFC 5322 §3.6.4)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence

from mssbridge.model import InboundMail

_EVENT_TAG = b"mssbridge/event\x00"
_CONVERSATION_TAG = b"mssbridge/conversation\x00"
_DIGEST_BYTES = 20  # 160 bits: 32 base32 characters, no padding
_OWN_ID = re.compile(r"<[a-z2-7]{32}@([^<>@\s]+)>")
_BRACKETED_ID = re.compile(r"<([^<>\s]+)>")
_BARE_ID = re.compile(r"[^<>\s\"(),;:]+@[^<>\s\"(),;:]+")

_REPLY_PREFIX = re.compile(
    r"^\s*(?:re|ré|rép|rep|réf|ref|aw|sv|antw)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*", re.IGNORECASE
)
REPLY_PREFIX = "Re: "


def message_id_for_event(event_id: str, domain: str) -> str:
    """Return the Message-ID of the mail that relays a Matrix event: opaque and deterministic."""
    return _hashed_id(_EVENT_TAG, event_id, domain)


def conversation_message_id(conversation_key: str, domain: str) -> str:
    """Return the thread root Message-ID of a conversation started from Matrix."""
    return _hashed_id(_CONVERSATION_TAG, conversation_key, domain)


def is_own_message_id(message_id: str, domain: str) -> bool:
    """Tell whether a Message-ID has the shape this bridge gives its own mail for ``domain``."""
    match = _OWN_ID.fullmatch(message_id.strip())
    return match is not None and match.group(1).lower() == domain.lower()


def parse_message_ids(value: str | None) -> tuple[str, ...]:
    """Extract ``<id>`` tokens from a Message-ID, In-Reply-To or References value.

    Junk between tokens (comments, names, quoted text) is ignored; when there is no bracketed
    token at all, bare ``left@right`` words are taken and bracketed. Duplicates are dropped.
    """
    if not value:
        return ()
    found = [f"<{token}>" for token in _BRACKETED_ID.findall(value)]
    if not found:
        found = [f"<{token}>" for token in _BARE_ID.findall(value)]
    return _dedupe(found)


def thread_keys(mail: InboundMail) -> list[str]:
    """Return the ids to look a mail's thread up by, most specific first, without duplicates."""
    return list(_dedupe([*mail.in_reply_to, *reversed(mail.references), *mail.reported_ids]))


def references_for(
    parent_references: Sequence[str], parent_id: str | None, limit: int = 20
) -> tuple[str, ...]:
    """Return the References of a reply: the parent's References then the parent's id.

    When longer than ``limit``, the first id (the thread root) and the last ones are kept, as
    RFC 5322 §3.6.4 and common practice (RFC 5537 §3.4.4) suggest.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    # The parent's id comes last even when its own References (wrongly) hold it already.
    earlier = [ref for ref in parent_references if ref != parent_id]
    chain = list(_dedupe([*earlier, *([parent_id] if parent_id else [])]))
    if len(chain) <= limit:
        return tuple(chain)
    if limit == 1:
        return (chain[-1],)
    return (chain[0], *chain[len(chain) - limit + 1 :])


def reply_subject(subject: str) -> str:
    """Return the subject of a reply: one ``Re: `` in front, earlier reply prefixes folded.

    Reply prefixes of common clients (Re, RE, Réf, Rép, AW, SV, ``Re[2]``, French ``Re :``)
    are folded into one; a forward prefix (TR, Fwd, WG) stays after it: ``Re: TR: …``.
    """
    rest = subject.strip()
    while match := _REPLY_PREFIX.match(rest):
        rest = rest[match.end() :]
    return f"{REPLY_PREFIX}{rest}".rstrip()


def _hashed_id(tag: bytes, key: str, domain: str) -> str:
    digest = hashlib.sha256(tag + key.encode("utf-8")).digest()[:_DIGEST_BYTES]
    local = base64.b32encode(digest).decode("ascii").lower()
    return f"<{local}@{domain.lower()}>"


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
