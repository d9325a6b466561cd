"""IHE XDM media (``IHE_XDM.ZIP``): build one from CDA documents, read a received one safely.

Layout (IHE ITI TF-1 §16, ISO 9660 8.3 upper-case names): ``README.TXT``, ``INDEX.HTM`` and
``IHE_XDM/SUBSET01/`` holding ``METADATA.XML`` (ebRIM 3.0 SubmitObjectsRequest: one
DocumentEntry per document, the SubmissionSet, one HasMember Association each) and the
documents ``DOC0001.XML``… The metadata is derived from each CDA header, never typed twice.

:func:`read_xdm` treats the archive as hostile: size, entry-count and compression-ratio limits,
no path traversal, reads bounded by the limits, XML without DOCTYPE or entities, SHA-1 and size
of every document checked against its metadata. Subset folders are found, not assumed
(ANS packages use ``SS000001``).
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import stat
import struct
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree
from lxml.builder import ElementMaker

from mssbridge.cda.document import (
    CdaHeader,
    PersonRef,
    UnsafeXml,
    embedded_pdf,
    hl7_to_utc,
    parse_xml,
    read_header,
)
from mssbridge.cda.model import (
    IDNAT_PS_OID,
    IDNAT_STRUCT_OID,
    INS_OIDS,
    Code,
    check_oid,
    class_code_for,
)
from mssbridge.errors import MalformedInput

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
XML_NS = "http://www.w3.org/XML/1998/namespace"

ROOT_DIR = "IHE_XDM"
SUBSET_DIR = "SUBSET01"
METADATA_NAME = "METADATA.XML"
ZIP_NAME = "IHE_XDM.ZIP"
CDA_MIME_TYPE = "text/xml"

# ebRIM / XDS identifiers (IHE ITI TF-3 §4.2).
DOCUMENT_ENTRY_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY_TYPE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE_SETTING = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
REPLACES = "urn:ihe:iti:2007:AssociationType:RPLC"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
REGISTRY_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"

FORMAT_PDF = Code(
    "urn:ihe:iti:xds-sd:pdf:2008",
    "1.3.6.1.4.1.19376.1.2.3",
    "Document à corps non structuré en Pdf/A-1",
)

_R = ElementMaker(namespace=RIM, nsmap={"rim": RIM, "lcm": LCM})
_L = ElementMaker(namespace=LCM, nsmap={"rim": RIM, "lcm": LCM})
_HL7_SPECIALS = re.compile(r"[\^&~\\|\r\n]")
_ZIP_TIME_FLOOR = (1980, 1, 1, 0, 0, 0)
_END_OF_DIRECTORY = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END = b"PK\x06\x06"
# A directory record is 46 bytes plus its name (<= 255 here) and extra fields; 2 KiB per
# allowed entry leaves room for honest extras and stops a directory made of padding.
_MAX_DIRECTORY_RECORD = 2048

PACKAGE_REFUSED = (
    "La pièce jointe IHE_XDM.ZIP reçue est invalide ou non sûre : elle n'a pas été importée."
)


# What is wrong, by detail: a short kind for logs, words fit for a room (generic: no file
# name, no content).
_REASONS = (
    (
        ("larger than", "too many", "ratio", "total uncompressed"),
        "size",
        "archive trop volumineuse, trop de fichiers ou trop compressée",
    ),
    (("entry name",), "names", "noms de fichiers interdits dans l'archive"),
    (
        ("encrypted", "compression method"),
        "encoding",
        "archive chiffrée ou compression non prise en charge",
    ),
    (
        ("malformed XML", "DOCTYPE", "entity references", "nested too deeply"),
        "xml",
        "XML refusé (malformé, DTD ou entités)",
    ),
    (
        ("hash", "size does not match"),
        "integrity",
        "un document ne correspond pas à ses métadonnées",
    ),
    (
        ("METADATA.XML", "URI", "missing file"),
        "metadata",
        "métadonnées IHE_XDM absentes ou incomplètes",
    ),
    (("CDA document",), "cda", "document CDA incomplet ou invalide"),
    (("zip", "unreadable"), "zip", "archive ZIP illisible"),
)
KIND_OTHER = "other"
REASON_OTHER = "contenu non conforme"


class XdmRefused(MalformedInput):
    """A received XDM archive that is malformed or hostile; ``detail`` says why (no content)."""

    def __init__(self, detail: str) -> None:
        super().__init__(PACKAGE_REFUSED, code="5.6.0", detail=detail)
        self.detail = detail

    @property
    def kind(self) -> str:
        """What is wrong, as one short word for logs (``size``, ``xml``, ``cda``…)."""
        return self._classify()[0]

    @property
    def reason(self) -> str:
        """What is wrong, generically and in French, for a room notice."""
        return self._classify()[1]

    def _classify(self) -> tuple[str, str]:
        for keys, kind, text in _REASONS:
            if any(key in self.detail for key in keys):
                return kind, text
        return KIND_OTHER, REASON_OTHER


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class XdmSubmission:
    """The submission set: its unique id (OID), the sending system's OID, the sending time."""

    unique_id: str
    source_id: str
    time: datetime
    title: str = "Documents de santé"

    def __post_init__(self) -> None:
        check_oid(self.unique_id, "submission set unique id")
        check_oid(self.source_id, "submission set source id")
        if self.time.tzinfo is None:
            raise ValueError("submission time must carry its UTC offset")


def build_xdm(documents: Sequence[bytes], submission: XdmSubmission) -> bytes:
    """Return the bytes of an ``IHE_XDM.ZIP`` holding ``documents`` (CDA XML, one patient)."""
    if not documents:
        raise ValueError("an XDM package needs at least one document")
    headers = [read_header(parse_xml(document)) for document in documents]
    names = [f"DOC{index:04d}.XML" for index in range(1, len(documents) + 1)]
    metadata = build_metadata(list(zip(names, documents, headers, strict=True)), submission)
    folder = f"{ROOT_DIR}/{SUBSET_DIR}/"
    files = [
        ("README.TXT", _readme(submission, headers).encode("utf-8")),
        ("INDEX.HTM", _index(headers, [folder + name for name in names]).encode("utf-8")),
        (folder + METADATA_NAME, metadata),
        *((folder + name, document) for name, document in zip(names, documents, strict=True)),
    ]
    stamp = _zip_time(submission.time)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, data)
    return buffer.getvalue()


def build_metadata(
    entries: Sequence[tuple[str, bytes, CdaHeader]], submission: XdmSubmission
) -> bytes:
    """Return METADATA.XML for (file name, CDA bytes, CDA header) entries."""
    patient_ids = {
        _cx(header.patient_id.extension or "", header.patient_id.root) for _, _, header in entries
    }
    if len(patient_ids) != 1:
        raise ValueError("one patient per XDM package")
    patient_id = patient_ids.pop()
    set_uuid = _urn(submission.unique_id, "submission-set")
    objects: list[etree._Element] = []
    for name, data, header in entries:
        objects.append(_document_entry(name, data, header, patient_id, submission))
    first = entries[0][2]
    package = _R.RegistryPackage(
        _slot("submissionTime", _utc(submission.time)),
        _name(submission.title),
        _author_classification(SS_AUTHOR, set_uuid, first, "ss-author"),
        _classification(SS_CONTENT_TYPE, set_uuid, first.type_code, "ss-content"),
        _external_id(SS_UNIQUE_ID, set_uuid, submission.unique_id, "XDSSubmissionSet.uniqueId"),
        _external_id(SS_SOURCE_ID, set_uuid, submission.source_id, "XDSSubmissionSet.sourceId"),
        _external_id(SS_PATIENT_ID, set_uuid, patient_id, "XDSSubmissionSet.patientId"),
        id=set_uuid,
        objectType=REGISTRY_PACKAGE,
    )
    objects.append(package)
    objects.append(
        _R.Classification(
            classifiedObject=set_uuid,
            classificationNode=SUBMISSION_SET_NODE,
            id=_urn(submission.unique_id, "submission-set-node"),
        )
    )
    for name, _, header in entries:
        objects.append(
            _R.Association(
                _slot("SubmissionSetStatus", "Original"),
                associationType=HAS_MEMBER,
                sourceObject=set_uuid,
                targetObject=_urn(header.document_id.xds_unique_id, "entry"),
                id=_urn(submission.unique_id, f"association/{name}"),
            )
        )
        if header.replaces is not None:
            # XDS RPLC (ITI TF-3 §4.2.2): the new entry replaces the one we published for the
            # previous version, whose entryUUID is derived from its uniqueId like ours.
            entry = _urn(header.document_id.xds_unique_id, "entry")
            objects.append(
                _R.Association(
                    associationType=REPLACES,
                    sourceObject=entry,
                    targetObject=_urn(header.replaces.xds_unique_id, "entry"),
                    id=_urn(entry, "rplc"),
                )
            )
    request = _L.SubmitObjectsRequest(_R.RegistryObjectList(*objects))
    return etree.tostring(request, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _document_entry(
    name: str, data: bytes, header: CdaHeader, patient_id: str, submission: XdmSubmission
) -> etree._Element:
    entry = _urn(header.document_id.xds_unique_id, "entry")
    slots = [
        _slot("creationTime", hl7_to_utc(header.effective_time)),
        _slot("hash", hashlib.sha1(data, usedforsecurity=False).hexdigest()),
        _slot("languageCode", header.language),
    ]
    if header.legal_authenticator is not None and header.legal_authenticator.id is not None:
        slots.append(_slot("legalAuthenticator", _xcn(header.legal_authenticator)))
    if header.service_start:
        slots.append(_slot("serviceStartTime", hl7_to_utc(header.service_start)))
    if header.service_stop:
        slots.append(_slot("serviceStopTime", hl7_to_utc(header.service_stop)))
    slots += [
        _slot("size", str(len(data))),
        _slot("sourcePatientId", patient_id),
        _slot("sourcePatientInfo", *_patient_info(header, patient_id)),
        _slot("URI", name),
    ]
    classifications = [
        _author_classification(DE_AUTHOR, entry, header, f"author-{index}", author)
        for index, author in enumerate(header.authors, start=1)
    ]
    classifications += [
        _classification(DE_CLASS_CODE, entry, class_code_for(header.type_code), "class"),
        _classification(DE_CONFIDENTIALITY, entry, header.confidentiality, "confidentiality"),
        _classification(DE_FORMAT_CODE, entry, FORMAT_PDF, "format"),
    ]
    if header.facility_type is not None:
        classifications.append(
            _classification(DE_FACILITY_TYPE, entry, header.facility_type, "facility")
        )
    if header.practice_setting is not None:
        classifications.append(
            _classification(DE_PRACTICE_SETTING, entry, header.practice_setting, "practice")
        )
    classifications.append(_classification(DE_TYPE_CODE, entry, header.type_code, "type"))
    return _R.ExtrinsicObject(
        *slots,
        _name(header.title),
        *classifications,
        _external_id(DE_PATIENT_ID, entry, patient_id, "XDSDocumentEntry.patientId"),
        _external_id(
            DE_UNIQUE_ID, entry, header.document_id.xds_unique_id, "XDSDocumentEntry.uniqueId"
        ),
        id=entry,
        mimeType=CDA_MIME_TYPE,
        objectType=DOCUMENT_ENTRY_TYPE,
        status=APPROVED,
    )


def _urn(seed: str, what: str) -> str:
    """A stable entryUUID: same document, same UUID (uuid5 of its unique id)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, f'{seed}/{what}')}"


def _slot(name: str, *values: str) -> etree._Element:
    return _R.Slot(_R.ValueList(*(_R.Value(value) for value in values)), name=name)


def _name(text: str) -> etree._Element:
    localized = _R.LocalizedString(value=text, charset="UTF-8")
    localized.set(f"{{{XML_NS}}}lang", "fr-FR")
    return _R.Name(localized)


def _classification(scheme: str, target: str, code: Code, what: str) -> etree._Element:
    return _R.Classification(
        _slot("codingScheme", code.system),
        _name(code.display),
        classificationScheme=scheme,
        classifiedObject=target,
        nodeRepresentation=code.code,
        id=_urn(target, what),
    )


def _author_classification(
    scheme: str, target: str, header: CdaHeader, what: str, author: PersonRef | None = None
) -> etree._Element:
    person = author or (header.authors[0] if header.authors else None)
    slots = []
    if person is not None and person.id is not None:
        slots.append(_slot("authorPerson", _xcn(person)))
    if header.custodian_id is not None:
        slots.append(_slot("authorInstitution", _xon(header)))
    return _R.Classification(
        *slots,
        classificationScheme=scheme,
        classifiedObject=target,
        nodeRepresentation="",
        id=_urn(target, what),
    )


def _external_id(scheme: str, target: str, value: str, label: str) -> etree._Element:
    return _R.ExternalIdentifier(
        _name(label),
        identificationScheme=scheme,
        registryObject=target,
        value=value,
        id=_urn(target, label),
    )


def _hl7(text: str) -> str:
    """Drop HL7 v2 delimiters from free text (names) rather than escape them."""
    return " ".join(_HL7_SPECIALS.sub(" ", text).split())


def _cx(extension: str, root: str) -> str:
    """CX patient id: ``<id>^^^&<oid>&ISO^NH`` for an INS, ``^PI`` for a local id."""
    kind = "NH" if root in INS_OIDS else "PI"
    return f"{_hl7(extension)}^^^&{root}&ISO^{kind}"


def _xcn(person: PersonRef) -> str:
    assert person.id is not None
    kind = "IDNPS" if person.id.root == IDNAT_PS_OID else "EI"
    return (
        f"{_hl7(person.id.extension or '')}^{_hl7(person.family)}^{_hl7(person.given)}"
        f"^^^^^^&{person.id.root}&ISO^D^^^{kind}"
    )


def _xon(header: CdaHeader) -> str:
    assert header.custodian_id is not None
    kind = "IDNST" if header.custodian_id.root == IDNAT_STRUCT_OID else "EI"
    return (
        f"{_hl7(header.custodian_name)}^^^^^&{header.custodian_id.root}&ISO^{kind}"
        f"^^^{_hl7(header.custodian_id.extension or '')}"
    )


def _patient_info(header: CdaHeader, patient_id: str) -> list[str]:
    gender = {"UN": "U"}.get(header.patient_gender, header.patient_gender)
    info = [
        f"PID-3|{patient_id}",
        f"PID-5|{_hl7(header.patient_family)}^{_hl7(header.patient_given)}^^^^^L",
    ]
    if header.patient_birth_time:
        info.append(f"PID-7|{header.patient_birth_time}")
    if gender:
        info.append(f"PID-8|{gender}")
    return info


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    stamp = moment.astimezone(UTC).timetuple()[:6]
    return max(_ZIP_TIME_FLOOR, (stamp[0], stamp[1], stamp[2], stamp[3], stamp[4], stamp[5]))


def _readme(submission: XdmSubmission, headers: Sequence[CdaHeader]) -> str:
    lines = [
        "Support d'échange de documents de santé (IHE XDM)",
        "",
        f"Émetteur : {headers[0].custodian_name}",
        f"Système émetteur : {submission.source_id}",
        f"Date d'envoi (UTC) : {submission.time.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')}",
        f"Nombre de documents : {len(headers)}",
        "",
        f"Les documents et leurs métadonnées sont dans {ROOT_DIR}/{SUBSET_DIR}/.",
        "Ouvrir INDEX.HTM pour la liste des documents.",
        "",
    ]
    return "\r\n".join(lines)


def _index(headers: Sequence[CdaHeader], paths: Sequence[str]) -> str:
    items = "\n".join(
        f'<li><a href="{html.escape(path)}">{html.escape(header.title)}</a>'
        f" ({html.escape(header.type_code.display)})</li>"
        for header, path in zip(headers, paths, strict=True)
    )
    return (
        '<!DOCTYPE html>\n<html lang="fr"><head><meta charset="utf-8">'
        "<title>Documents de santé</title></head>\n<body>\n<h1>Documents de santé</h1>\n"
        f"<ul>\n{items}\n</ul>\n"
        f'<p><a href="{ROOT_DIR}/{SUBSET_DIR}/{METADATA_NAME}">Métadonnées</a></p>\n'
        "</body></html>\n"
    )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class XdmLimits:
    """Bounds on a received archive; the defaults fit MSSanté's ~10-25 MB messages."""

    max_archive_bytes: int = 25 * 1024 * 1024
    max_entries: int = 200
    max_total_uncompressed: int = 64 * 1024 * 1024
    max_entry_uncompressed: int = 32 * 1024 * 1024
    max_ratio: int = 100  # uncompressed / compressed, per entry (XML/PDF stay far below)
    max_metadata_bytes: int = 4 * 1024 * 1024
    max_documents: int = 50


@dataclass(frozen=True)
class XdmDocument:
    """One document of a received package, with its metadata as the sender gave it."""

    path: str
    data: bytes
    mime_type: str
    unique_id: str
    title: str
    type_code: Code | None
    class_code: Code | None
    format_code: Code | None
    creation_time: str
    authors: tuple[str, ...]  # XCN values (authorPerson)
    patient_id: str
    source_patient_info: tuple[str, ...]
    confidentiality: tuple[Code, ...]
    language: str
    cda: CdaHeader | None  # when the document is a CDA R2 ClinicalDocument
    pdf: bytes | None  # the PDF of a level-1 CDA


@dataclass(frozen=True)
class XdmPackage:
    """What a received ``IHE_XDM.ZIP`` holds: submission set(s) and documents."""

    subsets: tuple[str, ...]
    submission_unique_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]  # from the submission sets
    documents: tuple[XdmDocument, ...]


def read_xdm(data: bytes, limits: XdmLimits | None = None) -> XdmPackage:
    """Parse a received ``IHE_XDM.ZIP``; raise :class:`XdmRefused` when unsafe or malformed."""
    limits = limits or XdmLimits()
    if len(data) > limits.max_archive_bytes:
        raise XdmRefused("archive larger than the limit")
    _check_directory(data, limits)
    try:  # NotImplementedError: a zip version or feature that zipfile does not handle
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        ValueError,
        EOFError,
        NotImplementedError,
    ) as exc:
        raise XdmRefused(f"not a readable zip archive: {type(exc).__name__}") from None
    with archive:
        files = _check_entries(archive.infolist(), limits)
        reader = _BoundedReader(archive, limits)
        subsets = sorted(name.rsplit("/", 1)[0] for name in files if _is_metadata(name))
        if not subsets:
            raise XdmRefused("no IHE_XDM/<subset>/METADATA.XML")
        documents: list[XdmDocument] = []
        set_ids: list[str] = []
        patient_ids: list[str] = []
        for subset in subsets:
            info = files[f"{subset}/{METADATA_NAME}".upper()]
            if info.file_size > limits.max_metadata_bytes:
                raise XdmRefused("METADATA.XML larger than the limit")
            metadata = _parse(reader.read(info), "METADATA.XML")
            set_ids += _package_ids(metadata, SS_UNIQUE_ID)
            patient_ids += _package_ids(metadata, SS_PATIENT_ID)
            for entry in _elements(metadata, "ExtrinsicObject"):
                if len(documents) >= limits.max_documents:
                    raise XdmRefused("too many documents")
                documents.append(_read_document(entry, subset, files, reader, limits))
    return XdmPackage(tuple(subsets), tuple(set_ids), tuple(patient_ids), tuple(documents))


def _check_directory(data: bytes, limits: XdmLimits) -> None:
    """Bound the central directory before zipfile reads it (APPNOTE 4.3.16, 4.3.14).

    zipfile builds one ZipInfo per directory record, walking the directory by its size, not by
    the declared count: a small archive of empty records would cost memory and time before
    ``max_entries`` could be checked on the list. Both the count and the size are bounded here.
    """
    end = data.rfind(_END_OF_DIRECTORY, max(0, len(data) - 22 - 0xFFFF))
    if end < 0 or end + 22 > len(data):
        raise XdmRefused("not a readable zip archive: no end of central directory")
    count, size = struct.unpack_from("<HI", data, end + 10)
    if count == 0xFFFF or size == 0xFFFFFFFF:  # ZIP64: the real values are in its own record
        locator = end - 20
        if locator < 0 or data[locator : locator + 4] != _ZIP64_LOCATOR:
            raise XdmRefused("not a readable zip archive: broken ZIP64 locator")
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        if record + 56 > len(data) or data[record : record + 4] != _ZIP64_END:
            raise XdmRefused("not a readable zip archive: broken ZIP64 end record")
        count, size = struct.unpack_from("<QQ", data, record + 32)
    if count > limits.max_entries:
        raise XdmRefused("too many entries")
    if size > limits.max_entries * _MAX_DIRECTORY_RECORD:
        raise XdmRefused("central directory larger than the limit")


def _check_entries(
    infos: Sequence[zipfile.ZipInfo], limits: XdmLimits
) -> dict[str, zipfile.ZipInfo]:
    if len(infos) > limits.max_entries:
        raise XdmRefused("too many entries")
    files: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        _check_name(name)
        if info.flag_bits & 0x1:
            raise XdmRefused("encrypted entry")
        if _is_special_file(info):
            raise XdmRefused("symbolic link or special file entry")
        if info.is_dir():
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise XdmRefused("unsupported compression method")
        if info.file_size > limits.max_entry_uncompressed:
            raise XdmRefused("entry larger than the limit")
        if info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise XdmRefused("compression ratio above the limit")
        total += info.file_size
        if total > limits.max_total_uncompressed:
            raise XdmRefused("total uncompressed size above the limit")
        key = name.upper()
        if key in files:
            raise XdmRefused("duplicate entry name")
        files[key] = info
    return files


def _check_name(name: str) -> None:
    if not name or len(name) > 255:
        raise XdmRefused("empty or overlong entry name")
    if "\\" in name or name.startswith("/") or ":" in name:
        raise XdmRefused("absolute path or backslash in an entry name")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise XdmRefused("control character in an entry name")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise XdmRefused("path traversal in an entry name")


def _is_special_file(info: zipfile.ZipInfo) -> bool:
    """A Unix entry that is a symbolic link, a device or a FIFO: only files and folders pass."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    return info.create_system == 3 and kind not in (0, stat.S_IFREG, stat.S_IFDIR)


def _is_metadata(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 3 and parts[0] == ROOT_DIR and parts[2] == METADATA_NAME


class _BoundedReader:
    """Reads entries without ever producing more bytes than declared and allowed."""

    def __init__(self, archive: zipfile.ZipFile, limits: XdmLimits) -> None:
        self.archive = archive
        self.limits = limits
        self.total = 0

    def read(self, info: zipfile.ZipInfo) -> bytes:
        budget = min(info.file_size, self.limits.max_entry_uncompressed)
        try:
            with self.archive.open(info) as stream:
                data = stream.read(budget + 1)
        except (
            zipfile.BadZipFile,
            EOFError,
            OSError,
            ValueError,
            zlib.error,
            NotImplementedError,
        ) as exc:
            raise XdmRefused(f"unreadable entry: {type(exc).__name__}") from None
        if len(data) > budget:
            raise XdmRefused("entry larger than declared")
        if len(data) < info.file_size:
            raise XdmRefused("entry shorter than declared")
        self.total += len(data)
        if self.total > self.limits.max_total_uncompressed:
            raise XdmRefused("total uncompressed size above the limit")
        return data


def _parse(data: bytes, what: str) -> etree._Element:
    try:
        return parse_xml(data)
    except UnsafeXml as exc:
        # libxml2's syntax messages may quote bytes of the document: keep only our own words.
        reason = "malformed XML" if str(exc).startswith("malformed XML") else str(exc)
        raise XdmRefused(f"{what}: {reason}") from None


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _elements(root: etree._Element, name: str) -> Iterable[etree._Element]:
    """Elements by local name, whatever namespace prefix the sender used."""
    return (element for element in root.iter() if _local(element) == name)


def _children(parent: etree._Element, name: str) -> list[etree._Element]:
    return [child for child in parent if _local(child) == name]


def _slot_values(entry: etree._Element, name: str) -> tuple[str, ...]:
    for slot in _children(entry, "Slot"):
        if slot.get("name") == name:
            return tuple(
                (value.text or "").strip()
                for values in _children(slot, "ValueList")
                for value in _children(values, "Value")
            )
    return ()


def _localized(entry: etree._Element, name: str = "Name") -> str:
    for holder in _children(entry, name):
        for localized in _children(holder, "LocalizedString"):
            return localized.get("value", "")
    return ""


def _classifications(entry: etree._Element, scheme: str) -> list[etree._Element]:
    return [
        c for c in _children(entry, "Classification") if c.get("classificationScheme") == scheme
    ]


def _code_of(classification: etree._Element) -> Code:
    systems = _slot_values(classification, "codingScheme")
    return Code(
        classification.get("nodeRepresentation", ""),
        systems[0] if systems else "",
        _localized(classification),
    )


def _first_code(entry: etree._Element, scheme: str) -> Code | None:
    found = _classifications(entry, scheme)
    return _code_of(found[0]) if found else None


def _external(entry: etree._Element, scheme: str) -> str:
    for identifier in _children(entry, "ExternalIdentifier"):
        if identifier.get("identificationScheme") == scheme:
            return identifier.get("value", "")
    return ""


def _package_ids(metadata: etree._Element, scheme: str) -> list[str]:
    return [
        value
        for package in _elements(metadata, "RegistryPackage")
        if (value := _external(package, scheme))
    ]


def _read_document(
    entry: etree._Element,
    subset: str,
    files: dict[str, zipfile.ZipInfo],
    reader: _BoundedReader,
    limits: XdmLimits,
) -> XdmDocument:
    uris = _slot_values(entry, "URI")
    if not uris or not uris[0]:
        raise XdmRefused("document entry without URI")
    uri = uris[0]
    _check_name(uri)
    info = files.get(f"{subset}/{uri}".upper()) or files.get(f"{ROOT_DIR}/{uri}".upper())
    if info is None:
        raise XdmRefused("document entry pointing to a missing file")
    data = reader.read(info)
    hashes, sizes = _slot_values(entry, "hash"), _slot_values(entry, "size")
    if hashes and hashes[0].lower() != hashlib.sha1(data, usedforsecurity=False).hexdigest():
        raise XdmRefused("document hash does not match its metadata")
    if sizes and sizes[0] != str(len(data)):
        raise XdmRefused("document size does not match its metadata")
    mime_type = entry.get("mimeType", "")
    cda: CdaHeader | None = None
    pdf: bytes | None = None
    if mime_type in (CDA_MIME_TYPE, "application/xml") or uri.upper().endswith(".XML"):
        root = _parse(data, "document")
        if _local(root) == "ClinicalDocument":
            try:
                cda = read_header(root)
                pdf = embedded_pdf(root, max_size=limits.max_entry_uncompressed)
            except ValueError:
                # The ValueError may quote a value of the header (an identifier): not kept.
                raise XdmRefused("CDA document: invalid header or body") from None
    authors = tuple(
        value
        for classification in _classifications(entry, DE_AUTHOR)
        for value in _slot_values(classification, "authorPerson")
    )
    creation = _slot_values(entry, "creationTime")
    language = _slot_values(entry, "languageCode")
    return XdmDocument(
        path=info.filename,
        data=data,
        mime_type=mime_type,
        unique_id=_external(entry, DE_UNIQUE_ID),
        title=_localized(entry),
        type_code=_first_code(entry, DE_TYPE_CODE),
        class_code=_first_code(entry, DE_CLASS_CODE),
        format_code=_first_code(entry, DE_FORMAT_CODE),
        creation_time=creation[0] if creation else "",
        authors=authors,
        patient_id=_external(entry, DE_PATIENT_ID),
        source_patient_info=_slot_values(entry, "sourcePatientInfo"),
        confidentiality=tuple(_code_of(c) for c in _classifications(entry, DE_CONFIDENTIALITY)),
        language=language[0] if language else "",
        cda=cda,
        pdf=pdf,
    )
