"""Streaming reader of the public "Extraction Correspondance MSSanté" file (TXT or ZIP).

The file is UTF-8, ``|``-separated, with a header line and 31 columns (see ``COLUMNS``).
Rows are read one at a time: only a set of 8-byte digests (one per address and person)
is kept, to drop repeated rows.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

COLUMNS: tuple[str, ...] = (
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé de catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION structure BAL",
    "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL",
    "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL",
    "L4LIBELLEVOIE structure BAL",
    "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL",
    "Code postal structure BAL",
    "Département structure BAL",
    "Pays structure BAL",
)
SEPARATOR = "|"
MEMBER_PATTERN = re.compile(r"(?:^|/)Extraction_Correspondance_MSSante_[^/]*\.txt$", re.I)
MAX_REPORTED_ERRORS = 20

(
    _TYPE,
    _ADDRESS,
    _ID_TYPE,
    _PP_ID,
    _NATIONAL_ID,
    _STRUCTURE_ID_TYPE,
    _STRUCTURE_ID,
    _SERVICE,
    _CIVILITY,
    _FAMILY,
    _GIVEN,
    _CATEGORY,
    _CATEGORY_LABEL,
    _PROFESSION_CODE,
    _PROFESSION_LABEL,
    _KNOW_HOW_CODE,
    _KNOW_HOW_LABEL,
    _PAPERLESS,
    _RAISON_SOCIALE,
    _ENSEIGNE,
) = range(20)
_L6 = 27
_POSTAL_CODE = 28
_DEPARTMENT = 29

_LEADING_POSTCODE = re.compile(r"^\d{4,5}\s+")
_CEDEX = re.compile(r"\s+CEDEX(?:\s+\d+)?$", re.I)


class ExtractionError(ValueError):
    """The file is not an extraction this reader understands (nothing was read from it)."""


def search_key(text: str) -> str:
    """Lower case, accents removed, spaces collapsed: what searches compare."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.replace("-", " ").replace("'", " ").split())


def city_of(l6: str, postal_code: str = "") -> str:
    """The city of a "ligne d'acheminement" (``69003 LYON CEDEX 03`` gives ``LYON``)."""
    city = _LEADING_POSTCODE.sub("", l6.strip())
    if postal_code and city.startswith(postal_code):
        city = city[len(postal_code) :].strip()
    return _CEDEX.sub("", city).strip()


@dataclass(frozen=True, slots=True)
class DirectoryRow:
    """One mailbox of the extraction, with the fields the bridge uses."""

    mailbox_type: str  # PER or ORG
    address: str
    id_type: str = ""  # 8 RPPS, 0 ADELI
    pp_id: str = ""  # the RPPS or ADELI number
    national_id: str = ""  # id type + number
    structure_id: str = ""
    service: str = ""
    civility: str = ""
    family_name: str = ""
    given_name: str = ""
    profession_code: str = ""
    profession_label: str = ""
    know_how_label: str = ""
    structure_name: str = ""
    city: str = ""
    postal_code: str = ""
    department: str = ""

    @property
    def display_name(self) -> str:
        person = " ".join(p for p in (self.given_name, self.family_name) if p)
        return person or self.service or self.structure_name or self.address


@dataclass
class ReadStats:
    """What reading a file found: rows kept, repeated, and skipped with their reason."""

    lines: int = 0  # data lines, header excluded
    kept: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[int, str]] = field(default_factory=list)  # first few (line, reason)

    def skip(self, line: int, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((line, reason))

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _row(fields: list[str]) -> DirectoryRow:
    f = [v.strip() for v in fields]
    postal_code = f[_POSTAL_CODE]
    l6 = f[_L6]
    if not postal_code:
        match = _LEADING_POSTCODE.match(l6)
        postal_code = match.group(0).strip() if match else ""
    return DirectoryRow(
        mailbox_type=f[_TYPE].upper(),
        address=f[_ADDRESS].lower(),
        id_type=f[_ID_TYPE],
        pp_id=f[_PP_ID],
        national_id=f[_NATIONAL_ID],
        structure_id=f[_STRUCTURE_ID],
        service=f[_SERVICE],
        civility=f[_CIVILITY],
        family_name=f[_FAMILY],
        given_name=f[_GIVEN],
        profession_code=f[_PROFESSION_CODE],
        profession_label=f[_PROFESSION_LABEL],
        know_how_label=f[_KNOW_HOW_LABEL],
        structure_name=f[_RAISON_SOCIALE] or f[_ENSEIGNE],
        city=city_of(l6, postal_code),
        postal_code=postal_code,
        department=f[_DEPARTMENT],
    )


class ExtractionReader:
    """An open extraction; iterate ``rows()`` once. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.stats = ReadStats()
        self.member: str | None = None
        self._raw: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._zip: zipfile.ZipFile | None = None
        try:
            self._text = self._open_text()
            self._header()
        except BaseException:
            self.close()
            raise

    def _open_text(self) -> io.TextIOWrapper:
        if zipfile.is_zipfile(self._raw):
            self._raw.seek(0)
            self._zip = zipfile.ZipFile(self._raw)
            members = [n for n in self._zip.namelist() if MEMBER_PATTERN.search(n)]
            if len(members) != 1:
                raise ExtractionError(
                    f"{self.path.name}: expected one Extraction_Correspondance_MSSante_*.txt "
                    f"in the ZIP, found {len(members)}"
                )
            self.member = members[0]
            binary: IO[bytes] = self._zip.open(self.member)
        else:
            self._raw.seek(0)
            binary = self._raw
        return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="strict", newline="")

    def _header(self) -> None:
        try:
            first = self._text.readline()
        except UnicodeDecodeError as exc:
            raise ExtractionError(f"{self.path.name}: not UTF-8 ({exc})") from exc
        names = tuple(n.strip() for n in first.rstrip("\r\n").split(SEPARATOR))
        if names != COLUMNS:
            raise ExtractionError(
                f"{self.path.name}: unexpected header ({len(names)} columns, "
                f"first {names[0]!r}); expected the {len(COLUMNS)} columns of the extraction"
            )

    def position(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for a ZIP)."""
        try:
            return min(self._raw.tell(), self.size)
        except (OSError, ValueError):
            return self.size

    def rows(self) -> Iterator[DirectoryRow]:
        """The kept rows, in file order; ``stats`` is complete once exhausted."""
        seen: set[bytes] = set()
        stats = self.stats
        number = 1
        while True:
            try:
                line = self._text.readline()
            except UnicodeDecodeError as exc:
                raise ExtractionError(f"line {number + 1}: not UTF-8 ({exc})") from exc
            if not line:
                return
            number += 1
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            stats.lines += 1
            fields = line.split(SEPARATOR)
            if len(fields) != len(COLUMNS):
                stats.skip(number, f"{len(fields)} columns instead of {len(COLUMNS)}")
                continue
            row = _row(fields)
            if "@" not in row.address:
                stats.skip(number, "no mailbox address")
                continue
            key = hashlib.blake2b(
                f"{row.address}\x00{row.national_id}\x00{row.family_name}\x00{row.given_name}".encode(),
                digest_size=8,
            ).digest()
            if key in seen:
                stats.duplicates += 1
                continue
            seen.add(key)
            stats.kept += 1
            yield row

    def close(self) -> None:
        text = getattr(self, "_text", None)
        if text is not None:
            text.close()
        if self._zip is not None:
            self._zip.close()
        self._raw.close()

    def __enter__(self) -> ExtractionReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_extraction(path: Path) -> ExtractionReader:
    """Open a TXT or ZIP extraction and check its header (raises ExtractionError)."""
    return ExtractionReader(path)
