"""Mail → Matrix: posts each stored mail in its conversation as the correspondent's ghost."""

from __future__ import annotations

import asyncio
import fnmatch
import logging

from mssbridge.convert.mail_to_chat import attachment_content, chat_content, parse_mail
from mssbridge.convert.receipts import parse_report
from mssbridge.convert.threading import is_own_message_id, thread_keys
from mssbridge.errors import MalformedInput
from mssbridge.flows.authenticity import passes_dkim_policy
from mssbridge.flows.commands import CommandFlow, ghost_display_name
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.directory_start import ghost_directory_name
from mssbridge.flows.documents_in import prepare_documents
from mssbridge.flows.receipts import ReceiptFlow
from mssbridge.model import InboundMail
from mssbridge.policy.loops import is_own_mail
from mssbridge.store.gateway_repo import recipients_of
from mssbridge.store.repo import correspondents_of
from mssbridge.store.tables import OWN_MAIL, Inbox, Portal, RowState

log = logging.getLogger("mssbridge.inbound")


class InboundFlow:
    """Turns stored mails into Matrix messages; transaction ids make every send idempotent."""

    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx
        self.commands = CommandFlow(ctx)
        self.receipts = ReceiptFlow(ctx)

    async def handle(self, row: Inbox) -> None:
        raw = self.ctx.store.raw_of(row)
        try:
            mail = await asyncio.to_thread(parse_mail, raw)  # MIME work off the loop
        except MalformedInput:
            await self.ctx.store.finish(Inbox, row.id, RowState.SHUNTED, "unparsable mail")
            await self.ctx.admin_notice(
                f"Courriel entrant n° {row.id} illisible : conservé, voir « mssbridge queue "
                f"show inbox {row.id} ».",
                f"mssb-shunt-in-{row.id}",
            )
            log.warning("inbox row %s shunted: unparsable mail", row.id)
            return
        own_id = bool(mail.message_id) and is_own_message_id(
            mail.message_id or "", self.ctx.mail_domain
        )
        if is_own_mail(mail.sender_address, mail.message_id, self.ctx.identity, own_id):
            log.info("inbox row %s is the bridge's own mail; not relayed", row.id)
            await self.ctx.store.finish(Inbox, row.id, RowState.DROPPED, OWN_MAIL)
            return
        if not await passes_dkim_policy(self.ctx, row, raw):
            return
        report = await asyncio.to_thread(parse_report, raw)
        if report is not None:  # a DSN or an MDN: a receipt or a notice, not a message
            await self.receipts.on_report(row, report)
            return
        portal = await self.ctx.store.portal_for_message_ids(thread_keys(mail))
        if portal is None and mail.auto_submitted:
            # A report or an automatic reply about no known conversation opens no room.
            await self.ctx.store.finish(Inbox, row.id, RowState.DROPPED, "automatic, unthreaded")
            await self.ctx.admin_notice(
                f"Courriel automatique n° {row.id} (accusé, absence…) sans conversation "
                "connue : non relayé.",
                f"mssb-auto-{row.id}",
            )
            log.info("inbox row %s: automatic mail outside any conversation; dropped", row.id)
            return
        if portal is None:
            portal = await self._new_conversation(row, mail)
        elif recipients_of(row) and portal.room_id is not None:
            # Gateway mode: whoever the mail is addressed to is brought into the thread's room
            # (an invite of a member is a no-op).
            for user_id in recipients_of(row):
                await self.ctx.rooms.invite(self.ctx.bot_id, portal.room_id, user_id)
        assert portal.room_id is not None
        await self._relay(row, mail, portal)

    async def _new_conversation(self, row: Inbox, mail: InboundMail) -> Portal:
        """A mail outside every known thread opens a room and invites the routed users
        (in gateway mode: the users its envelope recipients map to)."""
        key = f"mail-{row.id}"
        portal = await self.ctx.store.portal_by_key(key)
        if portal is None:
            portal = await self.ctx.store.create_portal(
                subject=mail.subject,
                correspondents=[mail.sender_address],
                conversation_key=key,
                root_message_id=mail.message_id,
            )
        if portal.room_id is None:
            name = f"{mail.sender_name or mail.sender_address} : {mail.subject}"[:120]
            room_id = await self.ctx.rooms.create_room(self.ctx.bot_id, name=name)
            await self.ctx.store.update_portal(portal.id, room_id=room_id)
            portal.room_id = room_id
        for user_id in recipients_of(row) or self.route(mail.sender_address):
            await self.ctx.rooms.invite(self.ctx.bot_id, portal.room_id, user_id)
        log.info("inbox row %s opened portal %s", row.id, portal.id)
        return portal

    def route(self, sender: str) -> tuple[str, ...]:
        routing = self.ctx.settings.routing
        for rule in routing.rules:
            if fnmatch.fnmatch(sender.lower(), rule.sender.lower()):
                return rule.invite
        return routing.default_invite

    async def _relay(self, row: Inbox, mail: InboundMail, portal: Portal) -> None:
        room_id = portal.room_id
        assert room_id is not None
        address = mail.sender_address
        if address not in correspondents_of(portal):
            await self.ctx.store.update_portal(
                portal.id, correspondents=[*correspondents_of(portal), address]
            )
        ghost = self.ctx.ghost_id(address)
        known = await ghost_directory_name(self.ctx, address)  # cached: not a query per mail
        name = ghost_display_name(address, known or mail.sender_name)
        await self.ctx.rooms.ensure_ghost(ghost, name)
        await self.ctx.rooms.join(ghost, room_id)
        await self.ctx.rooms.show_name_in_room(ghost, room_id, name)
        # Health documents are read and their PDFs uploaded before the first send.
        documents = await prepare_documents(self.ctx, ghost, mail, row.id)
        message_id = mail.message_id or f"<inbox-{row.sha256[:32]}@{self.ctx.mail_domain}>"
        pairs: list[tuple[str, str]] = []
        content = chat_content(mail)
        if content and mail.auto_submitted:
            content["msgtype"] = "m.notice"  # reports and auto-replies are not the person speaking
        if content:
            event_id = await self.ctx.rooms.send(ghost, room_id, content, f"mssb-in-{row.id}-0")
            pairs.append((event_id, message_id))
        for index, attachment in enumerate(mail.attachments, start=1):
            mxc = await self.ctx.rooms.upload(
                ghost, attachment.data, attachment.content_type, attachment.filename
            )
            event_id = await self.ctx.rooms.send(
                ghost, room_id, attachment_content(attachment, mxc), f"mssb-in-{row.id}-{index}"
            )
            pairs.append((event_id, message_id))
        for index, document in enumerate(documents, start=len(mail.attachments) + 1):
            event_id = await self.ctx.rooms.send(
                ghost, room_id, document, f"mssb-in-{row.id}-{index}"
            )
            pairs.append((event_id, message_id))
        # A requested read notification is queued with the relay, so it leaves exactly once.
        mdn = self.receipts.mdn_task(row, mail, room_id)
        await self.ctx.store.record_relay(
            portal,
            pairs,
            "in",
            queue=Inbox,
            row_id=row.id,
            last_message_id=message_id,
            actor=address,
            follow_up=(mdn,) if mdn else (),
        )
        log.info("inbox row %s posted in portal %s (%d events)", row.id, portal.id, len(pairs))
