"""Store operations of the gateway's delivery queue: queue, claim per domain, close."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select

from mssbridge.store import audit
from mssbridge.store.repo import Store, _aad
from mssbridge.store.tables import OPEN_STATES, AuditAction, Delivery, Outbox, RowState

# Candidates read per claim, per row asked for: heads of busy domains are filtered out.
_CANDIDATES_PER_ROW = 4


class NotActed(StrEnum):
    """Why an operator's ``queue retry`` or ``queue drop`` left a delivery row as it was."""

    UNKNOWN = "no such delivery"
    CLOSED = "closed, it keeps no mail any more: the user sends the message again"
    IN_PROGRESS = "being delivered right now: try again once this attempt is over"


def _payload_aad(outbox_id: int | None, domain: str) -> bytes:
    return _aad("delivery", f"{outbox_id}:{domain}")


class DeliveryRepo:
    """The ``delivery`` queue: one row per outbox row and recipient domain."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def new(
        self,
        row: Outbox,
        domain: str,
        sender: str,
        recipients: Sequence[str],
        message_id: str,
        message: bytes,
    ) -> Delivery:
        """A delivery row, sealed, for the caller to commit with the outbox row's closing."""
        assert row.id is not None, "a delivery belongs to a stored outbox row"
        now = self.store.clock()
        return Delivery(
            outbox_id=row.id,
            event_id=row.event_id,
            room_id=row.room_id,
            domain=domain,
            sender=sender,
            recipients=json.dumps(list(recipients)),
            message_id=message_id,
            payload=self.store.sealer.seal(message, _payload_aad(row.id, domain)),
            created_at=now,
            updated_at=now,
        )

    def message_of(self, row: Delivery) -> bytes:
        if row.payload is None:
            raise ValueError(f"delivery row {row.id} holds no message (closed)")
        return self.store.sealer.open(row.payload, _payload_aad(row.outbox_id, row.domain))

    async def claim(
        self, owner: str, lease: float, limit: int, busy: Mapping[str, int], per_domain: int
    ) -> list[Delivery]:
        """Lease due rows, at most ``per_domain`` per domain counting ``busy`` (in hand).

        Only the oldest open row of each (room, domain) pair is a candidate: a room's mails
        reach one domain in the order they were written, while domains and rooms proceed
        side by side.
        """
        now = self.store.clock()
        full = [domain for domain, count in busy.items() if count >= per_domain]
        heads = (
            select(func.min(Delivery.id))
            .where(col(Delivery.state).in_(OPEN_STATES))
            .group_by(Delivery.room_id, Delivery.domain)
        )
        due = (
            select(Delivery.id, Delivery.domain)
            .where(
                col(Delivery.id).in_(heads),
                col(Delivery.state).in_(OPEN_STATES),
                Delivery.next_at <= now,
                Delivery.lease_until < now,
                col(Delivery.domain).not_in(full),
            )
            .order_by(col(Delivery.id))
            .limit(limit * _CANDIDATES_PER_ROW)
        )
        async with self.store.session() as session:
            candidates = (await session.execute(due)).all()
        room = dict(busy)
        chosen: list[int] = []
        for row_id, domain in candidates:
            if len(chosen) >= limit:
                break
            if room.get(domain, 0) < per_domain:
                room[domain] = room.get(domain, 0) + 1
                chosen.append(row_id)
        if not chosen:
            return []
        query = (
            select(Delivery)
            .where(
                col(Delivery.id).in_(chosen),
                col(Delivery.state).in_(OPEN_STATES),
                Delivery.next_at <= now,
                Delivery.lease_until < now,
            )
            .order_by(col(Delivery.id))
        )
        return await self.store._claim(Delivery, query, owner, now, now + lease)

    async def mark_attempt(self, row: Delivery) -> None:
        """Record, before connecting, that this attempt may reach DATA."""
        now = self.store.clock()
        await self._update(row.id, attempt_started_at=now)
        row.attempt_started_at = now

    async def clear_attempt(self, row: Delivery) -> None:
        """The server answered: the attempt's outcome is known."""
        await self._update(row.id, attempt_started_at=None)
        row.attempt_started_at = None

    async def narrow(self, row: Delivery, recipients: Sequence[str]) -> None:
        """Keep only ``recipients`` (deferred ones) for the next attempt; the rest took it."""
        await self._update(row.id, recipients=json.dumps(list(recipients)), attempt_started_at=None)
        row.recipients = json.dumps(list(recipients))

    async def delivered(self, row: Delivery, accepted: Sequence[str]) -> None:
        """Close the row as delivered, drop its message, and trace it, in one transaction."""
        now = self.store.clock()
        async with self.store.session() as session, session.begin():
            await session.execute(
                update(Delivery)
                .where(col(Delivery.id) == row.id)
                .values(
                    state=RowState.DONE,
                    payload=None,
                    attempt_started_at=None,
                    lease_owner=None,
                    lease_until=0.0,
                    last_error=None,
                    updated_at=now,
                )
            )
            await audit.add_for_row(
                session,
                Delivery,
                row.id,
                AuditAction.MESSAGE_DELIVERED,
                now,
                peer=",".join(accepted),
                outcome="delivered",
            )

    async def _update(self, row_id: int | None, **values: object) -> None:
        values["updated_at"] = self.store.clock()
        async with self.store.session() as session, session.begin():
            await session.execute(
                update(Delivery).where(col(Delivery.id) == row_id).values(**values)
            )

    async def retry_now(self, row_id: int, *, actor: str | None) -> NotActed | None:
        """Make an open delivery due at once (operator action, audited); None when done.

        Only a row that still holds its mail and is not being delivered: a closed row's mail
        is gone, and a second attempt beside one in progress could deliver twice.
        """
        values = {"state": RowState.PENDING, "next_at": 0.0}
        return await self._operator_update(row_id, values, "queue_retry", actor)

    async def drop(self, row_id: int, *, actor: str | None) -> NotActed | None:
        """Give up an open delivery for good: closed, its mail cleared, audited."""
        values = {
            "state": RowState.DROPPED,
            "payload": None,
            "attempt_started_at": None,
            "last_error": "dropped by an operator",
            "lease_owner": None,
            "lease_until": 0.0,
        }
        return await self._operator_update(row_id, values, "queue_drop", actor)

    async def _operator_update(
        self, row_id: int, values: dict[str, Any], outcome: str, actor: str | None
    ) -> NotActed | None:
        now = self.store.clock()
        async with self.store.session() as session, session.begin():
            result = await session.execute(
                update(Delivery)
                .where(
                    col(Delivery.id) == row_id,
                    col(Delivery.state).in_(OPEN_STATES),
                    col(Delivery.payload).is_not(None),
                    col(Delivery.lease_until) < now,
                )
                .values(**values, updated_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return await self._not_acted(row_id, now)
            await audit.add_for_row(
                session,
                Delivery,
                row_id,
                AuditAction.ADMIN_ACTION,
                now,
                actor=actor,
                outcome=outcome,
            )
        return None

    async def _not_acted(self, row_id: int, now: float) -> NotActed:
        row = await self.store.get(Delivery, row_id)
        if row is None:
            return NotActed.UNKNOWN
        if row.state in OPEN_STATES and row.payload is not None and row.lease_until >= now:
            return NotActed.IN_PROGRESS
        return NotActed.CLOSED

    async def of_outbox(self, outbox_id: int) -> list[Delivery]:
        async with self.store.session() as session:
            result = await session.execute(
                select(Delivery).where(Delivery.outbox_id == outbox_id).order_by(col(Delivery.id))
            )
            return list(result.scalars())


def recipients_of(row: Delivery) -> list[str]:
    value = json.loads(row.recipients)
    return [str(address) for address in value] if isinstance(value, list) else []
