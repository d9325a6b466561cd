"""Hostile Matrix input on its way to mail: odd events, SMTP smuggling, header injection."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from fixtures.settings import offline_config
from hostile_checks import HIDDEN, assert_one_line, assert_safe_filename, assert_safe_html, bounded
from hostile_corpus import (
    ENCODED_WORDS,
    INJECTIONS,
    KEEP,
    SMUGGLING,
    EventCase,
    event_cases,
    transaction_bodies,
    transaction_events,
)

from mssbridge import config
from mssbridge.convert.chat_to_mail import (
    MAX_DISPLAY_NAME,
    MAX_SUBJECT,
    MediaRef,
    attachment_ref,
    build_message,
    render_chat_content,
)
from mssbridge.convert.mdn import MdnAnswer, MdnRequest, build_mdn, mdn_request
from mssbridge.convert.threading import reply_subject
from mssbridge.errors import MalformedInput, Rejected
from mssbridge.matrix.appservice import BridgeAppService
from mssbridge.model import Attachment, ChatText, MailThread, OutboundMail
from mssbridge.policy.loops import BridgeIdentity, should_store_event

pytestmark = pytest.mark.timeout(60)

EVENTS = {case.name: case for case in event_cases()}
BUILDER_HEADERS = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}
LENIENT_LINE_END = re.compile(rb"\r\n|\r|\n")  # what a sloppy receiving server may accept


def outbound(**changes: Any) -> OutboundMail:
    fields: dict[str, Any] = {
        "message_id": "<hostile@hopital-test.mssante.fr>",
        "from_address": "bal@hopital-test.mssante.fr",
        "from_name": "Dr Alice Martin via CHU",
        "to": ("dr.house@chu-test.mssante.fr",),
        "date": datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
        "thread": MailThread(subject="Avis"),
        "text": "Bonjour, texte conserve.",
    }
    return OutboundMail(**{**fields, **changes})


def encode(mail: OutboundMail) -> bytes:
    """The bytes the outbound flow hands to the SMTP client."""
    return bounded(lambda: build_message(mail).as_bytes(policy=policy.SMTP))


def assert_smtp_safe(raw: bytes, strict_body: bool = True) -> None:
    """CRLF only, short lines, and exactly one end of DATA once the client dot-stuffs.

    ``strict_body=False`` checks NUL and line length in the header block only (a read
    notification returns the original mail as it came).
    """
    checked = raw if strict_body else raw.split(b"\r\n\r\n", 1)[0]
    assert b"\x00" not in checked
    assert max(len(line) for line in checked.split(b"\r\n")) <= 998  # RFC 5321 §4.5.3.1.6
    without_crlf = raw.replace(b"\r\n", b"")
    assert b"\r" not in without_crlf and b"\n" not in without_crlf, "bare CR or LF"
    assert raw.endswith(b"\r\n")
    lines = raw[:-2].split(b"\r\n")
    # RFC 5321 §4.5.2 as the SMTP library applies it; then read back by a server that also
    # takes bare CR or LF as line ends: the only lone "." must be the terminator.
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    stream = stuffed + b".\r\n"
    seen = LENIENT_LINE_END.split(stream)
    assert [index for index, line in enumerate(seen) if line == b"."] == [len(seen) - 2]


def reparse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def plain_text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


# --------------------------------------------------------------------------- Matrix contents


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", bounded(call)
    except Rejected as exc:  # MalformedInput is a Rejected
        return f"refused:{exc.code}", exc


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_hostile_event_content(name: str) -> None:
    case: EventCase = EVENTS[name]
    kind, text = _outcome(lambda: render_chat_content(case.content, "Dr \u202eAlice\r\nBcc: x"))
    assert kind == ("ok" if case.outcome == "text" else case.outcome)
    if kind == "ok":
        assert isinstance(text, ChatText) and isinstance(text.body, str)
        if case.keeps:
            assert case.keeps in text.body
        if text.html is not None:
            assert_safe_html(text.html)
        # Whatever the event held, the text becomes a valid, SMTP-safe mail.
        assert_smtp_safe(encode(outbound(text=text.body, html=text.html)))
    else:
        assert isinstance(text, MalformedInput | Rejected) and text.user_message
    kind, ref = _outcome(lambda: attachment_ref(case.content))
    expected = "ok" if case.file in {"none", "ref"} else case.file
    assert kind == expected
    if case.file == "none":
        assert ref is None
    elif case.file == "ref":
        assert isinstance(ref, MediaRef) and ref.mxc_url.startswith("mxc://")
        assert_safe_filename(ref.filename)
        assert re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", ref.mimetype)
        assert ref.size is None or ref.size >= 0


def test_surrogates_from_json_become_replacement_characters() -> None:
    content = json.loads(
        '{"msgtype": "m.text", "body": "a\\ud800b", "format": '
        '"org.matrix.custom.html", "formatted_body": "<b>c\\udfffd</b>"}'
    )
    text = render_chat_content(content)
    assert text == ChatText("a\ufffdb", "<b>c\ufffdd</b>")
    message = reparse(encode(outbound(text="x\ud800y", html="<p>z\udc00</p>")))
    assert plain_text(message) == "x\ufffdy\n"


# --------------------------------------------------------------------------- SMTP smuggling


@pytest.mark.parametrize("where", ["text", "html", "file"])
@pytest.mark.parametrize("name", [name for name, _ in SMUGGLING])
def test_smuggling_sequences_stay_inside_one_message(name: str, where: str) -> None:
    value = dict(SMUGGLING)[name]
    if where == "text":
        mail = outbound(text=value)
    elif where == "html":
        mail = outbound(html=f"<p>{value}</p>")
    else:
        mail = outbound(attachments=(Attachment("note.txt", "text/plain", value.encode()),))
    raw = encode(mail)
    assert_smtp_safe(raw)
    message = reparse(raw)
    names = {key.lower() for key in message}
    assert BUILDER_HEADERS <= names <= BUILDER_HEADERS | {"content-transfer-encoding"}
    if where == "text":
        # The text arrives whole, not dot-stuffed twice: stuffing is the SMTP library's job.
        assert plain_text(message) == value.replace("\r\n", "\n").replace("\r", "\n") + "\n"
    elif where == "file":
        (part,) = list(message.iter_attachments())
        assert part.get_payload(decode=True) == value.encode()


# --------------------------------------------------------------------------- header injection


def _visible_words(value: str) -> list[str]:
    """The first words a reader sees, encoded-word syntax (``=?utf-8?q?``, ``=0D``) aside."""
    if re.search(r"\?[bB]\?", value):
        return []  # base64: nothing readable before decoding
    plain = re.sub(r"=\?[^?]*\?[qQbB]\?|=[0-9A-F]{2}|\?=", " ", value)
    return re.findall(r"[A-Za-z]{3,}", plain)[:3]


@pytest.mark.parametrize("field", ["display-name", "room-name", "reply-subject", "filename"])
@pytest.mark.parametrize("name", [name for name, _ in INJECTIONS])
def test_header_injection_is_neutralised(name: str, field: str) -> None:
    value = dict(INJECTIONS)[name]
    if field == "display-name":
        mail = outbound(from_name=value)
    elif field == "room-name":
        mail = outbound(thread=MailThread(subject=value))
    elif field == "reply-subject":
        mail = outbound(thread=MailThread(subject=reply_subject(value), in_reply_to="<p@x.fr>"))
    else:
        mail = outbound(attachments=(Attachment(value, "application/pdf", b"%PDF"),))
    raw = encode(mail)
    assert_smtp_safe(raw)
    message = reparse(raw)
    names = {key.lower() for key in message}
    optional = {"in-reply-to", "content-transfer-encoding"}
    assert BUILDER_HEADERS <= names <= BUILDER_HEADERS | optional, names
    assert b"\nBcc:" not in raw and b"\nbcc:" not in raw.lower()
    assert len(message.get_all("To") or []) == 1
    assert message["To"].addresses[0].addr_spec == "dr.house@chu-test.mssante.fr"
    sender = message["From"].addresses
    assert [address.addr_spec for address in sender] == ["bal@hopital-test.mssante.fr"]
    if field == "display-name":
        shown = sender[0].display_name
        # A few more characters than the limit: the encoder may split a combining sequence.
        assert_one_line(shown, MAX_DISPLAY_NAME + 10)
        assert all(word[:20] in shown for word in _visible_words(value)[:1])
    elif field in {"room-name", "reply-subject"}:
        shown = str(message["Subject"])
        assert_one_line(shown, MAX_SUBJECT + 10)
        assert all(word[:20] in shown for word in _visible_words(value)[:1])
    else:
        (part,) = list(message.iter_attachments())
        filename = part.get_filename()
        assert filename is not None
        assert_safe_filename(filename)
        assert part.get_content() == b"%PDF"


@pytest.mark.parametrize("name", [name for name, _ in INJECTIONS])
def test_emote_sender_name_is_one_clean_line(name: str) -> None:
    text = render_chat_content({"msgtype": "m.emote", "body": "salue"}, dict(INJECTIONS)[name])
    first = text.body.split("\n", 1)[0]
    assert text.body.endswith(" salue") and first == text.body
    assert not any(char for char in text.body if char not in "\t" and _category(char) in HIDDEN), (
        repr(text.body)
    )


def _category(char: str) -> str:
    import unicodedata

    return unicodedata.category(char)


# --------------------------------------------------------------------------- appservice intake


IDENTITY = BridgeIdentity("hospital.test", "mss_bot", "mss_", "bal@chu-test.mssante.fr")


class _Request:
    """The part of aiohttp's request the transaction handler reads."""

    def __init__(self, body: bytes, token: str) -> None:
        from yarl import URL

        self.headers = {"Authorization": f"Bearer {token}"}
        self.rel_url = URL("/_matrix/app/v1/transactions/t")
        self.match_info = {"transaction_id": "t"}
        self._body = body

    async def read(self) -> bytes:
        return self._body


class _Intake:
    def __init__(self, settings: config.Settings) -> None:
        self.stored: list[dict[str, Any]] = []
        self.token = settings.matrix.hs_token

        async def store(txn_id: str, events: Any) -> int:
            self.stored.extend(events)
            return len(events)

        self.service = BridgeAppService(
            settings, store, lambda event: should_store_event(event, IDENTITY), lambda _: False
        )

    async def put(self, body: bytes, token: str | None = None) -> tuple[int, dict[str, Any]]:
        request: Any = _Request(body, self.token if token is None else token)
        response = await self.service._http_handle_transaction(request)
        text = response.text or "{}"
        return response.status, json.loads(text)


@pytest.fixture
async def intake(tmp_path: Path) -> _Intake:
    path = offline_config(tmp_path / "config.toml", "matrix.server_name=hospital.test")
    return _Intake(config.load(path))


@pytest.mark.parametrize("name", sorted(transaction_bodies()))
async def test_hostile_transaction_body(intake: _Intake, name: str) -> None:
    body, status = transaction_bodies()[name]
    got, answer = await intake.put(body)
    assert got == status, answer
    if status != 200:
        assert answer["errcode"] in {"M_NOT_JSON", "M_BAD_JSON"}
    assert all(isinstance(event, dict) for event in intake.stored)
    assert intake.stored == []  # none of these bodies holds an event the bridge acts on


async def test_hostile_events_in_one_transaction(intake: _Intake) -> None:
    cases = transaction_events()
    events = [
        dict(event, event_id=f"${name}")
        if "event_id" in event and isinstance(event["event_id"], str)
        else event
        for name, event, _ in cases
    ]
    status, _ = await intake.put(json.dumps({"events": events}).encode())
    assert status == 200
    stored = {event["event_id"].lstrip("$") for event in intake.stored}
    assert stored == {name for name, _, keep in cases if keep}
    for event in intake.stored:  # what is stored is what the outbox rows need
        assert all(isinstance(event[key], str) for key in ("event_id", "room_id", "sender", "type"))


async def test_transaction_needs_the_token(intake: _Intake) -> None:
    events = [event for _, event, keep in transaction_events() if keep]
    for token in ("", "wrong", intake.token + "x", intake.token[:-1]):
        status, answer = await intake.put(json.dumps({"events": events}).encode(), token)
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    assert intake.stored == []


def test_kept_text_survives_every_odd_event() -> None:
    kept = [case for case in EVENTS.values() if case.keeps == KEEP]
    assert len(kept) >= 15


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_outbound_flow_reads_any_content(name: str) -> None:
    """The flow's first look at an event (is it a command?) never fails on odd JSON."""
    from mssbridge.flows.outbound import _body, _content

    content = EVENTS[name].content
    body = _body({"content": content})
    assert isinstance(body, str) and isinstance(_content({"content": content}), dict)
    if not isinstance(content, dict):
        assert body == "" and _content({"content": content}) == {}
    elif isinstance(content.get("body"), str):
        assert body == content["body"]


MDN_HEADERS = {
    "from", "to", "subject", "date", "message-id", "in-reply-to", "references",
    "auto-submitted", "mime-version", "content-type",
}  # fmt: skip


@pytest.mark.parametrize(
    "name", [f"injection-{name}" for name, _ in INJECTIONS] + [f"ew-{n}" for n, _ in ENCODED_WORDS]
)
def test_read_notification_subject_cannot_inject_headers(name: str) -> None:
    """The bridge answers read requests unattended: the requester's subject is hostile."""
    kind, _, key = name.partition("-")
    values = dict(INJECTIONS) if kind == "injection" else dict(ENCODED_WORDS)
    value = values[key]
    subject = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    subject = subject.replace(b"\r", b" ").replace(b"\n", b" ")  # one raw header line
    raw = (
        b"From: dr.house@chu-test.mssante.fr\r\nReturn-Path: <dr.house@chu-test.mssante.fr>\r\n"
        b"Disposition-Notification-To: dr.house@chu-test.mssante.fr\r\n"
        b"Message-ID: <orig@chu-test.mssante.fr>\r\nSubject: " + subject + b"\r\n\r\ncorps\r\n"
    )
    request = mdn_request(raw, automatic=False, own_address="bal@hopital-test.mssante.fr")
    assert isinstance(request, MdnRequest)
    answer = MdnAnswer(
        message_id="<mdn@hopital-test.mssante.fr>",
        from_address="bal@hopital-test.mssante.fr",
        from_name="CHU",
        date=datetime(2025, 3, 1, tzinfo=UTC),
        reporting_ua="hopital-test.mssante.fr; mssbridge",
        organisation="CHU",
        max_size=100_000,
    )
    out = bounded(lambda: build_mdn(request, answer, raw).as_bytes(policy=policy.SMTP))
    assert_smtp_safe(out, strict_body=False)
    message = reparse(out)
    assert {key.lower() for key in message} == MDN_HEADERS
    assert [a.addr_spec for a in message["To"].addresses] == ["dr.house@chu-test.mssante.fr"]
    assert_one_line(str(message["Subject"]), 600)


@pytest.mark.parametrize("name", [name for name, _ in SMUGGLING])
def test_read_notification_returns_the_original_without_smuggling(name: str) -> None:
    """The notification quotes the original mail: its bare CR/LF and dots stay inert."""
    body = dict(SMUGGLING)[name].encode()
    raw = (
        b"From: dr.house@chu-test.mssante.fr\nReturn-Path: <dr.house@chu-test.mssante.fr>\n"
        b"Disposition-Notification-To: dr.house@chu-test.mssante.fr\n"
        b"Message-ID: <orig@chu-test.mssante.fr>\nSubject: s\n\n" + body + b"\n"
    )
    request = mdn_request(raw, automatic=False, own_address="bal@hopital-test.mssante.fr")
    assert isinstance(request, MdnRequest)
    answer = MdnAnswer(
        message_id="<mdn@hopital-test.mssante.fr>",
        from_address="bal@hopital-test.mssante.fr",
        from_name="CHU",
        date=datetime(2025, 3, 1, tzinfo=UTC),
        reporting_ua="hopital-test.mssante.fr; mssbridge",
        organisation="CHU",
        max_size=100_000,
    )
    out = bounded(lambda: build_mdn(request, answer, raw).as_bytes(policy=policy.SMTP))
    assert_smtp_safe(out, strict_body=False)
    assert len(reparse(out).get_payload()) == 3  # text, disposition, original: nothing more


COMMAND_LINES = {
    "unterminated-quote": '!mss start "a@b.fr',
    "unterminated-single": "!mss start 'a@b.fr",
    "escape-at-end": "!mss start a@b.fr \\",
    "nul": "!mss \x00start a@b.fr",
    "rtl-name": "!mss \u202etrats",
    "crlf-subject": '!mss start a@b.fr "sujet\r\nBcc: evil@x.fr"',
    "huge-args": "!mss start " + "a@b.fr " * 20_000,
    "huge-quoted": "!mss subject '" + "x" * 100_000,
    "only-prefix": "!mss",
    "tabs-newlines": "!mss\tstart\na@b.fr",
    "unicode-spaces": "!mss\u3000start\u00a0a@b.fr",
    "upper-case": "!MSS START a@b.fr",
}


@pytest.mark.parametrize("name", sorted(COMMAND_LINES))
def test_command_lines_always_parse(name: str) -> None:
    from mssbridge.matrix.commands import COMMANDS, is_command, parse

    line = COMMAND_LINES[name]
    command = bounded(lambda: parse(line, "!mss"))
    assert command.name in COMMANDS
    assert all(isinstance(arg, str) for arg in command.args)
    assert isinstance(is_command(line, "!mss"), bool)
