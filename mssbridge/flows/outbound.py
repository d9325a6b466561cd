"""Matrix → mail: acts on each stored Matrix event (message, edit, redaction, invite, command)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from email.policy import SMTP
from typing import Any

from mssbridge.cda.mail_parts import nil_header
from mssbridge.cda.package import DocumentPackage
from mssbridge.cda.xdm import ZIP_NAME
from mssbridge.convert.chat_to_mail import (
    MediaRef,
    attachment_ref,
    build_message,
    render_chat_content,
)
from mssbridge.convert.threading import message_id_for_event, references_for, reply_subject
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.flows.commands import CommandFlow
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.export import ExportFlow, is_export
from mssbridge.flows.patient import (
    author_for,
    bridge_root,
    document_request,
    document_root,
    make_package,
    message_set_root,
    organisation,
    patient_from_bytes,
    submission_for,
)
from mssbridge.flows.receipts import ReceiptFlow, is_read_notification
from mssbridge.flows.thread_document import keys_digest
from mssbridge.flows.whitelist_gate import ensure_whitelisted
from mssbridge.mail.smtp_out import RefusedRecipient
from mssbridge.matrix.commands import is_command
from mssbridge.model import Attachment, MailThread, OutboundMail
from mssbridge.policy.access import may_use_bridge
from mssbridge.policy.size import check_declared_file, check_encoded
from mssbridge.store.documents_repo import DocumentRepo, NewDocument
from mssbridge.store.repo import correspondents_of
from mssbridge.store.tables import AuditAction, Delivery, Outbox, Portal, RowState

log = logging.getLogger("mssbridge.outbound")

READ_REQUEST_HEADER = "Disposition-Notification-To"
# Mails whose files exceed LARGE_MAIL_BYTES are encoded and submitted LARGE_MAIL_SLOTS at a time.
LARGE_MAIL_BYTES = 1_000_000
LARGE_MAIL_SLOTS = 2

DEFAULT_SUBJECT = "Message de la messagerie instantanée"
EDIT_PREFIX = "[Message modifié] "
WITHDRAWN_TEXT = (
    "L'expéditeur a retiré son message précédent dans la messagerie instantanée. "
    "Merci de ne pas en tenir compte."
)
NOT_ALLOWED = (
    "Vous n'êtes pas autorisé(e) à utiliser la passerelle MSSanté de cet établissement. "
    "Contactez l'équipe informatique si vous en avez besoin."
)
ENCRYPTED = (
    "Ce salon est chiffré de bout en bout : la passerelle ne peut pas lire ce message et ne "
    "l'a pas transmis. Utilisez un salon non chiffré pour écrire à un correspondant MSSanté."
)


class OutboundFlow:
    """Turns stored Matrix events into mail and room changes; each step is idempotent."""

    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx
        self.commands = CommandFlow(ctx)
        self.export = ExportFlow(ctx, self._send_document)
        self.receipts = ReceiptFlow(ctx)
        self._large_mails = asyncio.Semaphore(LARGE_MAIL_SLOTS)

    async def handle(self, row: Outbox) -> None:
        if is_read_notification(row):  # an MDN the bridge owes, not a Matrix event
            await self.receipts.send_mdn(row, self._left_before_crash)
            return
        event = self.ctx.store.event_of(row)
        event_type = event.get("type")
        if event_type == "m.room.member":
            await self._on_invite(row, event)
            return
        if not may_use_bridge(row.sender, self.ctx.access):
            await self.ctx.notice(row.room_id, NOT_ALLOWED, f"mssb-deny-{row.id}", row.event_id)
            await self._deny(row)
            return
        portal = await self.ctx.store.portal_by_room(row.room_id)
        if event_type == "m.room.encrypted":
            if portal is not None:
                await self.ctx.notice(row.room_id, ENCRYPTED, f"mssb-e2e-{row.id}", row.event_id)
            await self._close(row, RowState.DROPPED)
        elif event_type == "m.room.redaction":
            await self._on_redaction(row, event, portal)
        elif is_export(_body(event), self.ctx.settings.matrix.command_prefix):
            await self.export.run(row, event, portal)
        elif is_command(_body(event), self.ctx.settings.matrix.command_prefix):
            await self.commands.run(row, event, portal)
        elif portal is None:
            await self._close(row, RowState.DROPPED)
        else:
            await self._relay_message(row, event, portal)

    async def _close(self, row: Outbox, state: RowState) -> None:
        await self.ctx.store.finish(Outbox, row.id, state)

    async def _deny(self, row: Outbox) -> None:
        await self.ctx.store.finish(
            Outbox, row.id, RowState.DROPPED, "not allowed", audit_action=AuditAction.ACCESS_DENIED
        )

    # -- messages ------------------------------------------------------------------------

    async def _relay_message(self, row: Outbox, event: dict[str, Any], portal: Portal) -> None:
        # Whitelist first: nothing is downloaded or sent for a refused recipient.
        await ensure_whitelisted(self.ctx.store, self.ctx.settings, correspondents_of(portal))
        content = event.get("content") or {}
        # Any JSON may sit there; render_chat_content refuses a content that is not an object.
        relates = content.get("m.relates_to") if isinstance(content, dict) else None
        relates = relates if isinstance(relates, dict) else {}
        sender_name = await self.ctx.rooms.display_name(row.room_id, row.sender)
        text = render_chat_content(content, sender_name)
        ref = self._file(content)
        # A file declared large is downloaded only once its mail's turn has come, so that
        # rows waiting for a slot hold no file; a file declared small (or not at all) but
        # large takes its turn from the encoding on, in _send.
        in_slot = ref is not None and (ref.size or 0) > LARGE_MAIL_BYTES
        async with self._large_mails if in_slot else contextlib.nullcontext():
            attachments = await self._attachments(ref)
            parent = None
            prefix = ""
            if relates.get("rel_type") == "m.replace":
                parent = await self.ctx.store.message_id_of_event(str(relates.get("event_id")))
                prefix = EDIT_PREFIX
            elif isinstance(relates.get("m.in_reply_to"), dict):
                parent = await self.ctx.store.message_id_of_event(
                    str(relates["m.in_reply_to"].get("event_id"))
                )
            body = prefix + text.body if text.body or not attachments else text.body
            html = (prefix + text.html) if text.html and prefix else text.html
            await self._send(
                row,
                event,
                portal,
                body,
                html,
                attachments,
                parent,
                sender_name,
                document=True,
                in_slot=in_slot,
            )

    def _file(self, content: dict[str, Any]) -> MediaRef | None:
        """The file the message carries, refused before any download if declared too large."""
        ref = attachment_ref(content)
        if ref is not None:
            check_declared_file(ref.filename, ref.size, self.ctx.settings.limits.max_message_size)
        return ref

    async def _attachments(self, ref: MediaRef | None) -> tuple[Attachment, ...]:
        if ref is None:
            return ()
        data = await self.ctx.rooms.download(ref.mxc_url)
        return (Attachment(ref.filename, ref.mimetype, data),)

    async def _send(
        self,
        row: Outbox,
        event: dict[str, Any],
        portal: Portal,
        text: str,
        html: str | None,
        attachments: tuple[Attachment, ...],
        parent: str | None,
        sender_name: str,
        *,
        document: bool = False,
        package: DocumentPackage | None = None,
        in_slot: bool = False,
    ) -> None:
        """Encode, sign and submit (or queue, in gateway mode), then record the relay.

        ``in_slot``: the caller already holds a large-mail slot for this mail.
        """
        recipients = correspondents_of(portal)
        if not recipients:
            raise Rejected("Ce salon n'a plus de correspondant MSSanté.", code="5.1.3")
        mailbox = self.ctx.settings.mailbox
        gateway = self.ctx.gateway_out
        # Gateway mode: the user writes from its own address (refused before any work).
        author = gateway.author(row.sender) if gateway is not None else None
        message_id = message_id_for_event(row.event_id, self.ctx.mail_domain)
        parent = parent or portal.last_message_id
        root = portal.root_message_id
        subject = portal.subject or DEFAULT_SUBJECT
        nil = self.ctx.settings.mssante.nil
        headers: tuple[tuple[str, str], ...] = (nil_header(nil),) if nil else ()
        if document and package is None:
            package = await self._document(row, event, portal, text, attachments, sender_name)
        if document and package is not None:
            subject = package.subject  # XDM/1.0/DDM+…: no "RE:" prefix on document mails
            headers = package.headers
            attachments = (
                *attachments,
                Attachment(ZIP_NAME, "application/zip", package.xdm_zip),
                Attachment(package.pdf_filename, "application/pdf", package.pdf),
            )
        elif parent:
            subject = reply_subject(subject)
        if self.ctx.settings.receipts.request_read:  # RFC 8098 §2.1: answers come back to us
            headers = (*headers, (READ_REQUEST_HEADER, mailbox.address))
        mail = OutboundMail(
            message_id=message_id,
            from_address=author or mailbox.address,
            from_name=sender_name if author else f"{sender_name} via {mailbox.display_name}",
            to=tuple(recipients),
            date=_event_time(event),
            thread=MailThread(
                subject=subject,
                in_reply_to=parent,
                references=references_for((root,) if root and root != parent else (), parent),
            ),
            text=text,
            html=html,
            attachments=attachments,
            extra_headers=headers,
        )
        # Encoding a mail with 10 MB of files is CPU work: keep it off the event loop. Large
        # mails take turns: encoding and submitting one holds several copies of it at once,
        # and more threads would not encode faster (the encoder holds the GIL).
        large = sum(len(a.data) for a in attachments) > LARGE_MAIL_BYTES and not in_slot
        deliveries: list[Delivery] = []
        async with self._large_mails if large else contextlib.nullcontext():
            sign = gateway.sign if gateway is not None else self.ctx.dkim.sign
            encoded = await sign(await asyncio.to_thread(_encode, mail))
            check_encoded(len(encoded), self.ctx.settings.limits.max_message_size, attachments)
            if gateway is not None:
                # Queued per recipient domain in the transaction that closes this row.
                deliveries = gateway.deliveries(row, recipients, message_id, encoded)
            elif not await self._left_before_crash(row, message_id):
                await self._submit(row, recipients, encoded)
        await self.ctx.store.record_relay(
            portal,
            [(row.event_id, message_id)],
            "out",
            queue=Outbox,
            row_id=row.id,
            last_message_id=message_id,
            actor=row.sender,
            peer=",".join(recipients),
            follow_up=deliveries,
        )
        if gateway is not None:
            gateway.on_queued()

    async def _document(
        self,
        row: Outbox,
        event: dict[str, Any],
        portal: Portal,
        text: str,
        attachments: tuple[Attachment, ...],
        sender_name: str,
    ) -> DocumentPackage | None:
        """The health document of this mail when the portal has a patient context.

        Built in a worker thread (CPU-bound). Each message is its own document (own id, own
        set); an edit is the next version of the edited message's document, replacing it
        (RPLC). The version is stored before building, so a retry rebuilds the same document.
        Nothing about the patient is logged.
        """
        data = self.ctx.store.patient_of(portal)
        mssante = self.ctx.settings.mssante
        if data is None or not mssante.documents_enabled:
            return None
        assert portal.id is not None
        root = bridge_root(mssante, self.ctx.settings.mailbox.address)
        time = _event_time(event)
        relates = _content(event).get("m.relates_to")
        relates = relates if isinstance(relates, dict) else {}
        edited = relates.get("event_id") if relates.get("rel_type") == "m.replace" else None
        version = await DocumentRepo(self.ctx.store).allocate(
            portal.id,
            NewDocument(
                origin=row.event_id,
                set_root=message_set_root(str(edited) if edited else row.event_id),
                document_root=document_root(row.event_id),
                content_sha256=keys_digest([f"out:{row.event_id}"]),
                messages=1,
            ),
        )
        request = document_request(
            event_id=row.event_id,
            set_root=version.set_root,
            version=version.version,
            replaces_root=version.replaces_root,
            patient=patient_from_bytes(data),
            author=author_for(row.sender, sender_name, mssante, root),
            custodian=organisation(mssante),
            time=time,
            text=text,
            files=[a.filename for a in attachments],
        )
        submission = submission_for(row.event_id, root, time)
        package = await asyncio.to_thread(make_package, request, submission, mssante.nil)
        log.info("outbox row %s: health document built", row.id)
        return package

    async def _send_document(
        self,
        row: Outbox,
        event: dict[str, Any],
        portal: Portal,
        text: str,
        package: DocumentPackage,
        sender_name: str,
    ) -> None:
        """Send a prebuilt document (``!mss export``) as a mail of the thread."""
        await self._send(
            row, event, portal, text, None, (), None, sender_name, document=True, package=package
        )

    async def _submit(self, row: Outbox, recipients: list[str], encoded: bytes) -> None:
        """Submit, with the bridge's own copy; a partial refusal is told to the room."""
        mailbox = self.ctx.settings.mailbox
        envelope = [*recipients, mailbox.address] if mailbox.self_copy else recipients
        await self.ctx.store.mark_attempt(row)
        submission = await self.ctx.submit(mailbox.address, envelope, encoded)
        refused_people = [
            r for r in submission.refused if r.address.lower() != mailbox.address.lower()
        ]
        if len(refused_people) == len(recipients):
            # Only the bridge's own copy went through: an outcome, not an interruption.
            await self.ctx.store.clear_attempt(row)
            raise _refusal(refused_people)
        log.info("outbox row %s sent as mail (%d bytes)", row.id, len(encoded))
        if refused_people:
            refused = ", ".join(f"{r.address} ({r.code})" for r in refused_people)
            await self.ctx.notice(
                row.room_id,
                f"⚠️ Message non remis à : {refused}. Les autres destinataires l'ont reçu.",
                f"mssb-partial-{row.id}",
                row.event_id,
            )

    async def _left_before_crash(self, row: Outbox, message_id: str) -> bool:
        """After an interrupted submission, tell from the bridge's own copy whether it left.

        Raises TemporaryFailure while the copy may still be on its way.
        """
        mailbox = self.ctx.settings.mailbox
        if row.attempt_started_at is None or not mailbox.self_copy:
            return False
        if await self.ctx.store.has_mail_with_message_id(message_id):
            log.info("outbox row %s: already delivered before a restart; not sent again", row.id)
            return True
        waited = self.ctx.store.clock() - row.attempt_started_at
        # Not found is an answer only once the IMAP reader has read the mailbox as it was
        # self_copy_wait after the attempt: with a backlog, the copy may be there, unread.
        read_up_to = row.attempt_started_at + mailbox.self_copy_wait
        if waited < mailbox.self_copy_wait:
            raise TemporaryFailure("interrupted submission: waiting for the mailbox copy")
        if self.ctx.mail_caught_up_at < read_up_to:
            self.ctx.mail_pass_wanted.set()  # a quiet mailbox would otherwise idle for minutes
            raise TemporaryFailure("interrupted submission: reading the mailbox for its copy")
        return False

    # -- redactions ----------------------------------------------------------------------

    async def _on_redaction(
        self, row: Outbox, event: dict[str, Any], portal: Portal | None
    ) -> None:
        redacted = event.get("redacts") or _content(event).get("redacts")
        if not isinstance(redacted, str):
            await self._close(row, RowState.DROPPED)
            return
        if await self.ctx.store.cancel_pending_event(redacted):
            log.info("outbox row %s: redacted event withdrawn before sending", row.id)
            await self._close(row, RowState.DONE)
            return
        sent = await self.ctx.store.message_id_of_event(redacted)
        if (
            portal is None
            or sent is None
            or not await self.ctx.store.is_known_message_id(sent, "out")
        ):
            await self._close(row, RowState.DROPPED)
            return
        await ensure_whitelisted(self.ctx.store, self.ctx.settings, correspondents_of(portal))
        sender_name = await self.ctx.rooms.display_name(row.room_id, row.sender)
        await self._send(row, event, portal, WITHDRAWN_TEXT, None, (), sent, sender_name)

    # -- invites -------------------------------------------------------------------------

    async def _on_invite(self, row: Outbox, event: dict[str, Any]) -> None:
        target = str(event.get("state_key"))
        if not may_use_bridge(row.sender, self.ctx.access):
            await self._refuse_invite(row, target)
            return
        if target == self.ctx.bot_id:
            await self.ctx.rooms.join(self.ctx.bot_id, row.room_id)
            await self.commands.greet(row)
            await self._close(row, RowState.DONE)
            return
        address = self.ctx.address_of(target)
        if address is None:
            await self._close(row, RowState.DROPPED)
            return
        stamp = event.get("origin_server_ts")
        since = float(stamp) if isinstance(stamp, int | float) else None
        await self.commands.attach_correspondent(row.room_id, address, row.id, since)
        await self._close(row, RowState.DONE)

    async def _refuse_invite(self, row: Outbox, target: str) -> None:
        """An outsider invited the bot or a ghost: decline, politely, and drive nothing."""
        if target == self.ctx.bot_id or self.ctx.address_of(target) is not None:
            await self.ctx.rooms.decline_invite(target, row.room_id, NOT_ALLOWED)
            await self.ctx.notice(row.room_id, NOT_ALLOWED, f"mssb-deny-{row.id}", row.event_id)
            await self._deny(row)
        else:
            await self._close(row, RowState.DROPPED)


def _refusal(refused: list[RefusedRecipient]) -> Rejected | TemporaryFailure:
    """Every correspondent refused: retry when one refusal is temporary, else reject."""
    names = ", ".join(f"{r.address} ({r.code})" for r in refused)
    if any(not r.permanent for r in refused):
        return TemporaryFailure(f"recipients deferred: {len(refused)}")
    return Rejected(f"Le serveur MSSanté a refusé l'adresse : {names}.", code=refused[0].code)


def _encode(mail: OutboundMail) -> bytes:
    return build_message(mail).as_bytes(policy=SMTP)


def _content(event: dict[str, Any]) -> dict[str, Any]:
    """The event's content, or an empty one when it is not a JSON object."""
    content = event.get("content")
    return content if isinstance(content, dict) else {}


def _body(event: dict[str, Any]) -> str:
    body = _content(event).get("body")
    return body if isinstance(body, str) else ""


def _event_time(event: dict[str, Any]) -> datetime:
    stamp = event.get("origin_server_ts")
    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(stamp / 1000, tz=UTC)
    return datetime.now(tz=UTC)
