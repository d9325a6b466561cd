"""The whitelist in the store, on SQLite and PostgreSQL: fast import, atomic replacement."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from mssbridge.directory.whitelist import Whitelist, WhitelistEntry, parse_whitelist
from mssbridge.store.repo import Store
from mssbridge.store.whitelist_repo import WhitelistRepo

pytestmark = pytest.mark.integration

REAL_LIST = Path(__file__).resolve().parents[3] / "shared/data/listeblanchemssante-2025-02-28.xml"
NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
IMPORT_BUDGET_SECONDS = 5.0


@pytest.fixture(scope="module")
def real_list() -> Whitelist:
    return parse_whitelist(REAL_LIST.read_bytes(), now=NOW)


def _small(real: Whitelist, *domains: str) -> Whitelist:
    entries = tuple(WhitelistEntry(d, f"CN=mss.{d},C=FR", f"test {d}", None) for d in domains)
    return dataclasses.replace(real, entries=entries, source_entries=len(entries), sha256="0" * 64)


async def test_real_list_imports_fast_and_answers(store: Store, real_list: Whitelist) -> None:
    repo = WhitelistRepo(store)
    assert await repo.current() is None
    started = time.monotonic()
    record = await repo.replace(real_list, source="listeblanchemssante-2025-02-28.xml")
    elapsed = time.monotonic() - started
    print(f"\nwhitelist import on {store.engine.dialect.name}: {elapsed:.2f} s")
    assert elapsed < IMPORT_BUDGET_SECONDS
    assert await repo.counts() == (6473, 4944, 391)
    current = await repo.current()
    assert current is not None and current.id == record.id
    assert current.generated_at == real_list.generated_at.timestamp()
    assert current.signer_subject.startswith("CN=alb.mssante.fr")
    assert current.sha256 == real_list.sha256 and not current.anchored
    assert await repo.is_whitelisted("15-20.mssante.fr")
    assert await repo.is_whitelisted("15-20.MSSANTE.FR.")
    assert not await repo.is_whitelisted("not-listed.example.fr")
    dns = await repo.operator_dns("15-20.mssante.fr")
    assert len(dns) >= 3 and dns == sorted(dns)
    assert any("smtp-1.sesan.santnet.com" in dn for dn in dns)
    wanted = ["15-20.mssante.fr", "not-listed.example.fr", "mssante.apicrypt.org"]
    assert await repo.listed_among(wanted) == {"15-20.mssante.fr", "mssante.apicrypt.org"}


async def test_reimport_replaces_the_whole_list(store: Store, real_list: Whitelist) -> None:
    repo = WhitelistRepo(store)
    await repo.replace(real_list)
    await repo.replace(_small(real_list, "chu-test.mssante.fr", "correspondant.mssante.fr"))
    assert await repo.counts() == (2, 2, 2)
    assert await repo.is_whitelisted("chu-test.mssante.fr")
    assert not await repo.is_whitelisted("15-20.mssante.fr")
    current = await repo.current()
    assert current is not None and current.sha256 == "0" * 64 and current.entries == 2


async def test_failed_import_keeps_the_previous_list(store: Store, real_list: Whitelist) -> None:
    repo = WhitelistRepo(store)
    await repo.replace(real_list)
    before = await repo.current()
    good = _small(real_list, "a.mssante.fr", "b.mssante.fr")
    # the second row breaks a NOT NULL constraint, after the delete and the first row
    broken = dataclasses.replace(
        good,
        entries=(good.entries[0], WhitelistEntry("b.mssante.fr", None, "", None)),  # type: ignore[arg-type]
    )
    with pytest.raises(DBAPIError):
        await repo.replace(broken)
    assert await repo.counts() == (6473, 4944, 391)
    assert not await repo.is_whitelisted("a.mssante.fr")
    after = await repo.current()
    assert after is not None and before is not None and after.id == before.id
