"""CDA R2 level 1 documents: golden header, versions, INS traits, reading back, hostile XML.

Golden files: tests/data/cda/*.xml, compared canonicalised (C14N 2.0, whitespace-only text
stripped). They embed a fixed stand-in PDF so they do not change with fpdf2. Regenerate after an
intended change with ``MSSBRIDGE_REGEN_GOLDEN=1 pytest tests/unit/test_cda_document.py
tests/unit/test_cda_xdm.py`` and review the diff.
"""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from mssbridge.cda.document import (
    V3,
    UnsafeXml,
    build_cda,
    embedded_pdf,
    hl7_to_utc,
    parse_xml,
    read_header,
)
from mssbridge.cda.model import Author, InstanceId, Patient, Sex
from mssbridge.cda.sample import NURSE, sample_request

DATA = Path(__file__).resolve().parents[1] / "data" / "cda"
STAND_IN_PDF = b"%PDF-1.4\n% stand-in body for golden tests\n%%EOF\n"
NS = {"v3": V3}


def canonical(data: bytes) -> str:
    return etree.canonicalize(data.decode("utf-8"), strip_text=True)


def check_golden(name: str, data: bytes) -> None:
    path = DATA / name
    if os.environ.get("MSSBRIDGE_REGEN_GOLDEN") == "1":
        path.write_bytes(data)
    assert path.is_file(), f"missing golden file {path}; see this module's docstring"
    assert canonical(data) == canonical(path.read_bytes())


def test_golden_first_version() -> None:
    check_golden("golden-cda-v1.xml", build_cda(sample_request(5), STAND_IN_PDF))


def test_golden_replacing_version() -> None:
    check_golden("golden-cda-v2.xml", build_cda(sample_request(5, version=2), STAND_IN_PDF))


def test_new_version_replaces_the_previous_id() -> None:
    first, second = sample_request(3), sample_request(3, version=2)
    root = parse_xml(build_cda(second, STAND_IN_PDF))
    header = read_header(root)
    assert header.set_id == first.set_id
    assert header.version == 2
    assert header.document_id != first.document_id
    assert header.replaces == first.document_id
    assert len(root.findall("v3:relatedDocument", NS)) == 1
    assert read_header(parse_xml(build_cda(first, STAND_IN_PDF))).replaces is None


def test_ins_traits() -> None:
    root = parse_xml(build_cda(sample_request(2), STAND_IN_PDF))
    name = root.find("v3:recordTarget/v3:patientRole/v3:patient/v3:name", NS)
    assert name is not None
    assert [(e.tag.split("}")[1], e.get("qualifier"), e.text) for e in name] == [
        ("family", "BR", "TEST-ÉCHANGE"),
        ("given", None, "Jeanne Hélène"),
        ("given", "BR", "Jeanne"),
    ]
    county = root.find(".//v3:birthplace/v3:place/v3:addr/v3:county", NS)
    assert county is not None and county.text == "75056"


def test_local_patient_without_ins() -> None:
    patient = Patient("IPP-77", "1.2.250.1.999.7", "DURAND", ("Luc",), PATIENT_BIRTH, Sex.UNKNOWN)
    request = replace(sample_request(2), patient=patient)
    root = parse_xml(build_cda(request, STAND_IN_PDF))
    header = read_header(root)
    assert header.patient_id == InstanceId("1.2.250.1.999.7", "IPP-77")
    assert header.patient_gender == "UN"
    assert root.find(".//v3:birthplace", NS) is None


PATIENT_BIRTH = sample_request(1).patient.birth_date


def test_header_reads_back() -> None:
    request = sample_request(4)
    header = read_header(parse_xml(build_cda(request, STAND_IN_PDF)))
    assert header.type_code == request.document_type.type_code
    assert header.title == request.title
    assert header.effective_time == "20250102180000+0100"
    assert header.language == "fr-FR"
    assert header.confidentiality.code == "N"
    assert [a.id for a in header.authors] == [a.id for a in request.authors]
    assert header.custodian_id == request.custodian.id
    assert header.media_type == "application/pdf"
    assert header.template_ids == (
        "2.16.840.1.113883.2.8.2.1",
        "1.2.250.1.213.1.1.1.1",
        "1.3.6.1.4.1.19376.1.2.20",
    )


def test_pdf_round_trip_and_size_limit() -> None:
    pdf = STAND_IN_PDF * 50
    root = parse_xml(build_cda(sample_request(1), pdf))
    assert embedded_pdf(root, max_size=10_000) == pdf
    with pytest.raises(ValueError, match="too large"):
        embedded_pdf(root, max_size=100)


def test_body_must_be_a_pdf() -> None:
    with pytest.raises(ValueError, match="PDF"):
        build_cda(sample_request(1), b"hello")


def test_text_is_escaped_not_interpreted() -> None:
    author = replace(NURSE, family_name="<b>&amp;</b>", given_name="]]>")
    request = replace(sample_request(1), title="Titre <script>&", authors=(author,))
    root = parse_xml(build_cda(request, STAND_IN_PDF))
    assert root.findtext("v3:title", namespaces=NS) == "Titre <script>&"


def test_hl7_times_to_xds_utc() -> None:
    assert hl7_to_utc("20250102103000+0100") == "20250102093000"
    assert hl7_to_utc("20250102003000+0100") == "20250101233000"
    assert hl7_to_utc("19800101") == "19800101"


HOSTILE = {
    "xxe": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
    "billion-laughs": (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(8)
        )
        + b"]><l>&i;</l>"
    ),
    "external-dtd": b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://example.org/a.dtd"><a/>',
    "parameter-entity": (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY % p SYSTEM "http://example.org/p">%p;]><a/>'
    ),
    "malformed": b"<a><b></a>",
    "deep": b"<a>" * 400 + b"</a>" * 400,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_xml_is_refused(name: str) -> None:
    with pytest.raises(UnsafeXml):
        parse_xml(HOSTILE[name])


def test_author_without_names_uses_display_name() -> None:
    request = replace(sample_request(1), authors=(Author("Équipe de nuit", rpps="12345678901"),))
    header = read_header(parse_xml(build_cda(request, STAND_IN_PDF)))
    assert header.authors[0].family == "Équipe de nuit"


def test_base64_body_is_wrapped() -> None:
    data = build_cda(sample_request(1), STAND_IN_PDF * 40)
    text = parse_xml(data).findtext("v3:component/v3:nonXMLBody/v3:text", namespaces=NS) or ""
    assert max(len(line) for line in text.splitlines()) <= 76
    assert base64.b64decode("".join(text.split())) == STAND_IN_PDF * 40
