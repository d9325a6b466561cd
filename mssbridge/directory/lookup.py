"""Pure directory look-ups for the bot: ``start`` arguments, matching, ranking and wording."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property, lru_cache

from mssbridge.directory.extraction import DirectoryRow, search_key

SUBJECT_SEPARATOR = "--"
MAX_NAME_WORDS = 6  # more words than a name, a given name and a city need
MAX_FAMILY_WORDS = 3  # "de la fontaine"
MAX_PICK = 99  # "start 2" picks; longer numbers are identifiers
MAX_LISTED = 10
IDENTIFIER_LENGTHS = (9, 10, 11, 12)  # ADELI, "0"+ADELI, RPPS, "8"+RPPS
PICK_WINDOW_SECONDS = 600.0

# Civility codes of the extraction ("Civilité d'exercice") and their short written form.
CIVILITY_LABELS = {
    "DR": "Dr",
    "PR": "Pr",
    "M": "M.",
    "MME": "Mme",
    "MLLE": "Mlle",
    "DOCTEUR": "Dr",
    "PROFESSEUR": "Pr",
    "MONSIEUR": "M.",
    "MADAME": "Mme",
}
# What users type before a name; the value is the title it asks for ("" when none).
_TYPED_CIVILITIES = {
    "dr": "dr",
    "docteur": "dr",
    "pr": "pr",
    "prof": "pr",
    "professeur": "pr",
    "m": "",
    "mr": "",
    "monsieur": "",
    "mme": "",
    "madame": "",
    "mlle": "",
    "mademoiselle": "",
}
_TITLES = {"dr": ("DR", "PR", "DOCTEUR", "PROFESSEUR"), "pr": ("PR", "PROFESSEUR")}  # a Pr is a Dr
# La Poste writes SAINT as ST in the "ligne d'acheminement" the city comes from.
_CITY_WORDS = {"saint": "st", "sainte": "ste"}
_PUNCTUATION = ".,;:()«»\"'"


class StartKind(StrEnum):
    """What the argument of ``start`` is."""

    ADDRESS = "address"
    IDENTIFIER = "identifier"  # RPPS, ADELI or national id
    NAME = "name"  # family name, maybe given name, city, profession
    PICK = "pick"  # a number of the last list of candidates
    EMPTY = "empty"
    BAD_NUMBER = "bad_number"  # digits of no known length


@dataclass(frozen=True)
class StartRequest:
    """``start`` arguments, understood."""

    kind: StartKind
    text: str = ""  # the address, the identifier or the name words as typed (for notices)
    words: tuple[str, ...] = ()  # search keys of the name words, civility removed
    title: str = ""  # "dr" or "pr" when typed before the name
    number: int = 0  # the pick
    subject: str = ""


@dataclass(frozen=True)
class Candidate:
    """One mailbox a look-up found, with what a doctor needs to tell it from the others."""

    address: str
    name: str
    profession: str
    place: str  # structure, service
    city: str
    person: str  # who holds it: national id, else the name (to group a person's addresses)

    def line(self, number: int) -> str:
        parts = [p for p in (self.name, self.profession, self.place, self.city) if p]
        return f"{number}. " + " — ".join([*parts, self.address])


def parse_start(args: Sequence[str]) -> StartRequest:
    """Classify the words after ``start``: an address, an identifier, a pick or a name."""
    if not args:
        return StartRequest(StartKind.EMPTY)
    first = args[0].strip()
    if "@" in first:
        return StartRequest(StartKind.ADDRESS, first, subject=" ".join(args[1:]))
    if first.isdigit() and first.isascii():
        subject = " ".join(a for a in args[1:] if a != SUBJECT_SEPARATOR)
        if len(first) <= len(str(MAX_PICK)):
            return StartRequest(StartKind.PICK, first, number=int(first), subject=subject)
        kind = StartKind.IDENTIFIER if len(first) in IDENTIFIER_LENGTHS else StartKind.BAD_NUMBER
        return StartRequest(kind, first, subject=subject)
    if SUBJECT_SEPARATOR in args:
        at = args.index(SUBJECT_SEPARATOR)
        name_args, subject = args[:at], " ".join(args[at + 1 :])
    else:
        name_args, subject = args, ""
    text = " ".join(name_args).strip()
    words = [w.strip(_PUNCTUATION) for w in search_key(text).split()]
    words = [w for w in words if w]
    title = ""
    while len(words) > 1 and words[0] in _TYPED_CIVILITIES:
        title = title or _TYPED_CIVILITIES[words.pop(0)]
    if not words:
        return StartRequest(StartKind.EMPTY, text, subject=subject)
    return StartRequest(
        StartKind.NAME, text, tuple(words[:MAX_NAME_WORDS]), title=title, subject=subject
    )


def family_keys(words: Sequence[str]) -> list[str]:
    """Every run of consecutive words that may be the family name, longest first."""
    keys: list[str] = []
    for size in range(min(MAX_FAMILY_WORDS, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            key = " ".join(words[start : start + size])
            if key not in keys:
                keys.append(key)
    return keys


def city_keys(words: Sequence[str]) -> list[str]:
    """Runs of words as directory city keys (``saint etienne`` is ``st etienne``)."""
    return [" ".join(_CITY_WORDS.get(w, w) for w in run.split()) for run in family_keys(words)]


_key = lru_cache(maxsize=8192)(search_key)  # family and given names repeat a lot


@lru_cache(maxsize=8192)
def _words(text: str) -> tuple[str, ...]:
    """Search-key words of a field; cached: given names, cities, professions repeat a lot."""
    return tuple(t.strip(_PUNCTUATION) for t in search_key(text).split())


def _tokens(*texts: str) -> list[str]:
    return [t for text in texts for t in _words(text)]


class _RowWords:
    """The words of a row that extra query words are compared with, each set made once."""

    def __init__(self, row: DirectoryRow) -> None:
        self.row = row

    @cached_property
    def given(self) -> list[str]:
        return _tokens(self.row.given_name)

    @cached_property
    def places(self) -> set[str]:
        """City words, postal code, department."""
        row = self.row
        places = {_CITY_WORDS.get(t, t) for t in _tokens(row.city)}
        return places | ({row.postal_code.lower(), row.department.lower()} - {""})

    @cached_property
    def others(self) -> list[str]:
        """Profession, speciality, service, structure."""
        row = self.row
        return _tokens(row.profession_label, row.know_how_label, row.service, row.structure_name)

    def score(self, word: str) -> int:
        """How well one extra word fits: given name 3, city 2, the rest 1, else 0."""
        if any(t.startswith(word) for t in self.given):
            return 3  # "j" or "jean" for Jean-Pierre
        if _CITY_WORDS.get(word, word) in self.places:
            return 2
        if len(word) >= 3 and any(t.startswith(word) for t in self.others):
            return 1
        return 0


def score(request: StartRequest, row: DirectoryRow) -> int | None:
    """The rank of ``row`` for a name request (higher is better), or None when it does not fit.

    One run of words must be the family name; every other word must match the given name,
    the city (or postal code, department), the profession, the service or the structure.
    """
    family = _key(row.family_name)
    words = list(request.words)
    best: int | None = None
    row_words: _RowWords | None = None
    for size in range(min(MAX_FAMILY_WORDS, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            if " ".join(words[start : start + size]) != family:
                continue
            rest = words[:start] + words[start + size :]
            row_words = row_words or _RowWords(row)
            scores = [row_words.score(w) for w in rest]
            if all(scores):
                best = max(best or 0, sum(scores))
    if best is None:
        return None
    if request.title and row.civility.upper() in _TITLES.get(request.title, ()):
        best += 1
    if row.mailbox_type == "PER":
        best += 1
    return best


def rank(request: StartRequest, rows: Iterable[DirectoryRow]) -> list[DirectoryRow]:
    """The rows that fit a name request, best first, then by name, city and address."""
    scored = [(score(request, row), row) for row in rows]
    kept = [(s, row) for s, row in scored if s is not None]
    kept.sort(
        key=lambda item: (
            -item[0],
            _key(item[1].family_name),
            _key(item[1].given_name),
            item[1].city,
            item[1].address,
        )
    )
    return [row for _, row in kept]


def civility_label(code: str) -> str:
    return CIVILITY_LABELS.get(code.strip().upper(), "")


def person_name(row: DirectoryRow) -> str:
    """``Dr Marie Curie`` for a person; the service and structure for an organisation box."""
    person = " ".join(p for p in (row.given_name, row.family_name) if p)
    if person:
        title = civility_label(row.civility)
        return f"{title} {person}" if title else person
    return ", ".join(p for p in (row.service, row.structure_name) if p)


def directory_name(rows: Sequence[DirectoryRow]) -> str | None:
    """The name of an address's holder; None when unknown or when several people share it."""
    names = {person_name(row) for row in rows} - {""}
    return names.pop() if len(names) == 1 else None


def candidate(row: DirectoryRow) -> Candidate:
    profession = ", ".join(p for p in (row.profession_label, row.know_how_label) if p)
    place = ", ".join(p for p in (row.structure_name, row.service) if p)
    if row.mailbox_type == "ORG":
        place = ""  # already the name
    city = " ".join(p for p in (row.postal_code, row.city) if p)
    if row.mailbox_type == "ORG":
        person = row.address
    else:
        person = row.national_id or f"{_key(row.family_name)}|{_key(row.given_name)}"
    return Candidate(row.address, person_name(row) or row.address, profession, place, city, person)


def candidates(rows: Iterable[DirectoryRow]) -> list[Candidate]:
    """One candidate per address (the first row wins), in the order given."""
    seen: set[str] = set()
    found: list[Candidate] = []
    for row in rows:
        if row.address not in seen:
            seen.add(row.address)
            found.append(candidate(row))
    return found


def choice_text(request: StartRequest, found: Sequence[Candidate], prefix: str) -> str:
    """The numbered list a user picks from (``MAX_LISTED`` at most), and how to pick."""
    listed = found[:MAX_LISTED]
    if len({c.person for c in found}) == 1:
        head = f"{listed[0].name} a {len(found)} adresses MSSanté :"
    else:
        head = f"{len(found)} correspondants trouvés pour « {request.text} » :"
    lines = [head, *(c.line(i) for i, c in enumerate(listed, 1))]
    if len(found) > len(listed):
        lines.append(
            f"… et {len(found) - len(listed)} autres : précisez le prénom, la ville ou la "
            "spécialité."
        )
    minutes = int(PICK_WINDOW_SECONDS // 60)
    lines.append(
        f"Répondez « {prefix} start <numéro> [objet] » (par exemple « {prefix} start 1 ») "
        f"dans les {minutes} minutes pour ouvrir la conversation."
    )
    return "\n".join(lines)


def no_match_text(request: StartRequest, prefix: str, near: int = 0) -> str:
    """Nothing found: say so and how to ask better."""
    if request.kind is StartKind.BAD_NUMBER:
        head = (
            f"« {request.text} » n'est pas un identifiant connu : un RPPS a 11 chiffres, "
            "un ADELI 9."
        )
    else:
        head = f"Aucun correspondant MSSanté trouvé dans l'annuaire pour « {request.text} »."
    if near:
        head += (
            f" {near} personne(s) portent ce nom mais ne correspondent pas au reste "
            "(prénom, ville, spécialité) : vérifiez-le ou retirez-le."
        )
    return head + "\n" + hint_text(prefix)


def truncated_text(limit: int) -> str:
    return (
        f"Plus de {limit} fiches portent ce nom : la liste peut être incomplète. Précisez la "
        "ville ou donnez le numéro RPPS."
    )


def hint_text(prefix: str) -> str:
    return (
        f"Essayez « {prefix} start Dr <nom de famille> [prénom] [ville] [-- objet] », un "
        "numéro RPPS (11 chiffres) ou ADELI (9 chiffres), ou l'adresse MSSanté complète."
    )
