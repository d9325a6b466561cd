"""Synthetic "Extraction Correspondance MSSanté" files, in the public file's exact layout.

Every name, number and address is invented; the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import random
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mssbridge.directory.extraction import COLUMNS, SEPARATOR, DirectoryRow

DEFAULT_STAMP = "202601150600"

FAMILY = (
    "Dupont", "Martin", "Lefèvre", "Bernard", "Moreau", "Lévêque", "Garçon", "Roux",
    "Fournier", "Girard", "Bénard", "Noël", "Müller", "Da Silva", "Le Goff", "N'Diaye",
    "Petit", "Durand", "Lambert", "Faure", "Rousseau", "Blanchard", "Guérin", "Chevalier",
    "Perrin", "Morel", "Mercier", "Boyer", "Hervé", "D'Almeida",
)  # fmt: skip
GIVEN = (
    "Élodie", "Jérôme", "François", "Anaïs", "Chloé", "Loïc", "Hélène", "Thérèse", "Joël",
    "Camille", "Léa", "Hugo", "Zoé", "Benoît", "Maëlle", "Cédric", "Inès", "Noémie",
    "Jean-Pierre", "Marie-Hélène", "Gaëtan", "Aurélie", "Stéphane", "Sébastien",
)  # fmt: skip
# (code, label, know-how code, know-how label, domain)
PROFESSIONS = (
    ("10", "Médecin", "SM54", "Médecine générale", "medecin.mssante.fr"),
    ("10", "Médecin", "SM04", "Cardiologie et maladies vasculaires", "medecin.mssante.fr"),
    ("10", "Médecin", "SM26", "Pédiatrie", "medecin.mssante.fr"),
    ("10", "Médecin", "SM40", "Radio-diagnostic", "medecin.mssante.fr"),
    ("21", "Pharmacien", "", "", "pharmacien.mssante.fr"),
    ("40", "Chirurgien-Dentiste", "", "", "chirurgien-dentiste.mssante.fr"),
    ("50", "Sage-Femme", "", "", "sagefemme.mssante.fr"),
    ("60", "Infirmier", "", "", "infirmier.mssante.fr"),
    ("70", "Masseur-Kinésithérapeute", "", "", "masseur-kinesitherapeute.mssante.fr"),
    ("91", "Orthophoniste", "", "", "orthophoniste.mssante.fr"),
)
# (postal code, acheminement city, department)
PLACES = (
    ("69003", "LYON", "69"), ("75013", "PARIS", "75"), ("13005", "MARSEILLE", "13"),
    ("31059", "TOULOUSE", "31"), ("33000", "BORDEAUX", "33"), ("59037", "LILLE", "59"),
    ("44093", "NANTES", "44"), ("42055", "ST ETIENNE", "42"), ("25030", "BESANCON", "25"),
    ("29200", "BREST", "29"), ("97400", "ST DENIS", "974"), ("2A000", "AJACCIO", "2A"),
)  # fmt: skip
STRUCTURES = (
    ("Centre Hospitalier Universitaire", "chu"),
    ("Clinique Sainte-Thérèse", "clinique-ste-therese"),
    ("Centre Hospitalier Général", "ch"),
    ("Maison de Santé Pluriprofessionnelle des Épis", "msp-epis"),
    ("Pharmacie de l'Hôtel de Ville", "pharmacie-hdv"),
    ("Cabinet de Radiologie du Parc", "radio-parc"),
)
SERVICES = (
    "Cardiologie", "Secrétariat médical", "Urgences", "Pédiatrie", "Maternité",
    "Laboratoire de biologie médicale", "Radiologie", "Département d'information médicale",
)  # fmt: skip
STREET_TYPES = ("RUE", "AV", "BD", "PL", "CHE", "ALL")
STREET_NAMES = (
    "DE LA RÉPUBLIQUE", "JEAN JAURÈS", "DES ÉCOLES", "PASTEUR", "DU GÉNÉRAL DE GAULLE",
    "DES LILAS", "VICTOR HUGO", "SAINT-ÉLOI",
)  # fmt: skip


@dataclass(frozen=True)
class GeneratedStats:
    """What a generated file holds, so readers of it can be checked exactly."""

    lines: int  # data lines, header excluded
    malformed: int  # lines with a wrong column count
    duplicates: int  # exact repeats of an earlier line (same address and person)
    shared_addresses: int  # new people on an address already used
    per: int
    org: int

    @property
    def distinct(self) -> int:
        return self.lines - self.malformed - self.duplicates


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    bare = "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in " -"))
    return "-".join(bare.replace("-", " ").split())


class _Generator:
    def __init__(self, seed: int, malformed_rate: float) -> None:
        self.random = random.Random(seed)
        self.malformed_rate = malformed_rate
        self.counter = 0
        self.addresses: list[str] = []

    def _place(self) -> list[str]:
        r = self.random
        postal, city, department = r.choice(PLACES)
        cedex = r.random() < 0.15
        l6 = f"{postal} {city}" + (f" CEDEX {r.randint(1, 9):02d}" if cedex else "")
        return [
            r.choice(("", "", "Bâtiment B", "Hall Sud")),
            r.choice(("", "", "BP 123", "CS 30001")),
            str(r.randint(1, 250)),
            r.choice(("", "", "", "BIS", "TER")),
            r.choice(STREET_TYPES),
            r.choice(STREET_NAMES),
            r.choice(("", "", "", "LIEU-DIT LES AUBÉPINES")),
            l6,
            postal,
            department,
            "France" if r.random() < 0.97 else "",
        ]

    def _structure(self) -> tuple[str, str, str, str]:
        r = self.random
        name, slug = r.choice(STRUCTURES)
        _, city, _ = r.choice(PLACES)
        finess = f"{r.randint(10, 99)}{r.randint(0, 9999999):07d}"
        return "1", f"1{finess}", f"{name} de {city.title()}", f"{slug}-{_ascii(city)}"

    def per(self) -> list[str]:
        r = self.random
        self.counter += 1
        family, given = r.choice(FAMILY), r.choice(GIVEN)
        code, label, kh_code, kh_label, domain = r.choice(PROFESSIONS)
        rpps = r.random() < 0.9
        number = f"10{r.randint(0, 999999999):09d}" if rpps else f"{r.randint(0, 999999999):09d}"
        id_type = "8" if rpps else "0"
        address = f"{_ascii(given)}.{_ascii(family)}{self.counter}@{domain}"
        in_structure = r.random() < 0.4
        structure = self._structure() if in_structure else ("", "", "", "")
        civility = "DR" if code == "10" else r.choice(("M", "MME", ""))
        return [
            "PER", address, id_type, number, id_type + number, structure[0], structure[1],
            r.choice(SERVICES) if in_structure and r.random() < 0.5 else "",
            civility, family.upper() if r.random() < 0.3 else family, given,
            "C", "Civil", code, label, kh_code, kh_label,
            r.choice(("O", "N", "")), structure[2],
            "" if r.random() < 0.8 else "Cabinet Médical",
            *self._place(),
        ]  # fmt: skip

    def org(self) -> list[str]:
        r = self.random
        self.counter += 1
        id_type, structure_id, name, slug = self._structure()
        service = r.choice(SERVICES)
        address = f"{_ascii(service)}{self.counter}@{slug}.mssante.fr"
        return [
            "ORG", address, "", "", "", id_type, structure_id, service,
            "", "", "", "", "", "", "", "", "", r.choice(("O", "")), name, "",
            *self._place(),
        ]  # fmt: skip

    def lines(self, rows: int) -> Iterator[tuple[str, bool, str]]:
        """(kind, shared, line) triples; kind is PER, ORG, dup (a repeat) or bad."""
        r = self.random
        previous: list[str] | None = None
        for index in range(rows):
            roll = r.random()
            if previous is not None and roll < 0.02:
                yield "dup", False, SEPARATOR.join(previous)
                continue
            fields = self.per() if r.random() < 0.8 else self.org()
            shared = bool(self.addresses) and fields[0] == "PER" and roll < 0.05
            if shared:
                fields[1] = r.choice(self.addresses)  # another person on a used address
            # At least one of each malformation in any file of 20 lines or more.
            if index in (7, 13) or (index > 20 and r.random() < self.malformed_rate):
                if index == 13 or (index != 7 and r.random() < 0.5):
                    fields.append("colonne en trop")
                else:
                    fields.pop()
                yield "bad", False, SEPARATOR.join(fields)
                continue
            if not shared and len(self.addresses) < 1000:
                self.addresses.append(fields[1])
            previous = fields
            yield fields[0], shared, SEPARATOR.join(fields)


def write_extraction(
    out: TextIO, rows: int, seed: int = 0, malformed_rate: float = 0.001
) -> GeneratedStats:
    """Write a header and ``rows`` data lines to ``out``; return what they hold."""
    out.write(SEPARATOR.join(COLUMNS) + "\n")
    counts = {"bad": 0, "dup": 0, "PER": 0, "ORG": 0}
    shared_count = 0
    for kind, shared, line in _Generator(seed, malformed_rate).lines(rows):
        out.write(line + "\n")
        counts[kind] += 1
        shared_count += shared
    return GeneratedStats(
        lines=rows,
        malformed=counts["bad"],
        duplicates=counts["dup"],
        shared_addresses=shared_count,
        per=counts["PER"],
        org=counts["ORG"],
    )


def extraction_line(row: DirectoryRow) -> str:
    """One data line holding ``row``, for files that must contain a known person."""
    person = row.mailbox_type == "PER"
    fields = [
        row.mailbox_type, row.address, row.id_type, row.pp_id, row.national_id,
        "1" if row.structure_id else "", row.structure_id, row.service, row.civility,
        row.family_name, row.given_name, "C" if person else "", "Civil" if person else "",
        row.profession_code, row.profession_label, "", row.know_how_label, "O",
        row.structure_name, "", "", "", "", "", "", "", "",
        " ".join(p for p in (row.postal_code, row.city) if p), row.postal_code, row.department,
        "France",
    ]  # fmt: skip
    assert len(fields) == len(COLUMNS)
    return SEPARATOR.join(fields)


def member_name(stamp: str = DEFAULT_STAMP) -> str:
    return f"Extraction_Correspondance_MSSante_{stamp}.txt"


def generate_file(
    path: Path,
    rows: int,
    seed: int = 0,
    malformed_rate: float = 0.001,
    stamp: str = DEFAULT_STAMP,
) -> GeneratedStats:
    """Write a synthetic extraction to ``path``: zipped if it ends in ``.zip``, else TXT."""
    path = Path(path)
    if path.suffix.lower() != ".zip":
        with open(path, "w", encoding="utf-8", newline="") as out:
            return write_extraction(out, rows, seed, malformed_rate)
    info = zipfile.ZipInfo(member_name(stamp), date_time=(2026, 1, 15, 6, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with (
        zipfile.ZipFile(path, "w") as archive,
        archive.open(info, "w", force_zip64=True) as member,
        io.TextIOWrapper(member, encoding="utf-8", newline="") as out,
    ):
        return write_extraction(out, rows, seed, malformed_rate)
