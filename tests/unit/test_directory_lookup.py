"""Directory look-ups of the bot: ``start`` arguments, matching, ranking, wording, choices."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mssbridge.directory.choices import NameCache, PendingChoices, PickError
from mssbridge.directory.extraction import COLUMNS, SEPARATOR, DirectoryRow, open_extraction
from mssbridge.directory.lookup import (
    MAX_LISTED,
    StartKind,
    candidate,
    candidates,
    choice_text,
    city_keys,
    directory_name,
    family_keys,
    no_match_text,
    parse_start,
    person_name,
    rank,
    score,
)
from mssbridge.directory.synthetic import extraction_line

ELODIE = DirectoryRow(
    mailbox_type="PER",
    address="elodie.dupont@medecin.mssante.fr",
    id_type="8",
    pp_id="10001234567",
    national_id="810001234567",
    civility="DR",
    family_name="DUPONT",
    given_name="Élodie",
    profession_code="10",
    profession_label="Médecin",
    know_how_label="Cardiologie et maladies vasculaires",
    structure_name="Centre Hospitalier Universitaire de Lyon",
    service="Cardiologie",
    city="LYON",
    postal_code="69003",
    department="69",
)
ELODIE_CHU = dataclasses.replace(ELODIE, address="e.dupont@chu-lyon.mssante.fr")
JEROME = dataclasses.replace(
    ELODIE,
    address="jerome.dupont@medecin.mssante.fr",
    pp_id="10009999999",
    national_id="810009999999",
    given_name="Jérôme",
    know_how_label="Médecine générale",
    structure_name="",
    service="",
)
NURSE_PARIS = dataclasses.replace(
    ELODIE,
    address="anne.dupont@infirmier.mssante.fr",
    pp_id="10005555555",
    national_id="810005555555",
    civility="MME",
    given_name="Anne",
    profession_code="60",
    profession_label="Infirmier",
    know_how_label="",
    structure_name="",
    service="",
    city="PARIS",
    postal_code="75013",
    department="75",
)
LE_GOFF = dataclasses.replace(
    JEROME,
    address="loic.le-goff@medecin.mssante.fr",
    national_id="810001111111",
    family_name="Le Goff",
    given_name="Loïc",
    city="ST ETIENNE",
    postal_code="42055",
    department="42",
)
URGENCES = DirectoryRow(
    mailbox_type="ORG",
    address="urgences@ch-brest.mssante.fr",
    service="Urgences",
    structure_name="Centre Hospitalier de Brest",
    city="BREST",
)


@pytest.mark.parametrize(
    ("args", "kind", "words", "title", "subject", "number"),
    [
        (("dr.house@chu.mssante.fr", "Avis"), StartKind.ADDRESS, (), "", "Avis", 0),
        (("Dr", "Dupont", "Lyon"), StartKind.NAME, ("dupont", "lyon"), "dr", "", 0),
        (("Docteur", "DUPONT"), StartKind.NAME, ("dupont",), "dr", "", 0),
        (("Pr.", "Lefèvre", "Saint-Étienne"), StartKind.NAME, ("lefevre", "saint", "etienne"),
         "pr", "", 0),
        (("Mme", "Le", "Goff", "--", "Avis", "urgent"), StartKind.NAME, ("le", "goff"), "",
         "Avis urgent", 0),
        (("Dr",), StartKind.NAME, ("dr",), "", "", 0),  # a lone title is read as a name
        (("--", "Avis"), StartKind.EMPTY, (), "", "Avis", 0),
        ((), StartKind.EMPTY, (), "", "", 0),
        (("2",), StartKind.PICK, (), "", "", 2),
        (("12", "Avis", "cardio"), StartKind.PICK, (), "", "Avis cardio", 12),
        (("10001234567",), StartKind.IDENTIFIER, (), "", "", 0),
        (("810001234567", "Avis"), StartKind.IDENTIFIER, (), "", "Avis", 0),
        (("123456789",), StartKind.IDENTIFIER, (), "", "", 0),  # ADELI
        (("12345",), StartKind.BAD_NUMBER, (), "", "", 0),
        (("１２",), StartKind.NAME, ("12",), "", "", 0),  # full-width digits are no pick
    ],
)  # fmt: skip
def test_parse_start(
    args: tuple[str, ...], kind: StartKind, words: tuple[str, ...], title: str, subject: str,
    number: int,
) -> None:  # fmt: skip
    request = parse_start(args)
    assert (request.kind, request.words, request.title) == (kind, words, title)
    assert (request.subject, request.number) == (subject, number)


def test_city_keys_write_saint_as_the_directory_does() -> None:
    assert city_keys(("saint", "etienne")) == ["st etienne", "st", "etienne"]
    assert city_keys(("sainte", "foy")) == ["ste foy", "ste", "foy"]


def test_family_keys_are_runs_of_words_longest_first() -> None:
    assert family_keys(("le", "goff", "brest")) == [
        "le goff brest", "le goff", "goff brest", "le", "goff", "brest",
    ]  # fmt: skip
    assert family_keys(("a", "b", "c", "d"))[0] == "a b c"  # three words at most
    assert family_keys(()) == []


@pytest.mark.parametrize(
    ("typed", "row", "fits"),
    [
        ("Dupont", ELODIE, True),
        ("dupont", ELODIE, True),  # case
        ("Dr DUPONT élodie", ELODIE, True),  # accents both ways
        ("Dupont Elodie Lyon", ELODIE, True),
        ("Elodie Dupont", ELODIE, True),  # given name first
        ("Dupont E", ELODIE, True),  # initial
        ("Dupont 69003", ELODIE, True),  # postal code
        ("Dupont 69", ELODIE, True),  # department
        ("Dupont cardio", ELODIE, True),  # speciality, service
        ("Dupont Paris", ELODIE, False),  # wrong city
        ("Dupont Jérôme", ELODIE, False),  # wrong given name
        ("Dupond", ELODIE, False),  # another family name
        ("Dup", ELODIE, False),  # the family name is whole
        ("Le Goff Saint-Étienne", LE_GOFF, True),  # SAINT written ST by La Poste
        ("le goff st etienne", LE_GOFF, True),
        ("Goff", LE_GOFF, False),
        ("Urgences Brest", URGENCES, False),  # organisation boxes have no family name
    ],
)
def test_matching(typed: str, row: DirectoryRow, fits: bool) -> None:
    request = parse_start(typed.split())
    assert (score(request, row) is not None) is fits


def test_ranking_prefers_more_precise_fits_then_titles_then_names() -> None:
    rows = [NURSE_PARIS, JEROME, ELODIE, URGENCES]
    assert rank(parse_start(["Dupont"]), rows) == [NURSE_PARIS, ELODIE, JEROME]  # by given name
    assert rank(parse_start(["Dupont", "Lyon"]), rows) == [ELODIE, JEROME]
    # a given name fits better than a city: Élodie comes first even typed after the city
    assert rank(parse_start(["Dupont", "Lyon", "E"]), rows) == [ELODIE]
    assert rank(parse_start(["Dupont", "Anne"]), rows) == [NURSE_PARIS]
    # "Dr" asks for doctors first; the nurse stays listed, last
    nurse_lyon = dataclasses.replace(NURSE_PARIS, city="LYON", given_name="Aline")
    assert rank(parse_start(["Dr", "Dupont", "Lyon"]), [nurse_lyon, JEROME]) == [
        JEROME,
        nurse_lyon,
    ]
    # without a title, by given name
    assert rank(parse_start(["Dupont", "Lyon"]), [JEROME, nurse_lyon]) == [nurse_lyon, JEROME]


@pytest.mark.parametrize(
    ("row", "name"),
    [
        (ELODIE, "Dr Élodie DUPONT"),
        (NURSE_PARIS, "Mme Anne DUPONT"),
        (dataclasses.replace(ELODIE, civility="PR"), "Pr Élodie DUPONT"),
        (dataclasses.replace(ELODIE, civility=""), "Élodie DUPONT"),
        (dataclasses.replace(ELODIE, civility="XYZ"), "Élodie DUPONT"),  # unknown code: left out
        (URGENCES, "Urgences, Centre Hospitalier de Brest"),
    ],
)
def test_person_name(row: DirectoryRow, name: str) -> None:
    assert person_name(row) == name


def test_directory_name_only_when_one_person_holds_the_address() -> None:
    assert directory_name([ELODIE]) == "Dr Élodie DUPONT"
    assert directory_name([ELODIE, dataclasses.replace(ELODIE, service="Urgences")]) == (
        "Dr Élodie DUPONT"
    )
    assert directory_name([ELODIE, dataclasses.replace(JEROME, address=ELODIE.address)]) is None
    assert directory_name([]) is None


def test_candidate_line_holds_what_a_doctor_needs_to_pick() -> None:
    assert candidate(ELODIE).line(1) == (
        "1. Dr Élodie DUPONT — Médecin, Cardiologie et maladies vasculaires — "
        "Centre Hospitalier Universitaire de Lyon, Cardiologie — 69003 LYON — "
        "elodie.dupont@medecin.mssante.fr"
    )
    assert candidate(JEROME).line(2) == (
        "2. Dr Jérôme DUPONT — Médecin, Médecine générale — 69003 LYON — "
        "jerome.dupont@medecin.mssante.fr"
    )
    assert candidate(URGENCES).line(3) == (
        "3. Urgences, Centre Hospitalier de Brest — BREST — urgences@ch-brest.mssante.fr"
    )


def test_candidates_keep_one_line_per_address_in_rank_order() -> None:
    shared = dataclasses.replace(JEROME, address=ELODIE.address)
    assert [c.address for c in candidates([ELODIE, shared, JEROME])] == [
        ELODIE.address,
        JEROME.address,
    ]


def test_choice_text_for_several_people() -> None:
    request = parse_start(["Dr", "Dupont", "Lyon"])
    text = choice_text(request, candidates([ELODIE, JEROME]), "!mss")
    lines = text.splitlines()
    assert lines[0] == "2 correspondants trouvés pour « Dr Dupont Lyon » :"
    assert lines[1].startswith("1. Dr Élodie DUPONT") and lines[2].startswith("2. Dr Jérôme")
    assert "« !mss start <numéro> [objet] »" in lines[3] and "10 minutes" in lines[3]


def test_choice_text_for_one_person_with_several_addresses() -> None:
    text = choice_text(parse_start(["10001234567"]), candidates([ELODIE, ELODIE_CHU]), "!mss")
    assert text.splitlines()[0] == "Dr Élodie DUPONT a 2 adresses MSSanté :"
    assert ELODIE.address in text and ELODIE_CHU.address in text


def test_choice_text_lists_at_most_ten() -> None:
    rows = [dataclasses.replace(JEROME, address=f"j{i}@medecin.mssante.fr", national_id=str(i))
            for i in range(14)]  # fmt: skip
    text = choice_text(parse_start(["Dupont"]), candidates(rows), "!mss")
    assert f"{MAX_LISTED}. Dr Jérôme" in text and f"{MAX_LISTED + 1}." not in text
    assert "… et 4 autres : précisez le prénom, la ville ou la spécialité." in text


def test_no_match_texts_give_a_hint() -> None:
    text = no_match_text(parse_start(["Dr", "Dupont", "Lille"]), "!mss", near=3)
    assert text.startswith("Aucun correspondant MSSanté trouvé dans l'annuaire pour « Dr Dupont")
    assert "3 personne(s) portent ce nom" in text
    assert "!mss start Dr <nom de famille> [prénom] [ville]" in text
    assert "un RPPS a 11 chiffres" in no_match_text(parse_start(["12345"]), "!mss")


def test_pending_choices_are_per_user_and_room_and_expire() -> None:
    choices = PendingChoices(window=600)
    choices.offer("@alice:h", "!dm:h", ("a@x.fr", "b@x.fr"), "Avis", now=1000)
    assert choices.pick("@alice:h", "!dm:h", 2, now=1100) == ("b@x.fr", "Avis")
    assert choices.pick("@alice:h", "!dm:h", 2, now=1100) == ("b@x.fr", "Avis")  # retry-safe
    assert choices.pick("@bob:h", "!dm:h", 1, now=1100) is PickError.NONE
    assert choices.pick("@alice:h", "!other:h", 1, now=1100) is PickError.NONE
    assert choices.pick("@alice:h", "!dm:h", 3, now=1100) is PickError.OUT_OF_RANGE
    assert choices.pick("@alice:h", "!dm:h", 0, now=1100) is PickError.OUT_OF_RANGE
    assert choices.pick("@alice:h", "!dm:h", 1, now=1600) is PickError.NONE  # expired
    assert choices.count("@alice:h", "!dm:h") == 0
    choices.offer("@alice:h", "!dm:h", ("a@x.fr",), "", now=2000)
    choices.offer("@alice:h", "!dm:h", ("c@x.fr",), "", now=2001)  # a new search replaces
    assert choices.pick("@alice:h", "!dm:h", 1, now=2002) == ("c@x.fr", "")


def test_pending_choices_are_bounded() -> None:
    choices = PendingChoices(size=2)
    for user in ("@a:h", "@b:h", "@c:h"):
        choices.offer(user, "!r:h", ("x@y.fr",), "", now=0)
    assert choices.pick("@a:h", "!r:h", 1, now=1) is PickError.NONE
    assert choices.pick("@c:h", "!r:h", 1, now=1) == ("x@y.fr", "")


def test_name_cache_remembers_misses_and_forgets_after_its_period() -> None:
    cache = NameCache(ttl=60, size=2)
    assert cache.get("a@x.fr", now=0) == (False, None)
    cache.put("a@x.fr", None, now=0)
    assert cache.get("a@x.fr", now=10) == (True, None)
    cache.put("b@x.fr", "Dr B", now=0)
    assert cache.get("b@x.fr", now=59) == (True, "Dr B")
    assert cache.get("b@x.fr", now=61) == (False, None)
    cache.put("c@x.fr", "Dr C", now=0)  # a@ was used least recently: it goes
    assert cache.get("a@x.fr", now=1) == (False, None)
    assert cache.get("c@x.fr", now=1) == (True, "Dr C")


def test_extraction_line_reads_back_as_the_row(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    lines = [SEPARATOR.join(COLUMNS), extraction_line(ELODIE), extraction_line(URGENCES)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open_extraction(path) as reader:
        assert list(reader.rows()) == [ELODIE, URGENCES]
