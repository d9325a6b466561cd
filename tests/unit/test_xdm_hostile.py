"""Hostile received packages: directory bombs, lying ZIP64 records, text that fakes lines."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
from dataclasses import replace
from typing import Any

import pytest
from test_cda_document import STAND_IN_PDF

from mssbridge.cda import xdm
from mssbridge.cda.document import build_cda
from mssbridge.cda.sample import sample_request, sample_submission
from mssbridge.cda.summary import MAX_FIELD, clean, summarize
from mssbridge.cda.xdm import XdmLimits, XdmRefused, build_xdm, read_xdm

REQUEST = sample_request(3)


def many_entries(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"F{index:05d}", b"")
    return buffer.getvalue()


def with_declared_count(data: bytes, count: int) -> bytes:
    end = data.rfind(b"PK\x05\x06")
    return data[: end + 8] + struct.pack("<HH", count, count) + data[end + 12 :]


def refused(data: bytes, limits: XdmLimits | None = None) -> str:
    with pytest.raises(XdmRefused) as caught:
        read_xdm(data, limits)
    return caught.value.detail


def test_too_many_entries_are_refused_before_zipfile_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_zipfile(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("zipfile must not read this directory")

    data = many_entries(300)
    monkeypatch.setattr(xdm.zipfile, "ZipFile", no_zipfile)
    assert refused(data) == "too many entries"


def test_a_directory_lying_about_its_count_is_bounded_by_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = with_declared_count(many_entries(5000), 1)
    monkeypatch.setattr(xdm.zipfile, "ZipFile", None)  # never reached
    assert refused(data, XdmLimits(max_entries=100)) == "central directory larger than the limit"


def test_a_small_lie_is_still_caught_on_the_entry_list() -> None:
    assert refused(with_declared_count(many_entries(300), 1)) == "too many entries"


def test_zip64_markers_without_their_records_are_refused() -> None:
    data = with_declared_count(many_entries(3), 0xFFFF)
    assert refused(data) == "not a readable zip archive: broken ZIP64 locator"


def test_no_end_of_directory() -> None:
    assert refused(b"PK\x03\x04" + b"\0" * 100).startswith("not a readable zip archive")


def test_honest_archives_still_read() -> None:
    package = build_xdm([build_cda(REQUEST, STAND_IN_PDF)], sample_submission(REQUEST))
    assert len(read_xdm(package).documents) == 1


def test_sender_text_cannot_fake_summary_lines() -> None:
    title = "Compte rendu\nPatient : QUELQU'UN d'autre\u202e\u2028fin"
    request = replace(REQUEST, title=title)
    package = build_xdm([build_cda(request, STAND_IN_PDF)], sample_submission(request))
    text = summarize(read_xdm(package)).text
    assert "Compte rendu Patient : QUELQU'UN d'autre fin" in text
    assert [line for line in text.splitlines() if line.startswith("Patient :")] == [
        "Patient : TEST-ÉCHANGE Jeanne Hélène, né(e) le 01/01/1980, sexe F, "
        "INS de test 280017505600150"
    ]


def test_long_fields_are_capped() -> None:
    assert len(clean("x" * 10_000)) == MAX_FIELD
    assert clean(" a\t\r\n b\x00c ") == "a b c"


def _with_document(cda: bytes) -> bytes:
    """The sample package with its CDA swapped, metadata hash and size kept consistent."""
    good = build_cda(REQUEST, STAND_IN_PDF)
    package = build_xdm([good], sample_submission(REQUEST))
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries["IHE_XDM/SUBSET01/DOC0001.XML"] = cda
    entries["IHE_XDM/SUBSET01/METADATA.XML"] = (
        entries["IHE_XDM/SUBSET01/METADATA.XML"]
        .replace(hashlib.sha1(good).hexdigest().encode(), hashlib.sha1(cda).hexdigest().encode())
        .replace(f">{len(good)}<".encode(), f">{len(cda)}<".encode())
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_refusal_details_quote_nothing_of_the_document() -> None:
    good = build_cda(REQUEST, STAND_IN_PDF)
    bad_id = good.replace(b'extension="280017505600150"', b'extension="2800175 05600150"')
    assert refused(_with_document(bad_id)) == "CDA document: invalid header or body"
    latin1 = good.replace("Hélène".encode(), "Hélène".encode("latin-1"))
    detail = refused(_with_document(latin1))
    assert detail == "document: malformed XML"
