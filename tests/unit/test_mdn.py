"""Read notifications the bridge sends: when a mail may have one, and its ANS layout."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.policy import default as default_policy

import pytest

from mssbridge.convert.mdn import (
    DISPOSITION,
    MdnAnswer,
    MdnRequest,
    NoMdn,
    build_mdn,
    disposition_fields,
    mdn_request,
    mdn_subject,
)
from mssbridge.convert.receipts import DISPOSITION_NOTIFICATION, Outcome, parse_report

OWN = "messagerie@chu-test.mssante.fr"
HOUSE = "dr.house@correspondant.mssante.fr"
ORIGINAL_ID = "<orig1@correspondant.mssante.fr>"


def original(
    headers: str = f"Return-Path: <{HOUSE}>\r\nDisposition-Notification-To: {HOUSE}\r\n",
    body: bytes = b"Bonjour\r\n",
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    return (
        f"{headers}From: Dr House <{HOUSE}>\r\nTo: {OWN}\r\n"
        f"Subject: =?utf-8?q?Avis_=C3=A9cho?=\r\nMessage-ID: {ORIGINAL_ID}\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n"
    ).encode() + body


def answer(max_size: int = 10_000_000) -> MdnAnswer:
    return MdnAnswer(
        message_id="<mdn1@chu-test.mssante.fr>",
        from_address=OWN,
        from_name="Messagerie CHU Test",
        date=datetime(2026, 11, 22, 8, 0, tzinfo=UTC),
        reporting_ua="chu-test.mssante.fr; mssbridge 0.1.0",
        organisation="Messagerie CHU Test",
        max_size=max_size,
        extra_headers=(("X-MSS-NIL", "NIL-TEST"),),
    )


@pytest.mark.parametrize(
    ("headers", "automatic", "expected"),
    [
        (f"Return-Path: <{HOUSE}>\r\n", False, NoMdn.NOT_REQUESTED),
        (
            f"Return-Path: <{HOUSE}>\r\nDisposition-Notification-To: {HOUSE}\r\n",
            True,
            NoMdn.AUTOMATIC,
        ),
        (
            f"Return-Path: <{HOUSE}>\r\n"
            f"Disposition-Notification-To: {HOUSE}, autre@correspondant.mssante.fr\r\n",
            False,
            NoMdn.SEVERAL_ADDRESSES,
        ),
        (
            f"Return-Path: <{HOUSE}>\r\nDisposition-Notification-To: secretariat@x.mssante.fr\r\n",
            False,
            NoMdn.RETURN_PATH_DIFFERS,
        ),
        (f"Disposition-Notification-To: {HOUSE}\r\n", False, NoMdn.RETURN_PATH_DIFFERS),
        (
            f"Return-Path: <{OWN}>\r\nDisposition-Notification-To: {OWN}\r\n",
            False,
            NoMdn.OWN_ADDRESS,
        ),
    ],
)
def test_no_automatic_notification(headers: str, automatic: bool, expected: NoMdn) -> None:
    assert mdn_request(original(headers), automatic=automatic, own_address=OWN) == expected


def test_request_without_message_id() -> None:
    raw = original().replace(f"Message-ID: {ORIGINAL_ID}\r\n".encode(), b"")
    assert mdn_request(raw, automatic=False, own_address=OWN) == NoMdn.NO_MESSAGE_ID


def test_request_accepted() -> None:
    headers = (
        f"Return-Path: <DR.HOUSE@correspondant.mssante.fr>\r\n"
        f'Disposition-Notification-To: "Dr House" <{HOUSE}>\r\n'
        "Original-Recipient: rfc822;service@chu-test.mssante.fr\r\n"
    )
    assert mdn_request(original(headers), automatic=False, own_address=OWN) == MdnRequest(
        notify_to=HOUSE,
        original_message_id=ORIGINAL_ID,
        original_recipient="rfc822;service@chu-test.mssante.fr",
        subject="Avis écho",
    )


def _request(raw: bytes) -> MdnRequest:
    request = mdn_request(raw, automatic=False, own_address=OWN)
    assert isinstance(request, MdnRequest)
    return request


def _parts(mdn: bytes) -> list[Message]:
    parsed = message_from_bytes(mdn, policy=default_policy)
    payload = parsed.get_payload()
    assert isinstance(payload, list)
    return payload


def test_layout_of_the_ans() -> None:
    raw = original()
    encoded = build_mdn(_request(raw), answer(), raw).as_bytes(policy=SMTP)
    parsed = message_from_bytes(encoded, policy=default_policy)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "disposition-notification"
    assert parsed["To"] == HOUSE
    assert parsed["Subject"] == "Accusé de réception : Avis écho"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["X-MSS-NIL"] == "NIL-TEST"
    assert parsed["Disposition-Notification-To"] is None  # RFC 8098 §2.1: never on an MDN
    assert parsed["Message-ID"] == "<mdn1@chu-test.mssante.fr>"
    parts = _parts(encoded)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/disposition-notification",
        "message/rfc822",
    ]
    assert "Messagerie CHU Test" in str(parts[0].get_content())
    fields = parts[1].get_payload()
    assert isinstance(fields, list)
    assert list(fields[0].items()) == [
        ("Reporting-UA", "chu-test.mssante.fr; mssbridge 0.1.0"),
        ("Original-Recipient", f"rfc822;{OWN}"),
        ("Final-Recipient", f"rfc822;{OWN}"),
        ("Original-Message-ID", ORIGINAL_ID),
        ("Disposition", "automatic-action/MDN-sent-automatically; processed"),
    ]
    returned = parts[2].get_payload()
    assert isinstance(returned, list) and returned[0]["Message-ID"] == ORIGINAL_ID


def test_round_trip_through_the_report_reader() -> None:
    raw = original()
    report = parse_report(build_mdn(_request(raw), answer(), raw).as_bytes(policy=SMTP))
    assert report is not None and report.report_type == DISPOSITION_NOTIFICATION
    assert report.original_ids[0] == ORIGINAL_ID
    [line] = report.recipients
    assert (line.recipient, line.outcome, line.action) == (OWN, Outcome.READ, "processed")


def test_original_recipient_is_taken_from_the_original() -> None:
    raw = original(
        f"Return-Path: <{HOUSE}>\r\nDisposition-Notification-To: {HOUSE}\r\n"
        "Original-Recipient: rfc822;service@chu-test.mssante.fr\r\n"
    )
    fields = dict(disposition_fields(_request(raw), answer()))
    assert fields["Original-Recipient"] == "rfc822;service@chu-test.mssante.fr"
    assert fields["Final-Recipient"] == f"rfc822;{OWN}"
    assert fields["Disposition"] == DISPOSITION


def test_large_original_returns_its_header_only() -> None:
    raw = original(body=b"x" * 50_000 + b"\r\n")
    encoded = build_mdn(_request(raw), answer(max_size=40_000), raw).as_bytes(policy=SMTP)
    parts = _parts(encoded)
    assert [p.get_content_type() for p in parts][-1] == "text/rfc822-headers"
    assert ORIGINAL_ID.encode() in encoded and b"x" * 100 not in encoded
    assert len(encoded) < 40_000


def _document_mail() -> bytes:
    mail = EmailMessage()
    mail["Return-Path"] = f"<{HOUSE}>"
    mail["Disposition-Notification-To"] = HOUSE
    mail["From"] = HOUSE
    mail["To"] = OWN
    mail["Subject"] = "XDM/1.0/DDM+Compte rendu CORSE FIGATELLIX 12/10/1988"
    mail["Message-ID"] = ORIGINAL_ID
    mail.set_content("Ci-joint le compte rendu.")
    mail.add_attachment(b"PK\x03\x04zip", "application", "zip", filename="IHE_XDM.ZIP")
    mail.add_attachment(b"%PDF-1.4", "application", "pdf", filename="20261122_CR.pdf")
    return mail.as_bytes(policy=SMTP)


def test_document_mail_files_are_returned_again() -> None:
    raw = _document_mail()
    encoded = build_mdn(_request(raw), answer(), raw).as_bytes(policy=SMTP)
    parsed = message_from_bytes(encoded, policy=default_policy)
    assert parsed["Subject"] == "XDM/1.0/DDM+Compte rendu CORSE FIGATELLIX 12/10/1988"
    parts = _parts(encoded)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/disposition-notification",
        "message/rfc822",
        "application/zip",
        "application/pdf",
    ]
    assert [p.get_filename() for p in parts[3:]] == ["IHE_XDM.ZIP", "20261122_CR.pdf"]


def test_plain_mail_files_are_not_returned_twice() -> None:
    raw = _document_mail().replace(b"IHE_XDM.ZIP", b"autre.zip")
    parts = _parts(build_mdn(_request(raw), answer(), raw).as_bytes(policy=SMTP))
    assert [p.get_content_type() for p in parts][-1] == "message/rfc822"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("", "Accusé de réception"),
        ("Avis", "Accusé de réception : Avis"),
        ("XDM/1.0/DDM+CR DUPONT Jean", "XDM/1.0/DDM+CR DUPONT Jean"),
    ],
)
def test_subject(subject: str, expected: str) -> None:
    assert mdn_subject(subject) == expected


def test_long_original_message_id_stays_on_its_line() -> None:
    long_id = "<179532927988.3984.17202852061861605743@correspondant.mssante.fr>"
    raw = original().replace(ORIGINAL_ID.encode(), long_id.encode())
    encoded = build_mdn(_request(raw), answer(), raw).as_bytes(policy=SMTP)
    assert f"\r\nOriginal-Message-ID: {long_id}\r\n".encode() in encoded
    report = parse_report(encoded)
    assert report is not None and report.original_ids[0] == long_id
