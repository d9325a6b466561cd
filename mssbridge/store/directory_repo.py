"""Store operations on the MSSanté directory: atomic bulk replacement and searches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, collate, delete, func, insert, or_, text
from sqlmodel import col, select

from mssbridge.directory.extraction import DirectoryRow, search_key
from mssbridge.store.repo import Store
from mssbridge.store.tables import DirectoryEntry

BATCH_ROWS = 5000
DEFAULT_LIMIT = 20
MAX_ROWS = 5000  # a look-up by family name: the commonest has some 2,000 rows in France
_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(DirectoryRow))


@dataclass(frozen=True)
class DirectoryCounts:
    entries: int
    addresses: int
    per: int
    org: int


def _values(row: DirectoryRow) -> dict[str, Any]:
    values = dataclasses.asdict(row)
    values["name_key"] = search_key(row.family_name)
    values["city_key"] = search_key(row.city)
    return values


def _starts_with(column: Any, prefix: str, dialect: str) -> ColumnElement[bool]:
    """``column`` begins with ``prefix``, as a range a B-tree index serves (LIKE would not).

    On PostgreSQL the range is compared in byte order ("C"), whatever the database's
    collation, and served by ``ix_directory_entry_name_key_c`` (migration 0010).
    """
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    subject = collate(column, "C") if dialect == "postgresql" else column
    return and_(subject >= prefix, subject < upper)


def _identifier_match(number: str) -> ColumnElement[bool]:
    return or_(
        col(DirectoryEntry.pp_id) == number,
        col(DirectoryEntry.national_id).in_([number, "8" + number, "0" + number]),
    )


class DirectoryRepo:
    """The directory extraction in force, in the store shared by every bridge process."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def replace(
        self,
        rows: Iterable[DirectoryRow],
        batch_rows: int = BATCH_ROWS,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Put ``rows`` in force in one transaction (the old rows stay on any failure).

        ``rows`` is consumed lazily, ``batch_rows`` at a time; ``progress`` gets the running
        count after each batch. Returns the number of rows inserted.
        """
        total = 0
        async with self.store.session() as session, session.begin():
            if self.store.engine.dialect.name == "postgresql":
                # One import at a time; readers keep seeing the old rows until the commit.
                await session.execute(text("LOCK TABLE directory_entry IN EXCLUSIVE MODE"))
            await session.execute(delete(DirectoryEntry))
            batch: list[dict[str, Any]] = []
            for row in rows:
                batch.append(_values(row))
                if len(batch) >= batch_rows:
                    await session.execute(insert(DirectoryEntry), batch)
                    total += len(batch)
                    batch = []
                    if progress is not None:
                        progress(total)
            if batch:
                await session.execute(insert(DirectoryEntry), batch)
                total += len(batch)
                if progress is not None:
                    progress(total)
        if self.store.engine.dialect.name == "postgresql":
            # Fresh statistics now, not at autovacuum's next pass: the planner's choice of
            # index depends on them for the 500,000 rows just written.
            async with self.store.session() as session, session.begin():
                await session.execute(text("ANALYZE directory_entry"))
        return total

    async def search(
        self,
        query: str = "",
        *,
        name: str = "",
        rpps: str = "",
        profession: str = "",
        city: str = "",
        limit: int = DEFAULT_LIMIT,
    ) -> list[DirectoryEntry]:
        """Entries matching every criterion given (ordered by name, then address).

        ``query`` is an address if it holds ``@``, an RPPS/ADELI/national id if it is all
        digits, else a family-name prefix. Names and cities ignore case and accents.
        """
        dialect = self.store.engine.dialect.name
        statement = select(DirectoryEntry)
        query = query.strip()
        if query:
            if "@" in query:
                statement = statement.where(DirectoryEntry.address == query.lower())
            elif query.isdigit():
                rpps = rpps or query
            else:
                name = name or query
        key = search_key(name)
        if key:
            statement = statement.where(_starts_with(DirectoryEntry.name_key, key, dialect))
        if rpps.strip():
            statement = statement.where(_identifier_match(rpps.strip()))
        if profession.strip():
            wanted = profession.strip()
            if wanted.isdigit():
                statement = statement.where(DirectoryEntry.profession_code == wanted)
            else:
                statement = statement.where(
                    func.lower(DirectoryEntry.profession_label).contains(
                        wanted.lower(), autoescape=True
                    )
                )
        if city.strip():
            statement = statement.where(DirectoryEntry.city_key == search_key(city))
        # In the prefix index's own order, so that a prefix search reads that index once.
        by_name: Any = col(DirectoryEntry.name_key)
        if dialect == "postgresql":
            by_name = collate(by_name, "C")
        statement = statement.order_by(
            by_name, col(DirectoryEntry.address), col(DirectoryEntry.id)
        ).limit(limit)
        async with self.store.session() as session:
            result = await session.execute(statement)
            return list(result.scalars())

    async def counts(self) -> DirectoryCounts:
        """Entries, distinct addresses and entries per mailbox type."""
        async with self.store.session() as session:
            result = await session.execute(
                select(
                    func.count(),
                    func.count(func.distinct(DirectoryEntry.address)),
                    func.count().filter(col(DirectoryEntry.mailbox_type) == "PER"),
                    func.count().filter(col(DirectoryEntry.mailbox_type) == "ORG"),
                )
            )
            entries, addresses, per, org = result.one()
            return DirectoryCounts(int(entries), int(addresses), int(per), int(org))

    async def _rows(self, where: ColumnElement[bool], limit: int) -> list[DirectoryRow]:
        # No ORDER BY: with one, PostgreSQL may walk the primary key to stop at ``limit``
        # instead of using the index of ``where`` (callers rank the rows themselves).
        columns = [getattr(DirectoryEntry, name) for name in _ROW_FIELDS]
        statement = select(*columns).where(where).limit(limit)
        async with self.store.session() as session:
            result = await session.execute(statement)
            return [DirectoryRow(*values) for values in result.all()]

    async def rows_by_family(
        self, keys: Sequence[str], limit: int = MAX_ROWS, cities: Sequence[str] = ()
    ) -> list[DirectoryRow]:
        """Rows whose family-name key is one of ``keys``, in one of ``cities`` if given.

        Served by ``ix_directory_entry_name_key`` (and ``…_city_key``).
        """
        if not keys:
            return []
        where: ColumnElement[bool] = col(DirectoryEntry.name_key).in_(list(keys))
        if cities:
            where = and_(where, col(DirectoryEntry.city_key).in_(list(cities)))
        return await self._rows(where, limit)

    async def rows_by_identifier(self, number: str, limit: int = MAX_ROWS) -> list[DirectoryRow]:
        """Rows of an RPPS or ADELI number, bare or as a national id (8… / 0…)."""
        return await self._rows(_identifier_match(number), limit)

    async def rows_by_address(self, address: str, limit: int = 50) -> list[DirectoryRow]:
        """Rows of one mailbox address (one per person listed on it)."""
        return await self._rows(col(DirectoryEntry.address) == address.strip().lower(), limit)

    async def is_empty(self) -> bool:
        """True until an extraction was imported."""
        async with self.store.session() as session:
            result = await session.execute(select(DirectoryEntry.id).limit(1))
            return result.first() is None
