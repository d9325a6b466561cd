"""A readable room summary of a received ``IHE_XDM.ZIP`` and the PDFs it holds (pure).

The summary names the patient as the documents give it: that is its purpose (the room is where
the professionals read it), so its text must never reach a log.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from mssbridge.cda.document import CdaHeader
from mssbridge.cda.mail_parts import ascii_part
from mssbridge.cda.model import INS_NIA_OID, INS_NIR_DEMO_OID, INS_NIR_OID, INS_NIR_TEST_OID
from mssbridge.cda.xdm import XdmDocument, XdmPackage, XdmRefused

PDF_MAGIC = b"%PDF-"
_ID_KINDS = {
    INS_NIR_OID: "INS (NIR)",
    INS_NIA_OID: "INS (NIA)",
    INS_NIR_TEST_OID: "INS de test",
    INS_NIR_DEMO_OID: "INS de démonstration",
}
_GENDERS = {"M": "M", "F": "F", "U": "inconnu", "UN": "inconnu"}
MAX_FIELD = 200
_TS = re.compile(r"([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?")


@dataclass(frozen=True)
class DocumentFile:
    """A PDF to post in the room, with the name it is shown under."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class PackageSummary:
    """The text to post and the PDFs to upload for one received package."""

    text: str
    files: tuple[DocumentFile, ...]


def refusal_text(refused: XdmRefused) -> str:
    """The room notice of a package that was not read: what is wrong, never its content."""
    return (
        f"⚠️ Pièce jointe IHE_XDM.ZIP non importée : {refused.reason}. "
        "Le courriel est relayé tel quel, l'archive est jointe ci-dessous."
    )


def summarize(package: XdmPackage) -> PackageSummary:
    """Type, title, author, date and patient of each document; the PDFs to show."""
    count = len(package.documents)
    lines = [
        "📄 Document de santé reçu (IHE_XDM.ZIP)"
        if count == 1
        else f"📄 {count} documents de santé reçus (IHE_XDM.ZIP)"
    ]
    if count == 0:
        lines.append("L'archive ne contient aucun document.")
    files: list[DocumentFile] = []
    for index, document in enumerate(package.documents, start=1):
        lines.append("")
        lines.extend(_describe(document, index if count > 1 else None))
        files.extend(_pdfs(document, index))
    patients = {_patient_key(d) for d in package.documents}
    patients |= {cx.split("&ISO", 1)[0] for cx in package.patient_ids}
    if len(patients - {""}) > 1:
        lines += ["", "⚠️ Les documents de cette archive ne désignent pas tous le même patient."]
    return PackageSummary("\n".join(lines), tuple(files))


def _describe(document: XdmDocument, number: int | None) -> list[str]:
    header = document.cda
    title = clean((header.title if header else "") or document.title) or "(sans titre)"
    type_code = header.type_code if header else document.type_code
    kind = (
        f"{clean(type_code.display)} ({clean(type_code.code)})" if type_code else "type non précisé"
    )
    lead = f"{number}. " if number is not None else ""
    lines = [f"{lead}{title}", f"Type : {kind}"]
    authors = _cda_authors(header) if header else _xcn_authors(document.authors)
    lines.append(f"Auteur : {clean(', '.join(authors)) or 'non précisé'}")
    when = (header.effective_time if header else "") or document.creation_time
    lines.append(f"Date : {display_time(when) or 'non précisée'}")
    lines.append(f"Patient : {_patient(document)}")
    if header is not None and header.version and header.version > 1:
        lines.append(f"Version {header.version} : remplace une version précédente du document.")
    if header is None:
        lines.append(
            f"Format : {clean(document.mime_type) or 'inconnu'} (non lu par la passerelle)"
        )
    elif document.pdf is None:
        lines.append("Corps du document : pas de PDF (document structuré ou autre format).")
    return lines


def _cda_authors(header: CdaHeader) -> list[str]:
    names = [" ".join(p for p in (a.given, a.family) if p) for a in header.authors]
    return [name for name in dict.fromkeys(names) if name]


def _xcn_authors(values: tuple[str, ...]) -> list[str]:
    """``id^FAMILY^Given^…`` (XCN) → ``Given FAMILY``."""
    names = []
    for value in values:
        parts = value.split("^")
        family = parts[1] if len(parts) > 1 else ""
        given = parts[2] if len(parts) > 2 else ""
        name = " ".join(p for p in (given, family) if p)
        if name:
            names.append(name)
    return list(dict.fromkeys(names))


def clean(text: str) -> str:
    """Sender text on one line: no control or format characters (line breaks, bidi
    overrides) that could fake a line of the summary, whitespace collapsed, length capped."""
    kept = "".join(
        " " if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char for char in text
    )
    flat = " ".join(kept.split())
    return flat if len(flat) <= MAX_FIELD else flat[: MAX_FIELD - 1] + "…"


def display_time(value: str) -> str:
    """HL7 TS / XDS time (``YYYYMMDD[hhmm[ss]][±zzzz]``) → ``JJ/MM/AAAA[ hh:mm]``, as given."""
    match = _TS.match(value.strip())
    if match is None:
        return ""
    year, month, day, hour, minute = match.groups()
    if month is None:
        return year
    if day is None:
        return f"{month}/{year}"
    date_text = f"{day}/{month}/{year}"
    if hour is None or minute is None:
        return date_text
    return f"{date_text} {hour}:{minute}"


def _patient(document: XdmDocument) -> str:
    header = document.cda
    if header is not None:
        name = " ".join(p for p in (header.patient_family, header.patient_given) if p)
        birth = display_time(header.patient_birth_time)
        sex = _GENDERS.get(header.patient_gender, header.patient_gender)
        root = header.patient_id.root
        ident = header.patient_id.extension or ""
    else:
        name, birth, sex = _from_pid(document.source_patient_info)
        ident, _, rest = document.patient_id.partition("^^^&")
        root = rest.split("&", 1)[0]
    parts = [clean(name) or "(nom non précisé)"]
    if birth:
        parts.append(f"né(e) le {birth}")
    if sex:
        parts.append(f"sexe {clean(sex)}")
    if ident:
        parts.append(f"{_ID_KINDS.get(root, 'identifiant')} {clean(ident)}")
    return ", ".join(parts)


def _from_pid(info: tuple[str, ...]) -> tuple[str, str, str]:
    fields = dict(item.split("|", 1) for item in info if "|" in item)
    names = fields.get("PID-5", "").split("^")
    name = " ".join(p for p in (names[0], names[1] if len(names) > 1 else "") if p)
    sex = fields.get("PID-8", "")
    return name, display_time(fields.get("PID-7", "")), _GENDERS.get(sex, sex)


def _patient_key(document: XdmDocument) -> str:
    header = document.cda
    if header is not None:
        return f"{header.patient_id.extension}^^^&{header.patient_id.root}"
    return document.patient_id.split("&ISO", 1)[0]


def _pdfs(document: XdmDocument, index: int) -> list[DocumentFile]:
    """The level-1 CDA's PDF body, or the document itself when it is a PDF."""
    data = document.pdf
    if data is None and document.mime_type == "application/pdf":
        data = document.data
    if data is None or not data.startswith(PDF_MAGIC):
        return []
    header = document.cda
    label = (header.type_code.display if header else "") or document.title or "document"
    return [DocumentFile(f"{index:02d}_{ascii_part(label) or 'document'}.pdf", data)]
