"""``!mss export``: the conversation so far, sent to its correspondents as one health document.

The document (PDF transcript, CDA R2 N1, ``IHE_XDM.ZIP``) goes in a mail of the thread with the
same MSSanté headers as a per-message document. Its version is stored before it is built: a
retry of the same command rebuilds the same bytes from the same messages, a new command makes
the next version, replacing the previous one (RPLC). Message texts and the patient are health
data: nothing of them is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from mssbridge.cda.package import DocumentPackage
from mssbridge.convert.chat_to_mail import attachment_ref, render_chat_content
from mssbridge.convert.mail_to_chat import parse_mail
from mssbridge.errors import MalformedInput, Rejected
from mssbridge.flows.commands import ghost_display_name
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.patient import (
    PARIS,
    author_for,
    bridge_root,
    document_root,
    make_package,
    organisation,
    patient_from_bytes,
    submission_for,
    thread_set_root,
)
from mssbridge.flows.thread_document import (
    ThreadItem,
    Version,
    content_digest,
    export_body,
    thread_request,
)
from mssbridge.flows.whitelist_gate import ensure_whitelisted
from mssbridge.matrix.commands import is_command, parse
from mssbridge.policy.access import may_export_document
from mssbridge.store.documents_repo import DocumentRepo, NewDocument, ThreadRecord
from mssbridge.store.repo import correspondents_of
from mssbridge.store.tables import HealthDocument, Inbox, Outbox, Portal, RowState

log = logging.getLogger("mssbridge.export")

EXPORT = "export"
NOT_A_PORTAL = "Ce salon n'est pas une conversation MSSanté : rien à exporter."
NOT_ALLOWED = "Vous n'êtes pas autorisé(e) à envoyer un document de santé depuis ce salon."
NOT_CONFIGURED = (
    "La passerelle n'est pas configurée pour les documents de santé (section [mssante]). "
    "Contactez l'équipe informatique."
)
NO_PATIENT = (
    "Aucun patient n'est rattaché à ce salon : définissez-le d'abord avec « {p} patient … »."
)
NOTHING_YET = "La conversation ne contient encore aucun message relayé : rien à exporter."

SendDocument = Callable[
    [Outbox, dict[str, Any], Portal, str, DocumentPackage, str], Awaitable[None]
]


def is_export(body: str, prefix: str) -> bool:
    """``!mss export`` (arguments ignored)."""
    return is_command(body, prefix) and parse(body, prefix).name == EXPORT


class ExportFlow:
    """Builds the thread's document and hands it to the outbound flow's mail path."""

    def __init__(self, ctx: BridgeContext, send: SendDocument) -> None:
        self.ctx = ctx
        self.send = send
        self.repo = DocumentRepo(ctx.store)

    async def run(self, row: Outbox, event: dict[str, Any], portal: Portal | None) -> None:
        refusal = self._refusal(row, portal)
        if refusal is not None or portal is None:
            await self._reply(row, refusal or NOT_A_PORTAL)
            return
        assert portal.id is not None
        # Whitelist first: no version is used up for a mail that may not leave.
        await ensure_whitelisted(self.ctx.store, self.ctx.settings, correspondents_of(portal))
        items = await self._thread(portal)
        if not items:
            await self._reply(row, NOTHING_YET)
            return
        record = await self.repo.allocate(
            portal.id,
            NewDocument(
                origin=row.event_id,
                set_root=thread_set_root(portal.conversation_key),
                document_root=document_root(row.event_id),
                content_sha256=content_digest(items),
                messages=len(items),
            ),
        )
        items = items[: record.messages]  # a retry holds what its first attempt held
        sender_name = await self.ctx.rooms.display_name(row.room_id, row.sender)
        package = await self._build(row, event, portal, items, record_version(record), sender_name)
        await self.send(
            row, event, portal, export_body(len(items), record.version), package, sender_name
        )
        log.info(
            "outbox row %s: thread of portal %s exported (%d messages, version %d)",
            row.id,
            portal.id,
            len(items),
            record.version,
        )
        await self.ctx.notice(
            row.room_id, await self._sent_text(record), f"mssb-export-{row.id}", row.event_id
        )

    async def _sent_text(self, record: HealthDocument) -> str:
        text = (
            f"Transcription envoyée aux correspondants : {record.messages} message(s), "
            f"version {record.version} du document"
        )
        if record.version == 1:
            return text + "."
        previous = [
            v for v in await self.repo.versions(record.set_root) if v.version < record.version
        ]
        same = bool(previous) and previous[-1].content_sha256 == record.content_sha256
        return text + (
            " (remplace la précédente ; mêmes messages)." if same else " (remplace la précédente)."
        )

    def _refusal(self, row: Outbox, portal: Portal | None) -> str | None:
        mssante = self.ctx.settings.mssante
        if portal is None:
            return NOT_A_PORTAL
        if not may_export_document(row.sender, self.ctx.access):
            return NOT_ALLOWED
        if not mssante.documents_enabled:
            return NOT_CONFIGURED
        if portal.patient is None:
            return NO_PATIENT.format(p=self.ctx.settings.matrix.command_prefix)
        return None

    async def _reply(self, row: Outbox, text: str) -> None:
        await self.ctx.notice(row.room_id, text, f"mssb-export-{row.id}", row.event_id)
        await self.ctx.store.finish(Outbox, row.id, RowState.DONE)

    async def _build(
        self,
        row: Outbox,
        event: dict[str, Any],
        portal: Portal,
        items: list[ThreadItem],
        version: Version,
        sender_name: str,
    ) -> DocumentPackage:
        mssante = self.ctx.settings.mssante
        data = self.ctx.store.patient_of(portal)
        assert data is not None
        root = bridge_root(mssante, self.ctx.settings.mailbox.address)
        writers = {item.user_id: item.author_name for item in items if item.user_id}
        time = _event_time(event)
        request = thread_request(
            items,
            version=version,
            patient=patient_from_bytes(data),
            custodian=organisation(mssante),
            exporter=author_for(row.sender, sender_name, mssante, root),
            other_authors=[author_for(user, name, mssante, root) for user, name in writers.items()],
            time=time,
        )
        submission = submission_for(row.event_id, root, time)
        return await asyncio.to_thread(make_package, request, submission, mssante.nil)

    async def _thread(self, portal: Portal) -> list[ThreadItem]:
        """The relayed messages of the conversation, in relay order; commands left out."""
        assert portal.id is not None and portal.room_id is not None
        records = await self.repo.thread(portal.id)
        events = await self.repo.outbox_rows([r.event_id for r in records if r.direction == "out"])
        mails = await self.repo.relayed_mails(
            list(dict.fromkeys(r.message_id for r in records if r.direction == "in"))
        )
        items: list[ThreadItem] = []
        names: dict[str, str] = {}
        seen_mails: set[str] = set()
        for record in records:
            item: ThreadItem | None = None
            if record.direction == "out" and record.event_id in events:
                item = await self._chat_item(record, events[record.event_id], portal.room_id, names)
            elif record.direction == "in" and record.message_id not in seen_mails:
                seen_mails.add(record.message_id)
                mail_row = mails.get(record.message_id)
                item = await self._mail_item(record, mail_row) if mail_row else None
            if item is not None:
                items.append(item)
        return items

    async def _chat_item(
        self, record: ThreadRecord, row: Outbox, room_id: str, names: dict[str, str]
    ) -> ThreadItem | None:
        if row.event_type != "m.room.message":
            return None
        event = self.ctx.store.event_of(row)
        content = event.get("content") or {}
        body = content.get("body")
        if not isinstance(body, str) or is_command(body, self.ctx.settings.matrix.command_prefix):
            return None
        if row.sender not in names:
            names[row.sender] = await self.ctx.rooms.display_name(room_id, row.sender)
        try:
            text = render_chat_content(content, names[row.sender]).body
            ref = attachment_ref(content)
        except (MalformedInput, Rejected):
            return None  # it was not relayed as such either
        return ThreadItem(
            key=f"out:{record.event_id}",
            author_name=names[row.sender],
            time=_event_time(event),
            text=text,
            files=(ref.filename,) if ref is not None else (),
            user_id=row.sender,
        )

    async def _mail_item(self, record: ThreadRecord, row: Inbox) -> ThreadItem | None:
        """A correspondent's mail (purged by retention, or never posted: not found)."""
        try:
            mail = await asyncio.to_thread(parse_mail, self.ctx.store.raw_of(row))
        except MalformedInput:
            return None
        if mail.auto_submitted:
            return None  # receipts and auto-replies are not part of the exchange
        return ThreadItem(
            key=f"in:{record.message_id}",
            author_name=ghost_display_name(mail.sender_address, mail.sender_name),
            time=mail.date or datetime.fromtimestamp(row.created_at, tz=UTC),
            text=mail.text,
            files=tuple(a.filename for a in mail.attachments),
        )


def record_version(record: HealthDocument) -> Version:
    """The ids of a stored ``HealthDocument`` row."""
    return Version(record.document_root, record.set_root, record.version, record.replaces_root)


def _event_time(event: dict[str, Any]) -> datetime:
    stamp = event.get("origin_server_ts")
    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(stamp / 1000, tz=UTC)
    return datetime.now(tz=PARIS)
