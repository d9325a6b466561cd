"""Store operations for running the bridge: health ping, queue gauges and the retention purge.

The purge works by batches of at most ``limit`` rows, one transaction each, and every batch
appends one ``purged`` audit row (the kind and the count, never content) in the same
transaction. A delete re-checks state and age, so a row an operator put back in the queue
meanwhile is not removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, func, or_, update
from sqlmodel import col, select

from mssbridge.policy.retention import PurgeKind
from mssbridge.store import audit
from mssbridge.store.repo import Store
from mssbridge.store.tables import (
    OPEN_STATES,
    Audit,
    AuditAction,
    Delivery,
    Inbox,
    MatrixTxn,
    MessageMap,
    Meta,
    Outbox,
    Portal,
    RowState,
)

CLOSED_STATES = (RowState.DONE, RowState.DROPPED)
REFUSED_STATES = (RowState.REJECTED, RowState.SHUNTED)
# The queue gauges skip done and dropped rows: those are history, not a queue.
GAUGE_STATES = (RowState.PENDING, RowState.RETRY, RowState.REJECTED, RowState.SHUNTED)


@dataclass(frozen=True)
class QueueStat:
    queue: str
    state: str
    count: int
    oldest_created_at: float | None


@dataclass(frozen=True)
class DomainStat:
    """Open gateway deliveries to one domain: how many, how many leased now, the oldest."""

    domain: str
    open: int
    in_flight: int
    oldest_created_at: float


@dataclass(frozen=True)
class MailboxCopy:
    """An inbox row past retention and where its mail sits in the bridge's mailbox."""

    row_id: int
    mailbox: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class BridgedEvent:
    """A message-map row past retention: the event a ghost posted, its room and the ghosts."""

    map_id: int
    event_id: str
    room_id: str | None
    correspondents: str


def _selection(kind: PurgeKind, cutoff: float) -> tuple[Any, Any, list[Any]]:
    """(table, key column, WHERE clauses) of the rows of ``kind`` older than ``cutoff``."""
    if kind in (PurgeKind.OUTBOX, PurgeKind.OUTBOX_REJECTED):
        states = CLOSED_STATES if kind is PurgeKind.OUTBOX else REFUSED_STATES
        return (
            Outbox,
            col(Outbox.id),
            [col(Outbox.state).in_(states), col(Outbox.updated_at) < cutoff],
        )
    if kind in (PurgeKind.INBOX, PurgeKind.INBOX_REJECTED):
        states = CLOSED_STATES if kind is PurgeKind.INBOX else REFUSED_STATES
        return (
            Inbox,
            col(Inbox.id),
            [col(Inbox.state).in_(states), col(Inbox.updated_at) < cutoff],
        )
    if kind in (PurgeKind.DELIVERY, PurgeKind.DELIVERY_REJECTED):
        states = CLOSED_STATES if kind is PurgeKind.DELIVERY else REFUSED_STATES
        return (
            Delivery,
            col(Delivery.id),
            [col(Delivery.state).in_(states), col(Delivery.updated_at) < cutoff],
        )
    if kind in (PurgeKind.MAP_OUT, PurgeKind.MAP_IN):
        direction = "out" if kind is PurgeKind.MAP_OUT else "in"
        return (
            MessageMap,
            col(MessageMap.id),
            [col(MessageMap.created_at) < cutoff, col(MessageMap.direction) == direction],
        )
    if kind is PurgeKind.MATRIX_TXN:
        return MatrixTxn, col(MatrixTxn.txn_id), [col(MatrixTxn.received_at) < cutoff]
    if kind is PurgeKind.PORTAL_TEXT:
        recent = select(MessageMap.id).where(
            col(MessageMap.portal_id) == col(Portal.id), col(MessageMap.created_at) >= cutoff
        )
        return (
            Portal,
            col(Portal.id),
            [
                col(Portal.created_at) < cutoff,
                or_(col(Portal.subject) != "", col(Portal.patient).is_not(None)),
                ~recent.exists(),
            ],
        )
    return Audit, col(Audit.id), [col(Audit.at) < cutoff]


class OpsStore:
    """Operational queries on a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def ping(self) -> None:
        """Raise unless the store answers a read of its own schema."""
        async with self.store.session() as session:
            await session.execute(select(Meta.key).limit(1))

    async def queue_stats(self) -> list[QueueStat]:
        """Count and oldest creation time per queue and open or refused state (index on state)."""
        stats: list[QueueStat] = []
        async with self.store.session() as session:
            for table in (Outbox, Inbox, Delivery):
                result = await session.execute(
                    select(table.state, func.count(), func.min(table.created_at))
                    .where(col(table.state).in_(GAUGE_STATES))
                    .group_by(table.state)
                )
                found = {state: (count, oldest) for state, count, oldest in result.all()}
                for state in GAUGE_STATES:
                    count, oldest = found.get(state, (0, None))
                    stats.append(QueueStat(table.__tablename__, str(state), int(count), oldest))
        return stats

    async def delivery_stats(self) -> list[DomainStat]:
        """Per recipient domain, the open gateway deliveries (one grouped query, state index)."""
        now = self.store.clock()
        leased = func.sum(case((col(Delivery.lease_until) > now, 1), else_=0))
        async with self.store.session() as session:
            result = await session.execute(
                select(Delivery.domain, func.count(), leased, func.min(Delivery.created_at))
                .where(col(Delivery.state).in_(OPEN_STATES))
                .group_by(Delivery.domain)
                .order_by(Delivery.domain)
            )
            return [
                DomainStat(domain, int(count), int(in_flight or 0), float(oldest))
                for domain, count, in_flight, oldest in result.all()
            ]

    # -- retention -----------------------------------------------------------------------

    async def count(self, kind: PurgeKind, cutoff: float) -> int:
        table, _key, where = _selection(kind, cutoff)
        async with self.store.session() as session:
            result = await session.execute(select(func.count()).select_from(table).where(*where))
            return int(result.scalar_one())

    async def purge_batch(
        self, kind: PurgeKind, cutoff: float, limit: int, actor: str | None = None
    ) -> int:
        """Delete up to ``limit`` rows of ``kind`` older than ``cutoff``; how many went."""
        table, key, where = _selection(kind, cutoff)
        async with self.store.session() as session, session.begin():
            # No ORDER BY: any ``limit`` rows past retention will do, so the database walks
            # the state/time index and stops there instead of sorting every expired row
            # for each batch (bench/purge.py prints the plans).
            found = await session.execute(select(key).where(*where).limit(limit))
            keys = list(found.scalars())
            return await self._delete(session, kind, table, key, where, keys, actor)

    async def purge_rows(
        self,
        kind: PurgeKind,
        cutoff: float,
        keys: list[Any],
        actor: str | None = None,
    ) -> int:
        """Delete these rows of ``kind``, those still past retention, in one transaction."""
        table, key, where = _selection(kind, cutoff)
        async with self.store.session() as session, session.begin():
            return await self._delete(session, kind, table, key, where, keys, actor)

    async def _delete(
        self,
        session: Any,
        kind: PurgeKind,
        table: Any,
        key: Any,
        where: list[Any],
        keys: list[Any],
        actor: str | None,
    ) -> int:
        if not keys:
            return 0
        purge: Any
        if kind is PurgeKind.PORTAL_TEXT:  # blanked, not deleted: the row threads late replies
            purge = update(table).where(key.in_(keys), *where).values(subject="", patient=None)
        else:
            purge = delete(table).where(key.in_(keys), *where)
        result = await session.execute(purge)
        deleted = int(result.rowcount)
        if deleted:
            audit.add(
                session,
                AuditAction.PURGED,
                self.store.clock(),
                queue=table.__tablename__[:8],
                actor=actor,
                outcome=f"{kind}={deleted}",
            )
        return deleted

    async def mailbox_copies(self, kind: PurgeKind, cutoff: float, limit: int) -> list[MailboxCopy]:
        """The next inbox rows of ``kind`` past retention, with their place in the mailbox."""
        table, key, where = _selection(kind, cutoff)
        assert table is Inbox
        async with self.store.session() as session:
            result = await session.execute(
                select(Inbox.id, Inbox.mailbox, Inbox.uidvalidity, Inbox.uid)
                .where(*where)
                .order_by(key)
                .limit(limit)
            )
            return [MailboxCopy(int(i), m, int(v), int(u)) for i, m, v, u in result.all()]

    async def bridged_events(self, cutoff: float, limit: int) -> list[BridgedEvent]:
        """The next events posted by ghosts past retention, with their room."""
        _table, key, where = _selection(PurgeKind.MAP_IN, cutoff)
        async with self.store.session() as session:
            result = await session.execute(
                select(MessageMap.id, MessageMap.event_id, Portal.room_id, Portal.correspondents)
                .select_from(MessageMap)
                .outerjoin(Portal, col(Portal.id) == col(MessageMap.portal_id))
                .where(*where)
                .order_by(key)
                .limit(limit)
            )
            return [BridgedEvent(int(i), e, r, c or "") for i, e, r, c in result.all()]
