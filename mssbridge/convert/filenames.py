"""Attachment file names made safe for both sides, and a fixed MIME type ⇄ extension table."""

from __future__ import annotations

import re
import unicodedata

MAX_FILENAME_LENGTH = 120
DEFAULT_CONTENT_TYPE = "application/octet-stream"

# A fixed table rather than the mimetypes module, which reads system files (no I/O here).
_EXTENSIONS: dict[str, str] = {
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/xml": ".xml",
    "application/json": ".json",
    "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
    "application/rtf": ".rtf",
    "application/dicom": ".dcm",
    "application/hl7-v2": ".hl7",
    "application/pkcs7-mime": ".p7m",
    "application/octet-stream": ".bin",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/tiff": ".tif",
    "image/bmp": ".bmp",
    "image/heic": ".heic",
    "image/svg+xml": ".svg",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "audio/wav": ".wav",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/csv": ".csv",
    "text/calendar": ".ics",
    "text/xml": ".xml",
    "message/rfc822": ".eml",
}
_CONTENT_TYPES: dict[str, str] = {
    **{extension: content_type for content_type, extension in _EXTENSIONS.items()},
    ".jpeg": "image/jpeg",
    ".tiff": "image/tiff",
    ".htm": "text/html",
    ".txt": "text/plain",
    ".xml": "application/xml",
    ".ics": "text/calendar",
}
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_UNSAFE = re.compile(r'[<>:"|?*\\/\x00-\x1f\x7f]')
_SPACES = re.compile(r"\s+")


def extension_for(content_type: str) -> str:
    """Return the usual extension (with its dot) of a MIME type, ``.bin`` when unknown."""
    return _EXTENSIONS.get(content_type.lower(), ".bin")


def content_type_for(filename: str) -> str:
    """Return the MIME type usually meant by a file name's extension, octet-stream if unknown."""
    _, dot, extension = filename.rpartition(".")
    if not dot:
        return DEFAULT_CONTENT_TYPE
    return _CONTENT_TYPES.get(f".{extension.lower()}", DEFAULT_CONTENT_TYPE)


def clean_content_type(value: object, filename: str = "") -> str:
    """Return a well-formed lower-case ``type/subtype``, guessed from the name when unusable."""
    if isinstance(value, str):
        candidate = value.split(";", 1)[0].strip().lower()
        if _CONTENT_TYPE.fullmatch(candidate):
            return candidate
    return content_type_for(filename)


def safe_filename(name: str | None, content_type: str, index: int) -> str:
    """Return a file name without directories, controls or reserved characters.

    Falls back to ``piece-jointe-<index><extension>`` (extension from the MIME type) when
    nothing usable is left; long names are shortened keeping their extension.
    """
    cleaned = _clean(name or "")
    if not cleaned.strip("._ "):
        return f"piece-jointe-{index}{extension_for(content_type)}"
    return _shorten(cleaned)


def _clean(name: str) -> str:
    text = unicodedata.normalize("NFC", name)
    text = re.split(r"[\\/]", text)[-1]  # keep the last path component only
    text = "".join(char for char in text if unicodedata.category(char)[0] != "C")
    text = _UNSAFE.sub("_", text)
    return _SPACES.sub(" ", text).strip(" .")


def _shorten(name: str) -> str:
    if len(name) <= MAX_FILENAME_LENGTH:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and 0 < len(extension) <= 10:
        return stem[: MAX_FILENAME_LENGTH - len(extension) - 1].rstrip(" .") + "." + extension
    return name[:MAX_FILENAME_LENGTH].rstrip(" .")
