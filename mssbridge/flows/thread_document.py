"""A conversation as one health document: its messages, their digest, the versioned request.

Pure (no I/O, no clock). The document of a thread keeps one ``setId`` per conversation; every
export is a new version with its own id that replaces the previous one (CDA relatedDocument
RPLC), whether messages were added or not: a re-sent document is a new version, never a second
version 1. Nothing here logs: message texts and the patient are health data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mssbridge.cda.model import (
    Author,
    DocumentRequest,
    InstanceId,
    Organisation,
    Patient,
    TranscriptMessage,
)
from mssbridge.flows.patient import DOCUMENT_TITLE, PARIS

EXPORT_TITLE = DOCUMENT_TITLE
NO_TEXT = "(fichier)"


@dataclass(frozen=True)
class ThreadItem:
    """One message of the conversation as the transcript shows it.

    ``key`` names it in the store (``out:<event id>`` or ``in:<Message-ID>``); ``user_id`` is
    the Matrix sender of a local message, None for a correspondent's mail.
    """

    key: str
    author_name: str
    time: datetime
    text: str
    files: tuple[str, ...] = ()
    user_id: str | None = None


@dataclass(frozen=True)
class Version:
    """The ids a document version gets from the store (see ``DocumentRepo.allocate``)."""

    document_root: str
    set_root: str
    version: int
    replaces_root: str | None = None


def content_digest(items: Sequence[ThreadItem]) -> str:
    """SHA-256 of which messages a document holds (their keys), not of their text."""
    return keys_digest([item.key for item in items])


def keys_digest(keys: Sequence[str]) -> str:
    """SHA-256 of message keys (``out:<event id>``, ``in:<Message-ID>``), in order."""
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def thread_request(
    items: Sequence[ThreadItem],
    *,
    version: Version,
    patient: Patient,
    custodian: Organisation,
    exporter: Author,
    other_authors: Sequence[Author],
    time: datetime,
) -> DocumentRequest:
    """The transcript of ``items`` as version ``version`` of the conversation's document.

    The exporter is the legal authenticator and the first author; the other local writers
    follow. Times are shown in Paris time (docs/cda.md, "PDF transcript").
    """
    if not items:
        raise ValueError("an export needs at least one message")
    authors = (exporter, *(a for a in dict.fromkeys(other_authors) if a.id != exporter.id))
    return DocumentRequest(
        document_id=InstanceId(version.document_root),
        set_id=InstanceId(version.set_root),
        version=version.version,
        replaces=InstanceId(version.replaces_root) if version.replaces_root else None,
        effective_time=time.astimezone(PARIS),
        title=EXPORT_TITLE,
        patient=patient,
        custodian=custodian,
        authors=authors,
        legal_authenticator=exporter,
        messages=tuple(
            TranscriptMessage(
                item.author_name,
                item.time.astimezone(PARIS),
                item.text.strip() or NO_TEXT,
                item.files,
            )
            for item in items
        ),
    )


def export_body(messages: int, version: int) -> str:
    """The text of the export mail (no patient data: the subject and the files carry it)."""
    lines = [
        "Transcription de la conversation de messagerie instantanée, en pièce jointe "
        "(IHE_XDM.ZIP et PDF).",
        f"{messages} message(s) ; version {version} du document.",
    ]
    if version > 1:
        lines.append("Elle remplace la version précédente, envoyée dans cette conversation.")
    return "\n".join(lines)
