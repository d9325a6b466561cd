"""IHE_XDM.ZIP: layout, golden METADATA.XML, round trip, and refusal of hostile archives."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import replace

import pytest
from test_cda_document import STAND_IN_PDF, check_golden

from mssbridge.cda.document import build_cda
from mssbridge.cda.sample import sample_request, sample_submission
from mssbridge.cda.transcript import find_fonts, render_transcript
from mssbridge.cda.xdm import (
    PACKAGE_REFUSED,
    XdmLimits,
    XdmRefused,
    build_metadata,
    build_xdm,
    read_xdm,
)
from mssbridge.errors import MalformedInput

REQUEST = sample_request(5)
CDA = build_cda(REQUEST, STAND_IN_PDF)
SUBMISSION = sample_submission(REQUEST)


def package() -> bytes:
    return build_xdm([CDA], SUBMISSION)


def test_layout() -> None:
    with zipfile.ZipFile(io.BytesIO(package())) as archive:
        assert archive.namelist() == [
            "README.TXT",
            "INDEX.HTM",
            "IHE_XDM/SUBSET01/METADATA.XML",
            "IHE_XDM/SUBSET01/DOC0001.XML",
        ]
        assert archive.read("IHE_XDM/SUBSET01/DOC0001.XML") == CDA
        assert b"IHE_XDM/SUBSET01/DOC0001.XML" in archive.read("INDEX.HTM")


def test_build_is_deterministic() -> None:
    assert package() == package()


def test_golden_metadata() -> None:
    with zipfile.ZipFile(io.BytesIO(package())) as archive:
        check_golden("golden-metadata.xml", archive.read("IHE_XDM/SUBSET01/METADATA.XML"))


def test_round_trip_with_a_real_pdf() -> None:
    pdf = render_transcript(REQUEST, find_fonts())
    cda = build_cda(REQUEST, pdf)
    result = read_xdm(build_xdm([cda], SUBMISSION))
    assert result.subsets == ("IHE_XDM/SUBSET01",)
    assert result.patient_ids == ("280017505600150^^^&1.2.250.1.213.1.4.10&ISO^NH",)
    assert result.submission_unique_ids == (SUBMISSION.unique_id,)
    (document,) = result.documents
    assert document.data == cda
    assert document.pdf == pdf
    assert document.title == REQUEST.title
    assert document.type_code == REQUEST.document_type.type_code
    assert document.class_code is not None and document.class_code.code == "10"
    assert document.format_code is not None
    assert document.format_code.code == "urn:ihe:iti:xds-sd:pdf:2008"
    assert document.creation_time == "20250102170000"
    assert document.unique_id == REQUEST.document_id.xds_unique_id
    assert document.patient_id == result.patient_ids[0]
    assert document.authors[0].startswith("899999999999^MÉDECIN^Pierre^")
    assert "PID-8|F" in document.source_patient_info
    assert document.language == "fr-FR"
    assert document.cda is not None and document.cda.patient_family == "TEST-ÉCHANGE"


def test_several_documents_one_patient() -> None:
    second = build_cda(sample_request(5, version=2), STAND_IN_PDF)
    result = read_xdm(build_xdm([CDA, second], SUBMISSION))
    assert [d.path for d in result.documents] == [
        "IHE_XDM/SUBSET01/DOC0001.XML",
        "IHE_XDM/SUBSET01/DOC0002.XML",
    ]


def test_one_patient_per_package() -> None:
    from mssbridge.cda.model import Patient, Sex

    other = Patient(
        "IPP-9", "1.2.250.1.999.9", "AUTRE", ("Paul",), REQUEST.patient.birth_date, Sex.MALE
    )
    second = build_cda(replace(REQUEST, patient=other), STAND_IN_PDF)
    with pytest.raises(ValueError, match="one patient"):
        build_xdm([CDA, second], SUBMISSION)


def rezip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in entries.items():
            archive.writestr(
                zipfile.ZipInfo(name, (2025, 1, 1, 0, 0, 0)), data, compress_type=method
            )
    return buffer.getvalue()


def entries_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_ans_subset_name_is_found() -> None:
    entries = {
        name.replace("SUBSET01", "SS000001"): data for name, data in entries_of(package()).items()
    }
    result = read_xdm(rezip(entries))
    assert result.subsets == ("IHE_XDM/SS000001",)
    assert result.documents[0].path == "IHE_XDM/SS000001/DOC0001.XML"


def test_uri_relative_to_ihe_xdm_is_accepted() -> None:
    entries = entries_of(package())
    metadata = entries["IHE_XDM/SUBSET01/METADATA.XML"]
    entries["IHE_XDM/SUBSET01/METADATA.XML"] = metadata.replace(
        b"<rim:Value>DOC0001.XML</rim:Value>", b"<rim:Value>SUBSET01/DOC0001.XML</rim:Value>"
    )
    assert read_xdm(rezip(entries)).documents[0].data == CDA


def metadata_with(replacement: bytes) -> bytes:
    entries = entries_of(package())
    entries["IHE_XDM/SUBSET01/METADATA.XML"] = replacement
    return rezip(entries)


def hostile_cases() -> dict[str, tuple[bytes, XdmLimits]]:
    default = XdmLimits()
    good = entries_of(package())
    metadata = good["IHE_XDM/SUBSET01/METADATA.XML"]
    bomb = rezip({**good, "IHE_XDM/SUBSET01/PAD.BIN": b"\0" * (5 * 1024 * 1024)})
    many = rezip({**good, **{f"IHE_XDM/SUBSET01/F{i:04d}.TXT": b"x" for i in range(300)}})
    cda_xxe = CDA.replace(
        b"<?xml version='1.0' encoding='UTF-8'?>",
        b"<?xml version='1.0' encoding='UTF-8'?>"
        b'<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    )
    xxe_entries = dict(good)
    xxe_entries["IHE_XDM/SUBSET01/DOC0001.XML"] = cda_xxe
    xxe_entries["IHE_XDM/SUBSET01/METADATA.XML"] = metadata.replace(
        hashlib.sha1(CDA).hexdigest().encode(), hashlib.sha1(cda_xxe).hexdigest().encode()
    ).replace(f">{len(CDA)}<".encode(), f">{len(cda_xxe)}<".encode())
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(8)
        )
        + b"]><l>&i;</l>"
    )
    return {
        "zip-bomb-ratio": (bomb, default),
        "zip-bomb-total": (package(), replace(default, max_total_uncompressed=1000)),
        "too-many-entries": (many, default),
        "archive-too-large": (package(), replace(default, max_archive_bytes=100)),
        "traversal-dotdot": (rezip({**good, "IHE_XDM/../../etc/passwd": b"x"}), default),
        "traversal-absolute": (rezip({**good, "/etc/passwd": b"x"}), default),
        "traversal-backslash": (rezip({**good, "IHE_XDM\\..\\x": b"x"}), default),
        "drive-letter": (rezip({**good, "C:/x": b"x"}), default),
        "traversal-in-uri": (
            metadata_with(metadata.replace(b">DOC0001.XML<", b">../../README.TXT<")),
            default,
        ),
        "xxe-in-metadata": (
            metadata_with(
                b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b"<a>&x;</a>"
            ),
            default,
        ),
        "billion-laughs-metadata": (metadata_with(laughs), default),
        "xxe-in-cda": (rezip(xxe_entries), default),
        "hash-mismatch": (
            metadata_with(metadata.replace(hashlib.sha1(CDA).hexdigest().encode(), b"0" * 40)),
            default,
        ),
        "missing-document": (
            metadata_with(metadata.replace(b">DOC0001.XML<", b">DOC0009.XML<")),
            default,
        ),
        "no-metadata": (rezip({"README.TXT": b"hello"}), default),
        "not-a-zip": (b"PK\x03\x04 not really", default),
        "duplicate-names": (rezip({**good, "ihe_xdm/subset01/doc0001.xml": b"x"}), default),
    }


@pytest.mark.parametrize("case", sorted(hostile_cases()))
def test_hostile_packages_are_refused(case: str) -> None:
    data, limits = hostile_cases()[case]
    with pytest.raises(XdmRefused) as caught:
        read_xdm(data, limits)
    assert isinstance(caught.value, MalformedInput)
    assert caught.value.user_message == PACKAGE_REFUSED
    assert "passwd" not in str(caught.value)


def test_metadata_needs_entries() -> None:
    with pytest.raises(ValueError, match="one patient"):
        build_metadata([], SUBMISSION)
