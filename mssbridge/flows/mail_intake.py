"""Reads the bridge's mailbox over IMAP IDLE and stores each new mail before flagging it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.policy import default as default_policy

from mssbridge.convert.threading import is_own_message_id
from mssbridge.errors import ConfigError, Rejected, TemporaryFailure
from mssbridge.flows.context import BridgeContext
from mssbridge.mail.imap import ImapMailbox
from mssbridge.policy.size import human_size
from mssbridge.store.db import is_store_unavailable
from mssbridge.store.tables import OWN_MAIL, RowState

log = logging.getLogger("mssbridge.intake")

MIN_BACKOFF = 1.0
MAX_BACKOFF = 60.0
HEALTHY_SESSION_SECONDS = 60.0
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # the end of the header block (RFC 5322 §2.1)


def header_message_id(raw: bytes) -> str | None:
    """The Message-ID of a raw mail, read from its header only."""
    # Only the header block is parsed: the parser would decode a 10 MB body too.
    blank_line = _BLANK_LINE.search(raw)
    try:
        head = raw[: blank_line.end()] if blank_line else raw
        headers = BytesHeaderParser(policy=default_policy).parsebytes(head)
        value = headers.get("Message-ID")
    except Exception:  # a broken header is the inbound flow's business, not the reader's
        return None
    return str(value).strip()[:998] if value else None


class MailIntake:
    """The IMAP side of the inbound path: fetch by UID, store, then flag as seen."""

    def __init__(self, ctx: BridgeContext, password: str, on_stored: Callable[[], None]) -> None:
        self.ctx = ctx
        self.password = password
        self.on_stored = on_stored
        self._stopping = asyncio.Event()
        self._renew = False
        self.connected = asyncio.Event()

    @property
    def mailbox_key(self) -> str:
        mailbox = self.ctx.settings.mailbox
        return f"{mailbox.address}/{mailbox.imap.folder}"

    def stop(self) -> None:
        self._stopping.set()

    def renew_session(self) -> None:
        """Reconnect after the current pass (new TLS settings): an IDLE session can last days."""
        self._renew = True
        self.ctx.mail_pass_wanted.set()

    async def run(self) -> None:
        backoff = MIN_BACKOFF
        while not self._stopping.is_set():
            client = ImapMailbox(self.ctx.settings.mailbox, self.ctx.tls_context, self.password)
            started = time.monotonic()
            try:
                await client.connect()
                await self._session(client)
                backoff = 0.0  # left on purpose (renewal): reconnect at once
            except (TemporaryFailure, OSError, TimeoutError) as exc:
                if time.monotonic() - started > HEALTHY_SESSION_SECONDS:
                    backoff = MIN_BACKOFF  # a session that lasted: start the backoff afresh
                log.warning("IMAP unavailable (%s); retrying in %.0f s", exc, backoff)
            except (Rejected, ConfigError) as exc:
                backoff = MAX_BACKOFF
                log.error("IMAP refused the bridge (%s); retrying in %.0f s", exc, backoff)
            except Exception as exc:
                if is_store_unavailable(exc):  # not stored, so not flagged: read again soon
                    log.warning(
                        "IMAP reader: store unavailable (%s); retrying in %.0f s",
                        type(exc).__name__,
                        backoff,
                    )
                else:
                    backoff = MAX_BACKOFF
                    log.exception("IMAP reader failed unexpectedly; retrying in %.0f s", backoff)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await client.close()
            if not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, backoff * 2))

    async def _session(self, client: ImapMailbox) -> None:
        uidvalidity = await client.select()
        store = self.ctx.store
        cursor = await store.imap_cursor(self.mailbox_key)
        if cursor is None or cursor.uidvalidity != uidvalidity:
            log.info("mailbox %s: new UIDVALIDITY; scanning from the start", self.mailbox_key)
            await store.reset_imap_cursor(self.mailbox_key, uidvalidity)
            last_uid = 0
        else:
            last_uid = cursor.last_uid
        self.connected.set()
        idle_timeout = self.ctx.settings.mailbox.imap.idle_timeout
        # A first scan (new install, or UIDVALIDITY changed) takes only unseen mail: what is
        # \Seen was relayed before or read by a person, and is not replayed into rooms.
        unseen_only = last_uid == 0
        while not self._stopping.is_set():
            # Drain until a pass finds nothing: a mail that arrives while we fetch is
            # announced in a command's response, not by the IDLE that follows.
            before = None
            while before != last_uid:
                before = last_uid
                self.ctx.mail_pass_wanted.clear()
                pass_started = store.clock()
                last_uid = await self._drain(client, uidvalidity, last_uid, unseen_only)
                unseen_only = False
            # That pass found nothing new: every mail there when it began is stored.
            self.ctx.mail_caught_up_at = pass_started
            if self._stopping.is_set():
                return
            if self._renew:
                self._renew = False
                log.info(
                    "mailbox %s: reconnecting with the reloaded TLS settings", self.mailbox_key
                )
                return
            await client.wait_for_changes(idle_timeout, wake=self.ctx.mail_pass_wanted)

    async def _drain(
        self, client: ImapMailbox, uidvalidity: int, last_uid: int, unseen_only: bool
    ) -> int:
        limit = self.ctx.settings.limits.max_message_size
        highest = last_uid
        if unseen_only:
            present = await client.new_messages(last_uid)
            highest = present[-1][0] if present else last_uid
            pending = await client.new_messages(last_uid, unseen_only=True)
        else:
            pending = await client.new_messages(last_uid)
        for uid, size in pending:
            if size > limit:
                await self._refuse_oversize(client, uidvalidity, uid, size, limit)
            else:
                await self._store(client, uidvalidity, uid)
            await client.mark_seen(uid)
            last_uid = max(last_uid, uid)
        if highest > last_uid:
            # only after the unseen mail is stored: a crash before this line rescans
            await self.ctx.store.advance_imap_cursor(self.mailbox_key, uidvalidity, highest)
            last_uid = highest
        return last_uid

    async def _store(self, client: ImapMailbox, uidvalidity: int, uid: int) -> None:
        """Store one mail; the bridge's own copy is stored already closed, without its body.

        An own copy (a Message-ID this bridge minted) is never relayed: only its Message-ID
        matters, as the proof that an interrupted submission left (``relay.md``). Closing it
        here spares the inbox worker, which posts mail one at a time, a pass per outbound mail.
        """
        raw = await client.fetch(uid)
        message_id = header_message_id(raw)
        if message_id is not None and is_own_message_id(message_id, self.ctx.mail_domain):
            row_id = await self.ctx.store.store_mail(
                self.mailbox_key,
                uidvalidity,
                uid,
                b"",
                message_id,
                state=RowState.DROPPED,
                size=len(raw),
                error=OWN_MAIL,
            )
            log.info("mail uid %s is the bridge's own copy: inbox row %s, closed", uid, row_id)
            return
        row_id = await self.ctx.store.store_mail(
            self.mailbox_key, uidvalidity, uid, raw, message_id
        )
        log.info("mail uid %s stored as inbox row %s (%d bytes)", uid, row_id, len(raw))
        self.on_stored()

    async def _refuse_oversize(
        self, client: ImapMailbox, uidvalidity: int, uid: int, size: int, limit: int
    ) -> None:
        """Record an oversize mail without fetching it, and tell the operators."""
        row_id = await self.ctx.store.store_mail(
            self.mailbox_key,
            uidvalidity,
            uid,
            b"",
            None,
            state=RowState.REJECTED,
            size=size,
            error=f"5.3.4 message of {size} bytes over the {limit} bytes limit",
        )
        log.warning("mail uid %s refused: %d bytes over the limit of %d", uid, size, limit)
        await self.ctx.admin_notice(
            f"Courriel entrant de {human_size(size)} refusé (limite {human_size(limit)}), "
            f"laissé dans la boîte (UID {uid}).",
            f"mssb-oversize-{row_id}-{uid}",
        )
