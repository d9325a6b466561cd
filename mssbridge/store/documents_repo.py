"""Store operations for health documents: version allocation and the records of a thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from mssbridge.errors import TemporaryFailure
from mssbridge.store.repo import Store
from mssbridge.store.tables import HealthDocument, Inbox, MessageMap, Outbox, RowState

INBOX_ID_PREFIX = "<inbox-"  # flows/inbound.py: the Message-ID given to a mail without one


@dataclass(frozen=True)
class ThreadRecord:
    """One relayed item of a conversation, in relay order: the event or the mail behind it."""

    direction: str  # "out": a Matrix event became mail; "in": a mail was posted
    event_id: str
    message_id: str


@dataclass(frozen=True)
class NewDocument:
    """What a document to build needs from the store: its own ids and its place in the set."""

    origin: str
    set_root: str
    document_root: str
    content_sha256: str
    messages: int


class DocumentRepo:
    """Versions of the documents the bridge builds; the thread items a document is made of."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def allocate(self, portal_id: int, new: NewDocument) -> HealthDocument:
        """Record ``new`` as the next version of its set, or return what its origin already got.

        A retry of the same event finds its first allocation (same id, same version, same
        bytes); another event gets the set's latest version + 1, replacing that one (RPLC).
        """
        for _ in range(3):
            try:
                return await self._allocate(portal_id, new)
            except IntegrityError:
                continue  # another instance took this version first: read again
        raise TemporaryFailure("document version allocation kept conflicting")

    async def _allocate(self, portal_id: int, new: NewDocument) -> HealthDocument:
        async with self.store.session() as session, session.begin():
            found = await session.execute(
                select(HealthDocument).where(HealthDocument.origin == new.origin)
            )
            existing = found.scalars().first()
            if existing is not None:
                return existing
            latest = (
                (
                    await session.execute(
                        select(HealthDocument)
                        .where(HealthDocument.set_root == new.set_root)
                        .order_by(col(HealthDocument.version).desc())
                        .limit(1)
                    )
                )
                .scalars()
                .first()
            )
            record = HealthDocument(
                portal_id=portal_id,
                origin=new.origin,
                set_root=new.set_root,
                document_root=new.document_root,
                version=1 if latest is None else latest.version + 1,
                replaces_root=None if latest is None else latest.document_root,
                content_sha256=new.content_sha256,
                messages=new.messages,
                created_at=self.store.clock(),
            )
            session.add(record)
        return record

    async def versions(self, set_root: str) -> list[HealthDocument]:
        """Every version of a set, oldest first."""
        async with self.store.session() as session:
            result = await session.execute(
                select(HealthDocument)
                .where(HealthDocument.set_root == set_root)
                .order_by(col(HealthDocument.version))
            )
            return list(result.scalars())

    async def thread(self, portal_id: int) -> list[ThreadRecord]:
        """The conversation's relayed items, in the order they were relayed."""
        async with self.store.session() as session:
            result = await session.execute(
                select(MessageMap.direction, MessageMap.event_id, MessageMap.message_id)
                .where(MessageMap.portal_id == portal_id)
                .order_by(col(MessageMap.id))
            )
            return [ThreadRecord(d, e, m) for d, e, m in result.all()]

    async def outbox_rows(self, event_ids: Sequence[str]) -> dict[str, Outbox]:
        """The stored Matrix events among ``event_ids``, by event id (one query)."""
        if not event_ids:
            return {}
        async with self.store.session() as session:
            result = await session.execute(
                select(Outbox).where(col(Outbox.event_id).in_(list(event_ids)))
            )
            return {row.event_id: row for row in result.scalars()}

    async def relayed_mails(self, message_ids: Sequence[str]) -> dict[str, Inbox]:
        """The posted mails among ``message_ids`` whose content is still kept, by Message-ID.

        A mail without a Message-ID was mapped under ``<inbox-<sha256 prefix>@…>`` (inbound
        flow): those are found by their digest.
        """
        found: dict[str, Inbox] = {}
        by_digest = {m: m[len(INBOX_ID_PREFIX) :].split("@", 1)[0] for m in message_ids}
        named = [m for m in message_ids if not m.startswith(INBOX_ID_PREFIX)]
        kept = (Inbox.state == RowState.DONE, col(Inbox.raw).is_not(None))
        async with self.store.session() as session:
            if named:
                result = await session.execute(
                    select(Inbox)
                    .where(col(Inbox.message_id).in_(named), *kept)
                    .order_by(col(Inbox.id))
                )
                for row in result.scalars():
                    found.setdefault(row.message_id or "", row)
            for message_id in message_ids:
                if not message_id.startswith(INBOX_ID_PREFIX):
                    continue
                result = await session.execute(
                    select(Inbox)
                    .where(col(Inbox.sha256).startswith(by_digest[message_id]), *kept)
                    .order_by(col(Inbox.id))
                    .limit(1)
                )
                match = result.scalars().first()
                if match is not None:
                    found[message_id] = match
        return found
