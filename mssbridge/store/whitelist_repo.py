"""Store operations on the MSSanté whitelist: atomic replacement and domain look-ups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, text
from sqlmodel import col, select

from mssbridge.store.repo import Store
from mssbridge.store.tables import WhitelistDomain, WhitelistImport

if TYPE_CHECKING:
    from mssbridge.directory.whitelist import Whitelist


class WhitelistRepo:
    """The whitelist in force, in the store shared by every bridge process."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def replace(self, whitelist: Whitelist, source: str = "") -> WhitelistImport:
        """Put ``whitelist`` in force in one transaction: on any failure the old list stays."""
        rows = [
            {
                "domain": entry.domain,
                "operator_dn": entry.operator_dn,
                "description": entry.description,
                "updated_at": entry.updated_at.timestamp() if entry.updated_at else None,
            }
            for entry in whitelist.entries
        ]
        record = WhitelistImport(
            generated_at=whitelist.generated_at.timestamp(),
            imported_at=self.store.clock(),
            sha256=whitelist.sha256,
            signer_subject=whitelist.signer.subject,
            signer_issuer=whitelist.signer.issuer,
            signer_not_before=whitelist.signer.not_before.timestamp(),
            signer_not_after=whitelist.signer.not_after.timestamp(),
            anchored=whitelist.anchored,
            entries=len(rows),
            domains=len(whitelist.domains),
            source=source[:1024],
        )
        async with self.store.session() as session, session.begin():
            if self.store.engine.dialect.name == "postgresql":
                # One import at a time; readers keep seeing the old list until the commit.
                await session.execute(text("LOCK TABLE whitelist_domain IN EXCLUSIVE MODE"))
            await session.execute(delete(WhitelistDomain))
            if rows:
                await session.execute(insert(WhitelistDomain), rows)
            session.add(record)
        return record

    async def current(self) -> WhitelistImport | None:
        """The import that put the list in force, or None if no list was ever imported."""
        async with self.store.session() as session:
            result = await session.execute(
                select(WhitelistImport).order_by(col(WhitelistImport.id).desc()).limit(1)
            )
            return result.scalars().first()

    async def is_whitelisted(self, domain: str) -> bool:
        return bool(await self.listed_among([domain]))

    async def listed_among(self, domains: Iterable[str]) -> set[str]:
        """Those of ``domains`` (lower case) that the list in force holds, in one query."""
        wanted = sorted({d.strip().lower().rstrip(".") for d in domains})
        if not wanted:
            return set()
        async with self.store.session() as session:
            result = await session.execute(
                select(WhitelistDomain.domain)
                .where(col(WhitelistDomain.domain).in_(wanted))
                .distinct()
            )
            return set(result.scalars())

    async def operator_dns(self, domain: str) -> list[str]:
        """The certificate DNs the operator servers of ``domain`` present, sorted."""
        return [e.operator_dn for e in await self.entries(domain)]

    async def entries(self, domain: str) -> list[WhitelistDomain]:
        async with self.store.session() as session:
            result = await session.execute(
                select(WhitelistDomain)
                .where(WhitelistDomain.domain == domain.strip().lower().rstrip("."))
                .order_by(col(WhitelistDomain.operator_dn))
            )
            return list(result.scalars())

    async def counts(self) -> tuple[int, int, int]:
        """Entries, distinct domains and distinct operator DNs of the list in force."""
        async with self.store.session() as session:
            result = await session.execute(
                select(
                    func.count(),
                    func.count(func.distinct(WhitelistDomain.domain)),
                    func.count(func.distinct(WhitelistDomain.operator_dn)),
                )
            )
            entries, domains, dns = result.one()
            return int(entries), int(domains), int(dns)
