"""Raw mail to InboundMail, quoted-history removal, and the Matrix contents built from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssbridge.convert.mail_to_chat import (
    NO_SENDER,
    NOT_A_MAIL,
    attachment_content,
    chat_content,
    parse_mail,
    strip_quoted_text,
)
from mssbridge.errors import MalformedInput
from mssbridge.model import Attachment, InboundMail

MAIL_DIR = Path(__file__).parent.parent / "data" / "mail"
OWN = "bal-app@hopital-test.mssante.fr"


def _load(name: str) -> InboundMail:
    return parse_mail((MAIL_DIR / name).read_bytes())


def test_thunderbird_reply() -> None:
    mail = _load("thunderbird_reply.eml")
    assert (mail.sender_name, mail.sender_address) == (
        "Dr Marie Curie",
        "marie.curie@chu-test.mssante.fr",
    )
    assert mail.subject == "Re: Patiente Mme D., suite de prise en charge"
    assert mail.date == datetime(2024, 3, 4, 10, 15, tzinfo=timezone(timedelta(hours=1)))
    assert mail.message_id == "<5f1c2a3b-tb@chu-test.mssante.fr>"
    assert mail.in_reply_to == ("<msg0002@hopital-test.mssante.fr>",)
    assert mail.references == (
        "<root0001@hopital-test.mssante.fr>",
        "<msg0002@hopital-test.mssante.fr>",
    )
    assert mail.recipients == (OWN,)
    assert mail.text == (
        "Bonjour,\n\nJe la reçois jeudi à 14 h.\n\n-- \nDr Marie Curie\n"
        "Service de radiologie, CHU Test"
    )
    assert mail.html is not None
    assert "<b>jeudi à 14 h</b>" in mail.html and "Dr Marie Curie" in mail.html
    assert "Pouvez-vous" not in mail.html and "a écrit" not in mail.html
    assert not mail.auto_submitted and mail.attachments == ()


def test_outlook_french_reply() -> None:
    mail = _load("outlook_reply_fr.eml")
    assert mail.sender_name == "Durand, Paul"
    assert mail.subject == "RE: Demande d'avis cardiologique"
    assert mail.text == (
        "Bonjour,\n\nL'ECG est normal, pas de contre-indication.\n\n"
        "Bien cordialement,\nDr Paul Durand"
    )
    assert mail.html is not None
    assert "Dr Paul Durand" in mail.html
    for leaked in ("relire", "Envoy", "De", "tracker", "style", "appendonsend"):
        assert leaked not in mail.html


def test_gmail_reply_with_wrapped_attribution() -> None:
    mail = _load("gmail_reply.eml")
    assert mail.text == "Merci, bien reçu."
    assert mail.html == "<div>Merci, bien reçu.</div>"
    assert mail.message_id == "<CAGmail0001+abc=def@mail.gmail.com>"


def test_apple_mail_reply() -> None:
    mail = _load("apple_mail_reply.eml")
    assert mail.sender_name == "Théo Léger"
    assert mail.text == "Le traitement est arrêté depuis hier.\n\nThéo"
    assert (
        mail.html
        == "<div>Le traitement est arrêté depuis hier.</div><div><br></div><div>Théo</div>"
    )
    assert mail.recipients == (
        OWN,
        "infirmerie@ehpad-test.mssante.fr",
        "dr.house@hopital-test.mssante.fr",
    )
    assert mail.message_id == "<A0B1C2D3-apple@ehpad-test.mssante.fr>"


def test_attachments() -> None:
    mail = _load("attachments.eml")
    assert mail.subject == "Comptes rendus du décembre"
    assert mail.text == "Vous trouverez ci-joint les comptes rendus."
    assert [(a.filename, a.content_type) for a in mail.attachments] == [
        ("piece-jointe-1.png", "image/png"),
        ("compte rendu échographie.pdf", "application/pdf"),
        ("passwd", "application/octet-stream"),
        ("notes.txt", "text/plain"),
    ]
    assert mail.attachments[0].data.startswith(b"\x89PNG")
    assert mail.attachments[1].data.startswith(b"%PDF-1.4")
    assert mail.attachments[3].data.rstrip() == b"notes de la consultation"


def test_iso_8859_1_body_and_encoded_headers() -> None:
    mail = _load("latin1_body.eml")
    assert mail.sender_name == "François Béranger"
    assert mail.subject == "Résultats d'analyse"
    assert mail.text == "Résultats conformes, hémoglobine à 13 g/dl.\nFrançois"
    assert mail.html is None


def test_malformed_mime_is_read_as_far_as_possible() -> None:
    mail = _load("malformed_mime.eml")
    assert mail.sender_address == "dr.house@chu-test.mssante.fr"
    assert mail.date is None and mail.message_id is None
    assert mail.recipients == (OWN,)
    assert mail.references == ("<ok1@chu-test.mssante.fr>",)
    assert mail.in_reply_to == ("<ok1@chu-test.mssante.fr>",)
    assert mail.subject.startswith("Bonjour et =?utf-8?b?invalid")
    assert mail.text.startswith("Bonjour, le périmètre")
    assert [a.content_type for a in mail.attachments] == ["application/pdf"]


def test_delivery_report_is_auto_submitted() -> None:
    mail = _load("dsn_failure.eml")
    assert mail.auto_submitted
    assert mail.text == "The mail could not be delivered."
    assert [(a.filename, a.content_type) for a in mail.attachments] == [
        ("piece-jointe-1.eml", "message/rfc822")
    ]
    assert b"Subject: original" in mail.attachments[0].data


def test_forward_keeps_the_forwarded_text() -> None:
    mail = _load("forwarded.eml")
    assert mail.text.startswith("Pour information.")
    assert mail.text.endswith("Résultats normaux.")


def test_no_from_is_malformed() -> None:
    with pytest.raises(MalformedInput) as info:
        _load("no_from.eml")
    assert info.value.user_message == NO_SENDER


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"just some text without headers"])
def test_not_a_mail(raw: bytes) -> None:
    with pytest.raises(MalformedInput) as info:
        parse_mail(raw)
    assert info.value.user_message in {NOT_A_MAIL, NO_SENDER}


def _simple(headers: str, body: str = "Texte") -> bytes:
    return f"From: a@b.fr\r\n{headers}\r\n\r\n{body}".encode()


@pytest.mark.parametrize(
    ("headers", "auto"),
    [
        ("Auto-Submitted: auto-replied", True),
        ("Auto-Submitted: auto-generated; owner-email=x@y.fr", True),
        ("Auto-Submitted: no", False),
        ("Auto-Submitted: No (comment)", False),
        ("Precedence: bulk", True),
        ("Precedence: list", True),
        ("Precedence: first-class", False),
        ("X-Autoreply: yes", True),
        ("Content-Type: multipart/report; report-type=disposition-notification; boundary=b", True),
        ("Subject: normal", False),
    ],
)
def test_auto_submitted(headers: str, auto: bool) -> None:
    assert parse_mail(_simple(headers)).auto_submitted is auto


@pytest.mark.parametrize(
    ("headers", "address", "name"),
    [
        ("Subject: x", "a@b.fr", ""),
        ("", "a@b.fr", ""),
    ],
)
def test_sender_basics(headers: str, address: str, name: str) -> None:
    mail = parse_mail(_simple(headers))
    assert (mail.sender_address, mail.sender_name) == (address, name)


@pytest.mark.parametrize(
    ("raw", "address", "name"),
    [
        (b'From: "Dr X" <Dr.X@CHU.fr>\r\n\r\nx', "Dr.X@chu.fr", "Dr X"),
        (b"From: garbage\r\nSender: s@b.fr\r\n\r\nx", "s@b.fr", ""),
        (b"From: =?utf-8?b?w4lsb2RpZQ==?= <e@b.fr>\r\n\r\nx", "e@b.fr", "\u00c9lodie"),
        (b"From: \xc9lodie <e@b.fr>\r\n\r\nx", "e@b.fr", "\u00c9lodie"),
        (b"From: Evil\xe2\x80\xae Name <e@b.fr>\r\n\r\nx", "e@b.fr", "Evil Name"),
    ],
)
def test_sender_extraction(raw: bytes, address: str, name: str) -> None:
    mail = parse_mail(raw)
    assert (mail.sender_address, mail.sender_name) == (address, name)


def test_date_without_zone_is_utc() -> None:
    mail = parse_mail(_simple("Date: Mon, 4 Mar 2024 10:00:00 -0000"))
    assert mail.date == datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


def test_html_only_mail_gets_text() -> None:
    raw = _simple(
        "Content-Type: text/html; charset=utf-8",
        "<p>Bonjour</p><ul><li>un</li></ul><script>x</script>",
    )
    mail = parse_mail(raw)
    assert mail.text == "Bonjour\n\n- un"
    assert mail.html == "<p>Bonjour</p><ul><li>un</li></ul>"


def test_html_history_without_marker_drops_html() -> None:
    body = (
        "<p>Réponse</p><p>-----Original Message-----<br>From: x<br>Sent: y<br>To: z</p>"
        "<p>Ancien</p>"
    )
    mail = parse_mail(_simple("Content-Type: text/html; charset=utf-8", body))
    assert mail.text == "Réponse"
    assert mail.html is None


def test_only_quote_keeps_everything() -> None:
    mail = parse_mail(_simple("Subject: x", "> seulement une citation"))
    assert mail.text == "> seulement une citation"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Réponse\n\nLe 3 mars 2024, X a écrit :\n> q\n> q2\n", "Réponse"),
        ("Réponse\n\nOn Mon, Mar 4, 2024 at 10:00 AM X <x@y> wrote:\n>q\n", "Réponse"),
        ("Réponse\n\nLe lun. 4 mars 2024 à 10:00, X <x@y.fr> a\nécrit :\n\n> q\n", "Réponse"),
        ("Réponse\n\nLe 4 mars 2024 à 10:00, Dr X\n<x@y.fr> a écrit :\n> q\n", "Réponse"),
        ("Réponse\nDr X <x@y.fr> a écrit :\n> q", "Réponse"),
        ("Réponse\n\n-----Original Message-----\nFrom: X\nSent: Y\n\nold", "Réponse"),
        ("Réponse\n\n-----Message d'origine-----\nDe : X\nold", "Réponse"),
        ("Réponse\n\n----- Mail original -----\nDe: X\nold", "Réponse"),
        (
            "Réponse\n\n________________________________\nDe : X <x@y.fr>\n"
            "Envoyé : lundi 4 mars 2024 17:40\nÀ : Z\nObjet : RE: avis\n\nold",
            "Réponse",
        ),
        ("Réponse\n\n*De :* X\n*Envoyé :* lundi\n*Objet :* avis\nold", "Réponse"),
        ("Réponse\n\n-- \nDr X\nTél 01 02", "Réponse\n\n-- \nDr X\nTél 01 02"),
        (
            "Le 3 mars X a écrit :\n> q\n\nRéponse en dessous",
            "Le 3 mars X a écrit :\n> q\n\nRéponse en dessous",
        ),
        ("De : 10 h à 12 h\nconsultation", "De : 10 h à 12 h\nconsultation"),
        ("Le patient va bien.\nX a écrit :\n> q", "Le patient va bien."),
        ("Réponse\r\n> q\r\n", "Réponse"),
    ],
)
def test_strip_quoted_text(text: str, kept: str) -> None:
    assert strip_quoted_text(text) == kept


def _inbound(**changes: object) -> InboundMail:
    fields: dict[str, object] = {
        "message_id": "<m@x>",
        "sender_address": "a@b.fr",
        "sender_name": "A",
        "subject": "Avis <urgent>",
        "date": None,
        "text": "Bonjour\nsuite",
    }
    return InboundMail(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "show", "content"),
    [
        (
            {},
            None,
            {
                "msgtype": "m.text",
                "body": "Avis <urgent>\n\nBonjour\nsuite",
                "format": "org.matrix.custom.html",
                "formatted_body": "<p><strong>Avis &lt;urgent&gt;</strong></p>Bonjour<br>suite",
                "m.mentions": {},
            },
        ),
        (
            {"in_reply_to": ("<p@x>",)},
            None,
            {"msgtype": "m.text", "body": "Bonjour\nsuite", "m.mentions": {}},
        ),
        (
            {"references": ("<p@x>",), "html": "<p>Bonjour</p>"},
            None,
            {
                "msgtype": "m.text",
                "body": "Bonjour\nsuite",
                "format": "org.matrix.custom.html",
                "formatted_body": "<p>Bonjour</p>",
                "m.mentions": {},
            },
        ),
        (
            {"in_reply_to": ("<p@x>",)},
            True,
            {
                "msgtype": "m.text",
                "body": "Avis <urgent>\n\nBonjour\nsuite",
                "format": "org.matrix.custom.html",
                "formatted_body": "<p><strong>Avis &lt;urgent&gt;</strong></p>Bonjour<br>suite",
                "m.mentions": {},
            },
        ),
        (
            {"text": ""},
            None,
            {
                "msgtype": "m.text",
                "body": "Avis <urgent>",
                "format": "org.matrix.custom.html",
                "formatted_body": "<p><strong>Avis &lt;urgent&gt;</strong></p>",
                "m.mentions": {},
            },
        ),
        ({"text": " \n", "in_reply_to": ("<p@x>",)}, None, None),
        ({"text": "", "subject": ""}, None, None),
    ],
)
def test_chat_content(changes: dict[str, object], show: bool | None, content: object) -> None:
    assert chat_content(_inbound(**changes), show_subject=show) == content


@pytest.mark.parametrize(
    ("content_type", "msgtype"),
    [
        ("image/png", "m.image"),
        ("video/mp4", "m.video"),
        ("audio/mpeg", "m.audio"),
        ("application/pdf", "m.file"),
        ("text/plain", "m.file"),
    ],
)
def test_attachment_content(content_type: str, msgtype: str) -> None:
    att = Attachment("f.bin", content_type, b"12345")
    assert attachment_content(att, "mxc://s/a") == {
        "msgtype": msgtype,
        "body": "f.bin",
        "filename": "f.bin",
        "url": "mxc://s/a",
        "info": {"mimetype": content_type, "size": 5},
        "m.mentions": {},
    }


def test_attachment_content_needs_mxc() -> None:
    with pytest.raises(ValueError, match="mxc"):
        attachment_content(Attachment("f", "image/png", b""), "https://x/y")


_samples = [path.read_bytes() for path in sorted(MAIL_DIR.glob("*.eml"))]


def _mutate(data: bytes, positions: list[int], values: list[int]) -> bytes:
    buffer = bytearray(data)
    for position, value in zip(positions, values, strict=False):
        if buffer:
            buffer[position % len(buffer)] = value
    return bytes(buffer)


def _parses_or_refuses(raw: bytes) -> None:
    try:
        mail = parse_mail(raw)
    except MalformedInput as exc:
        assert exc.user_message in {NOT_A_MAIL, NO_SENDER}
        return
    assert isinstance(mail, InboundMail) and "@" in mail.sender_address


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(raw: bytes) -> None:
    _parses_or_refuses(raw)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(
    st.sampled_from(_samples),
    st.lists(st.integers(min_value=0), max_size=30),
    st.lists(st.integers(min_value=0, max_value=255), max_size=30),
)
def test_garbled_samples_never_crash(
    sample: bytes, positions: list[int], values: list[int]
) -> None:
    _parses_or_refuses(_mutate(sample, positions, values))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(
    st.lists(
        st.sampled_from(
            [
                b"From: a@b.fr\r\n",
                b"Content-Type: multipart/mixed; boundary=x\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Content-Disposition: attachment; filename*=x''%ff%fe\r\n",
                b"\r\n",
                b"--x\r\n",
                b"--x--\r\n",
                b"=?utf-8?q?=ff?=",
                b"\xff\xfe",
                b"Subject: =?x?b?****?=\r\n",
                b'Content-Type: text/plain; charset="utf-16"\r\n',
                b"body\r\n",
            ]
        ),
        max_size=40,
    )
)
def test_mime_soup_never_crashes(chunks: list[bytes]) -> None:
    _parses_or_refuses(b"".join(chunks))


def test_delivery_report_names_the_original_for_threading() -> None:
    from mssbridge.convert.threading import thread_keys

    mail = _load("dsn_failure.eml")
    assert mail.auto_submitted
    assert thread_keys(mail) == ["<orig0001@hopital-test.mssante.fr>"]


def test_read_report_names_the_original_for_threading() -> None:
    raw = (
        b"From: dr.house@correspondant.mssante.fr\r\nTo: bal@chu-test.mssante.fr\r\n"
        b"Subject: Lu\r\nMessage-ID: <mdn1@correspondant.mssante.fr>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\r\n'
        b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nVotre message a ete lu.\r\n"
        b"--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Final-Recipient: rfc822; dr.house@correspondant.mssante.fr\r\n"
        b"Original-Message-ID: <sent42@chu-test.mssante.fr>\r\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\r\n--b--\r\n"
    )
    mail = parse_mail(raw)
    assert mail.auto_submitted
    assert mail.reported_ids == ("<sent42@chu-test.mssante.fr>",)
