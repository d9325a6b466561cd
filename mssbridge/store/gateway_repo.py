"""Store operation of gateway mode: a mail received over SMTP becomes a sealed inbox row."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col, select

from mssbridge.store import audit
from mssbridge.store.repo import Store, _aad
from mssbridge.store.tables import Audit, AuditAction, Inbox, RowState, WhitelistDomain

# Inbox rows are unique on (mailbox, uidvalidity, uid). SMTP has no UID: a gateway row takes
# a random 63-bit key under this "mailbox" name and UIDVALIDITY 0, which no IMAP folder uses.
SMTP_MAILBOX_PREFIX = "smtp:"
SMTP_UIDVALIDITY = 0
_KEY_ATTEMPTS = 3


_INBOX = cast(Table, Inbox.__table__)  # type: ignore[attr-defined]
_AUDIT = cast(Table, Audit.__table__)  # type: ignore[attr-defined]


def _values(row: SQLModel) -> dict[str, Any]:
    """A model's column values for a Core INSERT (its defaults applied, no id)."""
    table = cast(Table, type(row).__table__)  # type: ignore[attr-defined]
    return {column.key: getattr(row, column.key) for column in table.columns if column.key != "id"}


def _cut(column: str, value: str | None) -> str | None:
    """``value`` cut to the length of audit column ``column``, as :func:`audit.row` does."""
    length = getattr(_AUDIT.c[column].type, "length", None)
    return value[:length] if value is not None and length else value


def _audit_values(base: dict[str, Any], row_id: int, mail: AcceptedMail) -> dict[str, Any]:
    """The audit row of one stored mail: ``base`` (the batch's) with the mail's fields."""
    return {
        **base,
        "row_id": row_id,
        "message_id": _cut("message_id", mail.message_id),
        "actor": _cut("actor", mail.sender),
        "peer": _cut("peer", " ".join(mail.recipients)),
    }


def smtp_mailbox(domain: str) -> str:
    return f"{SMTP_MAILBOX_PREFIX}{domain}"


def queue_id(key: int) -> str:
    """The id the SMTP reply names, as the peer's logs will show it."""
    return f"{key:016X}"


@dataclass(frozen=True)
class AcceptedMail:
    """One mail the SMTP server accepted: the peer's bytes, our trace line, the envelope."""

    received: bytes
    message_id: str | None
    trace: bytes
    sender: str
    recipients: tuple[str, ...]


class GatewayRepo:
    """Writes what the gateway's SMTP server accepts: each mail, or a batch of them, in one
    transaction."""

    def __init__(self, store: Store, domain: str) -> None:
        self.store = store
        self.mailbox = smtp_mailbox(domain)

    async def operator_dns(self) -> list[str]:
        """Every operator certificate DN of the whitelist in force, once each."""
        async with self.store.session() as session:
            result = await session.execute(select(WhitelistDomain.operator_dn).distinct())
            return list(result.scalars())

    async def store_mail(
        self,
        received: bytes,
        message_id: str | None,
        *,
        trace: bytes,
        sender: str,
        recipients: Sequence[str],
    ) -> tuple[int, int]:
        """Seal and commit ``trace + received`` as a pending inbox row; return (row id, key).

        The commit is done when this returns: only then may the server answer 250. The
        row's sha256 is that of ``received``, the bytes as the peer sent them: a peer that
        sends the same mail to the same recipients again (it never got our 250) gets the
        row already stored, not a second one.
        """
        mail = AcceptedMail(received, message_id, trace, sender, tuple(recipients))
        return (await self.store_mails([mail]))[0]

    async def store_mails(self, mails: Sequence[AcceptedMail]) -> list[tuple[int, int]]:
        """Commit every mail of ``mails`` in one transaction (one fsync), or none of them.

        Returns (row id, key) for each mail, in order; as :meth:`store_mail` for each one.
        """
        digests = [hashlib.sha256(mail.received).hexdigest() for mail in mails]
        envelopes = [json.dumps(list(mail.recipients)) for mail in mails]
        for attempt in range(_KEY_ATTEMPTS):
            keys = [secrets.randbits(63) for _ in mails]
            try:
                return await self._insert_all(mails, digests, envelopes, keys)
            except IntegrityError:
                if attempt == _KEY_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _insert_all(
        self,
        mails: Sequence[AcceptedMail],
        digests: Sequence[str],
        envelopes: Sequence[str],
        keys: Sequence[int],
    ) -> list[tuple[int, int]]:
        now = self.store.clock()
        # Each mail's answer: a row stored earlier, or the position of the new row it shares
        # with the mails of this batch that carry the same bytes to the same recipients (one
        # row, as across batches).
        answers: list[tuple[int, int] | int] = []
        positions: dict[tuple[str, str], int] = {}
        new_rows: list[tuple[dict[str, Any], AcceptedMail]] = []
        inbox_base = self._inbox_base(now)
        async with self.store.session() as session, session.begin():
            stored = await self._already_stored(session, digests)
            for mail, digest, envelope, key in zip(mails, digests, envelopes, keys, strict=True):
                same = stored.get((digest, envelope))
                if same is not None:
                    answers.append(same)
                    continue
                position = positions.get((digest, envelope))
                if position is None:
                    position = positions[(digest, envelope)] = len(new_rows)
                    row = {
                        **inbox_base,
                        "uid": key,
                        "message_id": mail.message_id,
                        "sha256": digest,
                        "size": len(mail.trace) + len(mail.received),
                        "recipients": envelope,
                    }
                    new_rows.append((row, mail))
                answers.append(position)
            if not new_rows:
                return [answer for answer in answers if isinstance(answer, tuple)]
            # Statements for the whole batch, not per row: the rows (ids back in order),
            # their sealed mail (the ids are in its associated data), their audit rows.
            ids = await self._insert_rows(session, [row for row, _ in new_rows])
            await session.execute(
                update(_INBOX).where(_INBOX.c.id == bindparam("row_id")),
                [
                    {
                        "row_id": row_id,
                        "raw": self.store.sealer.seal(
                            mail.trace + mail.received, _aad("inbox", str(row_id))
                        ),
                    }
                    for row_id, (_, mail) in zip(ids, new_rows, strict=True)
                ],
            )
            audit_base = _values(
                audit.row(
                    AuditAction.MESSAGE_RECEIVED,
                    now,
                    direction="in",
                    queue="inbox",
                    outcome=str(RowState.PENDING),
                )
            )
            await session.execute(
                insert(_AUDIT),
                [
                    _audit_values(audit_base, row_id, mail)
                    for row_id, (_, mail) in zip(ids, new_rows, strict=True)
                ],
            )
        keyed = [(row_id, row["uid"]) for row_id, (row, _) in zip(ids, new_rows, strict=True)]
        return [keyed[a] if isinstance(a, int) else a for a in answers]

    def _inbox_base(self, now: float) -> dict[str, Any]:
        """The column values a new gateway row shares with the others of its batch (the
        model's defaults applied once per batch: building a model per mail costs more CPU
        than the rest of storing it)."""
        return _values(
            Inbox(
                mailbox=self.mailbox,
                uidvalidity=SMTP_UIDVALIDITY,
                uid=0,
                sha256="",
                size=0,
                raw=None,
                state=RowState.PENDING,
                created_at=now,
                updated_at=now,
            )
        )

    async def _insert_rows(
        self, session: AsyncSession, rows: Sequence[dict[str, Any]]
    ) -> list[int]:
        """Insert ``rows`` (one executemany) and return their ids, in order.

        The ids are read back by key, unique in this mailbox: drivers that cannot return
        the ids of a multi-row insert in order would otherwise insert row by row.
        """
        await session.execute(insert(_INBOX), list(rows))
        found = await session.execute(
            select(Inbox.uid, Inbox.id).where(
                Inbox.mailbox == self.mailbox,
                Inbox.uidvalidity == SMTP_UIDVALIDITY,
                col(Inbox.uid).in_([row["uid"] for row in rows]),
            )
        )
        ids = {int(uid): int(row_id) for uid, row_id in found}
        return [ids[row["uid"]] for row in rows]

    async def _already_stored(
        self, session: AsyncSession, digests: Sequence[str]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """(sha256, recipients) -> (row id, key) of this gateway's rows among ``digests``."""
        found = await session.execute(
            select(Inbox.id, Inbox.uid, Inbox.sha256, Inbox.recipients).where(
                Inbox.mailbox == self.mailbox, col(Inbox.sha256).in_(set(digests))
            )
        )
        stored: dict[tuple[str, str], tuple[int, int]] = {}
        for row_id, uid, digest, envelope in found:
            stored.setdefault((digest, envelope or ""), (int(row_id), int(uid)))
        return stored


def recipients_of(row: Inbox) -> tuple[str, ...]:
    """The Matrix users a gateway row was addressed to; empty for mail read over IMAP."""
    if not row.recipients:
        return ()
    try:
        users = json.loads(row.recipients)
    except ValueError:
        return ()
    return tuple(u for u in users if isinstance(u, str)) if isinstance(users, list) else ()
