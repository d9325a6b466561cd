"""Attachment file names and the MIME type table."""

from __future__ import annotations

import pytest

from mssbridge.convert.filenames import clean_content_type, content_type_for, safe_filename


@pytest.mark.parametrize(
    ("name", "content_type", "index", "safe"),
    [
        ("compte rendu.pdf", "application/pdf", 1, "compte rendu.pdf"),
        ("../../etc/passwd", "text/plain", 1, "passwd"),
        ("C:\\Users\\x\\scan.jpg", "image/jpeg", 1, "scan.jpg"),
        ("a\r\nb\x00c.txt", "text/plain", 1, "abc.txt"),
        ('rapport<>:"|?*.pdf', "application/pdf", 1, "rapport_______.pdf"),
        ("..", "image/png", 2, "piece-jointe-2.png"),
        (None, "application/pdf", 3, "piece-jointe-3.pdf"),
        ("", "application/x-unknown", 4, "piece-jointe-4.bin"),
        ("   .hidden  ", "text/plain", 1, "hidden"),
        ("e\u0301chographie.pdf", "application/pdf", 1, "échographie.pdf"),
        ("x" * 300 + ".pdf", "application/pdf", 1, "x" * 116 + ".pdf"),
        ("y" * 300, "application/pdf", 1, "y" * 120),
    ],
)
def test_safe_filename(name: str | None, content_type: str, index: int, safe: str) -> None:
    assert safe_filename(name, content_type, index) == safe


@pytest.mark.parametrize(
    ("value", "filename", "content_type"),
    [
        ("Application/PDF; name=x", "", "application/pdf"),
        ("bogus", "photo.JPEG", "image/jpeg"),
        (None, "x.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        (42, "noext", "application/octet-stream"),
        ("text/plain\r\nX: y", "a.txt", "text/plain"),
    ],
)
def test_clean_content_type(value: object, filename: str, content_type: str) -> None:
    assert clean_content_type(value, filename) == content_type


def test_content_type_for_unknown_extension() -> None:
    assert content_type_for("archive.xyz") == "application/octet-stream"
