"""The only module that runs SQL: small named operations on the queues, portals and maps."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col, select

from mssbridge.errors import ConfigError
from mssbridge.security.atrest import Sealer, SealError
from mssbridge.store import audit
from mssbridge.store.tables import (
    OPEN_STATES,
    AuditAction,
    Delivery,
    ImapCursor,
    Inbox,
    MatrixTxn,
    MessageMap,
    Meta,
    Outbox,
    Portal,
    RowState,
)

Queue = TypeVar("Queue", bound=Inbox | Outbox | Delivery)
CANARY_KEY = "at-rest-canary"
# PostgreSQL advisory lock key of the inbox's turn among instances (any constant of ours).
INBOX_TURN_LOCK = 0x6D7362_01
# How long a mail waiting for a retry keeps the mails that arrived after it waiting.
INBOX_ORDER_HOLD = 3600.0
_CANARY_TEXT = b"mssbridge at-rest key check"


@dataclass(frozen=True)
class QueueCounts:
    """How many rows a queue holds in each state."""

    by_state: dict[str, int]


class Store:
    """Durable state of the bridge; every write that acknowledges a peer commits here first."""

    def __init__(
        self, engine: AsyncEngine, sealer: Sealer, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.sealer = sealer
        self.clock = clock
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        return self._sessions()

    # -- at-rest key ---------------------------------------------------------------------

    async def verify_key(self) -> None:
        """Refuse to start with a key other than the one the store was sealed with."""
        async with self.session() as session, session.begin():
            row = await session.get(Meta, CANARY_KEY)
            if row is None:
                session.add(Meta(key=CANARY_KEY, value=self.sealer.seal(_CANARY_TEXT, b"meta")))
                return
            try:
                self.sealer.open(row.value, b"meta")
            except SealError as exc:
                raise ConfigError(
                    "bridge.key_file: this key cannot open the store (wrong key file?)"
                ) from exc

    # -- Matrix side ---------------------------------------------------------------------

    async def store_transaction(self, txn_id: str, events: Sequence[dict[str, Any]]) -> int:
        """Store an appservice transaction and its events atomically; a replay stores nothing."""
        now = self.clock()
        async with self.session() as session, session.begin():
            if await session.get(MatrixTxn, txn_id) is not None:
                return 0
            session.add(MatrixTxn(txn_id=txn_id, received_at=now))
            event_ids = [e["event_id"] for e in events]
            known = set()
            if event_ids:
                result = await session.execute(
                    select(Outbox.event_id).where(col(Outbox.event_id).in_(event_ids))
                )
                known = set(result.scalars())
            stored = 0
            for event in events:
                event_id = event["event_id"]
                if event_id in known:
                    continue
                known.add(event_id)
                payload = json.dumps(event, separators=(",", ":")).encode("utf-8")
                session.add(
                    Outbox(
                        event_id=event_id,
                        room_id=event["room_id"],
                        sender=event["sender"],
                        event_type=event["type"],
                        payload=self.sealer.seal(payload, _aad("outbox", event_id)),
                        created_at=now,
                        updated_at=now,
                    )
                )
                stored += 1
            return stored

    def bridge_task(self, event: dict[str, Any]) -> Outbox:
        """An outbox row for work the bridge gives itself (not a Matrix event), sealed.

        ``event`` has the shape of a Matrix event (``type``, ``event_id``, ``room_id``,
        ``sender``, ``content``); its ``event_id`` must be unique and derived from its cause,
        so queueing the same task twice fails instead of doing the work twice.
        """
        now = self.clock()
        payload = json.dumps(event, separators=(",", ":")).encode("utf-8")
        return Outbox(
            event_id=event["event_id"],
            room_id=event["room_id"],
            sender=event["sender"],
            event_type=event["type"],
            payload=self.sealer.seal(payload, _aad("outbox", event["event_id"])),
            created_at=now,
            updated_at=now,
        )

    def event_of(self, row: Outbox) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(
            self.sealer.open(row.payload, _aad("outbox", row.event_id))
        )
        return event

    # -- mail side -----------------------------------------------------------------------

    async def imap_cursor(self, mailbox: str) -> ImapCursor | None:
        async with self.session() as session:
            return await session.get(ImapCursor, mailbox)

    async def reset_imap_cursor(self, mailbox: str, uidvalidity: int) -> None:
        """A new UIDVALIDITY: start over from UID 0 (stored mails are recognised by hash)."""
        async with self.session() as session, session.begin():
            cursor = await session.get(ImapCursor, mailbox)
            if cursor is None:
                session.add(ImapCursor(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=0))
            else:
                cursor.uidvalidity = uidvalidity
                cursor.last_uid = 0

    async def advance_imap_cursor(self, mailbox: str, uidvalidity: int, uid: int) -> None:
        """Move the cursor past mail the bridge leaves alone (already seen at first scan)."""
        async with self.session() as session, session.begin():
            cursor = await session.get(ImapCursor, mailbox)
            if cursor is None:
                session.add(ImapCursor(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=uid))
            elif cursor.uidvalidity == uidvalidity and cursor.last_uid < uid:
                cursor.last_uid = uid

    async def store_mail(
        self,
        mailbox: str,
        uidvalidity: int,
        uid: int,
        raw: bytes,
        message_id: str | None,
        *,
        state: RowState = RowState.PENDING,
        size: int | None = None,
        error: str | None = None,
    ) -> int | None:
        """Store a fetched mail and advance the cursor in one transaction.

        Returns the inbox row id, or None when the same bytes were already stored (a
        UIDVALIDITY change or a replay) or another instance stored this UID: then only the
        cursor moves.
        """
        try:
            return await self._store_mail(
                mailbox, uidvalidity, uid, raw, message_id, state=state, size=size, error=error
            )
        except IntegrityError:
            # Another instance stored this UID between our check and our insert (SQLite
            # has no row lock to make them take turns): it moved the cursor too.
            async with self.session() as session:
                found = await session.execute(
                    select(Inbox.id).where(
                        Inbox.mailbox == mailbox, Inbox.uidvalidity == uidvalidity, Inbox.uid == uid
                    )
                )
                if found.first() is None:
                    raise
            return None

    async def _store_mail(
        self,
        mailbox: str,
        uidvalidity: int,
        uid: int,
        raw: bytes,
        message_id: str | None,
        *,
        state: RowState,
        size: int | None,
        error: str | None,
    ) -> int | None:
        now = self.clock()
        digest = hashlib.sha256(raw).hexdigest()
        async with self.session() as session, session.begin():
            # Instances reading one mailbox take turns on its cursor row (PostgreSQL), so the
            # second to store a mail finds the first one's row instead of a unique-key error.
            await session.get(ImapCursor, mailbox, with_for_update=True)
            same_mail = and_(col(Inbox.uidvalidity) == uidvalidity, col(Inbox.uid) == uid)
            found = await session.execute(
                select(Inbox.id)
                .where(
                    Inbox.mailbox == mailbox,
                    or_(col(Inbox.sha256) == digest, same_mail) if raw else same_mail,
                )
                .limit(1)
            )
            duplicate = found.first()
            row_id: int | None = None
            if duplicate is None:
                row = Inbox(
                    mailbox=mailbox,
                    uidvalidity=uidvalidity,
                    uid=uid,
                    message_id=message_id,
                    sha256=digest,
                    size=size if size is not None else len(raw),
                    raw=None,
                    state=state,
                    last_error=error,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                await session.flush()
                assert row.id is not None
                row.raw = self.sealer.seal(raw, _aad("inbox", str(row.id))) if raw else None
                row_id = row.id
                audit.add(
                    session,
                    audit.action_for(state, error) or AuditAction.MESSAGE_RECEIVED,
                    now,
                    direction="in",
                    queue="inbox",
                    row_id=row_id,
                    message_id=message_id,
                    outcome=audit.outcome_of(state, error),
                )
            cursor = await session.get(ImapCursor, mailbox)
            if cursor is None:
                session.add(ImapCursor(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=uid))
            else:
                cursor.uidvalidity = uidvalidity
                cursor.last_uid = max(cursor.last_uid, uid)
            return row_id

    def raw_of(self, row: Inbox) -> bytes:
        if row.raw is None:
            return b""
        return self.sealer.open(row.raw, _aad("inbox", str(row.id)))

    # -- queue workers -------------------------------------------------------------------

    async def claim_outbox(self, owner: str, lease: float, limit: int) -> list[Outbox]:
        """Lease the oldest open event of each room that is due (keeps per-room order)."""
        now = self.clock()
        heads = (
            select(func.min(Outbox.id))
            .where(col(Outbox.state).in_(OPEN_STATES))
            .group_by(Outbox.room_id)
        )
        query = (
            select(Outbox)
            .where(
                col(Outbox.id).in_(heads),
                # Repeated here: PostgreSQL re-checks a row updated meanwhile against the outer
                # conditions only, and a head finished meanwhile must not be taken again.
                col(Outbox.state).in_(OPEN_STATES),
                Outbox.next_at <= now,
                Outbox.lease_until < now,
            )
            .order_by(col(Outbox.id))
            .limit(limit)
        )
        return await self._claim(Outbox, query, owner, now, now + lease)

    async def claim_inbox(self, owner: str, lease: float, limit: int) -> list[Inbox]:
        """Lease the oldest due mails, in arrival order, while no other worker holds any.

        Mails are posted in arrival order because a mail's conversation is known only once
        it is parsed (a reply may follow its thread's first mail closely): several instances
        take the inbox in turns, one batch at a time, instead of side by side.
        """
        now = self.clock()
        # A mail waiting for its retry, or for the end of the lease of a worker that could
        # not record its outcome, holds the ones that arrived after it (order within a
        # conversation), for INBOX_ORDER_HOLD at most: then it no longer blocks the others.
        waiting = (
            select(func.min(Inbox.id))
            .where(
                col(Inbox.state).in_(OPEN_STATES),
                or_(col(Inbox.next_at) > now, col(Inbox.lease_until) >= now),
                Inbox.created_at > now - INBOX_ORDER_HOLD,
            )
            .scalar_subquery()
        )
        query = (
            select(Inbox)
            .where(
                col(Inbox.state).in_(OPEN_STATES),
                Inbox.next_at <= now,
                Inbox.lease_until < now,
                or_(waiting.is_(None), col(Inbox.id) < waiting),
            )
            .order_by(col(Inbox.id))
            .limit(limit)
        )
        held_elsewhere = (
            select(Inbox.id)
            .where(
                col(Inbox.state).in_(OPEN_STATES),
                Inbox.lease_until >= now,
                col(Inbox.lease_owner) != owner,
            )
            .limit(1)
        )
        return await self._claim(
            Inbox, query, owner, now, now + lease, turn=INBOX_TURN_LOCK, unless=held_elsewhere
        )

    async def _claim(
        self,
        table: type[Queue],
        query: Any,
        owner: str,
        now: float,
        until: float,
        *,
        turn: int | None = None,
        unless: Any = None,
    ) -> list[Queue]:
        """Lease the rows ``query`` selects; none when ``unless`` finds a row.

        PostgreSQL (several instances may share it): one transaction locks the candidates
        with ``FOR UPDATE SKIP LOCKED``, so two instances claiming at the same moment get
        different rows and never wait for each other; ``turn`` names an advisory lock that
        makes the ``unless`` check and the claim one step among instances. SQLite (one
        writer): each candidate is taken by a conditional update that re-checks it is still
        open, due and unleased.
        """
        if self.engine.dialect.name == "postgresql":
            async with self.session() as session, session.begin():
                if turn is not None:
                    await session.execute(select(func.pg_advisory_xact_lock(turn)))
                if unless is not None and (await session.execute(unless)).first() is not None:
                    return []
                locked = query.with_for_update(skip_locked=True, of=table)
                rows = list((await session.execute(locked)).scalars())
                if rows:
                    await session.execute(
                        update(table)
                        .where(col(table.id).in_([row.id for row in rows]))
                        .values(lease_owner=owner, lease_until=until)
                    )
                for row in rows:
                    row.lease_owner, row.lease_until = owner, until
                return rows
        claimed: list[Queue] = []
        async with self.session() as session:
            if unless is not None and (await session.execute(unless)).first() is not None:
                return []
            candidates = list((await session.execute(query)).scalars())
        if not candidates:
            return claimed
        async with self.session() as session, session.begin():  # one commit for the batch
            for row in candidates:
                result = await session.execute(
                    update(table)
                    .where(
                        col(table.id) == row.id,
                        col(table.state).in_(OPEN_STATES),
                        col(table.next_at) <= now,
                        col(table.lease_until) < now,
                    )
                    .values(lease_owner=owner, lease_until=until)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    row.lease_owner, row.lease_until = owner, until
                    claimed.append(row)
        return claimed

    async def renew_leases(self, table: type[Queue], owner: str, lease: float) -> int:
        """Extend the leases ``owner`` still holds on open rows (a worker's heartbeat)."""
        now = self.clock()
        async with self.session() as session, session.begin():
            result = await session.execute(
                update(table)
                .where(
                    col(table.state).in_(OPEN_STATES),
                    col(table.lease_owner) == owner,
                    col(table.lease_until) >= now,
                )
                .values(lease_until=now + lease)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def release_rows(self, table: type[Queue], owner: str, ids: Sequence[int]) -> int:
        """Free the given rows if ``owner`` still leases them (their outcome went unrecorded)."""
        async with self.session() as session, session.begin():
            result = await session.execute(
                update(table)
                .where(col(table.id).in_(list(ids)), col(table.lease_owner) == owner)
                .values(lease_owner=None, lease_until=0.0)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def lease_owners(self) -> set[str]:
        """Owners of the leases still running, on both queues."""
        now = self.clock()
        owners: set[str] = set()
        async with self.session() as session:
            for table in (Inbox, Outbox, Delivery):
                result = await session.execute(
                    select(table.lease_owner).where(table.lease_until >= now).distinct()
                )
                owners.update(owner for owner in result.scalars() if owner)
        return owners

    async def release_leases(self, owner: str) -> int:
        """Free the rows leased by a worker known to be dead (e.g. killed on this host)."""
        released = 0
        async with self.session() as session, session.begin():
            for table in (Inbox, Outbox, Delivery):
                result = await session.execute(
                    update(table)
                    .where(col(table.lease_owner) == owner)
                    .values(lease_owner=None, lease_until=0.0)
                )
                released += result.rowcount  # type: ignore[attr-defined]
        return released

    async def finish(
        self,
        table: type[Queue],
        row_id: int | None,
        state: RowState,
        error: str | None = None,
        *,
        audit_action: AuditAction | None = None,
        actor: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """Close a row (done, rejected, shunted, dropped) and release its lease.

        A refusal, a shunt or a drop with a reason is traced in the audit trail in the same
        transaction (``audit_action`` names another action, e.g. an operator's).
        """
        now = self.clock()
        action = audit_action or audit.action_for(state, error)
        async with self.session() as session, session.begin():
            await session.execute(
                update(table)
                .where(col(table.id) == row_id)
                .values(
                    # A closed delivery keeps no message (its outbox row has the event).
                    **({"payload": None} if table is Delivery else {}),
                    state=state,
                    last_error=error,
                    lease_owner=None,
                    lease_until=0.0,
                    updated_at=now,
                )
            )
            if action is not None:
                await audit.add_for_row(
                    session,
                    table,
                    row_id,
                    action,
                    now,
                    actor=actor,
                    outcome=outcome or audit.outcome_of(state, error),
                )

    async def retry_later(self, table: type[Queue], row: Queue, delay: float, error: str) -> None:
        now = self.clock()
        await self._update(
            table,
            row.id,
            state=RowState.RETRY,
            attempts=row.attempts + 1,
            next_at=now + delay,
            last_error=error,
            lease_owner=None,
            lease_until=0.0,
        )

    async def requeue(self, table: type[Queue], row_id: int, *, actor: str | None = None) -> bool:
        """Put a closed row back in the queue (operator action, traced in the audit trail)."""
        async with self.session() as session, session.begin():
            result = await session.execute(
                update(table)
                .where(col(table.id) == row_id)
                .values(
                    **({"attempt_started_at": None} if table is Outbox else {}),
                    state=RowState.PENDING,
                    next_at=0.0,
                    lease_until=0.0,
                    updated_at=self.clock(),
                )
            )
            if result.rowcount:  # type: ignore[attr-defined]
                await audit.add_for_row(
                    session,
                    table,
                    row_id,
                    AuditAction.ADMIN_ACTION,
                    self.clock(),
                    actor=actor,
                    outcome="queue_retry",
                )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_auth_results(self, row_id: int | None, auth_results: str) -> None:
        """Record an inbound mail's DKIM verdict (Authentication-Results style)."""
        await self._update(Inbox, row_id, auth_results=auth_results[:1000])

    async def _update(self, table: type[Queue], row_id: int | None, **values: Any) -> None:
        values["updated_at"] = self.clock()
        async with self.session() as session, session.begin():
            await session.execute(update(table).where(col(table.id) == row_id).values(**values))

    async def mark_attempt(self, row: Outbox) -> None:
        """Record, before a submission, that it may have happened."""
        now = self.clock()
        await self._update(Outbox, row.id, attempt_started_at=now)
        row.attempt_started_at = now

    async def clear_attempt(self, row: Outbox) -> None:
        """The last submission has a known outcome: nothing to look for after a restart."""
        await self._update(Outbox, row.id, attempt_started_at=None)
        row.attempt_started_at = None

    async def has_mail_with_message_id(self, message_id: str) -> bool:
        """Whether a mail with this Message-ID reached the bridge's mailbox."""
        async with self.session() as session:
            result = await session.execute(
                select(Inbox.id).where(Inbox.message_id == message_id).limit(1)
            )
            return result.first() is not None

    async def cancel_pending_event(self, event_id: str) -> bool:
        """Drop an event not yet relayed (used when its sender redacts it in time)."""
        async with self.session() as session, session.begin():
            result = await session.execute(
                update(Outbox)
                .where(col(Outbox.event_id) == event_id, col(Outbox.state).in_(OPEN_STATES))
                .values(state=RowState.DROPPED, updated_at=self.clock(), lease_until=0.0)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def counts(self, table: type[Queue]) -> QueueCounts:
        async with self.session() as session:
            result = await session.execute(select(table.state, func.count()).group_by(table.state))
            return QueueCounts(by_state={state: count for state, count in result.all()})

    async def rows(
        self, table: type[Queue], states: Iterable[str], limit: int = 100
    ) -> list[Queue]:
        async with self.session() as session:
            result = await session.execute(
                select(table)
                .where(col(table.state).in_(list(states)))
                .order_by(col(table.id))
                .limit(limit)
            )
            return list(result.scalars())

    async def get(self, table: type[Queue], row_id: int) -> Queue | None:
        async with self.session() as session:
            return await session.get(table, row_id)

    # -- portals and the message map -----------------------------------------------------

    async def portal_by_room(self, room_id: str) -> Portal | None:
        async with self.session() as session:
            result = await session.execute(select(Portal).where(Portal.room_id == room_id))
            return result.scalars().first()

    async def portal_by_id(self, portal_id: int) -> Portal | None:
        async with self.session() as session:
            return await session.get(Portal, portal_id)

    async def portal_for_message_ids(self, message_ids: Sequence[str]) -> Portal | None:
        """The conversation that one of these Message-IDs belongs to, most specific first."""
        if not message_ids:
            return None
        async with self.session() as session:
            mapped = await session.execute(
                select(MessageMap.message_id, MessageMap.portal_id).where(
                    col(MessageMap.message_id).in_(list(message_ids))
                )
            )
            by_id = {mid: pid for mid, pid in mapped.all()}
            roots = await session.execute(
                select(Portal.root_message_id, Portal.id).where(
                    col(Portal.root_message_id).in_(list(message_ids))
                )
            )
            for mid, pid in roots.all():
                by_id.setdefault(mid, pid)
            for message_id in message_ids:
                if message_id in by_id:
                    return await session.get(Portal, by_id[message_id])
        return None

    async def create_portal(
        self,
        *,
        subject: str,
        correspondents: Sequence[str],
        room_id: str | None = None,
        conversation_key: str | None = None,
        root_message_id: str | None = None,
    ) -> Portal:
        portal = Portal(
            conversation_key=conversation_key or secrets.token_hex(16),
            room_id=room_id,
            subject=subject,
            correspondents=json.dumps(list(correspondents)),
            root_message_id=root_message_id,
            created_at=self.clock(),
        )
        async with self.session() as session, session.begin():
            session.add(portal)
        return portal

    async def portal_by_key(self, conversation_key: str) -> Portal | None:
        async with self.session() as session:
            result = await session.execute(
                select(Portal).where(Portal.conversation_key == conversation_key)
            )
            return result.scalars().first()

    async def update_portal(self, portal_id: int | None, **values: Any) -> None:
        if "correspondents" in values:
            values["correspondents"] = json.dumps(list(values["correspondents"]))
        async with self.session() as session, session.begin():
            await session.execute(
                update(Portal).where(col(Portal.id) == portal_id).values(**values)
            )

    async def set_patient(self, portal_id: int | None, data: bytes | None) -> None:
        """Store (sealed) or clear the patient context of a portal."""
        sealed = None if data is None else self.sealer.seal(data, _aad("portal", str(portal_id)))
        await self.update_portal(portal_id, patient=sealed)

    def patient_of(self, portal: Portal) -> bytes | None:
        """The opened patient context of a portal, or None."""
        if portal.patient is None:
            return None
        return self.sealer.open(portal.patient, _aad("portal", str(portal.id)))

    async def portals(self) -> list[Portal]:
        async with self.session() as session:
            return list((await session.execute(select(Portal).order_by(col(Portal.id)))).scalars())

    async def record_relay(
        self,
        portal: Portal,
        pairs: Sequence[tuple[str, str]],
        direction: str,
        *,
        queue: type[Queue] | None = None,
        row_id: int | None = None,
        last_message_id: str | None = None,
        actor: str | None = None,
        peer: str | None = None,
        follow_up: Sequence[Outbox | Delivery] = (),
    ) -> None:
        """Map event ids to Message-IDs, move the thread head and close the row, atomically.

        Closing a row also appends its audit row (sent or relayed) to the same transaction,
        and queues ``follow_up`` rows (from :meth:`bridge_task`) with it.
        """
        now = self.clock()
        async with self.session() as session, session.begin():
            session.add_all(follow_up)
            for event_id, message_id in pairs:
                assert portal.id is not None, "record_relay needs a stored portal"
                session.add(
                    MessageMap(
                        portal_id=portal.id,
                        event_id=event_id,
                        message_id=message_id,
                        direction=direction,
                        created_at=now,
                    )
                )
            portal_values: dict[str, Any] = {}
            if last_message_id:
                portal_values["last_message_id"] = last_message_id
                if portal.root_message_id is None:
                    portal_values["root_message_id"] = last_message_id
            if portal_values:
                await session.execute(
                    update(Portal).where(col(Portal.id) == portal.id).values(**portal_values)
                )
            if queue is not None:
                await session.execute(
                    update(queue)
                    .where(col(queue.id) == row_id)
                    .values(
                        state=RowState.DONE,
                        updated_at=now,
                        lease_owner=None,
                        lease_until=0.0,
                        last_error=None,
                    )
                )
                audit.add(
                    session,
                    AuditAction.MESSAGE_SENT if direction == "out" else AuditAction.MESSAGE_RELAYED,
                    now,
                    direction=direction,
                    queue=queue.__tablename__,
                    row_id=row_id,
                    portal_id=portal.id,
                    actor=actor,
                    peer=peer,
                    message_id=last_message_id,
                    outcome=RowState.DONE.value,
                )
        if last_message_id:
            portal.last_message_id = last_message_id
            portal.root_message_id = portal.root_message_id or last_message_id

    async def message_id_of_event(self, event_id: str) -> str | None:
        async with self.session() as session:
            result = await session.execute(
                select(MessageMap.message_id).where(MessageMap.event_id == event_id)
            )
            return result.scalars().first()

    async def is_known_message_id(self, message_id: str, direction: str) -> bool:
        async with self.session() as session:
            result = await session.execute(
                select(MessageMap.id)
                .where(MessageMap.message_id == message_id, MessageMap.direction == direction)
                .limit(1)
            )
            return result.first() is not None


def correspondents_of(portal: Portal) -> list[str]:
    if not portal.correspondents:
        return []
    value: list[str] = json.loads(portal.correspondents)
    return value


def _aad(table: str, key: str) -> bytes:
    return f"{table}:{key}".encode()


__all__ = ["IntegrityError", "QueueCounts", "Store", "correspondents_of"]
