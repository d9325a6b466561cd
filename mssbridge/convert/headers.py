"""Header values: raw bytes to text, RFC 2047 encoded words, one-line display text."""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t\r\n]+(?==\?)")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_FOLDING = re.compile(r"\r?\n(?=[ \t])")
_SPACES = re.compile(r"\s+")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
FALLBACK_CHARSET = "cp1252"  # what undeclared 8-bit French mail nearly always is


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode text bytes: declared charset, else UTF-8, else cp1252; never raises."""
    for candidate in (charset, "utf-8"):
        if candidate and _is_text_codec(candidate):
            try:
                return data.decode(candidate)
            except (UnicodeDecodeError, ValueError):
                continue
    return data.decode(FALLBACK_CHARSET, errors="replace")


def raw_header_text(raw: str) -> str:
    """Return a raw parsed header value as text: unfolded, stray 8-bit bytes decoded."""
    try:
        data = raw.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        data = raw.encode("utf-8", errors="replace")
    return _FOLDING.sub("", decode_bytes(data)).replace("\r", "").replace("\n", "")


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words (``=?charset?Q|B?…?=``), tolerating broken ones."""
    joined = _BETWEEN_WORDS.sub("", text)
    return _ENCODED_WORD.sub(_decode_word, joined)


def clean_header_text(value: str, limit: int = 100) -> str:
    """Return one line of displayable text: no controls, no bidi overrides, spaces collapsed."""
    visible = "".join(
        " " if unicodedata.category(char) in _HIDDEN_CATEGORIES else char
        for char in unicodedata.normalize("NFC", value)
    )
    return _SPACES.sub(" ", visible).strip()[:limit].rstrip()


def header_text(value: str, limit: int = 100) -> str:
    """Text for a header the bridge writes: decoded, one clean line, nothing left to decode.

    The email header registry decodes RFC 2047 encoded words in the values it is given and,
    before CPython 3.11.10 (CVE-2024-6923), writes the line breaks they hold to the wire: a
    subject ``=?utf-8?q?a=0D=0ABcc:=20…?=`` would add a header. Encoded words are decoded and
    cleaned here, and any ``=?`` still left (an encoded word inside one) is broken by a space.
    """
    text = clean_header_text(decode_words(value), limit)
    return clean_header_text(text.replace("=?", "= ?"), limit)


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, payload = match.groups()
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    if encoding in "qQ":
        raw = payload.replace("_", " ").encode("latin-1", errors="replace")
        data = _QP_ESCAPE.sub(lambda pair: bytes([int(pair.group(1), 16)]), raw)
    else:
        try:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        except (binascii.Error, ValueError):
            return match.group(0)
    return decode_bytes(data, charset)


def _is_text_codec(name: str) -> bool:
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return False
    return getattr(info, "_is_text_encoding", True)
