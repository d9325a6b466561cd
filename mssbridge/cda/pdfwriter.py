"""A small PDF writer for the transcript: text pages, fonts, and the PDF/A-1b parts.

It writes only what the transcript draws (text, one rule, grey levels) and nothing else, which
is why it is fast. With an embedded TrueType subset (:mod:`mssbridge.cda.fontsubset`) the file
has what PDF/A-1b (ISO 19005-1) asks of such a document:

- PDF 1.4 header with a binary comment, a classic cross-reference table, a trailer ``/ID``;
- every font embedded: ``Type0`` / ``CIDFontType2`` with ``Identity-H``, ``CIDToGIDMap
  /Identity``, the ``W`` widths, a ``ToUnicode`` CMap (text extraction) and, for PDF/A-1, a
  ``CIDSet`` naming every glyph of the subset;
- an XMP metadata stream (not compressed, with ``pdfaid:part`` 1 and ``conformance`` B) and an
  Info dictionary that says the same things;
- an ``OutputIntent`` ``GTS_PDFA1`` with the sRGB ICC profile that fpdf2 ships. The profile is
  read from the installed fpdf2 package at run time, not copied here; its licence (ICC) allows
  embedding it unchanged;
- no encryption, transparency, JavaScript or actions.

Without TrueType fonts the standard Helvetica fonts are used (not embedded, not PDF/A).
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources

from mssbridge.cda.fontsubset import FontSubset, TrueTypeFont

HEADER = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
SRGB_PROFILE = ("fpdf.data.color_profiles", "sRGB2014.icc")
_TO_UNICODE_HEAD = (
    "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
    "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
    "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
    "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
)
_TO_UNICODE_TAIL = "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"


class PdfObjects:
    """Numbered objects, written out with their cross-reference table."""

    def __init__(self) -> None:
        self._bodies: list[bytes | None] = [None]

    def reserve(self) -> int:
        self._bodies.append(None)
        return len(self._bodies) - 1

    def put(self, number: int, dictionary: str, stream: bytes | None = None) -> None:
        """Set object ``number``: a dictionary (``<<…>>`` text without Length), or a stream."""
        if stream is None:
            self._bodies[number] = dictionary.encode("latin-1")
        else:
            head = dictionary[:-2] + f" /Length {len(stream)}>>\nstream\n"
            self._bodies[number] = head.encode("latin-1") + stream + b"\nendstream"

    def add(self, dictionary: str, stream: bytes | None = None) -> int:
        number = self.reserve()
        self.put(number, dictionary, stream)
        return number

    def output(self, root: int, info: int, id_seed: bytes) -> bytes:
        parts = [HEADER]
        position = len(HEADER)
        offsets = []
        for number, body in enumerate(self._bodies[1:], start=1):
            if body is None:
                raise ValueError(f"PDF object {number} was reserved but never written")
            offsets.append(position)
            chunk = b"%d 0 obj\n%s\nendobj\n" % (number, body)
            parts.append(chunk)
            position += len(chunk)
        digest = hashlib.md5(b"".join(parts) + id_seed, usedforsecurity=False).hexdigest()
        count = len(self._bodies)
        xref = "".join(f"{offset:010d} 00000 n \n" for offset in offsets)
        parts.append(
            (
                f"xref\n0 {count}\n0000000000 65535 f \n{xref}"
                f"trailer\n<</Size {count} /Root {root} 0 R /Info {info} 0 R"
                f" /ID [<{digest}> <{digest}>]>>\nstartxref\n{position}\n%%EOF\n"
            ).encode("ascii")
        )
        return b"".join(parts)


def flate(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def text_string(text: str) -> str:
    """A PDF text string: literal if printable ASCII, else UTF-16BE with a byte order mark."""
    if text.isascii() and text.isprintable():
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        return f"({escaped})"
    return f"<FEFF{text.encode('utf-16-be').hex().upper()}>"


def pdf_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("D:%Y%m%d%H%M%S+00'00'")


def add_truetype(objects: PdfObjects, font: TrueTypeFont, subset: FontSubset) -> int:
    """The Type0 font of ``subset`` with everything PDF/A-1 asks of it; returns its number."""
    count = len(subset.widths)
    cid_set = b"\xff" * (count // 8) + (bytes([0xFF00 >> (count % 8) & 0xFF]) if count % 8 else b"")
    cid_set_ref = objects.add("<</Filter /FlateDecode>>", flate(cid_set))
    file_ref = objects.add(
        f"<</Filter /FlateDecode /Length1 {len(subset.font_file)}>>", flate(subset.font_file)
    )
    flags = 4 | (0x40000 if font.bold else 0)  # symbolic; ForceBold for the bold face
    bbox = " ".join(str(value) for value in font.bbox)
    descriptor = objects.add(
        f"<</Type /FontDescriptor /FontName /{subset.name} /Flags {flags}"
        f" /FontBBox [{bbox}] /ItalicAngle {font.italic_angle:g} /Ascent {font.ascent}"
        f" /Descent {font.descent} /CapHeight {font.cap_height} /StemV {font.stem_v}"
        f" /FontFile2 {file_ref} 0 R /CIDSet {cid_set_ref} 0 R>>"
    )
    widths = " ".join(map(str, subset.widths))
    cid_font = objects.add(
        f"<</Type /Font /Subtype /CIDFontType2 /BaseFont /{subset.name}"
        " /CIDSystemInfo <</Registry (Adobe) /Ordering (Identity) /Supplement 0>>"
        f" /FontDescriptor {descriptor} 0 R /CIDToGIDMap /Identity /W [0 [{widths}]]>>"
    )
    to_unicode = objects.add("<</Filter /FlateDecode>>", flate(to_unicode_cmap(subset.gid)))
    return objects.add(
        f"<</Type /Font /Subtype /Type0 /BaseFont /{subset.name} /Encoding /Identity-H"
        f" /DescendantFonts [{cid_font} 0 R] /ToUnicode {to_unicode} 0 R>>"
    )


def to_unicode_cmap(gid: dict[str, int]) -> bytes:
    """``bfchar`` entries from glyph id to character, at most 100 per block as CMaps require.

    When several characters share a glyph, the glyph maps to the smallest of them.
    """
    first: dict[int, str] = {}
    for char, number in sorted(gid.items()):
        first.setdefault(number, char)
    entries = sorted(first.items())
    blocks = []
    for start in range(0, len(entries), 100):
        block = entries[start : start + 100]
        lines = "".join(
            f"<{number:04X}> <{char.encode('utf-16-be').hex().upper()}>\n" for number, char in block
        )
        blocks.append(f"{len(block)} beginbfchar\n{lines}endbfchar\n")
    return (_TO_UNICODE_HEAD + "".join(blocks) + _TO_UNICODE_TAIL).encode("ascii")


def add_core_font(objects: PdfObjects, base_font: str) -> int:
    return objects.add(
        f"<</Type /Font /Subtype /Type1 /BaseFont /{base_font} /Encoding /WinAnsiEncoding>>"
    )


@lru_cache(maxsize=1)
def _srgb_profile() -> bytes:
    package, name = SRGB_PROFILE
    return flate(resources.files(package).joinpath(name).read_bytes())


def add_output_intent(objects: PdfObjects) -> str:
    """The sRGB ``GTS_PDFA1`` output intent, as an inline dictionary for the catalog."""
    profile = objects.add("<</N 3 /Alternate /DeviceRGB /Filter /FlateDecode>>", _srgb_profile())
    return (
        "<</Type /OutputIntent /S /GTS_PDFA1 /OutputConditionIdentifier (sRGB)"
        " /OutputCondition (IEC 61966-2-1:1999) /RegistryName (http://www.color.org)"
        f" /Info (sRGB IEC61966-2.1) /DestOutputProfile {profile} 0 R>>"
    )


def add_metadata(objects: PdfObjects, xmp_body: str) -> int:
    """The XMP stream, uncompressed as PDF/A-1 requires, inside an ``xpacket`` wrapper."""
    packet = (
        f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{xmp_body}\n<?xpacket end="w"?>'
    )
    return objects.add("<</Type /Metadata /Subtype /XML>>", packet.encode("utf-8"))
