"""The PDF transcript of a chat thread: patient header, then each message with its files.

Output is deterministic for a given request and font files: the PDF creation date is the
request's effective time and the file identifier is derived from the content. With the DejaVu
TrueType fonts the PDF is PDF/A-1b (fonts embedded as per-document subsets, XMP, sRGB output
intent; see docs/cda.md for what that does and does not guarantee); without them it falls back
to the standard Helvetica fonts, Latin-1 only and not PDF/A.

Layout, line breaking and PDF writing are done here and in :mod:`mssbridge.cda.pdfwriter`
rather than by fpdf2, for speed (docs/cda.md, *Throughput*). The font files named by
:class:`TranscriptFonts` are read once per process (:func:`mssbridge.cda.fontsubset.load_font`);
the font lookup (:func:`find_fonts`) is meant to run once at start-up, not per document.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from fpdf.fonts import CORE_FONTS_CHARWIDTHS

from mssbridge.cda import pdfwriter
from mssbridge.cda.fontsubset import TrueTypeFont, load_font
from mssbridge.cda.model import INS_OIDS, DocumentRequest, Patient, Sex, TranscriptMessage

DEJAVU_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),  # Debian/Ubuntu fonts-dejavu-core
    Path("/usr/share/fonts/dejavu"),  # Fedora, Arch
)
FONT_FAMILY = "DejaVu"
CORE_FAMILY = "Helvetica"
PRODUCER = "mssbridge"

# Page geometry in millimetres (A4 portrait).
PAGE_WIDTH = 210.0
PAGE_HEIGHT = 297.0
LEFT = RIGHT = 18.0
TOP = 16.0
BOTTOM = 18.0  # text stops this far from the bottom edge; the footer sits below
BREAK_AT = PAGE_HEIGHT - BOTTOM
CELL_PADDING = 1.0  # horizontal padding inside the text width, on both sides
TEXT_WIDTH = PAGE_WIDTH - LEFT - RIGHT
FOOTER_TOP = PAGE_HEIGHT - 12
PT_PER_MM = 72 / 25.4
GREY_TEXT = 110 / 255
GREY_RULE = 120 / 255

REPLACEMENT = "\ufffd"  # drawn for characters the embedded font lacks

_SEX_LABELS = {Sex.MALE: "masculin", Sex.FEMALE: "féminin", Sex.UNKNOWN: "inconnu"}
_ID_LABELS = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR de test",
    "1.2.250.1.213.1.4.11": "INS-NIR de démonstration",
}
# Characters outside Latin-1 that French text often carries, for the core-font fallback.
_LATIN1_FALLBACK = str.maketrans(
    {
        "’": "'",
        "‘": "'",
        "“": '"',
        "”": '"',
        "–": "-",
        "—": "-",
        "…": "...",
        "œ": "oe",
        "Œ": "OE",
        "€": "EUR",
        "\u202f": " ",
        "\u2009": " ",
        "•": "-",
    }
)


@dataclass(frozen=True)
class TranscriptFonts:
    """Regular and bold TrueType files embedded in the transcript."""

    regular: Path
    bold: Path


def find_fonts(dirs: Sequence[Path] = DEJAVU_DIRS) -> TranscriptFonts | None:
    """Return the DejaVu Sans fonts of the first directory that has both, else None."""
    for directory in dirs:
        regular, bold = directory / "DejaVuSans.ttf", directory / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return TranscriptFonts(regular, bold)
    return None


def render_transcript(request: DocumentRequest, fonts: TranscriptFonts | None) -> bytes:
    """Return the PDF bytes of the transcript of ``request.messages``."""
    if fonts is None:
        faces = (
            _Face.core(CORE_FAMILY, "helvetica"),
            _Face.core(f"{CORE_FAMILY}-Bold", "helveticaB"),
        )
    else:
        faces = (_Face.truetype(load_font(fonts.regular)), _Face.truetype(load_font(fonts.bold)))
    layout = _Layout(request, *faces)
    layout.header_block()
    for message in request.messages:
        layout.message_block(message)
    layout.footers()
    return _write(request, layout)


# --- line breaking -------------------------------------------------------------------------


def wrap_lines(text: str, widths: Mapping[str, int], limit: float) -> list[str]:
    """Break ``text`` into lines at most ``limit`` wide, from per-character advance widths.

    ``widths`` must have every character of ``text`` but newlines. ``limit`` is in the same
    unit (for a PDF font: 1/1000 em, i.e. the available width × 1000 / font size). Newlines
    are line breaks, and an empty paragraph gives an empty line. Lines break at spaces: the
    spaces at a break are dropped, those inside a line or at the start of a paragraph are
    kept. A word longer than a line is cut between characters, starting on the current line
    (so ``• very-long-file-name`` keeps its bullet).
    """
    lines: list[str] = []
    width_of = widths.__getitem__
    space = widths.get(" ", 0)
    for paragraph in text.split("\n"):
        if sum(map(width_of, paragraph)) <= limit:  # most chat paragraphs fit on one line
            lines.append(paragraph.rstrip(" "))
            continue
        words = paragraph.split(" ")
        line, line_width = _cut(words[0], width_of, limit, lines, "", 0)
        line_open = True
        for word in words[1:]:
            width = sum(map(width_of, word))
            if line_open:
                if line_width + space + width <= limit:
                    line += " " + word
                    line_width += space + width
                    continue
                if width > limit:  # cut anyway: begin it on this line
                    line, line_width = _cut(
                        word, width_of, limit, lines, line + " ", line_width + space
                    )
                    continue
                lines.append(line.rstrip(" "))
                line_open = False
            if word:
                if width > limit:
                    line, line_width = _cut(word, width_of, limit, lines, "", 0)
                else:
                    line, line_width = word, width
                line_open = True
        if line_open:
            lines.append(line.rstrip(" "))
    return lines


def _cut(
    word: str,
    width_of: Callable[[str], int],
    limit: float,
    lines: list[str],
    line: str,
    line_width: int,
) -> tuple[str, int]:
    """Add ``word`` to ``line`` character by character, moving each full line to ``lines``."""
    for char in word:
        char_width = width_of(char)
        if line and line_width + char_width > limit:
            lines.append(line.rstrip(" "))
            line, line_width = "", 0
        line += char
        line_width += char_width
    return line, line_width


def fit_line(text: str, widths: Mapping[str, int], limit: float, ellipsis: str) -> str:
    """``text`` if it fits in ``limit``, else its longest start that fits, with ``ellipsis``."""
    width_of = widths.__getitem__
    if sum(map(width_of, text)) <= limit:
        return text
    room = limit - sum(map(width_of, ellipsis))
    used = 0
    for index, char in enumerate(text):
        used += width_of(char)
        if used > room:
            return text[:index].rstrip(" ") + ellipsis
    return text  # pragma: no cover - the whole text fitted after all


# --- text of the transcript ----------------------------------------------------------------


def format_time(moment: datetime) -> str:
    """``02/01/2025 10:30`` in the datetime's own offset (callers pass local time)."""
    return moment.strftime("%d/%m/%Y %H:%M")


def patient_line(patient: Patient) -> str:
    """One line naming the patient: NOM Prénoms, birth date, sex."""
    born = "né" if patient.sex is Sex.MALE else "née" if patient.sex is Sex.FEMALE else "né(e)"
    return (
        f"{patient.birth_family_name.upper()} {' '.join(patient.given_names)}, "
        f"{born} le {patient.birth_date.strftime('%d/%m/%Y')}, sexe {_SEX_LABELS[patient.sex]}"
    )


def patient_id_line(patient: Patient) -> str:
    label = _ID_LABELS.get(patient.id_root, f"identifiant local ({patient.id_root})")
    if patient.id_root in INS_OIDS:
        label += " qualifié" if patient.ins_qualified else " non qualifié"
    return f"{label} : {patient.patient_id}"


def footer_text(request: DocumentRequest) -> str:
    """The left part of every page's footer (the right part is ``Page x/y``)."""
    return (
        f"{request.patient.birth_family_name.upper()} {request.patient.first_given_name}"
        f" · {request.title} · version {request.version}"
    )


def _xmp(created: datetime, title: str, author: str) -> str:
    """XMP packet body for PDF/A-1b: every date is the document's creation time."""
    stamp = escape(created.astimezone(UTC).isoformat(timespec="seconds"))
    return "\n".join(
        (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">',
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">',
            '<rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">',
            "<pdfaid:part>1</pdfaid:part><pdfaid:conformance>B</pdfaid:conformance>",
            "</rdf:Description>",
            '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">',
            f"<xmp:CreatorTool>{PRODUCER}</xmp:CreatorTool>",
            f"<xmp:CreateDate>{stamp}</xmp:CreateDate>",
            f"<xmp:ModifyDate>{stamp}</xmp:ModifyDate>",
            f"<xmp:MetadataDate>{stamp}</xmp:MetadataDate>",
            "</rdf:Description>",
            '<rdf:Description rdf:about="" xmlns:pdf="http://ns.adobe.com/pdf/1.3/">',
            f"<pdf:Producer>{PRODUCER}</pdf:Producer>",
            "</rdf:Description>",
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">',
            f'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{escape(title)}</rdf:li>'
            "</rdf:Alt></dc:title>",
            f"<dc:creator><rdf:Seq><rdf:li>{escape(author)}</rdf:li></rdf:Seq></dc:creator>",
            "</rdf:Description>",
            "</rdf:RDF>",
            "</x:xmpmeta>",
        )
    )


# --- layout --------------------------------------------------------------------------------

REGULAR, BOLD = 0, 1
_CORE_CODES = {chr(code): f"{code:02X}" for code in range(256)}


@dataclass(frozen=True)
class _Face:
    """A font as layout sees it: widths in 1/1000 em and the text it can draw."""

    base_font: str
    widths: Mapping[str, int]
    font: TrueTypeFont | None  # None: a standard (core) font, Latin-1 only, not embedded

    @classmethod
    def truetype(cls, font: TrueTypeFont) -> _Face:
        return cls(font.postscript_name, font.char_widths, font)

    @classmethod
    def core(cls, base_font: str, key: str) -> _Face:
        return cls(base_font, CORE_FONTS_CHARWIDTHS[key], None)

    def clean(self, text: str) -> str:
        """Drop control characters (newlines kept, tabs as spaces); map what the font lacks."""
        text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\t", "    "))
        if not text.isprintable():
            text = "".join(
                char for char in text if char == "\n" or unicodedata.category(char)[0] != "C"
            )
        if self.font is None:
            return text.translate(_LATIN1_FALLBACK).encode("latin-1", "replace").decode("latin-1")
        widths = self.widths
        missing = set(text).difference(widths)
        missing.discard("\n")
        if missing:
            stand_in = REPLACEMENT if REPLACEMENT in widths else "?"
            text = "".join(stand_in if char in missing else char for char in text)
        return text

    def width_mm(self, text: str, size: float) -> float:
        return sum(map(self.widths.__getitem__, text)) * size / 1000 / PT_PER_MM


# face, size in pt, x and y of the baseline in pt, text
_Text = tuple[int, float, float, float, str]


@dataclass
class _Page:
    texts: list[_Text]
    rules: list[tuple[float, float, float]]  # x1, x2, y in pt
    footer: list[_Text]


class _Layout:
    """Places the transcript on A4 pages, top to bottom, breaking lines and pages."""

    def __init__(self, request: DocumentRequest, regular: _Face, bold: _Face) -> None:
        self.request = request
        self.faces = (regular, bold)
        self.pages: list[_Page] = []
        self.y = TOP
        self._new_page()

    def _new_page(self) -> None:
        self.pages.append(_Page([], [], []))
        self.y = TOP

    def paragraph(
        self, face: int, size: float, height: float, text: str, indent: float = 0.0
    ) -> None:
        """Lines of ``text`` ``height`` mm apart, wrapped to the text width minus ``indent``."""
        chosen = self.faces[face]
        limit = (TEXT_WIDTH - indent - 2 * CELL_PADDING) * PT_PER_MM * 1000 / size
        x = (LEFT + indent + CELL_PADDING) * PT_PER_MM
        for line in wrap_lines(chosen.clean(text), chosen.widths, limit):
            if self.y + height > BREAK_AT:
                self._new_page()
            if line:
                self.pages[-1].texts.append((face, size, x, self._baseline(height, size), line))
            self.y += height

    def _baseline(self, height: float, size: float) -> float:
        """Baseline of a line ``height`` mm high at the current y, text vertically centred."""
        return (PAGE_HEIGHT - self.y - height / 2) * PT_PER_MM - 0.3 * size

    def header_block(self) -> None:
        request = self.request
        self.paragraph(BOLD, 9, 4.5, request.custodian.name)
        self.y += 2
        self.paragraph(BOLD, 15, 7, request.title)
        self.y += 1
        count = len(request.messages)
        for line in (
            f"Patient : {patient_line(request.patient)}",
            patient_id_line(request.patient),
            f"Échanges du {format_time(request.service_start)}"
            f" au {format_time(request.service_stop)}"
            f" ({count} message{'s' if count > 1 else ''})",
            f"Document créé le {format_time(request.effective_time)}, version {request.version}",
        ):
            self.paragraph(REGULAR, 9.5, 5, line)
        self.y += 2
        y = (PAGE_HEIGHT - self.y) * PT_PER_MM
        self.pages[-1].rules.append((LEFT * PT_PER_MM, (LEFT + TEXT_WIDTH) * PT_PER_MM, y))
        self.y += 4

    def message_block(self, message: TranscriptMessage) -> None:
        if self.y + 14 > BREAK_AT:  # keep a heading with the start of its text
            self._new_page()
        self.paragraph(BOLD, 9.5, 5, f"{message.author_name} — {format_time(message.time)}")
        if message.text.strip():
            self.paragraph(REGULAR, 10, 5, message.text)
        if message.files:
            self.paragraph(REGULAR, 9, 4.5, "Pièces jointes :")
            for name in message.files:
                self.paragraph(REGULAR, 9, 4.5, f"• {name}", indent=4)
        self.y += 3

    def footers(self) -> None:
        """``NOM Prénom · title · version`` on the left and ``Page x/y`` on the right."""
        face, size, height = self.faces[REGULAR], 7.5, 4
        self.y = FOOTER_TOP
        baseline = self._baseline(height, size)
        total = len(self.pages)
        left = face.clean(footer_text(self.request))
        ellipsis = "…" if face.font is not None and "…" in face.widths else "..."
        for number, page in enumerate(self.pages, start=1):
            label = f"Page {number}/{total}"
            label_width = face.width_mm(label, size)
            room = (TEXT_WIDTH - 2 * CELL_PADDING - label_width - 4) * PT_PER_MM * 1000 / size
            text = fit_line(left, face.widths, room, ellipsis)
            label_x = (LEFT + TEXT_WIDTH - CELL_PADDING - label_width) * PT_PER_MM
            page.footer.append((REGULAR, size, (LEFT + CELL_PADDING) * PT_PER_MM, baseline, text))
            page.footer.append((REGULAR, size, label_x, baseline, label))


# --- PDF output ----------------------------------------------------------------------------


def _write(request: DocumentRequest, layout: _Layout) -> bytes:
    objects = pdfwriter.PdfObjects()
    faces = layout.faces
    used: tuple[set[str], set[str]] = (set(), set())
    for page in layout.pages:
        for index, _, _, _, text in page.texts:
            used[index].update(text)
        for index, _, _, _, text in page.footer:
            used[index].update(text)
    codes: list[Mapping[str, str]] = []
    font_refs: list[int] = []
    embedded = all(face.font is not None for face in faces)
    for face, chars in zip(faces, used, strict=True):
        if face.font is None:
            codes.append(_CORE_CODES)
            font_refs.append(pdfwriter.add_core_font(objects, face.base_font))
        else:
            subset = face.font.subset(chars)
            codes.append({char: f"{gid:04X}" for char, gid in subset.gid.items()})
            font_refs.append(pdfwriter.add_truetype(objects, face.font, subset))

    pages_ref = objects.reserve()
    resources = objects.add(
        f"<</Font <</F1 {font_refs[0]} 0 R /F2 {font_refs[1]} 0 R>> /ProcSet [/PDF /Text]>>"
    )
    width, height = PAGE_WIDTH * PT_PER_MM, PAGE_HEIGHT * PT_PER_MM
    kids = []
    for page in layout.pages:
        content = _content(page, codes)
        contents = objects.add("<</Filter /FlateDecode>>", pdfwriter.flate(content))
        kids.append(
            objects.add(
                f"<</Type /Page /Parent {pages_ref} 0 R /MediaBox [0 0 {width:.2f} {height:.2f}]"
                f" /Resources {resources} 0 R /Contents {contents} 0 R>>"
            )
        )
    objects.put(
        pages_ref,
        f"<</Type /Pages /Kids [{' '.join(f'{kid} 0 R' for kid in kids)}] /Count {len(kids)}>>",
    )

    title = faces[REGULAR].clean(request.title).replace("\n", " ")
    author = faces[REGULAR].clean(request.custodian.name).replace("\n", " ")
    date = pdfwriter.pdf_date(request.effective_time)
    info = objects.add(
        f"<</Title {pdfwriter.text_string(title)} /Author {pdfwriter.text_string(author)}"
        f" /Creator ({PRODUCER}) /Producer ({PRODUCER}) /CreationDate ({date})"
        f" /ModDate ({date})>>"
    )
    catalog = (
        f"<</Type /Catalog /Pages {pages_ref} 0 R /Lang {pdfwriter.text_string(request.language)}"
    )
    if embedded:
        metadata = pdfwriter.add_metadata(objects, _xmp(request.effective_time, title, author))
        intent = pdfwriter.add_output_intent(objects)
        catalog += f" /Metadata {metadata} 0 R /OutputIntents [{intent}]"
    root = objects.add(catalog + ">>")
    seed = request.effective_time.isoformat().encode("ascii")
    return objects.output(root, info, seed)


def _content(page: _Page, codes: Sequence[Mapping[str, str]]) -> bytes:
    """The page's content stream: text lines, rules, then the footer in grey."""
    parts = []
    for face, size, x, y, text in page.texts:
        hex_text = "".join(map(codes[face].__getitem__, text))
        parts.append(f"BT /F{face + 1} {size:g} Tf {x:.2f} {y:.2f} Td <{hex_text}> Tj ET")
    for x1, x2, y in page.rules:
        parts.append(f"{GREY_RULE:.3f} G 0.57 w {x1:.2f} {y:.2f} m {x2:.2f} {y:.2f} l S")
    parts.append(f"{GREY_TEXT:.3f} g")
    for face, size, x, y, text in page.footer:
        hex_text = "".join(map(codes[face].__getitem__, text))
        parts.append(f"BT /F{face + 1} {size:g} Tf {x:.2f} {y:.2f} Td <{hex_text}> Tj ET")
    parts.append("0 g\n")
    return "\n".join(parts).encode("ascii")
