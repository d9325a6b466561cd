"""A made-up thread about a made-up test patient (INS test OID), for examples, tests, benchmarks.

Every identifier here is fictional: the INS uses the test authority 1.2.250.1.213.1.4.10, the
FINESS and RPPS numbers are all nines, the other ids are UUID-derived OIDs (2.25.…).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

from mssbridge.cda.model import (
    INS_NIR_TEST_OID,
    Author,
    DocumentRequest,
    InstanceId,
    Organisation,
    OrgIdType,
    Patient,
    Sex,
    TranscriptMessage,
    next_version,
    oid_from_uuid,
)
from mssbridge.cda.xdm import XdmSubmission

PARIS_WINTER = timezone(timedelta(hours=1))
SAMPLE_ROOT = oid_from_uuid(uuid.UUID("6f1d2c1e-3b0a-4c8e-9a57-4f0e2d7b9c11"))
SAMPLE_NIL = "MSSBRIDGE-EXEMPLE"

PATIENT = Patient(
    patient_id="280017505600150",
    id_root=INS_NIR_TEST_OID,
    birth_family_name="TEST-ÉCHANGE",
    given_names=("Jeanne", "Hélène"),
    birth_date=date(1980, 1, 1),
    sex=Sex.FEMALE,
    birthplace_cog="75056",
    ins_qualified=True,
)
HOSPITAL = Organisation("Centre hospitalier d'Exemple", OrgIdType.FINESS, "999999999")
DOCTOR = Author("Dr Pierre Médecin", rpps="99999999999", family_name="MÉDECIN", given_name="Pierre")
NURSE = Author(
    "Claire Infirmière",
    local_id="INF-0042",
    local_root=f"{SAMPLE_ROOT}.1",
    family_name="INFIRMIÈRE",
    given_name="Claire",
)

_LINES = (
    "Bonjour, la patiente a 38,9 °C ce matin ; la plaie est rouge et chaude.",
    "Merci. Pouvez-vous faire une NFS et une CRP, et m'envoyer la photo de la plaie ?",
    "C'est fait, photo jointe. Elle se plaint aussi d'une douleur à 6/10.",
    "Je passe la voir à 14 h. D'ici là : paracétamol 1 g, à renouveler si besoin.",
    "Entendu. Résultats du bilan joints : CRP à 42 mg/l, leucocytes à 12 000/mm³.",
)

_FILES = {2: ("photo-plaie.jpg",), 4: ("bilan-sanguin.pdf",)}


def sample_request(messages: int = 5, version: int = 1) -> DocumentRequest:
    """A DocumentRequest with ``messages`` messages alternating between a doctor and a nurse."""
    start = datetime(2025, 1, 2, 9, 0, tzinfo=PARIS_WINTER)
    thread = tuple(
        TranscriptMessage(
            author_name=(DOCTOR if index % 2 else NURSE).display_name,
            time=start + timedelta(minutes=6 * index),
            text=_LINES[index % len(_LINES)],
            files=_FILES.get(index % len(_LINES), ()),
        )
        for index in range(messages)
    )
    request = DocumentRequest(
        document_id=InstanceId(f"{SAMPLE_ROOT}.2", "DOC-0001"),
        set_id=InstanceId(f"{SAMPLE_ROOT}.3", "SET-0001"),
        version=1,
        effective_time=start + timedelta(hours=9),
        title="Échanges à propos de la patiente",
        patient=PATIENT,
        custodian=HOSPITAL,
        authors=(DOCTOR, NURSE),
        legal_authenticator=DOCTOR,
        messages=thread,
    )
    for number in range(2, version + 1):
        request = next_version(
            request,
            document_id=InstanceId(f"{SAMPLE_ROOT}.2", f"DOC-{number:04d}"),
            effective_time=request.effective_time + timedelta(days=1),
        )
    return request


def sample_submission(request: DocumentRequest) -> XdmSubmission:
    return XdmSubmission(
        unique_id=f"{SAMPLE_ROOT}.4.{request.version}",
        source_id=f"{SAMPLE_ROOT}.5",
        time=request.effective_time + timedelta(minutes=1),
    )
