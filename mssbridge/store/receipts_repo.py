"""Store look-ups of the receipts flow: which sent mail a delivery or read report is about."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select

from mssbridge.store.repo import Store
from mssbridge.store.tables import MessageMap, Portal


async def sent_event(store: Store, message_ids: Sequence[str]) -> tuple[Portal, str] | None:
    """The conversation and the Matrix event of the first of ``message_ids`` the bridge sent.

    Only mails the bridge sent (direction ``out``) count: a report about anything else is not
    an answer to the bridge.
    """
    if not message_ids:
        return None
    async with store.session() as session:
        found = await session.execute(
            select(MessageMap.message_id, MessageMap.event_id, MessageMap.portal_id)
            .where(
                col(MessageMap.message_id).in_(list(message_ids)),
                MessageMap.direction == "out",
            )
            .order_by(col(MessageMap.id))
        )
        by_id: dict[str, tuple[str, int]] = {}
        for message_id, event_id, portal_id in found.all():
            by_id.setdefault(message_id, (event_id, portal_id))
        for message_id in message_ids:
            if message_id in by_id:
                event_id, portal_id = by_id[message_id]
                portal = await session.get(Portal, portal_id)
                if portal is not None and portal.room_id is not None:
                    return portal, event_id
    return None
