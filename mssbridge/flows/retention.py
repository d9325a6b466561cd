"""The retention purge: store rows, the bridge's mailbox copies and bridged Matrix events.

One run goes through every :class:`PurgeKind` by batches of ``[retention] batch`` rows, one
transaction each, with a short pause between batches so the relay's own transactions get
the database in between. Mailbox copies are expunged (own IMAP session) before their inbox
rows go; ghosts' events are redacted before their map rows go. When the mailbox or the
homeserver cannot be reached, those kinds wait for the next run and the rest goes on.
See docs/retention.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mssbridge.config import Settings
from mssbridge.errors import BridgeError, Rejected, TemporaryFailure
from mssbridge.mail.imap import ImapMailbox
from mssbridge.metrics import BridgeMetrics
from mssbridge.policy.retention import (
    MAILBOX_KINDS,
    MATRIX_KINDS,
    PurgeKind,
    RetentionPolicy,
    cutoffs,
    summary,
)
from mssbridge.store.ops import BridgedEvent, OpsStore
from mssbridge.store.repo import Store

log = logging.getLogger("mssbridge.retention")

BATCH_PAUSE_SECONDS = 0.1
FIRST_RUN_DELAY_SECONDS = 10.0
REDACTION_REASON = "Durée de conservation écoulée"


@dataclass
class OpenMailbox:
    """A connected session on the bridge's folder, and what names its rows in the store."""

    session: ImapMailbox
    mailbox_key: str
    uidvalidity: int


MailboxOpener = Callable[[], Awaitable[OpenMailbox]]
Redactor = Callable[[BridgedEvent], Awaitable[None]]


def policy_of(settings: Settings) -> RetentionPolicy:
    r = settings.retention
    return RetentionPolicy(
        content_days=r.content_days, audit_days=r.audit_days, rejected_days=r.rejected_days
    )


def mailbox_key(settings: Settings) -> str:
    """How inbox rows name the bridge's folder (same as the IMAP reader)."""
    return f"{settings.mailbox.address}/{settings.mailbox.imap.folder}"


def mailbox_opener(
    settings: Settings, tls_context: Callable[[], ssl.SSLContext], password: str
) -> MailboxOpener:
    """Open an IMAP session of its own (the reader's stays in IDLE) on the bridge's folder."""

    async def open_mailbox() -> OpenMailbox:
        session = ImapMailbox(settings.mailbox, tls_context(), password)
        await session.connect()
        try:
            uidvalidity = await session.select()
        except BaseException:
            await session.close()
            raise
        return OpenMailbox(session, mailbox_key(settings), uidvalidity)

    return open_mailbox


def ghost_redactor(
    redact: Callable[[str, str, str, str], Awaitable[None]], ghost_id: Callable[[str], str]
) -> Redactor:
    """Redact a bridged event as the ghost that posted it, trying the portal's correspondents.

    A ghost may always redact its own events. A refusal by every ghost (the room is gone, the
    ghost left it) leaves the event as it is: the row still goes, the room's own
    ``m.room.retention`` takes over. A temporary failure stops the run's redactions.
    """

    async def redactor(event: BridgedEvent) -> None:
        if not event.room_id:
            return
        try:
            addresses = json.loads(event.correspondents) if event.correspondents else []
        except ValueError:
            addresses = []
        for address in addresses:
            try:
                await redact(ghost_id(address), event.room_id, event.event_id, REDACTION_REASON)
                return
            except Rejected:
                continue
        log.info("bridged event of map row %s not redacted (no ghost could)", event.map_id)

    return redactor


class RetentionFlow:
    """Runs the purge once (``run_once``), on a schedule (``run``), or counts (``plan``)."""

    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        batch: int,
        *,
        open_mailbox: MailboxOpener | None = None,
        redact: Redactor | None = None,
        metrics: BridgeMetrics | None = None,
        actor: str | None = None,
        pause: float = BATCH_PAUSE_SECONDS,
    ) -> None:
        self.store = store
        self.ops = OpsStore(store)
        self.policy = policy
        self.batch = batch
        self.open_mailbox = open_mailbox
        self.redact = redact
        self.metrics = metrics
        self.actor = actor
        self.pause = pause
        self._stopping = asyncio.Event()
        self.last_duration = 0.0

    def stop(self) -> None:
        self._stopping.set()

    async def plan(self) -> dict[PurgeKind, int]:
        """How many rows of each kind are past retention now (``--dry-run``)."""
        cuts = cutoffs(self.store.clock(), self.policy)
        return {kind: await self.ops.count(kind, cuts[kind]) for kind in PurgeKind}

    async def run_once(self) -> dict[PurgeKind, int]:
        """Purge everything past retention; rows removed per kind."""
        started = time.monotonic()
        cuts = cutoffs(self.store.clock(), self.policy)
        counts: dict[PurgeKind, int] = {}
        mailbox: OpenMailbox | None = None
        try:
            for kind in PurgeKind:
                if self._stopping.is_set():
                    break
                if kind in MAILBOX_KINDS:
                    counts[kind], mailbox = await self._purge_mailbox_kind(
                        kind, cuts[kind], mailbox
                    )
                elif kind in MATRIX_KINDS:
                    counts[kind] = await self._purge_bridged_events(cuts[kind])
                else:
                    counts[kind] = await self._purge_rows(kind, cuts[kind])
        finally:
            if mailbox is not None:
                with contextlib.suppress(Exception):
                    await mailbox.session.close()
            self.last_duration = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.purge_counts(counts)
        log.info("retention purge: %s (%.1f s)", summary(counts), self.last_duration)
        return counts

    async def run(self, every_minutes: int, first_delay: float = FIRST_RUN_DELAY_SECONDS) -> None:
        """Run on a schedule until ``stop()``; a failed run is logged and tried again later."""
        delay = first_delay
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention purge failed; trying again at the next run")
            delay = every_minutes * 60.0

    async def _breathe(self) -> None:
        """Let the relay's transactions through between two batches."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.pause)

    async def _purge_rows(self, kind: PurgeKind, cutoff: float) -> int:
        total = 0
        while not self._stopping.is_set():
            deleted = await self.ops.purge_batch(kind, cutoff, self.batch, self.actor)
            total += deleted
            if deleted < self.batch:
                break
            await self._breathe()
        return total

    async def _purge_mailbox_kind(
        self, kind: PurgeKind, cutoff: float, mailbox: OpenMailbox | None
    ) -> tuple[int, OpenMailbox | None]:
        """Expunge the mailbox copies, then delete their rows, batch by batch."""
        if self.open_mailbox is None:
            return 0, mailbox
        total = 0
        while not self._stopping.is_set():
            copies = await self.ops.mailbox_copies(kind, cutoff, self.batch)
            if not copies:
                break
            try:
                if mailbox is None:
                    mailbox = await self.open_mailbox()
                here = [
                    c.uid
                    for c in copies
                    if c.mailbox == mailbox.mailbox_key and c.uidvalidity == mailbox.uidvalidity
                ]
                # Rows of another folder or an older UIDVALIDITY name no message that can be
                # reached any more: they go without an expunge.
                if here:
                    await mailbox.session.delete(here)
            except (BridgeError, OSError, TimeoutError) as exc:
                log.warning("retention: mailbox copies not removed (%s); next run", exc)
                break
            deleted = await self.ops.purge_rows(
                kind, cutoff, [c.row_id for c in copies], self.actor
            )
            total += deleted
            if deleted == 0 or len(copies) < self.batch:
                break
            await self._breathe()
        return total, mailbox

    async def _purge_bridged_events(self, cutoff: float) -> int:
        """Redact the ghosts' events past retention, then forget their map rows."""
        if self.redact is None:
            return 0
        total = 0
        while not self._stopping.is_set():
            events = await self.ops.bridged_events(cutoff, self.batch)
            if not events:
                break
            handled: list[int] = []
            interrupted = False
            for event in events:
                try:
                    await self.redact(event)
                except TemporaryFailure as exc:
                    log.warning("retention: redactions interrupted (%s); next run", exc)
                    interrupted = True
                    break
                handled.append(event.map_id)
            deleted = await self.ops.purge_rows(PurgeKind.MAP_IN, cutoff, handled, self.actor)
            total += deleted
            if interrupted or deleted == 0 or len(events) < self.batch:
                break
            await self._breathe()
        return total
