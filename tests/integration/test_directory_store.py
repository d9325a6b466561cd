"""The directory in the store, on SQLite and PostgreSQL: streaming import, replacement, search."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mssbridge.cli import app
from mssbridge.directory.extraction import DirectoryRow, open_extraction
from mssbridge.directory.synthetic import generate_file
from mssbridge.store.directory_repo import DirectoryRepo
from mssbridge.store.repo import Store

pytestmark = pytest.mark.integration

LYON = DirectoryRow(
    mailbox_type="PER",
    address="elodie.lefevre@medecin.mssante.fr",
    id_type="8",
    pp_id="10001234567",
    national_id="810001234567",
    family_name="Lefèvre",
    given_name="Élodie",
    profession_code="10",
    profession_label="Médecin",
    city="LYON",
)
BREST = DirectoryRow(
    mailbox_type="ORG",
    address="urgences@ch-brest.mssante.fr",
    service="Urgences",
    structure_name="Centre Hospitalier de Brest",
    city="BREST",
)


async def test_import_replaces_and_counts(store: Store, tmp_path: Path) -> None:
    repo = DirectoryRepo(store)
    generated = generate_file(tmp_path / "x.zip", 3000, seed=5)
    seen: list[int] = []
    with open_extraction(tmp_path / "x.zip") as reader:
        inserted = await repo.replace(reader.rows(), batch_rows=1000, progress=seen.append)
    assert inserted == generated.distinct
    assert seen[-1] == inserted and len(seen) == -(-inserted // 1000)
    counts = await repo.counts()
    assert counts.entries == inserted
    assert (counts.per, counts.org) == (generated.per, generated.org)
    assert counts.addresses < counts.entries  # repeated addresses, one row per person

    assert await repo.replace([LYON, BREST]) == 2
    counts = await repo.counts()
    assert (counts.entries, counts.per, counts.org) == (2, 1, 1)


async def test_a_failed_import_keeps_the_old_rows(store: Store) -> None:
    repo = DirectoryRepo(store)
    await repo.replace([LYON, BREST])

    def broken() -> list[DirectoryRow]:
        raise RuntimeError("disk read error")

    class Rows:
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield BREST
            broken()

    with pytest.raises(RuntimeError):
        await repo.replace(Rows(), batch_rows=1)
    assert (await repo.counts()).entries == 2


async def test_search_by_name_rpps_city_profession_and_address(store: Store) -> None:
    repo = DirectoryRepo(store)
    await repo.replace([LYON, BREST])
    assert [e.address for e in await repo.search(name="lefevre")] == [LYON.address]
    assert [e.address for e in await repo.search("LEFÈ")] == [LYON.address]
    assert [e.address for e in await repo.search(rpps="10001234567")] == [LYON.address]
    assert [e.address for e in await repo.search("810001234567")] == [LYON.address]
    assert [e.address for e in await repo.search(city="brest")] == [BREST.address]
    assert [e.address for e in await repo.search(profession="médecin")] == [LYON.address]
    assert [e.address for e in await repo.search(profession="10", city="Lyon")] == [LYON.address]
    assert await repo.search(name="lefevre", city="brest") == []
    assert [e.address for e in await repo.search("URGENCES@ch-brest.mssante.fr")] == [BREST.address]
    assert await repo.search(name="%") == []


READY = [
    "matrix.homeserver_url=http://127.0.0.1:8008",
    "matrix.server_name=hospital.example",
    "mailbox.address=bal@chu-test.mssante.fr",
    "mailbox.smtp.host=smtp.chu-test.mssante.fr",
    "mailbox.imap.host=imap.chu-test.mssante.fr",
]


def test_cli_generate_import_search(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.toml"
    args = ["init", "--config", str(config)]
    for item in READY:
        args += ["--set", item]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    out_file = tmp_path / "extraction.zip"
    result = runner.invoke(
        app, ["directory", "generate", "--rows", "800", "--out", str(out_file), "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert out_file.exists() and "800 lines" in result.output

    result = runner.invoke(app, ["directory", "import", str(out_file), "--config", str(config)])
    assert result.exit_code == 0, result.output
    with open_extraction(out_file) as reader:
        rows = list(reader.rows())
        stats = reader.stats
    assert f"imported   {len(rows)} entries from 800 lines" in result.output
    assert f"skipped    {stats.skipped_total}" in result.output
    assert "30 columns instead of 31" in result.output

    doctor = next(r for r in rows if r.mailbox_type == "PER")
    result = runner.invoke(
        app, ["directory", "search", "--rpps", doctor.pp_id, "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert doctor.address in result.output and doctor.family_name in result.output
    assert doctor.profession_label in result.output and doctor.city in result.output

    result = runner.invoke(
        app, ["directory", "search", "--name", "Zzzz-nobody", "--config", str(config)]
    )
    assert result.exit_code == 1 and "no match" in result.output
    bad = tmp_path / "bad.txt"
    bad.write_text("not|an|extraction\n", encoding="utf-8")
    result = runner.invoke(app, ["directory", "import", str(bad), "--config", str(config)])
    assert result.exit_code == 1 and "unexpected header" in result.output
