"""MSSanté mail parts of a document-bearing mail, and the ``mssbridge cda example`` command."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mssbridge.cda.mail_parts import (
    HEADER_CODE_CDA,
    HEADER_INS,
    HEADER_NIL,
    ascii_part,
    document_subject,
    mss_headers,
    nil_header,
    pdf_filename,
    request_mail_parts,
)
from mssbridge.cda.sample import PATIENT, sample_request
from mssbridge.cda.xdm import read_xdm
from mssbridge.cli import app


def test_subject() -> None:
    assert (
        document_subject(["CR de télémédecine"], PATIENT)
        == "XDM/1.0/DDM+CR de télémédecine TEST-ÉCHANGE Jeanne 01/01/1980"
    )
    assert document_subject(["a", "b"], PATIENT, with_birth_date=False) == (
        "XDM/1.0/DDM+2 documents TEST-ÉCHANGE Jeanne"
    )


def test_pdf_filename_is_ascii() -> None:
    name = pdf_filename(PATIENT.birth_date, "CR d'imagerie médicale", PATIENT)
    assert name == "19800101_CR_d_imagerie_medicale_TEST_ECHANGE_Jeanne.pdf"
    assert name.isascii()
    assert ascii_part("Œdème / ../../x") == "OEdeme_x"


def test_headers() -> None:
    headers = dict(mss_headers(["11488-4", "11488-4", "PRESC-BIO"], [PATIENT], "NIL-1"))
    assert headers == {HEADER_CODE_CDA: "11488-4,PRESC-BIO", HEADER_INS: "O", HEADER_NIL: "NIL-1"}
    unqualified = replace(PATIENT, ins_qualified=False)
    assert dict(mss_headers(["x"], [unqualified], "NIL-1"))[HEADER_INS] == "N"
    with pytest.raises(ValueError, match="X-MSS-NIL"):
        nil_header("bad\r\nInjected: yes")


def test_request_mail_parts() -> None:
    subject, filename, headers = request_mail_parts(sample_request(2), "NIL-1")
    assert subject.startswith("XDM/1.0/DDM+CR ou fiche de consultation ou de visite TEST-")
    assert filename == "20250102_CR_consultation_TEST_ECHANGE_Jeanne.pdf"
    assert dict(headers)[HEADER_CODE_CDA] == "11488-4"


def test_cli_example(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["cda", "example", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    mail = message_from_bytes((tmp_path / "exemple.eml").read_bytes(), policy=policy.SMTP)
    assert isinstance(mail, EmailMessage)
    assert mail[HEADER_INS] == "O" and mail[HEADER_CODE_CDA] == "11488-4"
    assert str(mail["Subject"]).startswith("XDM/1.0/DDM+")
    files = {part.get_filename(): part.get_content() for part in mail.iter_attachments()}
    assert set(files) == {"IHE_XDM.ZIP", "20250102_CR_consultation_TEST_ECHANGE_Jeanne.pdf"}
    package = read_xdm(files["IHE_XDM.ZIP"])
    assert package.documents[0].pdf == files["20250102_CR_consultation_TEST_ECHANGE_Jeanne.pdf"]
    assert (tmp_path / "IHE_XDM.ZIP").read_bytes() == files["IHE_XDM.ZIP"]
    with zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"])) as archive:
        assert "IHE_XDM/SUBSET01/METADATA.XML" in archive.namelist()
