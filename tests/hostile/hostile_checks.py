"""Assertions shared by the hostile-input tests: time bounds, safe HTML, safe text, safe names."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from html.parser import HTMLParser
from typing import TypeVar
from urllib.parse import urlsplit

from hostile_corpus import PER_CASE_SECONDS

from mssbridge.convert.html import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, URL_SCHEMES

T = TypeVar("T")

# What a one-line display value (subject, display name) must never hold: controls, format
# characters such as bidi overrides, line and paragraph separators, surrogates.
HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def bounded(call: Callable[[], T]) -> T:
    """Run ``call`` and fail when it takes longer than the per-case limit.

    Exceptions propagate unchanged, so each test still says which ones are allowed.
    """
    start = time.monotonic()
    try:
        return call()
    finally:
        elapsed = time.monotonic() - start
        assert elapsed < PER_CASE_SECONDS, f"took {elapsed:.1f} s"


def assert_one_line(value: str, limit: int) -> None:
    assert len(value) <= limit
    hidden = [char for char in value if unicodedata.category(char) in HIDDEN]
    assert not hidden, f"hidden characters {hidden!r} in {value[:80]!r}"
    assert value == value.strip()


def assert_safe_filename(name: str) -> None:
    assert name and name.strip(" ."), "empty file name"
    assert "/" not in name and "\\" not in name
    assert name not in {".", ".."}
    assert not name.startswith(".")
    assert len(name) <= 120
    assert all(unicodedata.category(char)[0] != "C" for char in name), repr(name)
    assert not any(char in name for char in '<>:"|?*')


class _Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag {tag}")
        allowed = ALLOWED_ATTRIBUTES.get(tag, set()) | ({"rel"} if tag == "a" else set())
        for name, value in attrs:
            if name not in allowed:
                self.problems.append(f"attribute {tag}.{name}")
            if "script:" in (value or "").lower().replace(" ", ""):
                self.problems.append(f"script URL in {tag}.{name}")
            if name == "href":
                scheme = urlsplit((value or "").strip()).scheme.lower()
                if scheme not in URL_SCHEMES:
                    self.problems.append(f"href scheme {scheme!r}")

    def handle_endtag(self, tag: str) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"end tag {tag}")


def assert_safe_html(html: str) -> None:
    """Only allow-listed tags and attributes, only http(s)/mailto links, no script tag."""
    inspector = _Inspector()
    inspector.feed(html)
    inspector.close()
    assert not inspector.problems, inspector.problems[:5]
    lowered = html.lower()  # escaped text (``&lt;script``) is harmless; a real tag is not
    for needle in ("<script", "<img", "<iframe", "<svg", "<style", "<object", "<form"):
        assert needle not in lowered, needle
