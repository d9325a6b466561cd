"""Patient context of a conversation: ``!mss patient`` arguments, sealed storage form, documents.

Pure helpers (no I/O but the font look-up). Patient data is health data: nothing here logs, and
callers must never log what these functions return.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

from mssbridge.cda.model import (
    INS_NIA_OID,
    INS_NIR_OID,
    Author,
    DocumentRequest,
    InstanceId,
    Organisation,
    OrgIdType,
    Patient,
    Sex,
    TranscriptMessage,
    nir_key_ok,
    oid_from_uuid,
)
from mssbridge.cda.package import DocumentPackage, build_package
from mssbridge.cda.transcript import TranscriptFonts, find_fonts
from mssbridge.cda.xdm import XdmSubmission
from mssbridge.config import MssanteSection

PARIS = ZoneInfo("Europe/Paris")
DOCUMENT_TITLE = "Échanges de la messagerie instantanée à propos du patient"

USAGE = (
    "Usage : {p} patient ins=<matricule INS, 15 caractères> nom=<NOM de naissance> "
    'prenoms="<Prénoms>" naissance=<AAAA-MM-JJ> sexe=M|F|U lieu=<code COG du lieu de '
    "naissance> [qualifiee=oui]\n"
    "ou : {p} patient local=<IPP> nom=… prenoms=… naissance=… sexe=… [lieu=…]\n"
    "{p} patient show : montre le patient de ce salon ; {p} patient clear : le retire."
)

_KEYS = ("ins", "local", "nom", "prenoms", "naissance", "sexe", "lieu", "qualifiee")
_INS = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}")
_COG = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{3}")
_LOCAL = re.compile(r"[!-~]{1,64}")


class PatientArgsError(ValueError):
    """The arguments of ``!mss patient`` are wrong; the message is for the user (French)."""


def bridge_root(settings: MssanteSection, mailbox_address: str) -> str:
    """The organisation's root OID: configured, else derived from the mailbox address."""
    if settings.oid:
        return settings.oid
    return oid_from_uuid(uuid.uuid5(uuid.NAMESPACE_URL, "mailto:" + mailbox_address.lower()))


def parse_patient_args(args: Sequence[str], settings: MssanteSection, root: str) -> Patient:
    """Turn ``key=value`` words into a Patient; PatientArgsError names every fault in French."""
    values: dict[str, str] = {}
    faults: list[str] = []
    for word in args:
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            faults.append(f"argument inconnu « {word.split('=')[0][:20]} »")
        elif key in values:
            faults.append(f"« {key} » est donné deux fois")
        else:
            values[key] = value.strip()
    if faults:
        raise PatientArgsError(" ; ".join(faults) + ".")
    ins, local = values.get("ins"), values.get("local")
    if (ins is None) == (local is None):
        faults.append("donnez soit ins=<matricule INS>, soit local=<IPP>, et un seul des deux")
    for key, what in (
        ("nom", "nom de naissance"),
        ("prenoms", "prénoms"),
        ("naissance", "date de naissance"),
        ("sexe", "sexe"),
    ):
        if not values.get(key):
            faults.append(f"{what} manquant ({key}=…)")
    birth = None
    if values.get("naissance"):
        try:
            birth = date.fromisoformat(values["naissance"])
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", values["naissance"]):
                raise ValueError
        except ValueError:
            faults.append("date de naissance invalide : attendu AAAA-MM-JJ (ex. 1980-01-31)")
        else:
            if birth > date.today():
                faults.append("la date de naissance est dans le futur")
    sex = values.get("sexe", "").upper()
    if sex and sex not in ("M", "F", "U"):
        faults.append("sexe : M, F ou U (inconnu)")
    lieu = values.get("lieu") or None
    if lieu is not None and not _COG.fullmatch(lieu.upper()):
        faults.append("lieu : code officiel géographique INSEE à 5 caractères (ex. 75056)")
    qualified = values.get("qualifiee", "non").lower()
    if qualified not in ("oui", "non"):
        faults.append("qualifiee : oui ou non")
    root_id = ""
    patient_id = ""
    if ins is not None:
        patient_id = ins.replace(" ", "").upper()
        if not _INS.fullmatch(patient_id):
            faults.append("matricule INS : 15 caractères (13 + clé de 2 chiffres)")
        elif not nir_key_ok(patient_id):
            faults.append("matricule INS : la clé ne correspond pas (vérifiez la saisie)")
        if lieu is None:
            faults.append("lieu de naissance requis avec un INS (lieu=<code COG>)")
        root_id = settings.ins_root
        if root_id == INS_NIR_OID and patient_id[:1] in ("7", "8"):
            root_id = INS_NIA_OID
    elif local is not None:
        patient_id = local
        root_id = f"{root}.10"
        if not _LOCAL.fullmatch(local):
            faults.append("identifiant local : 1 à 64 caractères ASCII visibles, sans espace")
        if qualified == "oui":
            faults.append("qualifiee=oui n'a de sens qu'avec un INS")
    if faults:
        raise PatientArgsError(" ; ".join(faults) + ".")
    assert birth is not None
    given = tuple(name for name in re.split(r"[\s,]+", values["prenoms"]) if name)
    try:
        return Patient(
            patient_id=patient_id,
            id_root=root_id,
            birth_family_name=" ".join(values["nom"].split()).upper(),
            given_names=given,
            birth_date=birth,
            sex=Sex(sex),
            birthplace_cog=lieu.upper() if lieu else None,
            ins_qualified=qualified == "oui",
        )
    except ValueError as exc:  # what the checks above did not foresee
        raise PatientArgsError(f"identité refusée ({exc}).") from exc


def patient_to_bytes(patient: Patient) -> bytes:
    return json.dumps(
        {
            "id": patient.patient_id,
            "root": patient.id_root,
            "family": patient.birth_family_name,
            "given": list(patient.given_names),
            "birth": patient.birth_date.isoformat(),
            "sex": patient.sex.value,
            "cog": patient.birthplace_cog,
            "qualified": patient.ins_qualified,
        },
        ensure_ascii=False,
    ).encode("utf-8")


def patient_from_bytes(data: bytes) -> Patient:
    raw = json.loads(data.decode("utf-8"))
    return Patient(
        patient_id=raw["id"],
        id_root=raw["root"],
        birth_family_name=raw["family"],
        given_names=tuple(raw["given"]),
        birth_date=date.fromisoformat(raw["birth"]),
        sex=Sex(raw["sex"]),
        birthplace_cog=raw["cog"],
        ins_qualified=bool(raw["qualified"]),
    )


def masked_id(patient: Patient) -> str:
    """The identifier with all but its last 4 characters hidden."""
    ident = patient.patient_id
    return "•" * max(len(ident) - 4, 0) + ident[-4:]


def describe(patient: Patient) -> str:
    kind = "INS" if patient.has_ins else "identifiant local"
    qualified = " (qualifié)" if patient.ins_qualified else ""
    return (
        f"Patient : {patient.birth_family_name} {' '.join(patient.given_names)}, "
        f"né(e) le {patient.birth_date.strftime('%d/%m/%Y')}, sexe {patient.sex.value}\n"
        f"{kind} : {masked_id(patient)}{qualified}"
    )


def topic_for(patient: Patient, subject: str) -> str:
    """Room topic naming the patient, never the full identifier."""
    who = (
        f"Patient : {patient.birth_family_name} {patient.first_given_name} "
        f"({patient.birth_date.strftime('%d/%m/%Y')})"
    )
    return f"{subject} — {who}" if subject else who


def organisation(settings: MssanteSection) -> Organisation:
    if settings.finess:
        return Organisation(settings.name, OrgIdType.FINESS, settings.finess)
    return Organisation(settings.name, OrgIdType.SIRET, settings.siret)


def _oid_of(text: str) -> str:
    return oid_from_uuid(uuid.uuid5(uuid.NAMESPACE_URL, "mssbridge:" + text))


def document_root(origin_event_id: str) -> str:
    """The id of the document built for a Matrix event (a retry rebuilds the same id)."""
    return _oid_of("document:" + origin_event_id)


def message_set_root(event_id: str) -> str:
    """The setId of one relayed message's document; its edits are the next versions."""
    return _oid_of("message-set:" + event_id)


def thread_set_root(conversation_key: str) -> str:
    """The setId of a conversation's transcript (``!mss export``): one set per thread."""
    return _oid_of("thread-set:" + conversation_key)


def author_for(user_id: str, display_name: str, settings: MssanteSection, root: str) -> Author:
    rpps = settings.rpps.get(user_id)
    if rpps is not None:
        return Author(display_name or user_id, rpps=rpps)
    local = (
        user_id
        if re.fullmatch(r"[!-~]{1,64}", user_id)
        else uuid.uuid5(uuid.NAMESPACE_URL, user_id).hex
    )
    return Author(display_name or user_id, local_id=local, local_root=f"{root}.11")


def document_request(
    *,
    event_id: str,
    patient: Patient,
    author: Author,
    custodian: Organisation,
    time: datetime,
    text: str,
    files: Sequence[str],
    set_root: str | None = None,
    version: int = 1,
    replaces_root: str | None = None,
) -> DocumentRequest:
    """The document of one relayed mail: its own id and, by default, its own set.

    Ids derive from the event, so a retry rebuilds the same document. An edit passes the set
    of the message it corrects, the next version number and the id it replaces (RPLC).
    """
    local_time = time.astimezone(PARIS)
    return DocumentRequest(
        document_id=InstanceId(document_root(event_id)),
        set_id=InstanceId(set_root or message_set_root(event_id)),
        version=version,
        replaces=InstanceId(replaces_root) if replaces_root else None,
        effective_time=local_time,
        title=DOCUMENT_TITLE,
        patient=patient,
        custodian=custodian,
        authors=(author,),
        legal_authenticator=author,
        messages=(
            TranscriptMessage(author.display_name, local_time, text or "(fichier)", tuple(files)),
        ),
    )


def submission_for(event_id: str, root: str, time: datetime) -> XdmSubmission:
    return XdmSubmission(
        unique_id=_oid_of("submission:" + event_id),
        source_id=f"{root}.12",
        time=time.astimezone(PARIS),
    )


@functools.cache
def fonts() -> TranscriptFonts | None:
    return find_fonts()


def make_package(request: DocumentRequest, submission: XdmSubmission, nil: str) -> DocumentPackage:
    """CPU-bound: run it in a worker thread."""
    return build_package(request, submission, fonts(), nil)
