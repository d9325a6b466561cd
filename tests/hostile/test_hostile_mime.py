"""Hostile inbound mail: each case parses or is refused precisely, fast, losing nothing else."""

from __future__ import annotations

import pytest
from hostile_checks import assert_one_line, assert_safe_filename, assert_safe_html, bounded
from hostile_corpus import KEEP, SENDER, MimeCase, mime_cases

from mssbridge.convert.mail_to_chat import (
    MAX_SUBJECT,
    NO_SENDER,
    NOT_A_MAIL,
    attachment_content,
    chat_content,
    parse_mail,
)
from mssbridge.errors import MalformedInput
from mssbridge.model import InboundMail

pytestmark = pytest.mark.timeout(60)

REFUSALS = {"5.6.0": NOT_A_MAIL, "5.1.7": NO_SENDER}
CASES = {case.name: case for case in mime_cases()}


def _parse(case: MimeCase) -> InboundMail | MalformedInput:
    try:
        return bounded(lambda: parse_mail(case.raw))
    except MalformedInput as exc:
        return exc


def _check_refusal(case: MimeCase, refusal: MalformedInput) -> None:
    assert case.refusal is not None or case.may_refuse, f"refused: {refusal.code} {refusal}"
    assert REFUSALS.get(refusal.code) == refusal.user_message
    if case.refusal is not None:
        assert refusal.code == case.refusal


def _check_mail(case: MimeCase, mail: InboundMail) -> None:
    assert case.refusal is None, "a refusal was expected"
    assert "@" in mail.sender_address and "\n" not in mail.sender_address
    assert_one_line(mail.sender_name, 100)
    assert_one_line(mail.subject, MAX_SUBJECT)
    for word in case.keeps:
        # Kept as text, or as a file when the part could not be read as text.
        in_files = any(word.encode() in attachment.data for attachment in mail.attachments)
        assert word in mail.text or word in mail.subject or in_files, f"{word!r} lost"
    if case.files is not None:
        assert len(mail.attachments) == case.files
    for index, attachment in enumerate(mail.attachments):
        assert_safe_filename(attachment.filename)
        assert "/" in attachment.content_type and attachment.content_type.isascii()
        content = attachment_content(attachment, f"mxc://hospital.test/m{index}")
        assert content["body"] == attachment.filename
    if mail.html is not None:
        assert_safe_html(mail.html)
    for ids in (mail.in_reply_to, mail.references, mail.reported_ids):
        assert all(item.startswith("<") and item.endswith(">") for item in ids)
    content = chat_content(mail)
    if content is not None:
        assert isinstance(content["body"], str) and content["m.mentions"] == {}
        assert_safe_html(content.get("formatted_body", ""))
    elif case.keeps:
        pytest.fail("kept text but no chat content")


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_mail(name: str) -> None:
    case = CASES[name]
    outcome = _parse(case)
    if isinstance(outcome, MalformedInput):
        _check_refusal(case, outcome)
    else:
        _check_mail(case, outcome)


def test_the_corpus_is_large_and_varied() -> None:
    families = {name.split("-", 1)[0] for name in CASES}
    assert len(CASES) >= 450
    assert {"nest", "boundary", "charset", "ew", "filename", "header", "mutation"} <= families


def test_smuggled_end_of_data_stays_one_message_of_text() -> None:
    """A ``.`` line inside a received body is text: no second mail, the rest still there."""
    mail = parse_mail(CASES["file-smuggled_dot"].raw)
    assert KEEP in mail.text and "smuggled" in mail.text and "MAIL FROM" in mail.text
    assert mail.sender_address == SENDER


def test_encoded_line_breaks_do_not_split_headers() -> None:
    mail = parse_mail(CASES["file-header_injection_subject"].raw)
    assert mail.sender_name.startswith("Dr House") and "Bcc" in mail.sender_name
    assert "Bcc: evil@attacker.example" in mail.subject
    assert mail.in_reply_to == ("<a@b>", "<c@d>")


def test_deep_branch_is_dropped_but_the_rest_is_kept() -> None:
    shallow = parse_mail(CASES["nest-multipart-19"].raw)
    deep = parse_mail(CASES["nest-multipart-150"].raw)
    assert "profond" in shallow.text and KEEP in shallow.text
    assert "profond" not in deep.text and KEEP in deep.text


def test_broken_attachment_keeps_text_and_other_files() -> None:
    mail = parse_mail(CASES["file-broken_base64_attachment"].raw)
    assert KEEP in mail.text and "été" in mail.text
    assert [a.filename for a in mail.attachments] == ["cr.pdf", "vide.pdf"]
    assert mail.attachments[1].data == b""


def test_bidi_and_traversal_are_cleaned_from_file_names() -> None:
    mail = parse_mail(CASES["file-bidi_attachment"].raw)
    (attachment,) = mail.attachments
    assert attachment.filename == "fdp.exe"
    assert "\u202e" not in mail.subject and mail.subject == "Facture fdp.exe"
