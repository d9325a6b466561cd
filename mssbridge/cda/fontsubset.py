"""A TrueType font parsed once per process, and a small subset of it built per document.

The transcript embeds only the glyphs a document uses (PDF/A wants embedded fonts; a subset
keeps the PDF small). fontTools' subsetter does that well but costs tens of milliseconds per
font and document, so this module does the narrow job the transcript needs on raw bytes:

- :func:`load_font` reads the file with fontTools once (cmap, metrics, the raw ``glyf`` table,
  the offsets of composite glyph components) and keeps the result for the process;
- :meth:`TrueTypeFont.subset` copies the used glyphs (plus the components of composite glyphs
  and ``.notdef``) into a new, renumbered TrueType file: ``head hhea maxp hmtx loca glyf`` with
  the hinting tables (``cvt fpgm prep``) kept as they are, a ``post`` table without glyph names
  and a small ``cmap``. Composite glyphs get their component indices rewritten.

Glyph ids of the subset are the CIDs of the PDF font (``CIDToGIDMap /Identity``), so every
glyph of the subset is present and the PDF/A-1 ``CIDSet`` simply lists them all.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fontTools.ttLib import TTFont

# Composite glyph flags (OpenType 'glyf' table).
_ARG_1_AND_2_ARE_WORDS = 0x0001
_WE_HAVE_A_SCALE = 0x0008
_MORE_COMPONENTS = 0x0020
_WE_HAVE_AN_X_AND_Y_SCALE = 0x0040
_WE_HAVE_A_TWO_BY_TWO = 0x0080

_HINTING_TABLES = ("cvt ", "fpgm", "prep")


@dataclass(frozen=True)
class FontSubset:
    """The glyphs of one document: new glyph id per character, widths and the font file."""

    name: str  # PostScript name with the subset tag, e.g. ``ABCDEF+DejaVuSans``
    gid: dict[str, int]  # character -> glyph id in the subset (= CID in the PDF)
    widths: tuple[int, ...]  # advance of each subset glyph, in 1/1000 em
    font_file: bytes  # the TrueType file


class TrueTypeFont:
    """What the transcript needs from one TrueType file, read once."""

    def __init__(self, path: Path) -> None:
        font = TTFont(path, lazy=True)
        try:
            self.postscript_name = (font["name"].getDebugName(6) or path.stem).replace(" ", "")
            head, hhea, os2 = font["head"], font["hhea"], font["OS/2"]
            order = font.getGlyphOrder()
            index = {name: number for number, name in enumerate(order)}
            self.glyph_of: dict[str, int] = {
                chr(code): index[name] for code, name in font.getBestCmap().items()
            }
            metrics = font["hmtx"].metrics
            self._advance = [metrics[name][0] for name in order]
            self._lsb = [metrics[name][1] for name in order]
            loca = list(font["loca"])
            raw_glyf = font.reader["glyf"]
            self._glyphs = [raw_glyf[loca[i] : loca[i + 1]] for i in range(len(order))]
            self._tables = {
                tag.encode(): font.reader[tag] for tag in ("head", "hhea", "maxp", "OS/2", "post")
            }
            self._hinting = {
                tag.encode(): font.reader[tag] for tag in _HINTING_TABLES if tag in font
            }
            italic_angle = float(font["post"].italicAngle)
            weight = os2.usWeightClass
            cap_height = getattr(os2, "sCapHeight", 0) or hhea.ascent
        finally:
            font.close()
        self.units_per_em = head.unitsPerEm
        scale = 1000 / self.units_per_em
        self._components = [_component_offsets(data) for data in self._glyphs]
        # Widths as the PDF states them (W array), so layout and display agree exactly.
        self.widths_1000 = [round(advance * scale) for advance in self._advance]
        self.char_widths: dict[str, int] = {
            char: self.widths_1000[gid] for char, gid in self.glyph_of.items()
        }
        self.ascent = round(hhea.ascent * scale)
        self.descent = round(hhea.descent * scale)
        self.cap_height = round(cap_height * scale)
        self.bbox = tuple(
            round(value * scale) for value in (head.xMin, head.yMin, head.xMax, head.yMax)
        )
        self.italic_angle = italic_angle
        self.bold = weight >= 600
        self.stem_v = 50 + int((weight / 65) ** 2)

    def subset(self, chars: Iterable[str]) -> FontSubset:
        """A renumbered TrueType file with ``.notdef`` and the glyphs of ``chars``.

        Characters the font lacks are ignored: callers replace them before layout.
        """
        chars = sorted(set(chars))
        glyph_of = self.glyph_of
        wanted = {0}
        todo = [glyph_of[char] for char in chars if char in glyph_of]
        while todo:
            gid = todo.pop()
            if gid not in wanted:
                wanted.add(gid)
                todo.extend(component for _, component in self._components[gid])
        old_ids = sorted(wanted)
        new_id = {old: new for new, old in enumerate(old_ids)}
        font_file = self._build(old_ids, new_id, chars)
        tag = _subset_tag(old_ids, self.postscript_name)
        return FontSubset(
            name=f"{tag}+{self.postscript_name}",
            gid={char: new_id[glyph_of[char]] for char in chars if char in glyph_of},
            widths=tuple(self.widths_1000[old] for old in old_ids),
            font_file=font_file,
        )

    def _build(self, old_ids: list[int], new_id: dict[int, int], chars: list[str]) -> bytes:
        glyf_parts: list[bytes] = []
        offsets = array("I", [0])
        position = 0
        for old in old_ids:
            data = self._glyphs[old]
            components = self._components[old]
            if components:
                patched = bytearray(data)
                for offset, component in components:
                    struct.pack_into(">H", patched, offset, new_id[component])
                data = bytes(patched)
            padding = -len(data) % 4
            glyf_parts.append(data + b"\0" * padding)
            position += len(data) + padding
            offsets.append(position)
        count = len(old_ids)
        hmtx = array("H")  # advance width (unsigned), left side bearing (signed)
        for old in old_ids:
            hmtx.append(self._advance[old])
            hmtx.append(self._lsb[old] & 0xFFFF)
        if sys.byteorder == "little":
            offsets.byteswap()
            hmtx.byteswap()
        head = bytearray(self._tables[b"head"])
        struct.pack_into(">I", head, 8, 0)  # checkSumAdjustment, set below
        struct.pack_into(">h", head, 50, 1)  # indexToLocFormat: long offsets
        hhea = bytearray(self._tables[b"hhea"])
        struct.pack_into(">H", hhea, 34, count)  # numberOfHMetrics
        maxp = bytearray(self._tables[b"maxp"])
        struct.pack_into(">H", maxp, 4, count)  # numGlyphs
        # post format 3: the italic angle, underline and pitch of the original, no glyph names.
        post = struct.pack(">I", 0x00030000) + self._tables[b"post"][4:16] + bytes(16)
        tables = {
            b"OS/2": self._tables[b"OS/2"],
            b"cmap": _cmap(
                sorted(
                    (ord(char), new_id[self.glyph_of[char]])
                    for char in chars
                    if char in self.glyph_of and ord(char) <= 0xFFFF
                )
            ),
            b"glyf": b"".join(glyf_parts),
            b"head": bytes(head),
            b"hhea": bytes(hhea),
            b"hmtx": hmtx.tobytes(),
            b"loca": offsets.tobytes(),
            b"maxp": bytes(maxp),
            b"post": post,
            **self._hinting,
        }
        return _sfnt(tables)


@lru_cache(maxsize=8)
def _load(path: str, size: int, mtime_ns: int) -> TrueTypeFont:
    return TrueTypeFont(Path(path))


def load_font(path: Path) -> TrueTypeFont:
    """The parsed font for ``path``, read once per process (again if the file changes)."""
    stat = path.stat()
    return _load(str(path), stat.st_size, stat.st_mtime_ns)


def _component_offsets(data: bytes) -> tuple[tuple[int, int], ...]:
    """(offset of the glyph index, component glyph id) for each component of a composite."""
    if len(data) < 10 or struct.unpack_from(">h", data)[0] >= 0:
        return ()
    found = []
    position = 10
    while True:
        flags, component = struct.unpack_from(">HH", data, position)
        found.append((position + 2, component))
        position += 4 + (4 if flags & _ARG_1_AND_2_ARE_WORDS else 2)
        if flags & _WE_HAVE_A_SCALE:
            position += 2
        elif flags & _WE_HAVE_AN_X_AND_Y_SCALE:
            position += 4
        elif flags & _WE_HAVE_A_TWO_BY_TWO:
            position += 8
        if not flags & _MORE_COMPONENTS:
            return tuple(found)


def _subset_tag(glyph_ids: list[int], name: str) -> str:
    """Six capital letters that depend only on the glyph set, as PDF subset names require."""
    digest = hashlib.sha1(name.encode() + array("H", glyph_ids).tobytes()).digest()
    return "".join(chr(ord("A") + byte % 26) for byte in digest[:6])


def _cmap(pairs: list[tuple[int, int]]) -> bytes:
    """A cmap with one Windows Unicode BMP subtable (format 4), one segment per character."""
    segments = [*pairs, (0xFFFF, 0)]
    count = len(segments)
    search = 2 ** (count.bit_length() - 1)
    ends = b"".join(struct.pack(">H", code) for code, _ in segments)
    starts = ends
    deltas = b"".join(struct.pack(">H", (gid - code) & 0xFFFF) for code, gid in pairs)
    deltas += struct.pack(">H", 1)
    range_offsets = b"\0\0" * count
    body = (
        struct.pack(">HHHH", 2 * count, 2 * search, search.bit_length() - 1, 2 * count - 2 * search)
        + ends
        + b"\0\0"
        + starts
        + deltas
        + range_offsets
    )
    subtable = struct.pack(">HHH", 4, 6 + len(body), 0) + body
    return struct.pack(">HHHHI", 0, 1, 3, 1, 12) + subtable


def _checksum(data: bytes) -> int:
    padded = array("I", data + b"\0" * (-len(data) % 4))
    if sys.byteorder == "little":
        padded.byteswap()
    return sum(padded) & 0xFFFFFFFF


def _sfnt(tables: dict[bytes, bytes]) -> bytes:
    """An sfnt file with ``tables`` in tag order and a correct head.checkSumAdjustment."""
    tags = sorted(tables)
    count = len(tags)
    search = 2 ** (count.bit_length() - 1)
    header = struct.pack(
        ">IHHHH", 0x00010000, count, 16 * search, search.bit_length() - 1, 16 * (count - search)
    )
    directory = []
    bodies = []
    offset = 12 + 16 * count
    head_offset = 0
    total = 0  # the file's checksum: the tables are padded, so it is the sum of the parts
    for tag in tags:
        data = tables[tag]
        if tag == b"head":
            head_offset = offset
        checksum = _checksum(data)
        total += checksum
        directory.append(struct.pack(">4sIII", tag, checksum, offset, len(data)))
        padded = data + b"\0" * (-len(data) % 4)
        bodies.append(padded)
        offset += len(padded)
    head = header + b"".join(directory)
    total += _checksum(head)
    font = bytearray(head + b"".join(bodies))
    struct.pack_into(">I", font, head_offset + 8, (0xB1B0AFBA - total) & 0xFFFFFFFF)
    return bytes(font)
