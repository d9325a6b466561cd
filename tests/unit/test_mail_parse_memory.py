"""Parsing a large received mail: the same result as the email package, far less held at once."""

from __future__ import annotations

import base64
import os
import tracemalloc
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP

import pytest

from mssbridge.convert.mail_to_chat import PARSE_POLICY, _decoded, _parse, parse_mail
from mssbridge.convert.mdn import MdnRequest, mdn_request


def _mail_with(data: bytes) -> bytes:
    mail = EmailMessage()
    mail["From"] = "dr.house@correspondant.mssante.fr"
    mail["To"] = "messagerie@chu-test.mssante.fr"
    mail["Subject"] = "Imagerie"
    mail.set_content("Bonjour,\nci-joint le scanner.\n")
    mail.add_attachment(data, maintype="application", subtype="dicom", filename="scanner.dcm")
    return mail.as_bytes(policy=SMTP)


def test_a_large_attachment_is_parsed_holding_a_few_times_the_mail() -> None:
    data = os.urandom(3_000_000)
    raw = _mail_with(data)
    tracemalloc.start()
    try:
        mail = parse_mail(raw)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [a.data for a in mail.attachments] == [data]
    # The whole-mail parse held about 8.7 times the mail; fed in pieces, about three.
    assert peak < 4 * len(raw)


def test_a_read_notification_request_is_read_from_the_header_block_only() -> None:
    house = "dr.house@correspondant.mssante.fr"
    raw = (
        f"Return-Path: <{house}>\r\nDisposition-Notification-To: {house}\r\n"
        "Message-ID: <imagerie-1@correspondant.mssante.fr>\r\n".encode()
        + _mail_with(os.urandom(3_000_000))
        + b"\r\nDisposition-Notification-To: autre@x.mssante.fr\r\n"  # body text, not a field
    )
    tracemalloc.start()
    try:
        request = mdn_request(raw, automatic=False, own_address="bal@chu-test.mssante.fr")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(request, MdnRequest) and request.notify_to == house
    assert peak < len(raw) // 10  # the whole mail through the parser: about five times it


def test_fed_in_pieces_the_message_is_the_same() -> None:
    raw = _mail_with(os.urandom(200_000)).replace(b"\r\n", b"\n", 40)  # mixed line ends too
    whole = BytesParser(policy=PARSE_POLICY).parsebytes(raw)
    fed = _parse(raw)
    assert fed.as_bytes() == whole.as_bytes()
    assert [type(d) for d in fed.defects] == [type(d) for d in whole.defects]


@pytest.mark.parametrize(
    "encoded",
    [
        base64.encodebytes(b"compte rendu").decode(),
        "Y29tcHRlIHJlbmR1\r\n",  # no padding needed
        "Y29tcHRlIHJlbmR",  # padding missing
        "Y29tc!HRlIHJlbmR1",  # a character outside the alphabet
        "Y29tcHRlIHJlbmR1=\r\nQQ==",  # data after the padding
        "Y29tcHRl\udcffIHJlbmR1",  # a byte outside ASCII, as the parser keeps it
        "Y",  # cannot be decoded: given back as is
    ],
)
def test_base64_files_decode_as_the_email_package_decodes_them(encoded: str) -> None:
    ours, theirs = EmailMessage(policy=PARSE_POLICY), EmailMessage(policy=PARSE_POLICY)
    for part in (ours, theirs):
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(encoded)
    assert _decoded(ours) == theirs.get_payload(decode=True)
    assert [type(d) for d in ours.defects] == [type(d) for d in theirs.defects]
