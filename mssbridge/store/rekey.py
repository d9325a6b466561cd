"""Key rotation in the store: re-seal every sealed blob with the newest key, batch by batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, LargeBinary, bindparam, func, select, update
from sqlalchemy.sql import ColumnElement
from sqlmodel import SQLModel

from mssbridge.security.atrest import Sealer
from mssbridge.store.repo import CANARY_KEY, Store
from mssbridge.store.tables import Delivery, Inbox, Meta, Outbox, Portal

BATCH_ROWS = 500
BATCH_BYTES = 64 * 1024 * 1024
_KEY_ID = slice(1, 5)  # the key id's bytes in a sealed blob (after the format byte)


@dataclass(frozen=True)
class SealedColumn:
    """A column holding sealed blobs, how to find its rows and the AAD each blob is bound to."""

    name: str
    table: Any
    key: Any
    blob: Any
    aad_columns: tuple[Any, ...]
    aad: Callable[[Any], bytes]
    only_key: str | None = None  # a table of mixed values: the one sealed row


def _sealed(
    name: str,
    model: type[SQLModel],
    key: str,
    aad_columns: tuple[str, ...],
    aad: Callable[[Any], bytes],
    only_key: str | None = None,
) -> SealedColumn:
    table = SQLModel.metadata.tables[model.__tablename__]  # type: ignore[index]
    column = name.split(".", 1)[1]
    return SealedColumn(
        name,
        table,
        table.c[key],
        table.c[column],
        tuple(table.c[c] for c in aad_columns),
        aad,
        only_key,
    )


SEALED_COLUMNS = (
    _sealed(
        "outbox.payload", Outbox, "id", ("event_id",), lambda r: f"outbox:{r.event_id}".encode()
    ),
    _sealed("inbox.raw", Inbox, "id", (), lambda r: f"inbox:{r.key}".encode()),
    _sealed("portal.patient", Portal, "id", (), lambda r: f"portal:{r.key}".encode()),
    _sealed(
        "delivery.payload",
        Delivery,
        "id",
        ("outbox_id", "domain"),
        lambda r: f"delivery:{r.outbox_id}:{r.domain}".encode(),
    ),
    _sealed("meta.value", Meta, "key", (), lambda r: b"meta", only_key=CANARY_KEY),
)


@dataclass
class RekeyReport:
    """What a rotation re-sealed, per column, and how long it took."""

    resealed: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0
    passes: int = 0

    @property
    def rows(self) -> int:
        return sum(self.resealed.values())


def _key_id_of_blob(column: Column[Any]) -> ColumnElement[Any]:
    return func.substr(column, _KEY_ID.start + 1, _KEY_ID.stop - _KEY_ID.start)


def _sealed_rows(spec: SealedColumn) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = spec.blob.is_not(None)
    if spec.only_key is not None:
        condition = condition & (spec.key == spec.only_key)
    return condition


def _stale(spec: SealedColumn, current: bytes) -> ColumnElement[bool]:
    return _sealed_rows(spec) & (
        _key_id_of_blob(spec.blob) != bindparam("current", current, type_=LargeBinary)
    )


async def _candidates(store: Store, spec: SealedColumn, current: bytes, after: Any) -> list[Any]:
    query = select(spec.key, func.length(spec.blob)).where(_stale(spec, current))
    if after is not None:
        query = query.where(spec.key > after)
    async with store.session() as session:
        result = await session.execute(query.order_by(spec.key).limit(BATCH_ROWS))
        return list(result.all())


async def _reseal_batch(store: Store, spec: SealedColumn, keys: list[Any]) -> int:
    """One transaction: open and re-seal each blob, unless the row changed meanwhile."""
    sealer, done = store.sealer, 0
    current = sealer.key_id
    async with store.session() as session, session.begin():
        found = await session.execute(
            select(spec.key.label("key"), spec.blob.label("blob"), *spec.aad_columns).where(
                spec.key.in_(keys)
            )
        )
        for row in found.all():
            if row.blob is None or bytes(row.blob)[_KEY_ID] == current:
                continue
            old = bytes(row.blob)
            aad = spec.aad(row)
            fresh = sealer.seal(sealer.open(old, aad), aad)
            result = await session.execute(
                update(spec.table)
                .where(spec.key == row.key, _key_id_of_blob(spec.blob) == old[_KEY_ID])
                .values({spec.blob.name: fresh})
            )
            done += result.rowcount  # type: ignore[attr-defined]
    return done


async def _one_pass(store: Store, report: RekeyReport) -> int:
    current = store.sealer.key_id
    total = 0
    for spec in SEALED_COLUMNS:
        after = None
        while rows := await _candidates(store, spec, current, after):
            budget, keys = 0, list[Any]()
            for key, length in rows:
                if keys and budget + (length or 0) > BATCH_BYTES:
                    break
                keys.append(key)
                budget += length or 0
            count = await _reseal_batch(store, spec, keys)
            report.resealed[spec.name] = report.resealed.get(spec.name, 0) + count
            report.bytes += budget
            total += count
            after = keys[-1]
    report.passes += 1
    return total


async def reseal_all(store: Store, settle: float = Sealer.RELOAD_SECONDS + 1.0) -> RekeyReport:
    """Re-seal every blob not sealed with the store's current key, without stopping the bridge.

    Passes repeat until one finds nothing left to do, and at least ``settle`` seconds have
    gone by: a running bridge re-reads the key file within that time, and what it sealed
    with the previous key until then is taken by a later pass.
    """
    started = time.monotonic()
    store.sealer.reload()
    report = RekeyReport()
    while True:
        found = await _one_pass(store, report)
        if found == 0 and time.monotonic() - started >= settle:
            break
        if found == 0:
            await asyncio.sleep(min(1.0, settle))
    report.seconds = time.monotonic() - started
    return report


async def blobs_by_key(store: Store) -> dict[bytes, int]:
    """How many sealed blobs each key id seals, over every sealed column."""
    counts: dict[bytes, int] = {}
    async with store.session() as session:
        for spec in SEALED_COLUMNS:
            key_id = _key_id_of_blob(spec.blob).label("key_id")
            result = await session.execute(
                select(key_id, func.count()).where(_sealed_rows(spec)).group_by(key_id)
            )
            for blob_key, count in result.all():
                counts[bytes(blob_key)] = counts.get(bytes(blob_key), 0) + count
    return counts
