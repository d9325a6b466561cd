"""Decoding header values: RFC 2047 words, raw 8-bit bytes, display text."""

from __future__ import annotations

import pytest

from mssbridge.convert.headers import clean_header_text, decode_bytes, decode_words, raw_header_text


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("plain", "plain"),
        ("=?utf-8?q?R=C3=A9sum=C3=A9_du_jour?=", "Résumé du jour"),
        ("=?ISO-8859-1?Q?Fran=E7ois?= =?ISO-8859-1?Q?_B?=", "François B"),
        ("=?utf-8?b?w4lsb2RpZQ==?=", "Élodie"),
        ("=?utf-8?b?w4lsb2RpZQ?=", "Élodie"),
        ("=?utf-8*fr?q?=C3=A9?=", "é"),
        ("=?utf-8?b?***?=", "=?utf-8?b?***?="),
        ("=?no-such-charset?q?caf=E9?=", "café"),
        ("=?utf-8?q?=FF?=", "ÿ"),
        ("a =?utf-8?q?b?= c", "a b c"),
    ],
)
def test_decode_words(value: str, decoded: str) -> None:
    assert decode_words(value) == decoded


@pytest.mark.parametrize(
    ("data", "charset", "text"),
    [
        (b"caf\xc3\xa9", None, "café"),
        (b"caf\xe9", None, "café"),
        (b"caf\xe9", "iso-8859-1", "café"),
        (b"\x80", "us-ascii", "€"),
        (b"x", "rot13", "x"),
        (b"caf\xc3\xa9", "x-unknown", "café"),
    ],
)
def test_decode_bytes(data: bytes, charset: str | None, text: str) -> None:
    assert decode_bytes(data, charset) == text


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"Fran\xc3\xa7ois\r\n B\xc3\xa9ranger", "François Béranger"),
        (b"Fran\xe7ois\r\n\tB\xe9ranger", "François\tBéranger"),
        (b"plain\r\n folded", "plain folded"),
    ],
)
def test_raw_header_text_unfolds_and_decodes_8bit(raw: bytes, text: str) -> None:
    assert raw_header_text(raw.decode("ascii", errors="surrogateescape")) == text


@pytest.mark.parametrize(
    ("value", "clean"),
    [
        ("  Dr\r\n  X\t ", "Dr X"),
        ("a\u202eb\u200bc", "a b c"),
        ("x" * 150, "x" * 100),
    ],
)
def test_clean_header_text(value: str, clean: str) -> None:
    assert clean_header_text(value) == clean
