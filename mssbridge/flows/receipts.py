"""Receipts: delivery and read reports become read receipts or notices; MDNs the bridge owes."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.policy import SMTP
from typing import Any

from mssbridge import __version__
from mssbridge.cda.mail_parts import nil_header
from mssbridge.convert.mdn import MdnAnswer, MdnRequest, NoMdn, build_mdn, mdn_request
from mssbridge.convert.receipts import DELIVERY_STATUS, Outcome, Report, notice_text
from mssbridge.convert.threading import message_id_for_event
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.whitelist_gate import ensure_whitelisted
from mssbridge.model import InboundMail
from mssbridge.store.receipts_repo import sent_event
from mssbridge.store.repo import correspondents_of
from mssbridge.store.tables import AuditAction, Inbox, Outbox, RowState

log = logging.getLogger("mssbridge.receipts")

# The outbox row type of a read notification the bridge owes (a task, not a Matrix event).
MDN_TASK = "mssbridge.mdn"
UNKNOWN_REPORT = "report about no mail the bridge sent"

LeftBeforeCrash = Callable[[Outbox, str], Awaitable[bool]]


def is_read_notification(row: Outbox) -> bool:
    """Whether an outbox row is a read notification to send (not a Matrix event)."""
    return row.event_type == MDN_TASK


def mdn_message_id(inbox: Inbox, domain: str) -> str:
    """The Message-ID of the MDN answering an inbox row: the same on every attempt."""
    return message_id_for_event(f"mdn/{inbox.id}/{inbox.sha256}", domain)


async def read_notification_refused(ctx: BridgeContext, row: Outbox, exc: Any) -> None:
    """A read notification given up (retries exhausted, unexpected error): the operators know."""
    await ctx.admin_notice(
        f"Accusé de lecture n° {row.id} non envoyé : {getattr(exc, 'user_message', exc)}",
        f"mssb-mdn-refused-{row.id}",
    )


class ReceiptFlow:
    """Both directions of receipts; every effect is idempotent or recorded before it repeats."""

    def __init__(self, ctx: BridgeContext) -> None:
        self.ctx = ctx

    # -- reports the correspondents' servers and clients send ----------------------------

    async def on_report(self, row: Inbox, report: Report) -> None:
        """Apply a DSN or an MDN to the mail it is about, then close the inbox row.

        Read receipts are idempotent and notices carry a transaction id derived from the row,
        so a retry after a failure half-way repeats nothing.
        """
        found = await sent_event(self.ctx.store, report.original_ids)
        if found is None:
            await self.ctx.store.finish(Inbox, row.id, RowState.DROPPED, UNKNOWN_REPORT)
            await self.ctx.admin_notice(
                f"Accusé n° {row.id} (remise ou lecture) sur un courriel que la passerelle n'a "
                "pas envoyé (ou déjà purgé) : non relayé.",
                f"mssb-report-{row.id}",
            )
            log.info("inbox row %s: %s report about no sent mail", row.id, report.report_type)
            return
        portal, event_id = found
        room_id = portal.room_id
        assert room_id is not None
        correspondents = {a.lower() for a in correspondents_of(portal)}
        own = self.ctx.settings.mailbox.address.lower()
        done: Counter[str] = Counter()
        for index, line in enumerate(report.recipients):
            if line.recipient.lower() == own:
                continue  # the bridge's own copy of its mail
            if line.outcome == Outcome.READ:
                if self._may_mark_read(report, line.recipient, correspondents):
                    await self._read_receipt(line.recipient, room_id, event_id)
                    done["receipt"] += 1
                else:
                    done["receipt-skipped"] += 1
                continue
            if line.outcome == Outcome.DELAYED and not self.ctx.settings.receipts.notify_delayed:
                done["delay-logged"] += 1
                continue
            text = notice_text(report, line)
            if text is not None:
                content = {
                    "msgtype": "m.notice",
                    "body": text,
                    "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
                    "m.mentions": {},
                }
                await self.ctx.rooms.send(
                    self.ctx.bot_id, room_id, content, f"mssb-report-{row.id}-{index}"
                )
                done[f"{line.outcome}:{line.status or '-'}"] += 1
        await self.ctx.store.finish(Inbox, row.id, RowState.DONE)
        log.info(
            "inbox row %s: %s report on portal %s applied (%s)",
            row.id,
            report.report_type,
            portal.id,
            ", ".join(f"{k}={v}" for k, v in sorted(done.items())) or "nothing to show",
        )

    @staticmethod
    def _may_mark_read(report: Report, recipient: str, correspondents: set[str]) -> bool:
        """Only a correspondent's ghost reads, and only on its own MDN (from its address):
        a read notification written by someone else does not drive that ghost."""
        if recipient.lower() not in correspondents:
            return False
        return report.report_type == DELIVERY_STATUS or report.sender.lower() == recipient.lower()

    async def _read_receipt(self, address: str, room_id: str, event_id: str) -> None:
        ghost = self.ctx.ghost_id(address)
        await self.ctx.rooms.join(ghost, room_id)
        await self.ctx.rooms.mark_read(ghost, room_id, event_id)

    # -- read notifications the bridge owes ----------------------------------------------

    def mdn_task(self, row: Inbox, mail: InboundMail, room_id: str) -> Outbox | None:
        """The outbox row that will answer a mail's read notification request, or None.

        Queued in the transaction that records the mail as posted in the room, so the MDN
        leaves only after the Matrix send succeeded, and exactly once.
        """
        if not self.ctx.settings.receipts.answer_read_requests:
            return None
        request = mdn_request(
            self.ctx.store.raw_of(row),
            automatic=mail.auto_submitted,
            own_address=self.ctx.settings.mailbox.address,
        )
        if isinstance(request, NoMdn):
            if request != NoMdn.NOT_REQUESTED:
                log.info("inbox row %s: no read notification (%s)", row.id, request.value)
            return None
        return self.ctx.store.bridge_task(
            {
                "type": MDN_TASK,
                "event_id": f"mssb-mdn-{row.id}",
                "room_id": room_id,
                "sender": self.ctx.bot_id,
                "content": {"inbox_row": row.id},
            }
        )

    async def send_mdn(self, row: Outbox, left_before_crash: LeftBeforeCrash) -> None:
        """Send the MDN of an outbox task; a refusal closes it without a room notice."""
        store = self.ctx.store
        task = store.event_of(row)
        inbox = await store.get(Inbox, int(task["content"]["inbox_row"]))
        raw = store.raw_of(inbox) if inbox is not None else b""
        request = (
            mdn_request(raw, automatic=False, own_address=self.ctx.settings.mailbox.address)
            if raw
            else NoMdn.NOT_REQUESTED
        )
        if inbox is None or isinstance(request, NoMdn):
            await store.finish(Outbox, row.id, RowState.DROPPED, "original mail gone")
            log.info("outbox row %s: read notification dropped: original mail gone", row.id)
            return
        try:
            await ensure_whitelisted(store, self.ctx.settings, [request.notify_to])
            message_id = mdn_message_id(inbox, self.ctx.mail_domain)
            encoded = await self.ctx.dkim.sign(
                await asyncio.to_thread(_encode, request, self._answer(message_id), raw)
            )
            if not await left_before_crash(row, message_id):
                await self._submit(row, request.notify_to, encoded)
        except Rejected as exc:
            log.warning("outbox row %s: read notification refused (%s)", row.id, exc.code)
            await store.finish(Outbox, row.id, RowState.REJECTED, f"{exc.code} {exc}")
            return
        await store.finish(
            Outbox, row.id, RowState.DONE, audit_action=AuditAction.MESSAGE_SENT, outcome="mdn"
        )
        log.info("outbox row %s: read notification sent for inbox row %s", row.id, inbox.id)

    def _answer(self, message_id: str) -> MdnAnswer:
        settings = self.ctx.settings
        mailbox = settings.mailbox
        nil = settings.mssante.nil
        return MdnAnswer(
            message_id=message_id,
            from_address=mailbox.address,
            from_name=mailbox.display_name,
            date=datetime.fromtimestamp(self.ctx.store.clock(), tz=UTC),
            reporting_ua=f"{self.ctx.mail_domain}; mssbridge {__version__}",
            organisation=mailbox.display_name,
            max_size=settings.limits.max_message_size,
            extra_headers=(nil_header(nil),) if nil else (),
        )

    async def _submit(self, row: Outbox, to: str, encoded: bytes) -> None:
        """Submit with the bridge's own copy (its proof after a crash), without DSN."""
        mailbox = self.ctx.settings.mailbox
        envelope = [to, mailbox.address] if mailbox.self_copy else [to]
        submit = self.ctx.submit_quiet or self.ctx.submit
        await self.ctx.store.mark_attempt(row)
        submission = await submit(mailbox.address, envelope, encoded)
        refused = [r for r in submission.refused if r.address.lower() == to.lower()]
        if refused:
            await self.ctx.store.clear_attempt(row)
            if not refused[0].permanent:
                raise TemporaryFailure(f"read notification deferred: {refused[0].code}")
            raise Rejected("Accusé de lecture refusé par le serveur.", code=refused[0].code)


def _encode(request: MdnRequest, answer: MdnAnswer, raw: bytes) -> bytes:
    return build_mdn(request, answer, raw).as_bytes(policy=SMTP)
