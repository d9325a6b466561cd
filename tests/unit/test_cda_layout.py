"""Line breaking, pages, font subsets and the PDF structure of the transcript writer."""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from hypothesis import given
from hypothesis import strategies as st

from mssbridge.cda.fontsubset import load_font
from mssbridge.cda.sample import sample_request
from mssbridge.cda.transcript import (
    BOTTOM,
    PT_PER_MM,
    find_fonts,
    fit_line,
    render_transcript,
    wrap_lines,
)

FONTS = find_fonts()
# .ci/setup installs fonts-dejavu-core, poppler-utils and qpdf: a missing one fails, not skips.
needs_fonts = pytest.mark.usefixtures("dejavu_fonts")


@pytest.fixture
def dejavu_fonts() -> None:
    assert FONTS is not None, "fonts-dejavu-core is not installed (bash .ci/setup installs it)"


def _require(tool: str) -> None:
    assert shutil.which(tool), f"{tool} is missing (bash .ci/setup installs it)"


UNIT = {char: 1 for char in "abcdefghijklmnopqrstuvwxyzéèàœ€…• "}
UNIT["W"] = 3  # a wide character


# --- wrap_lines ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "lines"),
    [
        ("", 10, [""]),
        ("abc", 10, ["abc"]),
        ("a\n\nb", 10, ["a", "", "b"]),
        ("a\n", 10, ["a", ""]),
        ("aaaaa bbbb", 10, ["aaaaa bbbb"]),  # exactly the limit
        ("aaaaa bbbbb", 10, ["aaaaa", "bbbbb"]),  # one over
        ("hello world foo bar", 11, ["hello world", "foo bar"]),
        ("aaaa     bbbb", 6, ["aaaa", "bbbb"]),  # spaces at the break are dropped
        ("  ab cd", 10, ["  ab cd"]),  # indentation of a paragraph is kept
        ("ab  cd", 10, ["ab  cd"]),  # so are double spaces inside a line
        ("ab   ", 10, ["ab"]),  # trailing spaces are not
        ("x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5]),  # word longer than a line
        ("ab " + "x" * 12 + " cd", 10, ["ab xxxxxxx", "xxxxx cd"]),  # begun on the line
        ("• " + "a" * 15, 10, ["• aaaaaaaa", "aaaaaaa"]),  # the bullet stays with its name
        ("abcdefghi " + "x" * 12, 10, ["abcdefghi", "x" * 10, "xx"]),  # no room: next line
        ("aWa", 4, ["aW", "a"]),  # widths, not character counts
        ("W", 2, ["W"]),  # a character wider than the line still gets drawn, alone
        ("éèà œ€", 4, ["éèà", "œ€"]),
    ],
)
def test_wrap_lines(text: str, limit: int, lines: list[str]) -> None:
    assert wrap_lines(text, UNIT, limit) == lines


@given(
    st.text(alphabet="ab éW\n", max_size=120),
    st.integers(min_value=3, max_value=30),
)
def test_wrapped_lines_fit_and_keep_every_character(text: str, limit: int) -> None:
    lines = wrap_lines(text, UNIT, limit)
    for line in lines:
        assert sum(UNIT[char] for char in line) <= limit or len(line) == 1
        assert not line.endswith(" ")
    assert "".join(lines).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    assert len(lines) >= text.count("\n") + 1


def test_fit_line_cuts_with_an_ellipsis() -> None:
    assert fit_line("abc def", UNIT, 10, "…") == "abc def"
    assert fit_line("abcdef ghijkl", UNIT, 8, "…") == "abcdef…"
    assert sum(UNIT[c] for c in fit_line("x" * 40, UNIT, 8, "…")) <= 8


@needs_fonts
def test_real_widths_with_accents() -> None:
    assert FONTS is not None
    font = load_font(FONTS.regular)
    widths = font.char_widths
    assert widths["é"] == widths["e"] and widths["W"] > widths["i"]  # DejaVu Sans metrics
    text = "Hémoglobine à 9,8 g/dl ; œdème des membres inférieurs, 38 °C, coût 12 €. " * 6
    limit = 170 * PT_PER_MM * 1000 / 10  # 170 mm at 10 pt
    lines = wrap_lines(text, widths, limit)
    assert len(lines) > 1
    assert all(sum(widths[char] for char in line) <= limit for line in lines)
    assert " ".join(lines) == text.rstrip()


# --- the PDF -------------------------------------------------------------------------------


def _to_unicode(pdf: bytes) -> dict[int, dict[str, str]]:
    """Font object number -> (hex code -> text), from each Type0 font's ToUnicode CMap."""
    objects = _objects(pdf)
    maps = {}
    for number, body in objects.items():
        match = re.search(rb"/Subtype /Type0 .*/ToUnicode (\d+) 0 R", body)
        if match:
            cmap = _stream(objects[int(match.group(1))]).decode("ascii")
            maps[number] = {
                code: bytes.fromhex(text).decode("utf-16-be")
                for code, text in re.findall(r"<([0-9A-F]{4})> <([0-9A-F]+)>", cmap)
            }
    return maps


def _objects(pdf: bytes) -> dict[int, bytes]:
    return {
        int(m.group(1)): m.group(2)
        for m in re.finditer(rb"(\d+) 0 obj\n(.*?)\nendobj\n", pdf, re.S)
    }


def _stream(body: bytes) -> bytes:
    length = int(re.search(rb"/Length (\d+)", body).group(1))  # type: ignore[union-attr]
    data = body.split(b"stream\n", 1)[1][:length]
    return zlib.decompress(data) if b"/FlateDecode" in body.split(b"stream\n", 1)[0] else data


def _page_lines(pdf: bytes) -> list[list[tuple[float, str]]]:
    """Per page, (baseline y in pt, text) of every line drawn, decoded with ToUnicode."""
    objects = _objects(pdf)
    maps = _to_unicode(pdf)
    pages = []
    for body in objects.values():
        if not body.startswith(b"<</Type /Page "):
            continue
        resources = objects[int(re.search(rb"/Resources (\d+)", body).group(1))]  # type: ignore[union-attr]
        fonts = {
            name.decode(): int(number)
            for name, number in re.findall(rb"/(F\d) (\d+) 0 R", resources)
        }
        content = _stream(objects[int(re.search(rb"/Contents (\d+)", body).group(1))])  # type: ignore[union-attr]
        lines = []
        for font, y, hex_text in re.findall(
            r"BT /(F\d) [\d.]+ Tf [\d.]+ ([\d.]+) Td <([0-9A-F]*)> Tj ET", content.decode()
        ):
            table = maps.get(fonts[font])
            if table is None:  # core font: WinAnsi bytes
                text = bytes.fromhex(hex_text).decode("cp1252")
            else:
                text = "".join(table[hex_text[i : i + 4]] for i in range(0, len(hex_text), 4))
            lines.append((float(y), text))
        pages.append(lines)
    return pages


@pytest.mark.parametrize("fonts", [FONTS, None], ids=["dejavu", "core"])
def test_text_reads_back_with_page_numbers(fonts: object) -> None:
    request = sample_request(60)
    pdf = render_transcript(request, fonts)  # type: ignore[arg-type]
    pages = _page_lines(pdf)
    assert len(pages) > 1
    text = "\n".join(line for page in pages for _, line in page)
    for message in request.messages:
        assert message.author_name in text
    assert "Pièces jointes :" in text and "photo-plaie.jpg" in text
    assert "TEST-ÉCHANGE Jeanne Hélène, née le 01/01/1980" in text
    for number, page in enumerate(pages, start=1):
        assert ("Page", f"{number}/{len(pages)}") in [tuple(t.split(" ", 1)) for _, t in page]
        body = [y for y, t in page if not t.startswith(("Page ", "TEST-ÉCHANGE Jeanne ·"))]
        assert min(body) > BOTTOM * PT_PER_MM  # nothing drawn over the bottom margin


@needs_fonts
def test_long_message_breaks_across_pages_and_words() -> None:
    request = sample_request(1)
    long_word = "x" * 400
    words = " ".join(f"mot{index}" for index in range(1500))
    message = replace(request.messages[0], text=f"début {long_word}\n\n{words}\nfin")
    pdf = render_transcript(replace(request, messages=(message,)), FONTS)
    pages = _page_lines(pdf)
    assert len(pages) >= 3
    for page in pages[:-1]:  # full pages: text down to the bottom margin, not into it
        body = [y for y, t in page if not t.startswith(("Page ", "TEST-ÉCHANGE Jeanne ·"))]
        assert BOTTOM * PT_PER_MM < min(body) < (BOTTOM + 10) * PT_PER_MM
    lines = [t for page in pages for _, t in page]
    joined = "".join(lines)
    assert long_word in joined and "mot0" in joined and "mot1499" in joined
    assert all(f"mot{index}" in joined for index in range(0, 1500, 37))
    assert "fin" in lines
    xs = [t for t in lines if set(t) == {"x"}]
    assert len(xs) >= 3  # the long word was cut over several lines


@needs_fonts
def test_characters_the_font_lacks_become_a_replacement() -> None:
    request = sample_request(1)
    message = replace(request.messages[0], text="avant 中文 🙂 après, β-bloquant ≥ 2 µg")
    pdf = render_transcript(replace(request, messages=(message,)), FONTS)
    text = "\n".join(t for page in _page_lines(pdf) for _, t in page)
    assert "avant \ufffd\ufffd \ufffd après, β-bloquant ≥ 2 µg" in text


@needs_fonts
def test_embedded_subsets_are_valid_fonts_with_matching_widths() -> None:
    pdf = render_transcript(sample_request(5), FONTS)
    objects = _objects(pdf)
    fonts = [body for body in objects.values() if b"/Subtype /CIDFontType2" in body]
    assert len(fonts) == 2
    for cid_font in fonts:
        widths = [int(w) for w in re.search(rb"/W \[0 \[([\d ]+)\]\]", cid_font).group(1).split()]  # type: ignore[union-attr]
        descriptor = objects[int(re.search(rb"/FontDescriptor (\d+)", cid_font).group(1))]  # type: ignore[union-attr]
        font_file = _stream(objects[int(re.search(rb"/FontFile2 (\d+)", descriptor).group(1))])  # type: ignore[union-attr]
        cid_set = _stream(objects[int(re.search(rb"/CIDSet (\d+)", descriptor).group(1))])  # type: ignore[union-attr]
        assert b"/CIDToGIDMap /Identity" in cid_font
        font = TTFont(io.BytesIO(font_file), checkChecksums=2)  # every table's checksum
        padded = font_file + b"\0" * (-len(font_file) % 4)
        words = struct.unpack(f">{len(padded) // 4}I", padded)
        assert sum(words) & 0xFFFFFFFF == 0xB1B0AFBA  # head.checkSumAdjustment
        order = font.getGlyphOrder()
        assert order[0] == ".notdef" and len(order) == len(widths)
        scale = 1000 / font["head"].unitsPerEm
        assert [round(font["hmtx"][name][0] * scale) for name in order] == widths
        bits = "".join(f"{byte:08b}" for byte in cid_set)
        assert bits.rstrip("0") == "1" * len(order)  # every glyph of the subset
        glyf = font["glyf"]
        for name in order:  # composites (accented letters) point inside the subset
            glyph = glyf[name]
            if glyph.isComposite():
                assert all(component.glyphName in order for component in glyph.components)


@pytest.mark.parametrize("fonts", [FONTS, None], ids=["dejavu", "core"])
def test_cross_reference_table_points_at_each_object(fonts: object) -> None:
    pdf = render_transcript(sample_request(12), fonts)  # type: ignore[arg-type]
    start = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf[start:].startswith(b"xref\n0 ")
    entries = re.findall(rb"(\d{10}) 00000 n \n", pdf[start:])
    for number, offset in enumerate(entries, start=1):
        assert pdf[int(offset) :].startswith(b"%d 0 obj\n" % number)
    for body in _objects(pdf).values():
        if b"stream\n" in body:
            length = int(re.search(rb"/Length (\d+)", body).group(1))  # type: ignore[union-attr]
            assert body.split(b"stream\n", 1)[1][length:] == b"\nendstream"
    assert re.search(rb"/ID \[<[0-9a-f]{32}> <[0-9a-f]{32}>\]", pdf)


@needs_fonts
def test_info_and_xmp_say_the_same() -> None:
    pdf = render_transcript(sample_request(2), FONTS)
    assert b"/Title <FEFF00C9006300680061006E00670065007300200" in pdf  # "Échanges …"
    assert '<rdf:li xml:lang="x-default">Échanges à propos de la patiente</rdf:li>'.encode() in pdf
    assert b"/CreationDate (D:20250102170000+00'00')" in pdf
    assert b"<xmp:CreateDate>2025-01-02T17:00:00+00:00</xmp:CreateDate>" in pdf
    assert b"/Author (Centre hospitalier d'Exemple)" in pdf


@needs_fonts
def test_same_bytes_in_another_process() -> None:
    """Nothing depends on hash order (sets of characters) or on the process."""
    script = (
        "import sys\n"
        "from mssbridge.cda.sample import sample_request\n"
        "from mssbridge.cda.transcript import find_fonts, render_transcript\n"
        "sys.stdout.buffer.write(render_transcript(sample_request(7), find_fonts()))\n"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, check=True
        )
        outputs.append(run.stdout)
    assert outputs[0] == outputs[1] == render_transcript(sample_request(7), FONTS)


@pytest.mark.parametrize("fonts", [FONTS, None], ids=["dejavu", "core"])
def test_pdftotext_reads_the_transcript(fonts: object, tmp_path: Path) -> None:
    _require("pdftotext")
    request = sample_request(5)
    odd = replace(request.messages[0], text="Œdème, coût 12 €, l’avis « urgent »")
    request = replace(request, messages=(*request.messages, odd))
    path = tmp_path / "t.pdf"
    path.write_bytes(render_transcript(request, fonts))  # type: ignore[arg-type]
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    ).stdout.decode()
    assert "Claire Infirmière" in text and "leucocytes à 12 000/mm³" in text
    expected = (
        "Œdème, coût 12 €, l’avis « urgent »" if fonts else "OEdème, coût 12 EUR, l'avis « urgent »"
    )
    assert expected in text
    assert "Page 1/1" in text


@needs_fonts
@pytest.mark.parametrize("count", [23, 37, 61])
def test_a_heading_never_ends_a_page(count: int) -> None:
    pages = _page_lines(render_transcript(sample_request(count), FONTS))
    heading = re.compile(r" — \d\d/\d\d/\d{4} \d\d:\d\d$")
    for page in pages:
        body = [t for _, t in page if not t.startswith(("Page ", "TEST-ÉCHANGE Jeanne ·"))]
        assert not heading.search(body[-1])


@pytest.mark.parametrize("fonts", [FONTS, None], ids=["dejavu", "core"])
def test_qpdf_finds_no_structure_error(fonts: object, tmp_path: Path) -> None:
    _require("qpdf")
    path = tmp_path / "t.pdf"
    path.write_bytes(render_transcript(sample_request(40), fonts))  # type: ignore[arg-type]
    check = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No syntax or stream encoding errors found" in check.stdout
