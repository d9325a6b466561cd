"""MSSanté specifics of a document-bearing mail (Référentiel #2 §3.8): subject, PDF name, headers.

Pure string helpers; the relay decides when to use them. The subject and the PDF name carry the
patient's identity by design of the MSSanté rules, so they must never be logged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import date

from mssbridge.cda.model import DocumentRequest, Patient

SUBJECT_PREFIX = "XDM/1.0/DDM+"
HEADER_CODE_CDA = "X-MSS-CODECDA"
HEADER_INS = "X-MSS-INS"
HEADER_NIL = "X-MSS-NIL"
MAX_NAME_PART = 40

_NOT_SAFE = re.compile(r"[^A-Za-z0-9]+")
_NIL = re.compile(r"[!-~](?:[ -~]{0,98}[!-~])?")


def document_label(labels: Sequence[str]) -> str:
    """The subject label: the type display name of the only document, else "N documents"."""
    if not labels:
        raise ValueError("a document mail carries at least one document")
    return labels[0] if len(labels) == 1 else f"{len(labels)} documents"


def document_subject(
    labels: Sequence[str], patient: Patient, *, with_birth_date: bool = True
) -> str:
    """``XDM/1.0/DDM+<label> <NOM> <Prénom> <date de naissance>`` (ECO.2.1.3; date optional)."""
    parts = [
        document_label(labels),
        patient.birth_family_name.upper(),
        patient.first_given_name,
    ]
    if with_birth_date:
        parts.append(patient.birth_date.strftime("%d/%m/%Y"))
    return SUBJECT_PREFIX + " ".join(" ".join(part.split()) for part in parts)


def ascii_part(text: str, limit: int = MAX_NAME_PART) -> str:
    """Accents stripped, anything else than letters and digits as ``_``: ``Élodie-Anne`` →
    ``Elodie_Anne``."""
    decomposed = unicodedata.normalize("NFKD", text.replace("Œ", "OE").replace("œ", "oe"))
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return _NOT_SAFE.sub("_", plain).strip("_")[:limit].strip("_")


def pdf_filename(
    act_date: date, type_label: str, patient: Patient, folder: str | None = None
) -> str:
    """``<date acte>_<type doc>_<NOM>_<prénom>[_<dossier>].pdf`` in ASCII (ECO.2.1.6)."""
    parts = [
        act_date.strftime("%Y%m%d"),
        ascii_part(type_label),
        ascii_part(patient.birth_family_name).upper(),
        ascii_part(patient.first_given_name),
    ]
    if folder:
        parts.append(ascii_part(folder))
    return "_".join(part for part in parts if part) + ".pdf"


def mss_headers(
    codes: Sequence[str], patients: Sequence[Patient], nil: str
) -> tuple[tuple[str, str], ...]:
    """``X-MSS-CODECDA`` (comma-separated CDA codes), ``X-MSS-INS`` (O when every patient has
    a qualified INS), ``X-MSS-NIL`` (the product reference from ANS Convergence)."""
    if not codes or not patients:
        raise ValueError("document headers need at least one CDA")
    qualified = all(patient.has_ins and patient.ins_qualified for patient in patients)
    return (
        (HEADER_CODE_CDA, ",".join(dict.fromkeys(codes))),
        (HEADER_INS, "O" if qualified else "N"),
        nil_header(nil),
    )


def nil_header(nil: str) -> tuple[str, str]:
    """``X-MSS-NIL``, due on every mail, documents or not (ECO.2.4.3)."""
    if not _NIL.fullmatch(nil):
        raise ValueError("X-MSS-NIL must be printable ASCII (1-100 characters)")
    return (HEADER_NIL, nil)


def request_mail_parts(
    request: DocumentRequest, nil: str
) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """Subject, PDF file name and X-MSS headers for a mail carrying ``request``'s document."""
    doc_type = request.document_type
    return (
        document_subject([doc_type.type_code.display], request.patient),
        pdf_filename(request.service_start.date(), doc_type.file_label, request.patient),
        mss_headers([doc_type.type_code.code], [request.patient], nil),
    )
