"""Matrix message contents to mail text and files; OutboundMail to MIME bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from mssbridge.convert.chat_to_mail import (
    ENCRYPTED_FILE,
    INVALID_FILE,
    UNREADABLE_MESSAGE,
    MediaRef,
    attachment_ref,
    build_message,
    render_chat_content,
)
from mssbridge.convert.headers import decode_words, raw_header_text
from mssbridge.errors import MalformedInput, Rejected
from mssbridge.model import Attachment, ChatText, MailThread, OutboundMail

HTML = "org.matrix.custom.html"
REPLY = {"m.in_reply_to": {"event_id": "$parent"}}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"msgtype": "m.text", "body": "Bonjour"}, ChatText("Bonjour")),
        ({"msgtype": "m.notice", "body": "Note"}, ChatText("Note")),
        (
            {
                "msgtype": "m.text",
                "body": "**gras**",
                "format": HTML,
                "formatted_body": "<strong>gras</strong><script>x</script>",
            },
            ChatText("**gras**", "<strong>gras</strong>"),
        ),
        (
            {"msgtype": "m.text", "body": "x", "format": "other", "formatted_body": "<b>x</b>"},
            ChatText("x"),
        ),
        (
            {"msgtype": "m.text", "body": "x", "format": HTML, "formatted_body": "<img src=x>"},
            ChatText("x"),
        ),
        (
            {
                "msgtype": "m.emote",
                "body": "arrive",
                "format": HTML,
                "formatted_body": "<em>arrive</em>",
            },
            ChatText("* Dr <X> arrive", "* Dr &lt;X&gt; <em>arrive</em>"),
        ),
        (
            {
                "msgtype": "m.text",
                "body": "> <@a:s> avant\n> suite\n\nRéponse\n> pas un fallback",
                "format": HTML,
                "formatted_body": "<mx-reply><blockquote>avant</blockquote></mx-reply>Réponse",
                "m.relates_to": REPLY,
            },
            ChatText("Réponse\n> pas un fallback", "Réponse"),
        ),
        (
            {"msgtype": "m.text", "body": "> citation voulue\n\ntexte"},
            ChatText("> citation voulue\n\ntexte"),
        ),
        (
            {
                "msgtype": "m.text",
                "body": "* corrigé",
                "m.new_content": {"msgtype": "m.text", "body": "corrigé"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$old"},
            },
            ChatText("corrigé"),
        ),
        (
            {"msgtype": "m.file", "body": "cr.pdf", "filename": "cr.pdf", "url": "mxc://s/a"},
            ChatText(""),
        ),
        ({"msgtype": "m.image", "body": "photo.jpg", "url": "mxc://s/a"}, ChatText("")),
        (
            {
                "msgtype": "m.image",
                "body": "Voici la plaie",
                "filename": "plaie.jpg",
                "url": "mxc://s/a",
            },
            ChatText("Voici la plaie"),
        ),
        ({"msgtype": "m.location", "body": "Ici", "geo_uri": "geo:1,2"}, ChatText("Ici")),
    ],
)
def test_render_chat_content(content: dict[str, Any], expected: ChatText) -> None:
    assert render_chat_content(content, sender_name="Dr\n<X>") == expected


@pytest.mark.parametrize(
    "content",
    [
        {"msgtype": "m.text"},
        {"msgtype": "m.text", "body": 3},
        "not a dict",
    ],
)
def test_render_chat_content_refuses_unreadable(content: Any) -> None:
    with pytest.raises(MalformedInput) as info:
        render_chat_content(content)
    assert info.value.user_message == UNREADABLE_MESSAGE


@pytest.mark.parametrize(
    ("content", "ref"),
    [
        ({"msgtype": "m.text", "body": "x"}, None),
        (
            {
                "msgtype": "m.file",
                "body": "cr.pdf",
                "url": "mxc://s.fr/Abc_1",
                "info": {"mimetype": "application/pdf", "size": 1234},
            },
            MediaRef("mxc://s.fr/Abc_1", "cr.pdf", "application/pdf", 1234),
        ),
        (
            {
                "msgtype": "m.image",
                "body": "Légende",
                "filename": "../photo.JPG",
                "url": "mxc://s/a",
                "info": {"mimetype": "bogus", "size": -1},
            },
            MediaRef("mxc://s/a", "photo.JPG", "image/jpeg", None),
        ),
        (
            {"msgtype": "m.audio", "body": "", "url": "mxc://s/a", "info": {"size": True}},
            MediaRef("mxc://s/a", "piece-jointe-1.bin", "application/octet-stream", None),
        ),
        (
            {
                "msgtype": "m.text",
                "body": "* x",
                "m.relates_to": {"rel_type": "m.replace"},
                "m.new_content": {"msgtype": "m.video", "body": "v.mp4", "url": "mxc://s/v"},
            },
            MediaRef("mxc://s/v", "v.mp4", "video/mp4", None),
        ),
    ],
)
def test_attachment_ref(content: dict[str, Any], ref: MediaRef | None) -> None:
    assert attachment_ref(content) == ref


def test_attachment_ref_refuses_encrypted_files() -> None:
    content = {"msgtype": "m.file", "body": "x.pdf", "file": {"url": "mxc://s/a", "key": {}}}
    with pytest.raises(Rejected) as info:
        attachment_ref(content)
    assert info.value.user_message == ENCRYPTED_FILE
    assert not isinstance(info.value, MalformedInput)


@pytest.mark.parametrize("url", [None, "https://s/a", "mxc://s/a/../b", "mxc://s/"])
def test_attachment_ref_refuses_bad_urls(url: str | None) -> None:
    with pytest.raises(MalformedInput) as info:
        attachment_ref({"msgtype": "m.file", "body": "x", "url": url})
    assert info.value.user_message == INVALID_FILE


DATE = datetime(2024, 3, 4, 10, 15, tzinfo=timezone(timedelta(hours=1)))


def _mail(**changes: Any) -> OutboundMail:
    fields: dict[str, Any] = {
        "message_id": "<abc@hopital-test.mssante.fr>",
        "from_address": "bal-app@hopital-test.mssante.fr",
        "from_name": "Dr Émile Roux (Matrix)",
        "to": ("marie.curie@chu-test.mssante.fr",),
        "date": DATE,
        "thread": MailThread(subject="Avis"),
        "text": "Bonjour,\nvoici.",
    }
    return OutboundMail(**{**fields, **changes})


def _reparse(message: EmailMessage) -> EmailMessage:
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_build_plain_message_headers() -> None:
    raw = build_message(_mail()).as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = _reparse(build_message(_mail()))
    assert parsed["From"] == '"Dr Émile Roux (Matrix)" <bal-app@hopital-test.mssante.fr>'
    assert parsed["To"] == "marie.curie@chu-test.mssante.fr"
    assert parsed["Subject"] == "Avis"
    assert parsed["Date"] == "Mon, 04 Mar 2024 10:15:00 +0100"
    assert parsed["Message-ID"] == "<abc@hopital-test.mssante.fr>"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["In-Reply-To"] is None and parsed["Auto-Submitted"] is None
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed.get_content().replace("\r\n", "\n") == "Bonjour,\nvoici.\n"


def test_build_reply_threading_headers() -> None:
    thread = MailThread("Re: Avis", in_reply_to="<p@x.fr>", references=("<r@x.fr>", "<p@x.fr>"))
    parsed = _reparse(build_message(_mail(thread=thread)))
    assert parsed["In-Reply-To"] == "<p@x.fr>"
    assert parsed["References"] == "<r@x.fr> <p@x.fr>"


def test_build_is_deterministic() -> None:
    mail = _mail(html="<p>x</p>", attachments=(Attachment("a.pdf", "application/pdf", b"%PDF"),))
    assert build_message(mail).as_bytes() == build_message(mail).as_bytes()


def test_naive_date_is_utc() -> None:
    parsed = _reparse(build_message(_mail(date=datetime(2024, 1, 1, 8, 0))))
    assert parsed["Date"].datetime == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)


def _letters(text: str) -> str:
    return "".join(char for char in text if char.isalnum())


@pytest.mark.parametrize(
    "name",
    [
        "Evil\r\nBcc: victim@x.fr",
        "Evil\nBcc: victim@x.fr",
        'Dr "X" \\ <y@z.fr>, other@z.fr',
        "\u202eRTL override\u0000",
        "Ünïcödé " * 40,
    ],
)
def test_display_name_cannot_inject_headers(name: str) -> None:
    message = build_message(_mail(from_name=name, thread=MailThread(subject=name)))
    raw = message.as_bytes()
    parsed = _reparse(message)
    assert b"\nBcc:" not in raw and parsed["Bcc"] is None
    assert [address.addr_spec for address in parsed["From"].addresses] == [
        "bal-app@hopital-test.mssante.fr"
    ]
    assert len(parsed["To"].addresses) == 1
    raw_from = message_from_bytes(raw, policy=policy.compat32)["From"]
    display = decode_words(raw_header_text(raw_from)).rsplit(" <", 1)[0].strip('"')
    assert "\n" not in display and "\u202e" not in display and len(display) <= 100
    assert _letters(display)[:8] == _letters(name)[:8]
    assert "\n" not in parsed["Subject"]


def test_empty_name_and_subject() -> None:
    parsed = _reparse(build_message(_mail(from_name=" \t", thread=MailThread(subject="\r\n"))))
    assert parsed["From"] == "bal-app@hopital-test.mssante.fr"
    assert parsed["Subject"] == "(sans objet)"


def test_build_alternative_with_html() -> None:
    mail = _mail(html='<p>Bonjour <b>gras</b><img src="https://t.example/p.gif"></p>')
    parsed = _reparse(build_message(mail))
    assert parsed.get_content_type() == "multipart/alternative"
    plain, html = parsed.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    html_text = html.get_content()
    assert "<p>Bonjour <b>gras</b></p>" in html_text and "img" not in html_text
    assert '<meta charset="utf-8">' in html_text
    assert plain["MIME-Version"] is None


def test_build_mixed_with_attachments() -> None:
    attachments = (
        Attachment("compte rendu échographie.pdf", "application/pdf", b"%PDF-1.4"),
        Attachment("../../etc/passwd", "text/plain", b"x"),
        Attachment("", "weird type", b"\x00\x01"),
    )
    parsed = _reparse(build_message(_mail(html="<p>x</p>", attachments=attachments)))
    assert parsed.get_content_type() == "multipart/mixed"
    parts = list(parsed.iter_parts())
    assert parts[0].get_content_type() == "multipart/alternative"
    files = [(p.get_filename(), p.get_content_type(), p.get_content()) for p in parts[1:]]
    assert files == [
        ("compte rendu échographie.pdf", "application/pdf", b"%PDF-1.4"),
        ("passwd", "text/plain", "x"),
        ("piece-jointe-3.bin", "application/octet-stream", b"\x00\x01"),
    ]
    assert all(p["Content-Transfer-Encoding"] == "base64" for p in parts[1:])
    raw = build_message(_mail(attachments=attachments[:1])).as_bytes()
    assert b"filename*=utf-8''compte%20rendu%20%C3%A9chographie.pdf" in raw


def test_long_non_ascii_text_is_7bit_safe() -> None:
    raw = build_message(_mail(text="é" * 2000 + "\nfin")).as_bytes()
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_extra_headers() -> None:
    extra = (("X-MSS-NIL", "REF-123"), ("X-MSS-INS", "O"), ("Reply-To", "bal@x.fr"))
    parsed = _reparse(build_message(_mail(extra_headers=extra)))
    assert parsed["X-MSS-NIL"] == "REF-123"
    assert parsed["X-MSS-INS"] == "O"
    assert parsed["Reply-To"] == "bal@x.fr"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("X-Test", "a\r\nBcc: x@y.fr", "control character"),
        ("X-Test", "a\x00b", "control character"),
        ("X Test", "v", "invalid header name"),
        ("X-Test:", "v", "invalid header name"),
        ("", "v", "invalid header name"),
        ("Bcc", "x@y.fr", "set by the message builder"),
        ("content-type", "text/html", "set by the message builder"),
        ("Message-ID", "<x@y>", "set by the message builder"),
    ],
)
def test_extra_headers_are_validated(name: str, value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build_message(_mail(extra_headers=((name, value),)))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"to": ()}, "at least one recipient"),
        ({"to": ("not an address",)}, "missing '@'"),
        ({"to": ("a@b.fr\r\nBcc: c@d.fr",)}, "forbidden"),
        ({"from_address": "élodie@x.fr"}, "non-ASCII"),
        ({"message_id": "abc@x"}, "not a single"),
        ({"message_id": "<a@x>\r\nBcc: y@z.fr"}, "not a single"),
        ({"thread": MailThread("s", in_reply_to="<a@x> <b@x>")}, "not a single"),
        ({"thread": MailThread("s", references=("<a@x>", "junk"))}, "not a single"),
    ],
)
def test_bridge_computed_values_are_validated(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build_message(_mail(**changes))
