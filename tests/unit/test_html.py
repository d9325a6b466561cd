"""HTML sanitising, HTML to text, and quoted-history removal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssbridge.convert.html import (
    html_to_text,
    sanitize_html,
    strip_quoted_html,
    text_to_html,
)


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("<p>Bonjour <b>Dr</b> <i>X</i></p>", "<p>Bonjour <b>Dr</b> <i>X</i></p>"),
        ("<script>alert(1)</script><p>ok</p>", "<p>ok</p>"),
        ("<style>p{color:red}</style><p>ok</p>", "<p>ok</p>"),
        ('<p onclick="x()" style="color:red" class="c">ok</p>', "<p>ok</p>"),
        ('<p>a<img src="https://tracker.example.com/p.gif" width="1">b</p>', "<p>ab</p>"),
        ('<a href="javascript:alert(1)">x</a>', '<a rel="noopener noreferrer">x</a>'),
        ('<a href="/relative">x</a>', '<a rel="noopener noreferrer">x</a>'),
        (
            '<a href="https://ex.fr/a?b=1" target="_blank">x</a>',
            '<a href="https://ex.fr/a?b=1" rel="noopener noreferrer">x</a>',
        ),
        (
            '<a href="mailto:a@b.fr">x</a>',
            '<a href="mailto:a@b.fr" rel="noopener noreferrer">x</a>',
        ),
        ('<font color="#ff0000" face="Arial" size="7">f</font>', '<font color="#ff0000">f</font>'),
        ('<font color="expression(x)">f</font>', "<font>f</font>"),
        ('<span data-mx-spoiler="" style="x">s</span>', '<span data-mx-spoiler="">s</span>'),
        ('<code class="language-python">x</code>', '<code class="language-python">x</code>'),
        ('<code class="evil language-python">x</code>', "<code>x</code>"),
        ('<ol start="3"><li>x</li></ol>', '<ol start="3"><li>x</li></ol>'),
        ('<ol start="-1"><li>x</li></ol>', "<ol><li>x</li></ol>"),
        ("<mx-reply><blockquote>old</blockquote></mx-reply>new", "new"),
        ("<iframe src='https://x'></iframe><form><input></form>ok", "ok"),
        ("<table><tr><td>1</td></tr></table>", "<table><tbody><tr><td>1</td></tr></tbody></table>"),
        ("<p>a</p><div><br></div><br> <p>&nbsp;</p>", "<p>a</p>"),
        ("<!-- secret --><p>x</p>", "<p>x</p>"),
    ],
)
def test_sanitize_html(dirty: str, clean: str) -> None:
    assert sanitize_html(dirty) == clean


@pytest.mark.parametrize(
    ("html", "text"),
    [
        (
            "<p>Bonjour,</p><p>Voici le <b>CR</b>.<br>Cordialement</p>",
            "Bonjour,\n\nVoici le CR.\nCordialement",
        ),
        ("<div>L1</div><div>L2</div><div><br></div><div>L4</div>", "L1\nL2\n\nL4"),
        (
            "<ul><li>un</li><li>deux<ul><li>a</li></ul></li></ul><p>fin</p>",
            "- un\n- deux\n  - a\n\nfin",
        ),
        ('<ol start="3"><li>x<li>y</ol>', "3. x\n4. y"),
        ('Voir <a href="https://ex.fr/a">le lien</a>.', "Voir le lien (https://ex.fr/a)."),
        ('<a href="https://ex.fr">https://ex.fr</a>', "https://ex.fr"),
        ('<a href="mailto:a@b.fr">a@b.fr</a>', "a@b.fr"),
        ('<a href="mailto:a@b.fr">Dr A</a>', "Dr A (a@b.fr)"),
        ('<a href="javascript:x">clic</a>', "clic"),
        (
            "<blockquote><p>cité</p><p>deux</p></blockquote><p>après</p>",
            "> cité\n>\n> deux\n\naprès",
        ),
        (
            "<p>intro</p><blockquote>q1<blockquote>q2</blockquote></blockquote>",
            "intro\n\n> q1\n>\n> > q2",
        ),
        ("<pre>  code\n  indenté</pre>", "  code\n  indenté"),
        (
            "<table><tr><th>A</th><th>B</th></tr><tr><td>1</td><td>2</td></tr></table>",
            "A | B\n1 | 2",
        ),
        (
            "<head><title>T</title><style>p{}</style></head><p>x&nbsp;y &amp; z &lt;b&gt;</p>",
            "x y & z <b>",
        ),
        ("<p>avant</p><hr><p>après</p>", "avant\n\n----\n\naprès"),
        ('<img src="x" alt="Logo CHU"> texte', "Logo CHU texte"),
        ("texte   <i>simple</i>\n sur  une ligne", "texte simple sur une ligne"),
        ("<p>non fermé<p>second", "non fermé\n\nsecond"),
        ("", ""),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("a < b & c", "a &lt; b &amp; c"),
        ("l1\nl2\r\nl3", "l1<br>l2<br>l3"),
        ('"quoted"', '"quoted"'),
    ],
)
def test_text_to_html(text: str, html: str) -> None:
    assert text_to_html(text) == html


@pytest.mark.parametrize(
    ("html", "kept", "found"),
    [
        (
            '<div>Réponse</div><div class="moz-cite-prefix">Le 1, X a écrit :</div>'
            '<blockquote type="cite">ancien</blockquote>',
            "<div>Réponse</div>",
            True,
        ),
        (
            '<div>Merci</div><div class="gmail_quote"><div class="gmail_attr">On x wrote:</div>'
            '<blockquote class="gmail_quote">old</blockquote></div>',
            "<div>Merci</div>",
            True,
        ),
        (
            '<div><p>Réponse</p><div id="appendonsend"></div><hr>'
            '<div id="divRplyFwdMsg"><b>De :</b> X</div><div>ancien</div></div><p>ancien 2</p>',
            "<div><p>Réponse</p></div>",
            True,
        ),
        (
            '<p>Réponse</p><div style="border:none;border-top:solid #E1E1E1 1.0pt">'
            "<p><b>De :</b> X</p></div><p>ancien</p>",
            "<p>Réponse</p>",
            True,
        ),
        (
            "<p>Rien à retirer</p><blockquote>citation voulue</blockquote>",
            "<p>Rien à retirer</p><blockquote>citation voulue</blockquote>",
            False,
        ),
    ],
)
def test_strip_quoted_html(html: str, kept: str, found: bool) -> None:
    assert strip_quoted_html(html) == (kept, found)


@given(st.text(max_size=300))
def test_html_functions_never_crash(html: str) -> None:
    cleaned = sanitize_html(html)
    assert "<script" not in cleaned.lower()
    assert isinstance(html_to_text(html), str)
    assert isinstance(strip_quoted_html(html)[0], str)


@given(
    st.lists(
        st.sampled_from(
            [
                "<p>",
                "</p>",
                "<div>",
                "</li>",
                "<li>",
                "<ul>",
                "<blockquote>",
                "<br>",
                "x",
                " ",
                "<a href='https://e.fr'>",
                "</a>",
                "<pre>",
            ]
        ),
        max_size=40,
    )
)
def test_html_to_text_on_tag_soup(tokens: list[str]) -> None:
    text = html_to_text("".join(tokens))
    assert "<" not in text and text == text.strip("\n")
