"""Received IHE_XDM.ZIP: the room summary, the PDFs to post, and how refusals read in a room."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import pytest
from test_cda_document import STAND_IN_PDF
from test_cda_xdm import entries_of, hostile_cases, rezip

from mssbridge.cda.document import build_cda
from mssbridge.cda.sample import sample_request, sample_submission
from mssbridge.cda.summary import display_time, refusal_text, summarize
from mssbridge.cda.xdm import KIND_OTHER, REASON_OTHER, XdmRefused, build_xdm, read_xdm
from mssbridge.flows.documents_in import packages_of, read_package
from mssbridge.model import Attachment, InboundMail

REQUEST = sample_request(5)
CDA = build_cda(REQUEST, STAND_IN_PDF)
PACKAGE = build_xdm([CDA], sample_submission(REQUEST))

GOLDEN_ONE = """\
📄 Document de santé reçu (IHE_XDM.ZIP)

Échanges à propos de la patiente
Type : CR ou fiche de consultation ou de visite (11488-4)
Auteur : Pierre MÉDECIN, Claire INFIRMIÈRE
Date : 02/01/2025 18:00
Patient : TEST-ÉCHANGE Jeanne Hélène, né(e) le 01/01/1980, sexe F, INS de test 280017505600150"""


def test_summary_of_one_document_is_golden() -> None:
    summary = summarize(read_xdm(PACKAGE))
    assert summary.text == GOLDEN_ONE
    [pdf] = summary.files
    assert pdf.data == STAND_IN_PDF
    assert pdf.filename == "01_CR_ou_fiche_de_consultation_ou_de_visite.pdf"


def test_two_documents_are_numbered_and_a_replacement_is_said() -> None:
    second = build_cda(sample_request(5, version=2), STAND_IN_PDF)
    summary = summarize(read_xdm(build_xdm([CDA, second], sample_submission(REQUEST))))
    assert summary.text.startswith("📄 2 documents de santé reçus (IHE_XDM.ZIP)\n\n1. ")
    assert "\n\n2. Échanges à propos de la patiente\n" in summary.text
    assert summary.text.endswith("Version 2 : remplace une version précédente du document.")
    assert [f.filename[:3] for f in summary.files] == ["01_", "02_"]


def pdf_document_package() -> bytes:
    """A package whose only document is a PDF (no CDA): metadata alone describes it."""
    entries = entries_of(PACKAGE)
    pdf = b"%PDF-1.4\n% a plain PDF\n%%EOF\n"
    metadata = entries.pop("IHE_XDM/SUBSET01/METADATA.XML")
    del entries["IHE_XDM/SUBSET01/DOC0001.XML"]
    entries["IHE_XDM/SUBSET01/DOC0001.PDF"] = pdf
    entries["IHE_XDM/SUBSET01/METADATA.XML"] = (
        metadata.replace(b">DOC0001.XML<", b">DOC0001.PDF<")
        .replace(b'mimeType="text/xml"', b'mimeType="application/pdf"')
        .replace(hashlib.sha1(CDA).hexdigest().encode(), hashlib.sha1(pdf).hexdigest().encode())
        .replace(f">{len(CDA)}<".encode(), f">{len(pdf)}<".encode())
    )
    return rezip(entries)


def test_a_pdf_document_is_described_from_its_metadata_and_posted() -> None:
    summary = summarize(read_xdm(pdf_document_package()))
    assert "Auteur : Pierre MÉDECIN, Claire INFIRMIÈRE" in summary.text
    assert "Patient : TEST-ÉCHANGE Jeanne Hélène, né(e) le 01/01/1980, sexe F, " in summary.text
    assert "INS de test 280017505600150" in summary.text
    assert "Format : application/pdf" in summary.text
    [pdf] = summary.files
    assert pdf.data.startswith(b"%PDF-")


def test_mixed_patients_are_flagged() -> None:
    other = replace(REQUEST, patient=replace(REQUEST.patient, patient_id="180017505600103"))
    other_cda = build_cda(other, STAND_IN_PDF)
    with pytest.raises(ValueError, match="one patient"):
        build_xdm([CDA, other_cda], sample_submission(REQUEST))  # our builder refuses it ...
    # ... a peer's may not: the documents of two packages under one submission set.
    first = read_xdm(PACKAGE)
    foreign = read_xdm(build_xdm([other_cda], sample_submission(other)))
    merged = replace(first, documents=(*first.documents, *foreign.documents))
    assert "ne désignent pas tous le même patient" in summarize(merged).text
    assert "ne désignent pas" not in summarize(first).text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("20250102180000+0100", "02/01/2025 18:00"),
        ("202501021800", "02/01/2025 18:00"),
        ("20250102", "02/01/2025"),
        ("202501", "01/2025"),
        ("2025", "2025"),
        ("", ""),
        ("soon", ""),
    ],
)
def test_times_are_shown_as_given(value: str, shown: str) -> None:
    assert display_time(value) == shown


@pytest.mark.parametrize("case", sorted(hostile_cases()))
def test_every_refusal_names_what_is_wrong_generically(case: str) -> None:
    data, limits = hostile_cases()[case]
    result = read_package(data, limits)
    assert isinstance(result, XdmRefused)
    assert result.reason != REASON_OTHER and result.kind != KIND_OTHER, result.detail
    notice = refusal_text(result)
    assert result.reason in notice and result.detail not in notice
    assert "passwd" not in notice


def test_reports_and_other_zips_are_not_read_as_packages() -> None:
    zip_file = Attachment("ihe_xdm.zip", "application/zip", PACKAGE)
    other = Attachment("photos.zip", "application/zip", b"PK")
    mail = InboundMail(None, "a@b.fr", "", "s", None, attachments=(zip_file, other))
    assert packages_of(mail) == [zip_file]
    report = InboundMail(
        None, "a@b.fr", "", "s", None, attachments=(zip_file,), auto_submitted=True
    )
    assert packages_of(report) == []


def test_replacement_metadata_carries_an_rplc_association() -> None:
    v1 = build_xdm([CDA], sample_submission(REQUEST))
    v2_request = sample_request(5, version=2)
    v2 = build_xdm([build_cda(v2_request, STAND_IN_PDF)], sample_submission(v2_request))
    rplc = b'associationType="urn:ihe:iti:2007:AssociationType:RPLC"'
    assert rplc not in entries_of(v1)["IHE_XDM/SUBSET01/METADATA.XML"]
    metadata = entries_of(v2)["IHE_XDM/SUBSET01/METADATA.XML"]
    assert metadata.count(rplc) == 1
    # The target is the entry we published for version 1.
    old_entry = re.search(rb'<rim:ExtrinsicObject[^>]* id="([^"]+)"', entries_of(v1)[
        "IHE_XDM/SUBSET01/METADATA.XML"
    ])  # fmt: skip
    assert old_entry is not None
    assert b'targetObject="' + old_entry.group(1) + b'"' in metadata
    assert read_xdm(v2).documents[0].cda is not None
