"""CDA R2 level 1 documents (CI-SIS structuration minimale, nonXMLBody with a PDF): build, read.

:func:`build_cda` writes the header in the order the HL7 XSD fixes, with the three
document-level templateIds of a non-structured document (HL7 France, CI-SIS, IHE XDS-SD).
:func:`read_header` gives back what the XDM metadata and an inbound reader need from any CDA,
ours or a peer's; :func:`parse_xml` is the hardened parser used for everything received.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree
from lxml.builder import ElementMaker

from mssbridge.cda.model import (
    INS_OIDS,
    Author,
    Code,
    DocumentRequest,
    InstanceId,
    Sex,
)

V3 = "urn:hl7-org:v3"
CDA_TYPE_ID = ("2.16.840.1.113883.1.3", "POCD_HD000040")
TEMPLATE_IDS = (
    "2.16.840.1.113883.2.8.2.1",  # HL7 France CDA header
    "1.2.250.1.213.1.1.1.1",  # CI-SIS structuration minimale
    "1.3.6.1.4.1.19376.1.2.20",  # IHE XDS-SD: the body is a scanned / non-structured document
)
GENDER_OID = "2.16.840.1.113883.5.1"
_GENDER = {
    Sex.MALE: ("M", "Masculin"),
    Sex.FEMALE: ("F", "Féminin"),
    Sex.UNKNOWN: ("UN", "Inconnu"),
}
PDF_MEDIA_TYPE = "application/pdf"
MAX_XML_DEPTH = 256

_E = ElementMaker(namespace=V3, nsmap={None: V3})
_NS = {"v3": V3}


class UnsafeXml(ValueError):
    """The XML is malformed or uses a feature refused for received data (DOCTYPE, entities)."""


def hl7_time(moment: datetime) -> str:
    """HL7 TS with seconds and offset: ``20250102103000+0100``."""
    return moment.strftime("%Y%m%d%H%M%S%z")


def build_cda(request: DocumentRequest, pdf: bytes) -> bytes:
    """Return the CDA document (UTF-8 XML bytes) embedding ``pdf`` as its nonXMLBody."""
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("the body must be a PDF")
    created = hl7_time(request.effective_time)
    root = _E.ClinicalDocument(
        _E.realmCode(code="FR"),
        _E.typeId(root=CDA_TYPE_ID[0], extension=CDA_TYPE_ID[1]),
        *(_E.templateId(root=oid) for oid in TEMPLATE_IDS),
        _ii("id", request.document_id),
        _code("code", request.document_type.type_code),
        _E.title(request.title),
        _E.effectiveTime(value=created),
        _code("confidentialityCode", request.confidentiality),
        _E.languageCode(code=request.language),
        _ii("setId", request.set_id),
        _E.versionNumber(value=str(request.version)),
        _record_target(request),
        *(_author(author, request) for author in request.authors),
        _E.custodian(
            _E.assignedCustodian(
                _E.representedCustodianOrganization(
                    _ii("id", request.custodian.id), _E.name(request.custodian.name)
                )
            )
        ),
        _E.legalAuthenticator(
            _E.time(value=created),
            _E.signatureCode(code="S"),
            _E.assignedEntity(
                _ii("id", request.legal_authenticator.id),
                _person(request.legal_authenticator),
                _organisation(request),
            ),
        ),
        _documentation_of(request),
    )
    if request.replaces is not None:
        root.append(
            _E.relatedDocument(_E.parentDocument(_ii("id", request.replaces)), typeCode="RPLC")
        )
    root.append(_component_of(request))
    encoded = base64.encodebytes(pdf).decode("ascii")
    root.append(
        _E.component(
            _E.nonXMLBody(_E.text(encoded, mediaType=PDF_MEDIA_TYPE, representation="B64"))
        )
    )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _ii(tag: str, value: InstanceId) -> etree._Element:
    element = _E(tag, root=value.root)
    if value.extension is not None:
        element.set("extension", value.extension)
    return element


def _code(tag: str, value: Code) -> etree._Element:
    return _E(tag, code=value.code, codeSystem=value.system, displayName=value.display)


def _record_target(request: DocumentRequest) -> etree._Element:
    patient = request.patient
    gender, gender_label = _GENDER[patient.sex]
    name = _E.name(
        _E.family(patient.birth_family_name, qualifier="BR"),
        _E.given(" ".join(patient.given_names)),
        _E.given(patient.first_given_name, qualifier="BR"),
    )
    person = _E.patient(
        name,
        _E.administrativeGenderCode(code=gender, codeSystem=GENDER_OID, displayName=gender_label),
        _E.birthTime(value=patient.birth_date.strftime("%Y%m%d")),
    )
    if patient.birthplace_cog is not None:
        person.append(_E.birthplace(_E.place(_E.addr(_E.county(patient.birthplace_cog)))))
    return _E.recordTarget(
        _E.patientRole(_ii("id", InstanceId(patient.id_root, patient.patient_id)), person)
    )


def _person(author: Author) -> etree._Element:
    name = _E.name()
    if author.given_name:
        name.append(_E.given(author.given_name))
    name.append(_E.family(author.family))
    return _E.assignedPerson(name)


def _organisation(request: DocumentRequest) -> etree._Element:
    org = request.custodian
    return _E.representedOrganization(_ii("id", org.id), _E.name(org.name))


def _author(author: Author, request: DocumentRequest) -> etree._Element:
    return _E.author(
        _E.time(value=hl7_time(request.effective_time)),
        _E.assignedAuthor(_ii("id", author.id), _person(author), _organisation(request)),
    )


def _documentation_of(request: DocumentRequest) -> etree._Element:
    performer = request.legal_authenticator
    return _E.documentationOf(
        _E.serviceEvent(
            _E.effectiveTime(
                _E.low(value=hl7_time(request.service_start)),
                _E.high(value=hl7_time(request.service_stop)),
            ),
            _E.performer(
                _E.assignedEntity(
                    _ii("id", performer.id),
                    _person(performer),
                    _E.representedOrganization(
                        _ii("id", request.custodian.id),
                        _E.name(request.custodian.name),
                        _code("standardIndustryClassCode", request.practice_setting),
                    ),
                ),
                typeCode="PRF",
            ),
        )
    )


def _component_of(request: DocumentRequest) -> etree._Element:
    encounter = _E.encompassingEncounter()
    if request.encounter_code is not None:
        encounter.append(_code("code", request.encounter_code))
    period = _E.effectiveTime(_E.low(value=hl7_time(request.service_start)))
    if request.service_stop != request.service_start:  # one message: low only (dtr1-6-IVL_TS)
        period.append(_E.high(value=hl7_time(request.service_stop)))
    encounter.append(period)
    encounter.append(_E.location(_E.healthCareFacility(_code("code", request.facility_type))))
    return _E.componentOf(encounter)


# --------------------------------------------------------------------------- reading


def parse_xml(data: bytes, *, max_depth: int = MAX_XML_DEPTH) -> etree._Element:
    """Parse untrusted XML: no DTD, no entity expansion, no network, no DOCTYPE at all.

    Raises :class:`UnsafeXml` on malformed input, any DOCTYPE (entity declarations, billion
    laughs and external entities all need one) or nesting deeper than ``max_depth``.
    """
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        tree = etree.fromstring(data, parser).getroottree()
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"malformed XML: {exc.msg}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise UnsafeXml("XML with a DOCTYPE is refused")
    root = tree.getroot()
    for element in root.iter():
        if not isinstance(element.tag, str):  # an entity reference left unexpanded
            raise UnsafeXml("XML with entity references is refused")
    if _depth(root) > max_depth:
        raise UnsafeXml("XML nested too deeply")
    return root


def _depth(root: etree._Element) -> int:
    deepest = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in element)
    return deepest


@dataclass(frozen=True)
class PersonRef:
    """A person named in a CDA header (author or legal authenticator)."""

    id: InstanceId | None
    family: str
    given: str
    time: str = ""


@dataclass(frozen=True)
class CdaHeader:
    """The CDA header fields the XDS metadata is derived from, as strings found in the XML."""

    document_id: InstanceId
    set_id: InstanceId | None
    version: int | None
    type_code: Code
    title: str
    effective_time: str
    confidentiality: Code
    language: str
    patient_id: InstanceId
    patient_family: str
    patient_given: str
    patient_birth_time: str
    patient_gender: str
    authors: tuple[PersonRef, ...]
    legal_authenticator: PersonRef | None
    custodian_id: InstanceId | None
    custodian_name: str
    service_start: str
    service_stop: str
    practice_setting: Code | None
    facility_type: Code | None
    replaces: InstanceId | None
    media_type: str
    template_ids: tuple[str, ...]


def read_header(root: etree._Element) -> CdaHeader:
    """Extract the header of a parsed ClinicalDocument; ValueError if a required part is missing."""
    if root.tag != f"{{{V3}}}ClinicalDocument":
        raise ValueError("not a CDA ClinicalDocument")
    patient_role = _one(root, "v3:recordTarget/v3:patientRole")
    patient = _one(patient_role, "v3:patient")
    name = patient.find("v3:name", _NS)
    version = _attr(root, "v3:versionNumber", "value")
    body_text = root.find("v3:component/v3:nonXMLBody/v3:text", _NS)
    legal = root.find("v3:legalAuthenticator", _NS)
    service = root.find("v3:documentationOf/v3:serviceEvent/v3:effectiveTime", _NS)
    return CdaHeader(
        document_id=_read_ii(_one(root, "v3:id")),
        set_id=_optional_ii(root.find("v3:setId", _NS)),
        version=int(version) if version.isdigit() else None,
        type_code=_read_code(_one(root, "v3:code")),
        title=_text(root.find("v3:title", _NS)),
        effective_time=_attr(root, "v3:effectiveTime", "value"),
        confidentiality=_read_code(_one(root, "v3:confidentialityCode")),
        language=_attr(root, "v3:languageCode", "code"),
        patient_id=_patient_id(patient_role),
        patient_family=_family(name),
        patient_given=_given(name),
        patient_birth_time=_attr(patient, "v3:birthTime", "value"),
        patient_gender=_attr(patient, "v3:administrativeGenderCode", "code"),
        authors=tuple(
            _person_ref(author.find("v3:assignedAuthor", _NS), _attr(author, "v3:time", "value"))
            for author in root.findall("v3:author", _NS)
        ),
        legal_authenticator=(
            _person_ref(legal.find("v3:assignedEntity", _NS), _attr(legal, "v3:time", "value"))
            if legal is not None
            else None
        ),
        custodian_id=_optional_ii(
            root.find(
                "v3:custodian/v3:assignedCustodian/v3:representedCustodianOrganization/v3:id", _NS
            )
        ),
        custodian_name=_text(
            root.find(
                "v3:custodian/v3:assignedCustodian/v3:representedCustodianOrganization/v3:name",
                _NS,
            )
        ),
        service_start=_attr(service, "v3:low", "value") if service is not None else "",
        service_stop=_attr(service, "v3:high", "value") if service is not None else "",
        practice_setting=_optional_code(
            root.find(
                "v3:documentationOf/v3:serviceEvent/v3:performer/v3:assignedEntity/"
                "v3:representedOrganization/v3:standardIndustryClassCode",
                _NS,
            )
        ),
        facility_type=_optional_code(
            root.find(
                "v3:componentOf/v3:encompassingEncounter/v3:location/v3:healthCareFacility/v3:code",
                _NS,
            )
        ),
        replaces=_optional_ii(
            root.find("v3:relatedDocument[@typeCode='RPLC']/v3:parentDocument/v3:id", _NS)
        ),
        media_type=body_text.get("mediaType", "text/plain") if body_text is not None else "",
        template_ids=tuple(t.get("root", "") for t in root.findall("v3:templateId", _NS)),
    )


def embedded_pdf(root: etree._Element, *, max_size: int) -> bytes | None:
    """Return the PDF of a level-1 document's nonXMLBody, None when the body is not a PDF."""
    text = root.find("v3:component/v3:nonXMLBody/v3:text", _NS)
    if text is None or text.get("mediaType") != PDF_MEDIA_TYPE:
        return None
    if text.get("representation") != "B64":
        return None
    payload = "".join((text.text or "").split())
    if len(payload) // 4 * 3 > max_size:
        raise ValueError("embedded PDF too large")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ValueError("embedded PDF is not valid base64") from None
    return data if data.startswith(b"%PDF-") else None


def hl7_to_utc(value: str) -> str:
    """HL7 TS (any precision, optional offset) → XDS ``YYYYMMDDhhmmss`` in UTC when it has an
    offset, else the digits as given (XDS allows truncated precision)."""
    digits, sign, offset = value, "", ""
    for mark in ("+", "-"):
        if mark in value:
            digits, offset = value.split(mark, 1)
            sign = mark
    digits = digits.split(".", 1)[0]
    if not sign or len(digits) < 12:
        return digits
    moment = datetime.strptime(digits[:14].ljust(14, "0") + sign + offset, "%Y%m%d%H%M%S%z")
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def _one(element: etree._Element, path: str) -> etree._Element:
    found = element.find(path, _NS)
    if found is None:
        raise ValueError(f"CDA header has no {path.replace('v3:', '')}")
    return found


def _attr(element: etree._Element | None, path: str, name: str) -> str:
    if element is None:
        return ""
    found = element.find(path, _NS)
    return found.get(name, "") if found is not None else ""


def _text(element: etree._Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _read_ii(element: etree._Element) -> InstanceId:
    return InstanceId(element.get("root", ""), element.get("extension"))


def _optional_ii(element: etree._Element | None) -> InstanceId | None:
    if element is None or element.get("root") is None:
        return None
    try:
        return _read_ii(element)
    except ValueError:
        return None


def _read_code(element: etree._Element) -> Code:
    return Code(
        element.get("code", ""), element.get("codeSystem", ""), element.get("displayName", "")
    )


def _optional_code(element: etree._Element | None) -> Code | None:
    return _read_code(element) if element is not None else None


def _patient_id(patient_role: etree._Element) -> InstanceId:
    ids = patient_role.findall("v3:id", _NS)
    if not ids:
        raise ValueError("CDA header has no patient id")
    for element in ids:  # prefer the INS when several ids are given
        if element.get("root") in INS_OIDS:
            return _read_ii(element)
    return _read_ii(ids[0])


def _family(name: etree._Element | None) -> str:
    if name is None:
        return ""
    families = name.findall("v3:family", _NS)
    for family in families:
        if family.get("qualifier") == "BR":
            return _text(family)
    return _text(families[0]) if families else ""


def _given(name: etree._Element | None) -> str:
    if name is None:
        return ""
    givens = name.findall("v3:given", _NS)
    for given in givens:
        if given.get("qualifier") is None:
            return _text(given)
    return _text(givens[0]) if givens else ""


def _person_ref(entity: etree._Element | None, time: str) -> PersonRef:
    if entity is None:
        return PersonRef(None, "", "", time)
    name = entity.find("v3:assignedPerson/v3:name", _NS)
    return PersonRef(_optional_ii(entity.find("v3:id", _NS)), _family(name), _given(name), time)
