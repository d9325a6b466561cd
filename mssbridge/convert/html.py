"""HTML for both sides: sanitising to Matrix's allow-list, readable plain text, quote removal.

Images are never kept: Matrix only displays ``mxc://`` images and mail HTML points to remote
URLs (tracking pixels) or ``cid:`` parts, which the bridge relays as files instead.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import nh3

ALLOWED_TAGS = frozenset(
    {
        "a", "b", "blockquote", "br", "caption", "code", "del", "details", "div", "em",
        "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s",
        "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot",
        "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
"""The Matrix client-server spec's recommended formatted_body tags, without ``img``."""

ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href"},
    "font": {"color", "data-mx-color", "data-mx-bg-color"},
    "span": {"data-mx-color", "data-mx-bg-color", "data-mx-spoiler"},
    "ol": {"start"},
    "code": {"class"},
}
MAX_TREE_DEPTH = 100
URL_SCHEMES = frozenset({"http", "https", "mailto"})
DROPPED_WITH_CONTENT = frozenset(
    {"script", "style", "head", "title", "template", "noscript", "mx-reply", "svg", "math"}
)

_COLOR = re.compile(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?|[a-zA-Z]{3,20}")
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#-]{1,40}")
_MX_REPLY = re.compile(r"<mx-reply\b.*?</mx-reply\s*>", re.IGNORECASE | re.DOTALL)
_WHITESPACE = re.compile(r"\s+")
_BLANK_MARKUP = re.compile(r"(?:\s|&nbsp;|<br>)*")
_EXTRA_BLANK_LINES = re.compile(r"\n{3,}")

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip
_BLOCK = frozenset(
    {"address", "article", "aside", "blockquote", "center", "dd", "details", "div", "dl", "dt",
     "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
     "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tr", "ul"}
)  # fmt: skip
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "blockquote"})
_SKIPPED_IN_TEXT = frozenset({"script", "style", "head", "title", "template", "noscript"})
_QUOTE_CLASSES = frozenset({"gmail_quote", "gmail_quote_container", "moz-cite-prefix",
                            "yahoo_quoted"})  # fmt: skip
_CUT_IDS = frozenset({"appendonsend", "divrplyfwdmsg", "mail-editor-reference-message-container",
                      "stopspelling", "zwchr"})  # fmt: skip
_OUTLOOK_SEPARATOR = re.compile(r"border-top:\s*solid\s+#(?:e1e1e1|b5c4df)", re.IGNORECASE)


def sanitize_html(html: str) -> str:
    """Return the HTML reduced to the Matrix allow-list: no scripts, styles, images, events."""
    without_replies = _MX_REPLY.sub("", html)
    cleaned = nh3.clean(
        without_replies,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={**ALLOWED_ATTRIBUTES, "*": set()},  # no generic title/lang either
        attribute_filter=_filter_attribute,
        url_schemes=set(URL_SCHEMES),
        url_relative="deny",
        strip_comments=True,
        link_rel="noopener noreferrer",
    )
    return _trim_trailing_blanks(cleaned)


def _trim_trailing_blanks(html: str) -> str:
    """Drop the empty lines mail clients leave at the end: ``<br>``, ``<div><br></div>``…"""
    while True:
        html = html.rstrip()
        if html.endswith(("<br>", "&nbsp;")):
            html = html[: html.rindex("&" if html.endswith(";") else "<")]
            continue
        for tag in ("p", "div"):
            closing = f"</{tag}>"
            opening = html.rfind(f"<{tag}>")
            inner = html[opening + len(tag) + 2 : -len(closing)]
            if html.endswith(closing) and opening >= 0 and _BLANK_MARKUP.fullmatch(inner):
                html = html[:opening]
                break
        else:
            return html


def html_to_text(html: str) -> str:
    """Return readable plain text: paragraphs, line breaks, bullets, ``text (url)`` links."""
    writer = _TextWriter()
    writer.render_children(_parse(html))
    return writer.result()


def text_to_html(text: str) -> str:
    """Return plain text as HTML: escaped, line breaks kept."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "<br>".join(html_lib.escape(line, quote=False) for line in lines)


def has_visible_text(html: str) -> bool:
    """Tell whether an HTML fragment shows any non-blank text."""
    return bool(html_to_text(html).strip())


def strip_quoted_html(html: str) -> tuple[str, bool]:
    """Remove the quoted history of a mail reply; return the HTML and whether any was found.

    Recognised: ``blockquote type=cite`` (Thunderbird, Apple Mail), ``div.gmail_quote``,
    ``div.moz-cite-prefix``, Yahoo's ``yahoo_quoted``; Outlook's ``#appendonsend``,
    ``#divRplyFwdMsg`` and its bordered header block, after which everything is history.
    """
    root = _parse(html)
    found = False
    marker = next((node for node in _elements(root) if _is_cut_marker(node)), None)
    if marker is not None:
        _cut_from(marker)
        found = True
    for node in list(_elements(root)):
        if node.parent is not None and _is_quote_container(node):
            node.parent.children.remove(node)
            found = True
    return _serialize_children(root), found


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute in {"color", "data-mx-color", "data-mx-bg-color"}:
        return value if _COLOR.fullmatch(value) else None
    if attribute == "start":
        return value if value.isdigit() and len(value) < 10 else None
    if attribute == "class":
        return value if _LANGUAGE_CLASS.fullmatch(value) else None
    return value


@dataclass(eq=False)
class _Element:
    """A node of the small tree the quote stripper and the text renderer work on."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[_Element | str] = field(default_factory=list)
    parent: _Element | None = None

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").lower().split())


class _TreeBuilder(HTMLParser):
    """Build a forgiving tree: unknown end tags are ignored, common implicit ends applied."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Element("#root")
        self.stack: list[_Element] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._close_implied(tag)
        if len(self.stack) > MAX_TREE_DEPTH:
            return  # deeper tags are dropped, their text kept: bounded recursion later
        element = _Element(tag, {name: value or "" for name, value in attrs}, [], self.stack[-1])
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "br":
            self.handle_starttag("br", [])
            return
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        children = self.stack[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)

    def _close_implied(self, tag: str) -> None:
        current = self.stack[-1].tag
        if current == "p" and tag in _BLOCK:
            self.stack.pop()
        elif tag == "li":
            self._close_up_to("li", stop={"ul", "ol"})
        elif tag in {"td", "th"}:
            self._close_up_to("td", "th", stop={"tr", "table"})
        elif tag == "tr":
            self._close_up_to("tr", stop={"table"})

    def _close_up_to(self, *tags: str, stop: set[str]) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            name = self.stack[depth].tag
            if name in stop:
                return
            if name in tags:
                del self.stack[depth:]
                return


def _parse(html: str) -> _Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def _elements(root: _Element) -> Iterator[_Element]:
    for child in root.children:
        if isinstance(child, _Element):
            yield child
            yield from _elements(child)


def _is_cut_marker(node: _Element) -> bool:
    if node.attrs.get("id", "").lower() in _CUT_IDS:
        return True
    if "outlookmessageheader" in node.classes():
        return True
    return node.tag == "div" and bool(_OUTLOOK_SEPARATOR.search(node.attrs.get("style", "")))


def _is_quote_container(node: _Element) -> bool:
    if node.tag == "blockquote" and node.attrs.get("type", "").lower() == "cite":
        return True
    return bool(node.classes() & _QUOTE_CLASSES)


def _cut_from(node: _Element) -> None:
    """Remove ``node`` and everything after it in document order."""
    current: _Element = node
    while current.parent is not None:
        siblings = current.parent.children
        index = next(i for i, child in enumerate(siblings) if child is current)
        start = index if current is node else index + 1
        del siblings[start:]
        current = current.parent


def _serialize_children(element: _Element) -> str:
    return "".join(_serialize(child) for child in element.children)


def _serialize(node: _Element | str) -> str:
    if isinstance(node, str):
        return html_lib.escape(node, quote=False)
    attrs = "".join(f' {name}="{html_lib.escape(value)}"' for name, value in node.attrs.items())
    if node.tag in _VOID:
        return f"<{node.tag}{attrs}>"
    return f"<{node.tag}{attrs}>{_serialize_children(node)}</{node.tag}>"


class _TextWriter:
    """Render a tree as plain text, line by line, with quote prefixes and list bullets."""

    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.prefixes: list[str] = []
        self.pending = 0
        self.trailing_breaks = 1_000  # the start of the text needs no gap
        self.lists: list[list[int]] = []  # counters of open lists; [-1] means bullets
        self.preformatted = 0
        self.handlers: dict[str, Callable[[_Element], None]] = {
            "br": lambda _element: self.line_break(),
            "hr": self._render_rule,
            "a": self._render_link,
            "img": self._render_image,
            "ul": self._render_list,
            "ol": self._render_list,
            "li": self._render_item,
            "blockquote": self._render_quote,
            "pre": self._render_pre,
            "td": self._render_cell,
            "th": self._render_cell,
        }

    def render_children(self, element: _Element) -> None:
        for child in element.children:
            if isinstance(child, str):
                self.write(child)
            else:
                self.render(child)

    def render(self, element: _Element) -> None:
        tag = element.tag
        handler = self.handlers.get(tag)
        if tag in _SKIPPED_IN_TEXT:
            return
        if handler is not None:
            handler(element)
            return
        gap = 2 if tag in _PARAGRAPH else 1 if tag in _BLOCK else 0
        self.request_gap(gap)
        self.render_children(element)
        self.request_gap(gap)

    def write(self, text: str) -> None:
        if not self.preformatted:
            text = _WHITESPACE.sub(" ", text)
            if self._at_line_start() or self.lines[-1].endswith(" "):
                text = text.lstrip(" ")
        if not text:
            return
        self._flush_gap()
        for index, part in enumerate(text.split("\n")):
            if index:
                self.line_break()
            self.lines[-1] += part
            self.trailing_breaks = 0 if part else self.trailing_breaks

    def line_break(self) -> None:
        self._flush_gap()
        self._new_line()

    def request_gap(self, lines: int) -> None:
        self.pending = max(self.pending, lines)

    def result(self) -> str:
        text = "\n".join(line.rstrip() for line in self.lines).replace("\xa0", " ")
        return _EXTRA_BLANK_LINES.sub("\n\n", text).strip("\n")

    def _flush_gap(self) -> None:
        for _ in range(self.pending - self.trailing_breaks):
            self._new_line()
        self.pending = 0

    def _new_line(self) -> None:
        self.lines.append(self._prefix())
        self.trailing_breaks += 1

    def _prefix(self) -> str:
        return "".join(self.prefixes)

    def _at_line_start(self) -> bool:
        return self.trailing_breaks > 0 or not self.lines[-1].strip()

    def _render_rule(self, _element: _Element) -> None:
        self.request_gap(2)
        self.write("----")
        self.request_gap(2)

    def _render_link(self, element: _Element) -> None:
        self.render_children(element)
        target = _link_target(element.attrs.get("href", ""))
        label = _WHITESPACE.sub(" ", _text_content(element)).strip()
        if target and target != label:
            self.write(f" ({target})" if label else target)

    def _render_image(self, element: _Element) -> None:
        alt = element.attrs.get("alt", "").strip()
        if alt:
            self.write(alt)

    def _render_list(self, element: _Element) -> None:
        start = element.attrs.get("start", "1")
        counter = int(start) if element.tag == "ol" and start.isdigit() else 1
        self.lists.append([counter if element.tag == "ol" else -1])
        self.request_gap(1 if len(self.lists) > 1 else 2)
        self.render_children(element)
        self.lists.pop()
        self.request_gap(1 if self.lists else 2)

    def _render_item(self, element: _Element) -> None:
        self.request_gap(1)
        indent = "  " * max(len(self.lists) - 1, 0)
        if self.lists and self.lists[-1][0] >= 0:
            bullet = f"{self.lists[-1][0]}. "
            self.lists[-1][0] += 1
        else:
            bullet = "- "
        self._flush_gap()
        if not self._at_line_start():
            self._new_line()
        self.lines[-1] += indent + bullet
        self.trailing_breaks = 0
        self.render_children(element)
        self.request_gap(1)

    def _render_quote(self, element: _Element) -> None:
        self.request_gap(2)
        self._flush_gap()
        self.prefixes.append("> ")
        if self._at_line_start():
            self.lines[-1] = self._prefix()
        self.render_children(element)
        self.prefixes.pop()
        self.request_gap(2)

    def _render_pre(self, element: _Element) -> None:
        self.request_gap(2)
        self.preformatted += 1
        self.render_children(element)
        self.preformatted -= 1
        self.request_gap(2)

    def _render_cell(self, element: _Element) -> None:
        if element.parent is not None and _first_cell(element.parent) is not element:
            self.write(" | ")
        self.render_children(element)


def _first_cell(row: _Element) -> _Element | None:
    cells = (c for c in row.children if isinstance(c, _Element) and c.tag in {"td", "th"})
    return next(cells, None)


def _link_target(href: str) -> str:
    href = href.strip()
    scheme = href.split(":", 1)[0].lower()
    if scheme == "mailto":
        return href[len("mailto:") :].split("?", 1)[0]
    return href if scheme in {"http", "https"} else ""


def _text_content(node: _Element | str) -> str:
    if isinstance(node, str):
        return node
    return "".join(_text_content(child) for child in node.children)
