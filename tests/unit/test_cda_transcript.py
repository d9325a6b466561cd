"""The PDF transcript: deterministic, fonts embedded, PDF/A-1b markers, robust to odd text."""

from __future__ import annotations

import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mssbridge.cda.model import TranscriptMessage
from mssbridge.cda.sample import sample_request
from mssbridge.cda.transcript import find_fonts, render_transcript

FONTS = find_fonts()


def test_same_request_same_bytes() -> None:
    request = sample_request(8)
    assert render_transcript(request, FONTS) == render_transcript(request, FONTS)


def test_creation_date_comes_from_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    request = sample_request(2)
    later = replace(request, effective_time=request.effective_time + timedelta(days=1))
    first = render_transcript(request, FONTS)
    assert first != render_transcript(later, FONTS)
    if FONTS is not None:
        assert b"<xmp:ModifyDate>2025-01-02T17:00:00+00:00</xmp:ModifyDate>" in first


def test_output_does_not_depend_on_the_wall_clock() -> None:
    import fpdf.output

    request = sample_request(2)
    first = render_transcript(request, FONTS)

    class _Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime(2040, 1, 1, tzinfo=UTC)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fpdf.output, "datetime", _Later)
        assert render_transcript(request, FONTS) == first


def test_fonts_are_embedded_with_pdfa_markers() -> None:
    assert FONTS is not None, "DejaVu fonts missing: apt-get install fonts-dejavu-core"
    pdf = render_transcript(sample_request(3), FONTS)
    assert pdf.startswith(b"%PDF-1.4")
    assert b"/FontFile2" in pdf  # TrueType embedded
    assert b"/OutputIntents" in pdf and b"GTS_PDFA1" in pdf
    assert b"pdfaid:part" in _inflate_all(pdf) or b"pdfaid:part" in pdf


def test_fallback_without_fonts_still_renders_french() -> None:
    pdf = render_transcript(sample_request(3), None)
    assert pdf.startswith(b"%PDF-")
    assert b"/FontFile2" not in pdf


@pytest.mark.parametrize("fonts", [FONTS, None], ids=["dejavu", "core"])
def test_odd_text_does_not_break_the_layout(fonts: object) -> None:
    request = sample_request(1)
    odd = TranscriptMessage(
        author_name="Zoé « Œil » ’quote’",
        time=request.messages[0].time,
        text="x" * 600 + "\n\tcontrôle\x00\x07 emoji 🙂 €, ½, 中文\r\nfin",
        files=("a" * 300 + ".pdf", "compte-rendu d’examen.pdf"),
    )
    request = replace(request, messages=(odd,) * 30)
    pdf = render_transcript(request, fonts)  # type: ignore[arg-type]
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")


def _inflate_all(pdf: bytes) -> bytes:
    out = []
    for chunk in pdf.split(b"stream")[1:]:
        body = chunk.split(b"endstream", 1)[0].strip(b"\r\n")
        try:
            out.append(zlib.decompress(body))
        except zlib.error:
            out.append(body)
    return b"".join(out)
