"""The audit trail: rows appended inside the caller's transaction, streamed out by time."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from mssbridge.store.tables import Audit, AuditAction, Delivery, Inbox, Outbox, Portal, RowState

if TYPE_CHECKING:
    from mssbridge.store.repo import Store

QueueRow = TypeVar("QueueRow", bound=Inbox | Outbox | Delivery)
_CODE = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_ACTION_BY_STATE = {
    RowState.REJECTED: AuditAction.MESSAGE_REJECTED,
    RowState.SHUNTED: AuditAction.MESSAGE_SHUNTED,
    RowState.DROPPED: AuditAction.MESSAGE_DROPPED,
}
EXPORT_BATCH = 1000


def outcome_of(state: str, error: str | None) -> str:
    """A content-free outcome: the enhanced status code of the error, else its leading label.

    Errors may carry a refusal's wording (a file name, say), so only what comes before the
    first ':' of an error without a code is kept, cut short.
    """
    if not error:
        return str(state)
    found = _CODE.match(error)
    if found:
        return found.group(1)
    return error.split(":", 1)[0].strip()[:40] or str(state)


def action_for(state: str, error: str | None) -> AuditAction | None:
    """Which closing of a row is worth a trace: refusals, shunts and drops that give a reason."""
    if state == RowState.DROPPED and not error:
        return None
    return _ACTION_BY_STATE.get(RowState(state))


def add(session: AsyncSession, action: AuditAction, at: float, **fields: Any) -> None:
    """Append one audit row to the session's transaction."""
    session.add(row(action, at, **fields))


def row(action: AuditAction, at: float, **fields: Any) -> Audit:
    """One audit row, its free-text fields cut to their columns' lengths (not yet added)."""
    for name in ("actor", "peer", "message_id"):
        if isinstance(fields.get(name), str):
            fields[name] = fields[name][: _max_length(name)]
    return Audit(at=at, action=action, **fields)


async def add_for_row(
    session: AsyncSession,
    table: type[QueueRow],
    row_id: int | None,
    action: AuditAction,
    at: float,
    **fields: Any,
) -> None:
    """Append an audit row about a queue row, with its direction, actor and conversation."""
    context: dict[str, Any] = {"queue": table.__tablename__, "row_id": row_id}
    row = await session.get(table, row_id) if row_id is not None else None
    if isinstance(row, Outbox):
        found = await session.execute(select(Portal.id).where(Portal.room_id == row.room_id))
        context.update(direction="out", actor=row.sender, portal_id=found.scalars().first())
    elif isinstance(row, Inbox):
        context.update(direction="in", message_id=row.message_id, portal_id=row.portal_id)
    elif isinstance(row, Delivery):
        found = await session.execute(select(Portal.id).where(Portal.room_id == row.room_id))
        context.update(
            direction="out", message_id=row.message_id, portal_id=found.scalars().first()
        )
    context.update({k: v for k, v in fields.items() if v is not None})
    add(session, action, at, **context)


async def export(
    store: Store, since: float, until: float | None = None, batch: int = EXPORT_BATCH
) -> AsyncIterator[Audit]:
    """Audit rows from ``since`` (inclusive) to ``until`` (exclusive), oldest first, by batch."""
    last_id = 0
    while True:
        query = select(Audit).where(Audit.at >= since, col(Audit.id) > last_id)
        if until is not None:
            query = query.where(Audit.at < until)
        async with store.session() as session:
            result = await session.execute(query.order_by(col(Audit.id)).limit(batch))
            rows = list(result.scalars())
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        assert rows[-1].id is not None
        last_id = rows[-1].id


def _max_length(name: str) -> int:
    return {"actor": 320, "peer": 1000, "message_id": 998}[name]


async def record(store: Store, action: AuditAction, **fields: Any) -> None:
    """Append one audit row in a transaction of its own (an action with no row to change)."""
    async with store.session() as session, session.begin():
        add(session, action, store.clock(), **fields)
