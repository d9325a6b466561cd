"""Identifier rules and validation of the CDA document model."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest

from mssbridge.cda.model import (
    IDNAT_PS_OID,
    IDNAT_STRUCT_OID,
    INS_NIR_TEST_OID,
    Author,
    InstanceId,
    Organisation,
    OrgIdType,
    Patient,
    Sex,
    TranscriptMessage,
    next_version,
    nir_key_ok,
    oid_from_uuid,
)
from mssbridge.cda.sample import PATIENT, sample_request


def test_organisation_ids_carry_the_national_prefix() -> None:
    finess = Organisation("CH", OrgIdType.FINESS, "2A0000001")
    siret = Organisation("Clinique", OrgIdType.SIRET, "12345678901234")
    assert finess.id == InstanceId(IDNAT_STRUCT_OID, "12A0000001")
    assert siret.id == InstanceId(IDNAT_STRUCT_OID, "312345678901234")


@pytest.mark.parametrize(
    ("id_type", "number"),
    [(OrgIdType.FINESS, "12345678"), (OrgIdType.SIRET, "1234567890123"), (OrgIdType.FINESS, "")],
)
def test_malformed_organisation_ids_are_refused(id_type: OrgIdType, number: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        Organisation("X", id_type, number)


def test_author_ids() -> None:
    assert Author("Dr A", rpps="12345678901").id == InstanceId(IDNAT_PS_OID, "812345678901")
    local = Author("Inf B", local_id="B-1", local_root="1.2.3.4")
    assert local.id == InstanceId("1.2.3.4", "B-1")
    assert local.family == "Inf B"
    with pytest.raises(ValueError, match="RPPS"):
        Author("Dr A", rpps="123")
    with pytest.raises(ValueError, match="local id"):
        Author("Nobody")


def test_nir_key() -> None:
    assert nir_key_ok("280017505600150")
    assert not nir_key_ok("280017505600151")
    # Corsica: 2A counts as 19 for the key.
    body = "1850" + "12A" + "004" + "123"
    key = 97 - int(body.replace("2A", "19")) % 97
    assert nir_key_ok(f"{body}{key:02d}")


def test_ins_identity_needs_its_traits() -> None:
    with pytest.raises(ValueError, match="birthplace"):
        replace(PATIENT, birthplace_cog=None)
    with pytest.raises(ValueError, match="key"):
        replace(PATIENT, patient_id="280017505600151")
    with pytest.raises(ValueError, match="ins_qualified"):
        Patient(
            "IPP-1", "1.2.3", "NOM", ("Prénom",), date(2000, 1, 1), Sex.MALE, ins_qualified=True
        )
    assert PATIENT.has_ins and PATIENT.id_root == INS_NIR_TEST_OID


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        TranscriptMessage("A", datetime(2025, 1, 1), "x")


def test_next_version_keeps_the_set_and_replaces_the_previous_id() -> None:
    first = sample_request()
    new_id = InstanceId(oid_from_uuid(uuid.UUID(int=7)))
    second = next_version(
        first, document_id=new_id, effective_time=first.effective_time + timedelta(hours=1)
    )
    assert second.set_id == first.set_id
    assert second.version == 2
    assert second.replaces == first.document_id
    assert second.document_id == new_id
    with pytest.raises(ValueError, match="new document id"):
        next_version(first, document_id=first.document_id, effective_time=first.effective_time)
    with pytest.raises(ValueError, match="RPLC"):
        replace(first, version=2)


def test_uuid_oid() -> None:
    assert oid_from_uuid(uuid.UUID(int=1)) == "2.25.1"
    with pytest.raises(ValueError, match="OID"):
        InstanceId("not-an-oid")
