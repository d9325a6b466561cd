"""``!mss patient`` arguments: validation, messages in French, sealed form, masking."""

from __future__ import annotations

from datetime import date

import pytest

from mssbridge.cda.model import INS_NIA_OID, INS_NIR_TEST_OID, Sex
from mssbridge.config import MssanteSection
from mssbridge.flows.patient import (
    PatientArgsError,
    describe,
    masked_id,
    parse_patient_args,
    patient_from_bytes,
    patient_to_bytes,
    topic_for,
)
from mssbridge.matrix.commands import parse

ROOT = "1.2.3.4"
SETTINGS = MssanteSection(ins_root=INS_NIR_TEST_OID)
GOOD = (
    "ins=280017505600150",
    "nom=Test-Échange",
    "prenoms=Jeanne Hélène",
    "naissance=1980-01-01",
    "sexe=f",
    "lieu=75056",
    "qualifiee=oui",
)


def test_command_line_is_split_with_quotes() -> None:
    command = parse('!mss patient ins=280017505600150 prenoms="Jeanne Hélène"', "!mss")
    assert command.name == "patient"
    assert command.args == ("ins=280017505600150", "prenoms=Jeanne Hélène")


def test_a_complete_ins_identity() -> None:
    patient = parse_patient_args(GOOD, SETTINGS, ROOT)
    assert patient.patient_id == "280017505600150" and patient.id_root == INS_NIR_TEST_OID
    assert patient.birth_family_name == "TEST-ÉCHANGE"
    assert patient.given_names == ("Jeanne", "Hélène")
    assert patient.birth_date == date(1980, 1, 1) and patient.sex is Sex.FEMALE
    assert patient.ins_qualified and patient.birthplace_cog == "75056"
    assert patient_from_bytes(patient_to_bytes(patient)) == patient


def test_nia_is_recognised_under_the_nir_root() -> None:
    key = 97 - int("7000175056001") % 97
    args = (f"ins=7000175056001{key:02d}", *GOOD[1:6])
    assert parse_patient_args(args, MssanteSection(), ROOT).id_root == INS_NIA_OID


def test_a_local_identity_lives_under_the_hospital_root() -> None:
    args = ("local=IPP-0042", "nom=Dupont", "prenoms=Luc", "naissance=1950-12-31", "sexe=M")
    patient = parse_patient_args(args, SETTINGS, ROOT)
    assert patient.id_root == f"{ROOT}.10" and not patient.has_ins


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("ins=280017505600151", "la clé ne correspond pas"),
        ("ins=28001750560015", "15 caractères"),
        ("naissance=01/01/1980", "AAAA-MM-JJ"),
        ("naissance=1980-02-30", "AAAA-MM-JJ"),
        ("naissance=2999-01-01", "dans le futur"),
        ("sexe=X", "M, F ou U"),
        ("lieu=7505", "code officiel géographique"),
        ("qualifiee=peut-etre", "oui ou non"),
    ],
)
def test_faults_are_named(change: str, message: str) -> None:
    key = change.split("=")[0]
    args = [arg for arg in GOOD if not arg.startswith(key + "=")] + [change]
    with pytest.raises(PatientArgsError, match=message):
        parse_patient_args(args, SETTINGS, ROOT)


def test_missing_and_unknown_arguments() -> None:
    with pytest.raises(PatientArgsError) as info:
        parse_patient_args(("ins=280017505600150", "age=44", "nom=X"), SETTINGS, ROOT)
    assert "argument inconnu « age »" in str(info.value)
    with pytest.raises(PatientArgsError) as info:
        parse_patient_args(("ins=280017505600150", "nom=X"), SETTINGS, ROOT)
    text = str(info.value)
    assert "prénoms manquant" in text and "lieu de naissance requis" in text
    with pytest.raises(PatientArgsError, match="soit ins"):
        parse_patient_args(("ins=280017505600150", "local=1", *GOOD[1:]), SETTINGS, ROOT)


def test_show_and_topic_hide_the_identifier() -> None:
    patient = parse_patient_args(GOOD, SETTINGS, ROOT)
    assert masked_id(patient).endswith("0150") and "280017505" not in masked_id(patient)
    shown = describe(patient)
    assert "TEST-ÉCHANGE Jeanne Hélène" in shown and "01/01/1980" in shown
    assert "280017505600150" not in shown
    topic = topic_for(patient, "Avis plaie")
    assert topic.startswith("Avis plaie — Patient : TEST-ÉCHANGE Jeanne")
    assert "0150" not in topic


def test_mssante_settings_are_checked() -> None:
    assert not MssanteSection(nil="NIL-1").documents_enabled
    assert MssanteSection(nil="NIL-1", name="CH", finess="999999999").documents_enabled
    with pytest.raises(ValueError, match="not both"):
        MssanteSection(finess="999999999", siret="12345678901234")
    with pytest.raises(ValueError, match="RPPS"):
        MssanteSection(rpps={"@a:x": "123"})
    with pytest.raises(ValueError, match="printable ASCII"):
        MssanteSection(nil="é")
    with pytest.raises(ValueError, match="INS OID"):
        MssanteSection(ins_root="1.2.3")
