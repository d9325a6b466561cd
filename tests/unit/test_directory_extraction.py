"""The directory extraction: synthetic files in the public layout and the streaming reader."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mssbridge.directory.extraction import (
    COLUMNS,
    DirectoryRow,
    ExtractionError,
    city_of,
    open_extraction,
    search_key,
)
from mssbridge.directory.synthetic import generate_file

HEADER = (
    "Type de BAL|Adresse BAL|Type Identifiant PP|Identifiant PP|Identification nationale PP|"
    "Type identifiant structure|Identification Structure|Service de rattachement|"
    "Civilité d'exercice|Nom d'exercice|Prénom d'exercice|Catégorie profession|"
    "Libellé de catégorie profession|Code Profession|Libellé Profession|Code savoir-faire|"
    "Libellé savoir-faire|Dématérialisation|Raison Sociale structure BAL|"
    "Enseigne commerciale structure BAL|L2COMPLEMENTLOCALISATION structure BAL|"
    "L3COMPLEMENTDISTRIBUTION structure BAL|L4NUMEROVOIE structure BAL|"
    "L4COMPLEMENTNUMEROVOIE structure BAL|NL4TYPEVOIE structure BAL|"
    "L4LIBELLEVOIE structure BAL|L5LIEUDITMENTION structure BAL|"
    "L6LIGNEACHEMINEMENT structure BAL|Code postal structure BAL|"
    "Département structure BAL|Pays structure BAL"
)
PER = "|".join(
    [
        "PER", "Elodie.Lefevre@medecin.mssante.fr", "8", "10001234567", "810001234567",
        "", "", "", "DR", "Lefèvre", "Élodie", "C", "Civil", "10", "Médecin", "SM54",
        "Médecine générale", "O", "", "", "", "", "12", "", "RUE", "DES ÉCOLES", "",
        "69003 LYON CEDEX 03", "69003", "69", "France",
    ]
)  # fmt: skip


def _read(path: Path) -> tuple[list[DirectoryRow], object]:
    with open_extraction(path) as reader:
        rows = list(reader.rows())
        return rows, reader.stats


def test_generated_file_has_the_exact_header_and_31_columns(tmp_path: Path) -> None:
    stats = generate_file(tmp_path / "x.txt", 500, seed=3)
    lines = (tmp_path / "x.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER
    assert tuple(lines[0].split("|")) == COLUMNS and len(COLUMNS) == 31
    assert len(lines) == 501
    widths = [len(line.split("|")) for line in lines[1:]]
    assert widths.count(31) == 500 - stats.malformed
    assert stats.malformed >= 2 and stats.duplicates > 0 and stats.shared_addresses > 0
    assert {line.split("|")[0] for line in lines[1:]} == {"PER", "ORG"}
    text = "\n".join(lines)
    assert "||" in text and "é" in text  # empty fields and accents


def test_generation_is_deterministic_by_seed(tmp_path: Path) -> None:
    generate_file(tmp_path / "a.txt", 300, seed=7)
    generate_file(tmp_path / "b.txt", 300, seed=7)
    generate_file(tmp_path / "c.txt", 300, seed=8)
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert (tmp_path / "a.txt").read_bytes() != (tmp_path / "c.txt").read_bytes()
    generate_file(tmp_path / "a.zip", 300, seed=7)
    generate_file(tmp_path / "b.zip", 300, seed=7)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


@pytest.mark.parametrize("name", ["extraction.txt", "extraction.zip"])
def test_reader_counts_skips_and_repeats_exactly(tmp_path: Path, name: str) -> None:
    generated = generate_file(tmp_path / name, 2000, seed=11)
    rows, stats = _read(tmp_path / name)
    assert stats.lines == 2000  # type: ignore[attr-defined]
    assert stats.skipped_total == generated.malformed  # type: ignore[attr-defined]
    assert set(stats.skipped) == {"30 columns instead of 31", "32 columns instead of 31"}  # type: ignore[attr-defined]
    assert stats.duplicates == generated.duplicates  # type: ignore[attr-defined]
    assert len(rows) == generated.distinct
    assert len({(r.address, r.national_id) for r in rows}) == len(rows)
    assert len({r.address for r in rows}) < len(rows)  # a shared address is kept per person
    if name.endswith(".zip"):
        with zipfile.ZipFile(tmp_path / name) as archive:
            assert archive.namelist() == ["Extraction_Correspondance_MSSante_202601150600.txt"]


def test_reader_types_a_row_with_accents_and_empty_fields(tmp_path: Path) -> None:
    path = tmp_path / "Extraction_Correspondance_MSSante_202601150600.txt"
    bad = PER.replace("|France", "")
    path.write_text(f"\ufeff{HEADER}\r\n{PER}\r\n{PER}\r\n{bad}\r\n", encoding="utf-8")
    rows, stats = _read(path)
    assert rows == [
        DirectoryRow(
            mailbox_type="PER",
            address="elodie.lefevre@medecin.mssante.fr",
            id_type="8",
            pp_id="10001234567",
            national_id="810001234567",
            civility="DR",
            family_name="Lefèvre",
            given_name="Élodie",
            profession_code="10",
            profession_label="Médecin",
            know_how_label="Médecine générale",
            city="LYON",
            postal_code="69003",
            department="69",
        )
    ]
    assert stats.duplicates == 1  # type: ignore[attr-defined]
    assert stats.errors == [(4, "30 columns instead of 31")]  # type: ignore[attr-defined]
    assert rows[0].display_name == "Élodie Lefèvre"


def test_reader_refuses_a_wrong_header_and_a_zip_without_the_member(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("Type de BAL|Adresse BAL\n" + PER + "\n", encoding="utf-8")
    with pytest.raises(ExtractionError, match="unexpected header"):
        open_extraction(path)
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("other.txt", HEADER + "\n")
    with pytest.raises(ExtractionError, match="found 0"):
        open_extraction(archive)


def test_city_and_search_key() -> None:
    assert city_of("69003 LYON CEDEX 03") == "LYON"
    assert city_of("ST ETIENNE", "42000") == "ST ETIENNE"
    assert city_of("") == ""
    assert search_key("  Lévêque-D'Almeida ") == "leveque d almeida"
