"""Plain data describing one health document built from a chat thread (CDA R2 level 1 header).

Identifier rules follow the CI-SIS: INS matricules under the INS OIDs, health professionals as
``8`` + RPPS under the IdNatPs OID, organisations as ``1`` + FINESS or ``3`` + SIRET under the
IdNatStruct OID. Construction validates what a receiver could not repair (malformed numbers,
wrong OIDs, naive datetimes, an INS identity without its traits) and raises ValueError.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum

# INS (Identifiant national de santé) assigning authorities.
INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
INS_NIR_DEMO_OID = "1.2.250.1.213.1.4.11"
INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIR_DEMO_OID})

IDNAT_PS_OID = "1.2.250.1.71.4.2.1"  # national health-professional identifier ("8" + RPPS)
IDNAT_STRUCT_OID = "1.2.250.1.71.4.2.2"  # national structure identifier ("1"+FINESS, "3"+SIRET)

LOINC_OID = "2.16.840.1.113883.6.1"
CONFIDENTIALITY_OID = "2.16.840.1.113883.5.25"
PRACTICE_SETTING_OID = "1.2.250.1.213.1.1.4.9"  # TRE_A01 cadre d'exercice
FACILITY_TYPE_OID = "1.2.250.1.71.4.2.4"  # TRE_R02 secteur d'activité
ACT_CODE_OID = "2.16.840.1.113883.5.4"  # HL7 ActCode (encounter type)

LANGUAGE = "fr-FR"

_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_INS = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}")
_FINESS = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{7}")
_SIRET = re.compile(r"[0-9]{14}")
_RPPS = re.compile(r"[0-9]{11}")
_COG = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{3}")
_LOCAL_ID = re.compile(r"[!-~]{1,64}")  # printable ASCII, no space: safe in XML and HL7 v2


class Sex(StrEnum):
    """Administrative sex as an INS identity carries it."""

    MALE = "M"
    FEMALE = "F"
    UNKNOWN = "U"


@dataclass(frozen=True)
class Code:
    """A coded value: code, code system OID and display name (CDA CE / XDS Classification)."""

    code: str
    system: str
    display: str


@dataclass(frozen=True)
class DocumentType:
    """A document type code from JDV_J07_XdsTypeCode_CISIS with its XDS class code.

    ``file_label`` is the short ASCII type used in the PDF file name (ECO.2.1.6).
    """

    type_code: Code
    class_code: Code
    file_label: str


CLASS_CR = Code("10", "1.2.250.1.213.1.1.4.1", "Compte rendu")

# Default for a chat thread: see docs/cda.md ("Document type").
CONSULTATION_NOTE = DocumentType(
    Code("11488-4", LOINC_OID, "CR ou fiche de consultation ou de visite"),
    CLASS_CR,
    "CR_consultation",
)
TELEMEDICINE_REPORT = DocumentType(
    Code("85208-7", LOINC_OID, "CR de télémédecine"), CLASS_CR, "CR_telemedecine"
)

DOCUMENT_TYPES = (CONSULTATION_NOTE, TELEMEDICINE_REPORT)


def class_code_for(type_code: Code) -> Code:
    """The XDS classCode of a known document type; "Compte rendu" for the others."""
    for known in DOCUMENT_TYPES:
        if known.type_code.code == type_code.code and known.type_code.system == type_code.system:
            return known.class_code
    return CLASS_CR


CONFIDENTIALITY_NORMAL = Code("N", CONFIDENTIALITY_OID, "Normal")
PRACTICE_SETTING_HOSPITAL = Code("ETABLISSEMENT", PRACTICE_SETTING_OID, "Etablissement de santé")
FACILITY_PUBLIC_HOSPITAL = Code("SA01", FACILITY_TYPE_OID, "Etablissement public de santé")
ENCOUNTER_VIRTUAL = Code("VR", ACT_CODE_OID, "Virtuelle (exemple : RCP en l'absence du patient)")


def check_oid(value: str, what: str = "OID") -> str:
    """Return ``value`` if it is a dotted numeric OID of at most 64 characters."""
    if len(value) > 64 or not _OID.fullmatch(value):
        raise ValueError(f"{what} is not an OID: {value!r}")
    return value


def oid_from_uuid(value: uuid.UUID) -> str:
    """Return the ``2.25.<integer>`` OID of a UUID (ITU-T X.667), e.g. for new document ids."""
    return f"2.25.{value.int}"


def nir_key_ok(matricule: str) -> bool:
    """Check the two-digit key of a 15-character NIR/NIA (Corsica: 2A → 19, 2B → 18)."""
    body = matricule[:13].replace("2A", "19", 1).replace("2B", "18", 1)
    return body.isdigit() and 97 - int(body) % 97 == int(matricule[13:])


@dataclass(frozen=True)
class InstanceId:
    """An HL7 II: ``root`` OID, optional ``extension``. XDS uniqueId is ``root^extension``."""

    root: str
    extension: str | None = None

    def __post_init__(self) -> None:
        check_oid(self.root, "id root")
        if self.extension is not None and not _LOCAL_ID.fullmatch(self.extension):
            raise ValueError(f"id extension must be 1-64 printable ASCII: {self.extension!r}")

    @property
    def xds_unique_id(self) -> str:
        return self.root if self.extension is None else f"{self.root}^{self.extension}"


@dataclass(frozen=True)
class Patient:
    """The patient as the document names them: INS traits when the id is an INS.

    ``patient_id`` is the INS matricule (15 characters) when ``id_root`` is an INS OID, else a
    local id (IPP) under the hospital's OID. ``ins_qualified`` says whether the INS was
    qualified through INSi and an identity check (only then ``X-MSS-INS: O``).
    """

    patient_id: str
    id_root: str
    birth_family_name: str
    given_names: tuple[str, ...]
    birth_date: date
    sex: Sex
    birthplace_cog: str | None = None
    ins_qualified: bool = False

    def __post_init__(self) -> None:
        check_oid(self.id_root, "patient id root")
        if not self.birth_family_name.strip():
            raise ValueError("the patient's birth family name is empty")
        if not self.given_names or not all(name.strip() for name in self.given_names):
            raise ValueError("the patient needs at least one non-empty given name")
        if self.birthplace_cog is not None and not _COG.fullmatch(self.birthplace_cog):
            raise ValueError(f"birthplace is not an INSEE COG code: {self.birthplace_cog!r}")
        if self.has_ins:
            if not _INS.fullmatch(self.patient_id) or not nir_key_ok(self.patient_id):
                raise ValueError("the INS matricule is not 15 characters with a valid key")
            if self.birthplace_cog is None:
                raise ValueError("an INS identity needs the birthplace COG code")
        else:
            if not _LOCAL_ID.fullmatch(self.patient_id):
                raise ValueError("a local patient id must be 1-64 printable ASCII")
            if self.ins_qualified:
                raise ValueError("ins_qualified needs an INS OID as id root")

    @property
    def has_ins(self) -> bool:
        return self.id_root in INS_OIDS

    @property
    def first_given_name(self) -> str:
        return self.given_names[0]


class OrgIdType(StrEnum):
    FINESS = "FINESS"
    SIRET = "SIRET"


_ORG_PREFIX = {OrgIdType.FINESS: "1", OrgIdType.SIRET: "3"}


@dataclass(frozen=True)
class Organisation:
    """A health organisation identified by FINESS or SIRET (national structure id)."""

    name: str
    id_type: OrgIdType
    number: str

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("the organisation name is empty")
        pattern = _FINESS if self.id_type is OrgIdType.FINESS else _SIRET
        if not pattern.fullmatch(self.number):
            raise ValueError(f"malformed {self.id_type.value}: {self.number!r}")

    @property
    def id(self) -> InstanceId:
        return InstanceId(IDNAT_STRUCT_OID, _ORG_PREFIX[self.id_type] + self.number)


@dataclass(frozen=True)
class Author:
    """A person writing in the thread: RPPS when known, else a local id under ``local_root``.

    ``family_name``/``given_name`` fill the CDA name; without them the display name is used as
    the family name (a chat display name is all the bridge may know).
    """

    display_name: str
    rpps: str | None = None
    local_id: str | None = None
    local_root: str | None = None
    family_name: str | None = None
    given_name: str | None = None

    def __post_init__(self) -> None:
        if not self.display_name.strip():
            raise ValueError("the author display name is empty")
        if self.rpps is not None:
            if not _RPPS.fullmatch(self.rpps):
                raise ValueError(f"an RPPS number has 11 digits: {self.rpps!r}")
        elif self.local_id is None or self.local_root is None:
            raise ValueError("an author needs an RPPS number or a local id with its OID")
        else:
            InstanceId(self.local_root, self.local_id)  # validates both

    @property
    def id(self) -> InstanceId:
        if self.rpps is not None:
            return InstanceId(IDNAT_PS_OID, "8" + self.rpps)
        assert self.local_root is not None and self.local_id is not None
        return InstanceId(self.local_root, self.local_id)

    @property
    def family(self) -> str:
        return self.family_name or self.display_name


@dataclass(frozen=True)
class TranscriptMessage:
    """One chat message as the transcript shows it."""

    author_name: str
    time: datetime
    text: str
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_aware(self.time, "message time")


@dataclass(frozen=True)
class DocumentRequest:
    """Everything needed to build the PDF transcript and its CDA R2 level 1 document.

    ``effective_time`` is the creation time of this version (passed in: cda/ reads no clock);
    a version above 1 must name the id of the version it replaces (``replaces``).
    """

    document_id: InstanceId
    set_id: InstanceId
    version: int
    effective_time: datetime
    title: str
    patient: Patient
    custodian: Organisation
    authors: tuple[Author, ...]
    legal_authenticator: Author
    messages: tuple[TranscriptMessage, ...]
    document_type: DocumentType = CONSULTATION_NOTE
    replaces: InstanceId | None = None
    practice_setting: Code = PRACTICE_SETTING_HOSPITAL
    facility_type: Code = FACILITY_PUBLIC_HOSPITAL
    encounter_code: Code | None = ENCOUNTER_VIRTUAL
    confidentiality: Code = field(default=CONFIDENTIALITY_NORMAL)
    language: str = LANGUAGE

    def __post_init__(self) -> None:
        _check_aware(self.effective_time, "effective time")
        if self.version < 1:
            raise ValueError("versions start at 1")
        if (self.version > 1) != (self.replaces is not None):
            raise ValueError("a version above 1 replaces exactly one previous id (RPLC)")
        if self.replaces == self.document_id:
            raise ValueError("a new version needs a new document id")
        if not self.title.strip():
            raise ValueError("the document title is empty")
        if not self.authors:
            raise ValueError("a document needs at least one author")
        if not self.messages:
            raise ValueError("a transcript needs at least one message")

    @property
    def service_start(self) -> datetime:
        return min(message.time for message in self.messages)

    @property
    def service_stop(self) -> datetime:
        return max(message.time for message in self.messages)


def next_version(
    previous: DocumentRequest,
    *,
    document_id: InstanceId,
    effective_time: datetime,
    messages: tuple[TranscriptMessage, ...] | None = None,
) -> DocumentRequest:
    """Return the request of the next version: same setId, version + 1, RPLC the previous id."""
    return replace(
        previous,
        document_id=document_id,
        version=previous.version + 1,
        effective_time=effective_time,
        replaces=previous.document_id,
        messages=previous.messages if messages is None else messages,
    )


def _check_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must carry its UTC offset")
